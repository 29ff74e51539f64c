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
#: What a template renders when the value it read was not there (Jinja: ``None``; JSON: ``null``).
_RENDERED_NOTHING = frozenset({"none", "null"})
#: The likely cause of an id that is the rendering of nothing, for every message that finds one.
NOTHING_RENDERED = (
    "this looks like a template that rendered nothing: an xcom_pull that found no value (a wrong "
    "task_ids or key, or an upstream task that returned None), or a missing param or Variable"
)


def unique_ids(pod_ids: Iterable[str]) -> list[str]:
    """The ids in their first-seen order, each once."""
    return list(dict.fromkeys(pod_ids))


def validate_pod_ids(value: object) -> list[str]:
    """Validate a rendered ``pod_ids`` argument (one id or a list of ids); return the unique ids.

    Called at execute time, after templating, because that is when the real value is known; the
    message names the offending value so a mistyped template is found from the task log alone.
    The renderings of nothing (``None``, ``'None'``, ``'null'``, ``''``, ``'[]'``) are refused
    before any request, naming the likely cause: a template whose ``xcom_pull`` found nothing.
    Surrounding whitespace (a template's trailing newline) is dropped. A list that a template
    rendered as text (``"['a', 'b']"``, the default unless the DAG renders native objects) is read
    back as the list it was: no pod id starts with ``[``, so nothing else can be meant.
    """
    if isinstance(value, str) and value.strip().startswith("["):
        value = _rendered_list(value.strip())
    items = [value] if isinstance(value, str) or value is None else value
    if not isinstance(items, (list, tuple)):
        raise PrimeConfigError(
            f"pod_ids must be a pod id or a list of pod ids, not {type(value).__name__}: "
            f"{reprlib.repr(value)}"
        )
    if not items:
        raise PrimeConfigError(f"pod_ids is empty: give at least one pod id ({NOTHING_RENDERED})")
    ids: list[str] = []
    for index, item in enumerate(items):
        where = "pod_ids" if items is not value else f"pod_ids[{index}]"
        if item is None or (isinstance(item, str) and item.strip().lower() in _RENDERED_NOTHING):
            raise PrimeConfigError(f"{where} is {item!r}, not a pod id: {NOTHING_RENDERED}")
        if not isinstance(item, str):
            raise PrimeConfigError(
                f"{where} must be a string, not {type(item).__name__}: {reprlib.repr(item)}"
            )
        pod_id = item.strip()
        if not pod_id:
            raise PrimeConfigError(f"{where} is blank ({item!r}): give a pod id ({NOTHING_RENDERED})")
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
