"""What the API's answers mean: each endpoint's 2xx body parsed into the provider's models.

A body of the wrong shape is a :class:`PayloadError` whose text says what is wrong (never the body
itself: it is whatever the server sent); the exchange turns it into a ``PrimeResponseError``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, ValidationError

from airflow_provider_prime.hooks._secrets import scrub
from airflow_provider_prime.models import GpuOffer, OfferPage, Pod, PodPage, PodStatus, PodStatusPage, WhoAmI


class PayloadError(ValueError):
    """A 2xx body whose JSON is not what the endpoint documents; the text says what is wrong."""


def validated(model: type[BaseModel], payload: Any) -> Any:
    """``payload`` validated as ``model``, or :class:`PayloadError` saying what is wrong.

    The error is raised after the ``except`` block, not in it: pydantic's error quotes the input,
    which is whatever the server sent, and must not stay reachable as ``__context__``.
    """
    try:
        return model.model_validate(payload)
    except ValidationError as exc:
        problem = _summarise_validation(exc)
    raise PayloadError(problem)


def parse_pod_statuses(payload: Any) -> list[PodStatus]:
    """The ``GenericResponse[List[APIPodStatusResponse]]`` envelope as pod statuses (``data: null`` → [])."""
    page: PodStatusPage = validated(PodStatusPage, payload)
    return page.pods


def parse_identity(payload: Any) -> str | None:
    """Who the key belongs to and the scopes it grants, from a whoami body, if it says; never fails."""
    try:
        who = WhoAmI.model_validate(payload)
    except ValidationError:
        return None
    name = f"{who.name} <{who.email}>" if who.name and who.email else who.identity
    scopes = who.scope_summary()
    if scopes:
        return f"{name or 'this key'} (scopes: {scopes})"
    return name


def parse_pod(payload: Any) -> Pod:
    pod: Pod = validated(Pod, payload)
    return pod


def parse_pod_page(payload: Any) -> tuple[list[Pod], int | None, int | None]:
    """(pods, announced total, the ``limit`` the server says it applied)."""
    page: PodPage = validated(PodPage, payload)
    return list(page.data), page.total_count, page.limit


def parse_offer_page(payload: Any) -> tuple[list[GpuOffer], int | None]:
    """(offers, announced total) of an availability page; a body without ``items`` is a PayloadError.

    Never "no offers" for an answer of another shape: that would read as capacity gone.
    """
    if isinstance(payload, dict) and "items" not in payload:
        raise PayloadError(
            "the availability answer has no 'items' (the documented page is {items, totalCount}); "
            "it is not read as 'no offers'"
        )
    page: OfferPage = validated(OfferPage, payload)
    return list(page.items), page.total_count


def parse_ignored(payload: Any) -> None:
    """The delete answer (``{"status": ...}``, anything, or no body): the CLI ignores it, so do we."""


#: Keys of an object around the pod log, in the order they are tried (``{data: ...}`` first).
LOG_KEYS = ("data", "logs", "log", "lines", "content", "output", "text")
#: Keys of one log entry that is an object (``{"timestamp": ..., "message": ...}``).
LOG_LINE_KEYS = ("message", "line", "log", "text", "msg")
#: Characters kept of one log line (a progress bar or a base64 blob is one very long line).
MAX_LOG_LINE_CHARS = 500
#: Lines ever kept of one answer, whatever ``tail`` asked for.
MAX_LOG_LINES = 1000
_NESTING = 4
_ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?|\x1b[@-_]")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def parse_pod_log(payload: Any) -> list[str]:
    """The lines of a pod log answer, whatever its shape (FACTS.md: "read it tolerantly").

    Plain text (the exchange hands a non-JSON body over as text) or a JSON string: its lines. A
    list: each item's lines (a string, or an object with ``message``/``line``/``log``/``text``).
    An object: what its ``data``, ``logs``, ``log``, ``lines``, ``content``, ``output`` or
    ``text`` holds, any of the above. ``null`` or an object with none of those keys set: no
    lines. Anything else: :class:`PayloadError`.
    """
    lines = _log_lines(payload, _NESTING)
    if lines is None:
        raise PayloadError(
            f"the pod log is {type(payload).__name__}, not text, a list of lines or an object with "
            f"one of {', '.join(LOG_KEYS)}"
        )
    return lines


def _log_lines(payload: Any, depth: int) -> list[str] | None:
    if payload is None:
        return []
    if isinstance(payload, str):
        return payload.splitlines()
    if depth <= 0:
        return None
    if isinstance(payload, list):
        lines: list[str] = []
        for item in payload:
            entry = _log_entry(item)
            if isinstance(entry, dict) and not any(entry.get(key) is not None for key in LOG_KEYS):
                lines.append(json.dumps(entry, default=str))  # an entry without text: kept as it is
                continue
            got = _log_lines(entry, depth - 1)
            lines += got if got is not None else [json.dumps(item, default=str)]
        return lines
    if isinstance(payload, dict):
        for key in LOG_KEYS:
            if payload.get(key) is not None:
                return _log_lines(payload[key], depth - 1)
        return [] if _no_text(payload) else None
    return None


def _log_entry(item: Any) -> Any:
    """One item of a list of log entries: an object's message, else the item itself."""
    if isinstance(item, dict):
        for key in LOG_LINE_KEYS:
            if isinstance(item.get(key), str):
                return item[key]
    return item


def _no_text(payload: dict[str, Any]) -> bool:
    """An envelope with no log in it (``{"status": "ok"}``): nothing but scalars beside."""
    return not any(isinstance(value, (list, dict)) for value in payload.values())


def tidy_log_lines(lines: Sequence[str], tail: int, secrets: str | Sequence[str]) -> list[str]:
    """The last ``tail`` lines, fit for a task log and an error message.

    Each line is scrubbed of ``secrets`` (the API key) whole, before anything is cut; terminal
    escapes and control characters are dropped (a carriage-return progress bar keeps its last
    state), trailing blanks stripped, and a line longer than :data:`MAX_LOG_LINE_CHARS` is cut.
    Empty lines at the end are dropped.
    """
    kept = list(lines[-min(tail, MAX_LOG_LINES) :]) if tail > 0 else []
    tidy = []
    for raw in kept:
        line = scrub(raw, secrets)
        line = _ANSI.sub("", line).rstrip("\r").rsplit("\r", 1)[-1]
        line = _CONTROL.sub("", line.replace("\t", "    ")).rstrip()
        if len(line) > MAX_LOG_LINE_CHARS:
            line = line[: MAX_LOG_LINE_CHARS - 1] + "…"
        tidy.append(line)
    while tidy and not tidy[-1]:
        tidy.pop()
    return tidy


NOT_JSON = object()


def decode_json(body: bytes) -> Any:
    """The JSON document in ``body``, or :data:`NOT_JSON`."""
    try:
        return json.loads(body)
    except (ValueError, RecursionError):
        return NOT_JSON


def _summarise_validation(exc: ValidationError) -> str:
    errors = exc.errors(include_url=False)
    parts = []
    for error in errors[:3]:
        where = ".".join(str(p) for p in error["loc"]) or "body"
        parts.append(f"{where}: {error['msg']}")
    more = len(errors) - 3
    return "; ".join(parts) + (f" (and {more} more problems)" if more > 0 else "")
