"""The one validator of ``pod_ids``, called where ids enter: sensor ``execute``, trigger, hook.

Inner layers take the ``list[str]`` it returns and never validate again, so every entry point
accepts the same values and refuses the rest with the same message. One id or a list of ids; a
bare string is one id everywhere.
"""

from __future__ import annotations

import ast
import reprlib
from collections.abc import Iterable

from airflow_provider_prime.exceptions import PrimeConfigError

#: Characters no pod id contains; finding one means a list was rendered into a string.
_NOT_IN_IDS = frozenset(" \t\r\n,;[]()'\"")


def unique_ids(pod_ids: Iterable[str]) -> list[str]:
    """The ids in their first-seen order, each once."""
    return list(dict.fromkeys(pod_ids))


def validate_pod_ids(value: object) -> list[str]:
    """Validate a rendered ``pod_ids`` argument (one id or a list of ids); return the unique ids.

    Called at execute time, after templating, because that is when the real value is known; the
    message names the offending value so a mistyped template is found from the task log alone.
    Surrounding whitespace (a template's trailing newline) is dropped. A list that a template
    rendered as text (``"['a', 'b']"``, the default unless the DAG renders native objects) is read
    back as the list it was: no pod id starts with ``[``, so nothing else can be meant.
    """
    if isinstance(value, str) and value.strip().startswith("["):
        value = _rendered_list(value.strip())
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)):
        raise PrimeConfigError(
            f"pod_ids must be a pod id or a list of pod ids, not {type(value).__name__}: "
            f"{reprlib.repr(value)}"
        )
    if not items:
        raise PrimeConfigError("pod_ids is empty: give at least one pod id")
    ids: list[str] = []
    for index, item in enumerate(items):
        where = "pod_ids" if isinstance(value, str) else f"pod_ids[{index}]"
        if not isinstance(item, str):
            raise PrimeConfigError(
                f"{where} must be a string, not {type(item).__name__}: {reprlib.repr(item)}"
            )
        pod_id = item.strip()
        if not pod_id:
            raise PrimeConfigError(f"{where} is blank ({item!r}): give a pod id")
        if _NOT_IN_IDS.intersection(pod_id):
            raise PrimeConfigError(
                f"{where} is not a pod id: {reprlib.repr(item)} (pod ids have no spaces, commas, quotes "
                "or brackets); for several pods pass a list"
            )
        ids.append(pod_id)
    return unique_ids(ids)


def _rendered_list(text: str) -> object:
    """The list a template rendered as text (Python or JSON notation), or a clear error."""
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        value = None
    if not isinstance(value, list):
        raise PrimeConfigError(
            f"pod_ids looks like a list but cannot be read as one: {reprlib.repr(text)}. Pass a list of "
            "quoted ids, or set render_template_as_native_obj=True on the DAG so a template gives a list"
        )
    return value
