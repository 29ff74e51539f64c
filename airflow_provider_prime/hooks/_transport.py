"""The HTTP exchange with the Prime API, without any I/O: what to send, what an answer means, when to retry.

The sync (requests) and async (httpx) clients in :mod:`._clients` only move bytes; they hand every
answer, or the transport failure that replaced it, to an :class:`Exchange`, which either returns the
parsed result, tells them how long to wait before trying again, or raises the provider's typed error.
So the two clients cannot drift apart in how they build requests, map errors or retry.

Error messages are written for the task log: they say what was being done ("while reading the
status of pods a, b"), the HTTP status, what the API said and what to do. The API key is never in
them: it travels only in the ``Authorization`` header, and any text taken from a response is
scrubbed of it before it reaches a message.
"""

from __future__ import annotations

import email.utils
import json
import logging
import math
import random
import re
import ssl
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import timezone
from typing import Any, Generic, TypeVar

from pydantic import ValidationError

from airflow_provider_prime import __version__
from airflow_provider_prime.exceptions import (
    PrimeAPIError,
    PrimeAuthError,
    PrimeBillingError,
    PrimeConfigError,
    PrimeConnectionError,
    PrimeNotFoundError,
    PrimeRequestError,
    PrimeResponseError,
    PrimeTransientError,
)
from airflow_provider_prime.hooks._settings import PrimeApiSettings
from airflow_provider_prime.models import PodStatus, PodStatusPage

log = logging.getLogger(__name__)

CHUNK_SIZE = 100
"""Most pod ids sent in one status request (the platform's batch endpoints cap at 100)."""
MAX_RESPONSE_BYTES = 10 * 1024 * 1024
"""A response body larger than this is refused, so a broken or hostile endpoint cannot fill memory."""
STATUS_PATH = "/api/v1/pods/status"
WHOAMI_PATH = "/api/v1/user/whoami"
#: Statuses worth retrying: rate limiting, server-side timeouts and server errors.
_RETRYABLE_STATUSES = frozenset({408, 429})
_IDS_SHOWN = 5
_EXCERPT_CHARS = 200
_DETAILS_SHOWN = 5

T = TypeVar("T")


@dataclass(frozen=True)
class ApiRequest:
    """One GET to send: absolute URL, query parameters in order, and what it is for (for messages)."""

    url: str
    params: tuple[tuple[str, str], ...]
    action: str


@dataclass(frozen=True)
class ApiResponse:
    """An answer as read from the wire; ``headers`` must look up names case-insensitively."""

    status: int
    headers: Mapping[str, str]
    body: bytes


@dataclass(frozen=True)
class TransportFailure:
    """No usable answer arrived: timeout, refused or dropped connection, TLS failure, oversized body."""

    description: str
    retryable: bool
    hint: str = ""


@dataclass(frozen=True)
class Retry:
    """Wait ``delay`` seconds, then send the same request again."""

    delay: float


class ResponseTooLarge(Exception):
    """Raised by the clients' body readers when a body exceeds :data:`MAX_RESPONSE_BYTES`."""


class PayloadError(ValueError):
    """A 2xx body whose JSON is not what the endpoint documents; the text says what is wrong."""


def user_agent(library: str) -> str:
    """The User-Agent: names the provider and its version, then the HTTP library doing the work."""
    return f"airflow-provider-prime/{__version__} ({library})"


def default_headers(settings: PrimeApiSettings, library: str) -> dict[str, str]:
    """Headers every request carries; the only place the API key is put on the wire."""
    return {
        "Authorization": f"Bearer {settings.api_key}",
        "Accept": "application/json",
        "User-Agent": user_agent(library),
    }


def normalise_pod_ids(pod_ids: Iterable[str]) -> list[str]:
    """Validate the ids and drop duplicates, keeping first-seen order.

    A bare string is refused rather than iterated character by character.
    """
    if isinstance(pod_ids, (str, bytes)):
        raise PrimeConfigError(f"pod_ids must be a list of pod ids, not a single string ({pod_ids!r}).")
    unique: dict[str, None] = {}
    for pod_id in pod_ids:
        if not isinstance(pod_id, str) or not pod_id.strip():
            raise PrimeConfigError(f"Every pod id must be a non-empty string, got {pod_id!r}.")
        unique.setdefault(pod_id, None)
    if not unique:
        raise PrimeConfigError("No pod ids given: pass at least one Prime Intellect pod id.")
    return list(unique)


def chunk_pod_ids(pod_ids: Iterable[str], size: int = CHUNK_SIZE) -> list[list[str]]:
    """Validated, de-duplicated ids in chunks of at most ``size`` (one status request each)."""
    ids = normalise_pod_ids(pod_ids)
    return [ids[start : start + size] for start in range(0, len(ids), size)]


def describe_pods(pod_ids: list[str]) -> str:
    """``"pods a, b, c and 97 more"`` for messages: enough to recognise, never a wall of ids."""
    shown = ", ".join(pod_ids[:_IDS_SHOWN])
    more = len(pod_ids) - _IDS_SHOWN
    noun = "pod" if len(pod_ids) == 1 else "pods"
    return f"{noun} {shown}" + (f" and {more} more" if more > 0 else "")


def status_request(settings: PrimeApiSettings, pod_ids: list[str]) -> ApiRequest:
    """``GET /api/v1/pods/status?pod_ids=a&pod_ids=b`` (repeated keys, as the API documents)."""
    return ApiRequest(
        url=settings.base_url + STATUS_PATH,
        params=tuple(("pod_ids", pod_id) for pod_id in pod_ids),
        action=f"reading the status of {describe_pods(pod_ids)}",
    )


def whoami_request(settings: PrimeApiSettings) -> ApiRequest:
    """``GET /api/v1/user/whoami``: the cheap authenticated call behind the connection test."""
    return ApiRequest(url=settings.base_url + WHOAMI_PATH, params=(), action="checking the API key")


def parse_pod_statuses(payload: Any) -> list[PodStatus]:
    """The ``GenericResponse[List[APIPodStatusResponse]]`` envelope as pod statuses (``data: null`` → []).

    The error is raised after the ``except`` block, not in it: pydantic's error quotes the input,
    which is whatever the server sent (an echoed API key included), and an exception raised inside
    the block would keep it reachable as ``__context__``.
    """
    try:
        return PodStatusPage.model_validate(payload).pods
    except ValidationError as exc:
        problem = _summarise_validation(exc)
    raise PayloadError(problem)


def parse_identity(payload: Any) -> str | None:
    """Who the key belongs to, from a whoami body, if it says (name and/or email); never fails."""
    record = payload.get("data", payload) if isinstance(payload, Mapping) else None
    if not isinstance(record, Mapping):
        return None
    name, address = (_text(record, key) for key in ("name", "email"))
    if name and address:
        return f"{name} <{address}>"
    return name or address


def _text(record: Mapping[str, Any], key: str) -> str | None:
    value = record.get(key)
    return value.strip() if isinstance(value, str) and value.strip() else None


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP date); None if absent/garbled."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            moment = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=timezone.utc)
        current = time.time() if now is None else now
        seconds = moment.timestamp() - current
        return max(0.0, seconds)
    return max(0.0, seconds) if math.isfinite(seconds) else None


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with full jitter, or the server's ``Retry-After`` when it gives one."""

    max_retries: int
    backoff_base: float
    backoff_max: float
    retry_after_max: float

    @classmethod
    def from_settings(cls, settings: PrimeApiSettings) -> RetryPolicy:
        return cls(
            settings.max_retries, settings.backoff_base, settings.backoff_max, settings.retry_after_max
        )

    def delay(self, retry_number: int, retry_after: str | None, rng: random.Random) -> float:
        """Seconds before retry ``retry_number`` (1-based): Retry-After capped, else uniform(0, ceiling)."""
        hinted = parse_retry_after(retry_after)
        if hinted is not None:
            return min(hinted, self.retry_after_max)
        ceiling = min(self.backoff_max, self.backoff_base * 2.0 ** (retry_number - 1))
        return rng.uniform(0.0, ceiling)


class Exchange(Generic[T]):
    """One logical call: judge each attempt's outcome, retry what is worth retrying, raise the rest.

    ``parse`` turns the decoded JSON of a 2xx answer into the result, raising :class:`PayloadError`
    when the shape is wrong.
    """

    def __init__(
        self,
        settings: PrimeApiSettings,
        request: ApiRequest,
        parse: Callable[[Any], T],
        rng: random.Random | None = None,
    ) -> None:
        self.request = request
        self.attempts = 0
        self._parse = parse
        self._secret = settings.api_key
        self._policy = RetryPolicy.from_settings(settings)
        self._rng = rng or random.Random()

    def settle(self, outcome: ApiResponse | TransportFailure) -> T | Retry:
        """The result, or how long to wait before the next attempt; raises a typed error when done."""
        self.attempts += 1
        retry_after: str | None = None
        if isinstance(outcome, TransportFailure):
            hint = f" {outcome.hint}" if outcome.hint else ""
            error_class = PrimeConnectionError if outcome.retryable else PrimeResponseError
            error: PrimeAPIError = error_class(
                self._scrub(f"{outcome.description} while {self.request.action}.{hint}")
            )
        else:
            try:
                return self._judge(outcome)
            except PrimeAPIError as exc:
                error = exc
            retry_after = outcome.headers.get("retry-after")
        if not error.retryable:
            raise error
        if self.attempts > self._policy.max_retries:
            raise PrimeTransientError(
                f"Gave up after {self.attempts} attempts: {error}",
                http_status=error.http_status,
            ) from error
        delay = self._policy.delay(self.attempts, retry_after, self._rng)
        log.warning(
            "Prime API call failed (%s); retry %d of %d in %.2f s.",
            error,
            self.attempts,
            self._policy.max_retries,
            delay,
        )
        return Retry(delay)

    def _judge(self, response: ApiResponse) -> T:
        status = response.status
        if not 200 <= status < 300:
            raise self._status_error(response)
        # Errors are raised outside the except blocks: the decoder's and the parser's exceptions hold
        # the raw body, which must not stay reachable from ours as __context__ (see parse_pod_statuses).
        payload = _decode_json(response.body)
        if payload is _NOT_JSON:
            raise PrimeResponseError(
                self._scrub(
                    f"The Prime Intellect API answered HTTP {status} with a body that is not JSON while "
                    f"{self.request.action} (is the API base URL right?): {_excerpt(response.body)}"
                ),
                http_status=status,
            )
        try:
            return self._parse(payload)
        except PayloadError as exc:
            problem = str(exc)
        raise PrimeResponseError(
            self._scrub(
                f"The Prime Intellect API answered HTTP {status} with JSON of an unexpected shape while "
                f"{self.request.action}: {problem}"
            ),
            http_status=status,
        )

    def _status_error(self, response: ApiResponse) -> PrimeAPIError:
        status = response.status
        details = _error_details(response.body)
        said = "; ".join(details) if details else _excerpt(response.body)
        said_part = f" The API said: {said}" if said else ""
        where = f"while {self.request.action}"
        message: str
        if status == 401:
            message = (
                f"The Prime Intellect API rejected the API key (HTTP 401) {where}. Check the API key and "
                'that it has the "Instances → Read" permission.'
            )
            return PrimeAuthError(self._scrub(message + said_part), http_status=status)
        if status == 403:
            message = (
                f"The Prime Intellect API refused access (HTTP 403) {where}. The API key lacks the "
                '"Instances → Read" permission, or the pods belong to another team.'
            )
            return PrimeAuthError(self._scrub(message + said_part), http_status=status)
        if status == 404:
            message = (
                f"HTTP 404 from {self.request.url} {where}: check the connection's API base URL "
                "(normally https://api.primeintellect.ai)."
            )
            return PrimeNotFoundError(self._scrub(message + said_part), http_status=status)
        if status == 402:
            message = (
                f"The Prime Intellect API answered HTTP 402 Payment Required {where}: the account behind "
                "this API key has a billing problem (no credit or no payment method); fix it in the "
                "Prime Intellect dashboard."
            )
            return PrimeBillingError(
                self._scrub(message + said_part),
                http_status=status,
                details=[self._scrub(d) for d in details],
            )
        if status in _RETRYABLE_STATUSES or status >= 500:
            return PrimeTransientError(self._scrub(f"HTTP {status} {where}.{said_part}"), http_status=status)
        if 400 <= status < 500:
            message = f"The Prime Intellect API rejected the request (HTTP {status}) {where}."
            return PrimeRequestError(
                self._scrub(message + said_part),
                http_status=status,
                details=[self._scrub(d) for d in details],
            )
        return PrimeResponseError(
            self._scrub(f"Unexpected HTTP {status} {where}.{said_part}"), http_status=status
        )

    def _scrub(self, text: str) -> str:
        return text.replace(self._secret, "***") if self._secret else text


def check_declared_length(headers: Mapping[str, str]) -> None:
    """Refuse at once a body whose Content-Length already exceeds the limit."""
    declared = headers.get("content-length", "")
    if declared.strip().isdigit() and int(declared) > MAX_RESPONSE_BYTES:
        raise ResponseTooLarge


def too_large_failure() -> TransportFailure:
    return TransportFailure(
        f"The response was larger than {MAX_RESPONSE_BYTES // (1024 * 1024)} MiB and was refused",
        retryable=False,
        hint="Is the API base URL right?",
    )


def transport_failure(exc: BaseException, *, timeout: bool) -> TransportFailure:
    """Describe a library's transport exception; TLS certificate failures are not worth retrying."""
    root = _root_cause(exc)
    if isinstance(root, ssl.SSLCertVerificationError):
        return TransportFailure(
            f"TLS certificate verification failed ({_short(str(root))})",
            retryable=False,
            hint="Check the API base URL; behind a proxy with its own certificate authority, set the "
            "connection extra 'verify' to the path of its CA bundle.",
        )
    what = "Timed out" if timeout else "Connection failed"
    detail = f"{type(root).__name__}: {_short(str(root))}" if str(root) else type(root).__name__
    if root is not exc:
        detail = f"{type(exc).__name__} ({detail})"
    return TransportFailure(f"{what}: {detail}", retryable=True)


def _root_cause(exc: BaseException) -> BaseException:
    # requests nests the real error in args/.reason (MaxRetryError → NewConnectionError → OSError);
    # httpx chains it with `from`. Follow both, a few levels deep.
    current = exc
    for _ in range(8):
        nxt = current.__cause__ or getattr(current, "reason", None)
        if not isinstance(nxt, BaseException) and current.args and isinstance(current.args[0], BaseException):
            nxt = current.args[0]
        if not isinstance(nxt, BaseException) or nxt is current:
            break
        current = nxt
    return current


def _short(text: str, limit: int = 160) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


_NOT_JSON = object()


def _decode_json(body: bytes) -> Any:
    """The JSON document in ``body``, or :data:`_NOT_JSON`."""
    try:
        return json.loads(body)
    except (ValueError, RecursionError):
        return _NOT_JSON


def _excerpt(body: bytes) -> str:
    """A short, readable excerpt of a body (HTML tags dropped): enough to tell a proxy page from JSON."""
    text = body[: _EXCERPT_CHARS * 8].decode("utf-8", errors="replace")
    text = re.sub(r"<[^>]*>", " ", text)
    return _short(text, _EXCERPT_CHARS) if text.strip() else "(empty body)"


def _error_details(body: bytes) -> list[str]:
    """What an error body says, from ``{"errors": [{param, details}]}`` or ``{"detail": str | [...]}``."""
    try:
        payload = json.loads(body)
    except (ValueError, RecursionError):
        return []
    if not isinstance(payload, Mapping):
        return []
    details: list[str] = []
    errors = payload.get("errors")
    if isinstance(errors, list):
        for item in errors:
            if isinstance(item, Mapping):
                param, text = item.get("param"), item.get("details")
                details.append(f"{param}: {text}" if param else str(text))
            elif isinstance(item, str):
                details.append(item)
    detail = payload.get("detail")
    if isinstance(detail, str):
        details.append(detail)
    elif isinstance(detail, list):
        for item in detail:
            if isinstance(item, Mapping):
                loc = item.get("loc")
                where = ".".join(str(p) for p in loc) if isinstance(loc, list) else ""
                details.append(f"{where}: {item.get('msg')}" if where else str(item.get("msg")))
    message = payload.get("message")
    if not details and isinstance(message, str):
        details.append(message)
    shown = [_short(d, 200) for d in details[:_DETAILS_SHOWN]]
    if len(details) > _DETAILS_SHOWN:
        shown.append(f"and {len(details) - _DETAILS_SHOWN} more")
    return shown


def _summarise_validation(exc: ValidationError) -> str:
    errors = exc.errors(include_url=False)
    parts = []
    for error in errors[:3]:
        where = ".".join(str(p) for p in error["loc"]) or "body"
        parts.append(f"{where}: {error['msg']}")
    more = len(errors) - 3
    return "; ".join(parts) + (f" (and {more} more problems)" if more > 0 else "")


__all__ = [
    "CHUNK_SIZE",
    "MAX_RESPONSE_BYTES",
    "ApiRequest",
    "ApiResponse",
    "Exchange",
    "PayloadError",
    "ResponseTooLarge",
    "Retry",
    "RetryPolicy",
    "TransportFailure",
    "chunk_pod_ids",
]
