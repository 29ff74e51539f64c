"""The one rule for pod ids: :func:`validate_pod_ids` where ids enter (sensor ``execute``, trigger,
hook), :func:`pod_ids_from` where an operator collects them from what upstream tasks handed over.

Both return :class:`PodIds`, a validated value: inner layers accept it as it is, so every entry point
accepts the same values and refuses the rest with the same message. One id or a list of ids; a
bare string is one id everywhere.
"""

from __future__ import annotations

import ast
import reprlib
from collections.abc import Iterable, Mapping

from airflow_provider_prime.exceptions import PrimeConfigError

#: Characters no pod id contains; finding one means a list was rendered into a string.
_NOT_IN_IDS = frozenset(" \t\r\n,;[](){}'\"")
#: What a template renders when the value it read was not there (Jinja: ``None``; JSON: ``null``).
_RENDERED_NOTHING = frozenset({"none", "null"})
#: The likely cause of an id that is the rendering of nothing, for every message that finds one.
NOTHING_RENDERED = (
    "this looks like a template that rendered nothing: an xcom_pull that found no value (a wrong "
    "task_ids or key, or an upstream task that returned None), or a missing param or Variable"
)


class PodIds(list[str]):
    """Pod ids that passed :func:`validate_pod_ids` (or :func:`pod_ids_from`): unique, in the order
    given, each a plain id. :func:`validate_pod_ids` returns one as it is, without a second check.

    A list, so that it travels wherever the plain list it replaced did (trigger kwargs, XComs,
    JSON: Airflow's serializers take list subclasses as lists, and refuse tuple subclasses). Do
    not change one in place: make a new one with :func:`validate_pod_ids`.
    """

    __slots__ = ()


def unique_ids(pod_ids: Iterable[str]) -> list[str]:
    """The ids in their first-seen order, each once."""
    return list(dict.fromkeys(pod_ids))


def validate_pod_ids(value: object) -> PodIds:
    """Validate a rendered ``pod_ids`` argument (one id or a list of ids); return the unique ids.

    Called at execute time, after templating, because that is when the real value is known; the
    message names the offending value so a mistyped template is found from the task log alone.
    The renderings of nothing (``None``, ``'None'``, ``'null'``, ``''``, ``'[]'``) are refused
    before any request, naming the likely cause: a template whose ``xcom_pull`` found nothing.
    Surrounding whitespace (a template's trailing newline) is dropped. A list that a template
    rendered as text (``"['a', 'b']"``, the default unless the DAG renders native objects) is read
    back as the list it was: no pod id starts with ``[``, so nothing else can be meant. A mapping
    rendered as text (the create operator's return value, keyed by pod id) gives its keys: ``'{}'``
    (an empty return value) is empty, and refused like ``'[]'``.
    """
    if isinstance(value, PodIds):
        return value
    if isinstance(value, str) and value.strip().startswith(("[", "{")):
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
    return PodIds(unique_ids(ids))


def pod_ids_from(value: object) -> PodIds:
    """The pod ids in what upstream tasks handed an operator; possibly none.

    ``value`` is an id, a list of ids, the create operator's return value (a mapping keyed by pod
    id, whose keys are the ids) or a list of such values (a mapped create's). ``None``, as the
    whole value or as an entry of a list, is a mapped create's index that made no pod and gives no
    ids: the rule is that only a list's entries, or the whole value, may be ``None``. Every id goes
    through :func:`validate_pod_ids`, with its messages; an empty list gives no ids.
    """
    if value is None:
        return PodIds()
    if isinstance(value, (str, PodIds)):
        return validate_pod_ids(value)
    if isinstance(value, Mapping):
        return validate_pod_ids(list(value))
    if isinstance(value, (list, tuple)) or (hasattr(value, "__iter__") and not isinstance(value, bytes)):
        ids = [pod_id for item in value for pod_id in pod_ids_from(item)]
        return validate_pod_ids(ids) if ids else PodIds()
    return validate_pod_ids(value)


def _rendered_list(text: str) -> object:
    """The list a template rendered as text (Python or JSON notation; a mapping gives its keys), or
    a clear error."""
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        value = None
    if isinstance(value, dict):
        value = list(value)
    if not isinstance(value, list):
        raise PrimeConfigError(
            f"pod_ids looks like a list but cannot be read as one: {reprlib.repr(text)}. Pass a list of "
            "quoted ids, or set render_template_as_native_obj=True on the DAG so a template gives a list"
        )
    return value
