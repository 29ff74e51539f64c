"""The HTTP exchange with the Prime API, without any I/O: what to send, what an answer means, when to retry.

The sync (requests) and async (httpx) clients in :mod:`._clients` only move bytes; they hand every
answer, or the :class:`TransportFailure` that replaced it, to an :class:`Exchange`, which returns
the parsed result, tells them how long to wait before trying again, or raises the provider's typed
error. So the two clients cannot drift apart in how they build requests, map errors or retry.

Error messages are written for the task log: they say what was being done ("while reading the
status of pods a, b"), the HTTP status, what the API said and what to do. The API key travels only
in the ``Authorization`` header, and every error leaves through :meth:`Exchange.fail`, which scrubs
the key from the message, the details and the whole ``__cause__`` chain, whatever the status or
transport failure: one path, so no branch can forget it.
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
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import timezone
from typing import Any, Generic, NoReturn, TypeVar
from urllib.parse import urlsplit, urlunsplit

from pydantic import BaseModel, ValidationError

from airflow_provider_prime import __version__
from airflow_provider_prime.exceptions import (
    PrimeAPIError,
    PrimeAuthError,
    PrimeBillingError,
    PrimeConnectionError,
    PrimeNotFoundError,
    PrimeRejectedError,
    PrimeRequestError,
    PrimeResponseError,
    PrimeTransientError,
    is_transient,
)
from airflow_provider_prime.hooks._secrets import scrub
from airflow_provider_prime.hooks._settings import DEFAULT_BASE_URL, PrimeApiSettings, is_loopback
from airflow_provider_prime.models import PodStatus, PodStatusPage, WhoAmI

log = logging.getLogger(__name__)

CHUNK_SIZE = 100
"""Most pod ids sent in one status request (the platform's batch endpoints cap at 100)."""
MAX_RESPONSE_BYTES = 10 * 1024 * 1024
"""A response body larger than this is refused, so a broken or hostile endpoint cannot fill memory."""
STATUS_PATH = "/api/v1/pods/status"
WHOAMI_PATH = "/api/v1/user/whoami"
READ = "Instances → Read"
READ_WRITE = "Instances → Read and write"
_IDS_SHOWN = 5
_EXCERPT_CHARS = 200
_DETAILS_SHOWN = 5
#: Answers a request that was refused before it was handled: resending cannot do anything twice.
_NOT_HANDLED = frozenset({429})
#: Also retried for requests that are safe to repeat (GET, DELETE).
_TRANSIENT = frozenset({408, 429})
#: Words of an error saying the chosen offer is gone (the simulator: "Offer <id> is out of stock").
_PLAIN_HTTP_MARKERS = ("WRONG_VERSION_NUMBER", "record layer failure", "packet length too long")
_SOLD_OUT = re.compile(r"out of stock|sold out|no longer available", re.IGNORECASE)

T = TypeVar("T")


@dataclass(frozen=True)
class ApiRequest:
    """One request to send, and what the messages about it must say.

    ``idempotent`` is False for a request that must not be sent twice (create): when it may have
    reached the server without an answer coming back, the exchange says so (:class:`DeliveryUnknown`)
    instead of resending it. ``permission`` is what a 401/403 names. ``missing`` is what a 404
    means when the API itself says ``pod_id`` was not found (:func:`says_pod_not_found`); any other
    404 (``missing`` None, or a router's bare "Not Found", HTML, no JSON) means the base URL or
    path is wrong. ``answer_ignored``: any 2xx is success whatever its body (a delete).
    """

    method: str
    url: str
    action: str
    params: tuple[tuple[str, str], ...] = ()
    body: Any = None
    idempotent: bool = True
    permission: str = READ
    missing: str | None = None
    pod_id: str | None = None
    answer_ignored: bool = False


@dataclass(frozen=True)
class ApiResponse:
    """An answer as read from the wire; ``headers`` must look up names case-insensitively."""

    status: int
    headers: Mapping[str, str]
    body: bytes


@dataclass(frozen=True)
class TransportFailure:
    """No usable answer arrived: what happened, the error it becomes, and whether it may have been sent.

    ``sent`` is False only when the request provably never left (refused, DNS, connect timeout,
    TLS handshake): only then is a create sent again.
    """

    description: str
    error: type[PrimeAPIError] = PrimeConnectionError
    sent: bool = True
    hint: str = ""


@dataclass(frozen=True)
class Retry:
    """Wait ``delay`` seconds, then send the same request again."""

    delay: float


class ResponseTooLarge(Exception):
    """Raised by the clients' body readers when a body exceeds :data:`MAX_RESPONSE_BYTES`."""


class PayloadError(ValueError):
    """A 2xx body whose JSON is not what the endpoint documents; the text says what is wrong."""


class DeliveryUnknown(Exception):
    """A non-idempotent request may have been handled but no usable answer came back.

    Never escapes the hook: it looks the result up (a create by the pod's name) and raises the
    provider's own error from ``error`` (already scrubbed) when it cannot.
    """

    def __init__(self, error: PrimeAPIError) -> None:
        super().__init__(str(error))
        self.error = error


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


def chunk_pod_ids(pod_ids: list[str], size: int = CHUNK_SIZE) -> list[list[str]]:
    """Validated ids in chunks of at most ``size`` (one status request each)."""
    return [pod_ids[start : start + size] for start in range(0, len(pod_ids), size)]


def describe_pods(pod_ids: list[str]) -> str:
    """``"pods a, b, c and 97 more"`` for messages: enough to recognise, never a wall of ids."""
    shown = ", ".join(pod_ids[:_IDS_SHOWN])
    more = len(pod_ids) - _IDS_SHOWN
    noun = "pod" if len(pod_ids) == 1 else "pods"
    return f"{noun} {shown}" + (f" and {more} more" if more > 0 else "")


def status_request(settings: PrimeApiSettings, pod_ids: list[str]) -> ApiRequest:
    """``GET /api/v1/pods/status?pod_ids=a&pod_ids=b`` (repeated keys, as the API documents)."""
    return ApiRequest(
        "GET",
        settings.base_url + STATUS_PATH,
        f"reading the status of {describe_pods(pod_ids)}",
        params=tuple(("pod_ids", pod_id) for pod_id in pod_ids),
    )


def whoami_request(settings: PrimeApiSettings) -> ApiRequest:
    """``GET /api/v1/user/whoami``: the cheap authenticated call behind the connection test."""
    return ApiRequest("GET", settings.base_url + WHOAMI_PATH, "checking the API key")


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
        return max(0.0, moment.timestamp() - current)
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


@dataclass
class Exchange(Generic[T]):
    """One logical call: judge each attempt's outcome, retry what is worth retrying, raise the rest.

    ``parse`` turns the decoded JSON of a 2xx answer into the result, raising :class:`PayloadError`
    when the shape is wrong (``parse_empty`` gives the result of an answer without a body).
    ``deadline`` (epoch seconds) bounds the whole call: no retry sleeps past it and each attempt's
    timeouts are cut to the time left (:meth:`timeouts`).
    """

    settings: PrimeApiSettings
    request: ApiRequest
    parse: Callable[[Any], T]
    deadline: float | None = None
    parse_empty: Callable[[], T] | None = None
    rng: random.Random = field(default_factory=random.Random)
    attempts: int = 0

    def timeouts(self) -> tuple[float, float]:
        """(connect, read) timeouts of the next attempt: the settings', cut to the time left."""
        connect, read = self.settings.connect_timeout, self.settings.read_timeout
        if self.deadline is None:
            return connect, read
        left = self.deadline - time.time()
        if left <= 0:
            self.fail(PrimeTransientError(f"The wait's deadline passed before {self.request.action}."))
        return min(connect, left), min(read, left)

    def settle(self, outcome: ApiResponse | TransportFailure) -> T | Retry:
        """The result, or how long to wait before the next attempt; raises a typed error when done."""
        self.attempts += 1
        retry_after: str | None = None
        handled = True  # whether the server may have acted on the request
        if isinstance(outcome, TransportFailure):
            hint = f" {outcome.hint}" if outcome.hint else ""
            error: PrimeAPIError = outcome.error(f"{outcome.description} while {self.request.action}.{hint}")
            handled = outcome.sent
        else:
            try:
                return self._judge(outcome)
            except PrimeAPIError as exc:
                error = exc
            retry_after = outcome.headers.get("retry-after")
            handled = outcome.status not in _NOT_HANDLED and not isinstance(error, PrimeRejectedError)
        if not self.request.idempotent and handled:
            raise DeliveryUnknown(self.scrubbed(error))
        if not is_transient(error):
            self.fail(error)
        delay = RetryPolicy.from_settings(self.settings).delay(self.attempts, retry_after, self.rng)
        if self.attempts > self.settings.max_retries:
            self.fail(self._gave_up(error, f"Gave up after {self.attempts} attempts"))
        if self.deadline is not None and time.time() + delay >= self.deadline:
            self.fail(
                self._gave_up(error, f"Stopped before the wait's deadline after {self.attempts} attempts")
            )
        log.debug(
            "Prime API call failed (%s); retry %d of %d in %.2f s.",
            self.scrubbed(error),
            self.attempts,
            self.settings.max_retries,
            delay,
        )
        return Retry(delay)

    def fail(self, error: PrimeAPIError) -> NoReturn:
        """Raise ``error`` scrubbed: the one way an error leaves the exchange."""
        raise self.scrubbed(error)

    def scrubbed(self, error: PrimeAPIError) -> PrimeAPIError:
        """A copy of ``error`` (same class) with the key gone from message, details and the cause chain.

        Only the provider's errors are kept in the chain: a library's exception may quote the body
        or the request, so it is never attached (and the copy suppresses ``__context__``).
        """
        secret = self.settings.api_key
        clean = type(error)(
            scrub(str(error), secret),
            http_status=error.http_status,
            details=[scrub(detail, secret) for detail in error.details],
        )
        cause = error.__cause__
        clean.__cause__ = self.scrubbed(cause) if isinstance(cause, PrimeAPIError) else None
        clean.__suppress_context__ = True
        return clean

    def _excerpt(self, body: bytes) -> str:
        return _excerpt(body, self.settings.api_key)

    def _gave_up(self, error: PrimeAPIError, what: str) -> PrimeTransientError:
        final = PrimeTransientError(f"{what}: {error}", http_status=error.http_status)
        final.__cause__ = error
        return final

    def _judge(self, response: ApiResponse) -> T:
        status = response.status
        if not 200 <= status < 300:
            raise self._status_error(response)
        if self.request.answer_ignored:
            # A delete's answer is read by nobody (the CLI ignores it too): a 200 whose body is
            # HTML, text or broken JSON still says the delete was accepted.
            return self.parse(None)
        if not response.body.strip() and self.parse_empty is not None:
            return self.parse_empty()
        # Errors are raised outside the except blocks: the decoder's and the parser's exceptions hold
        # the raw body, which must not stay reachable from ours as __context__ (see validated()).
        payload = _decode_json(response.body)
        if payload is _NOT_JSON:
            raise PrimeResponseError(
                f"The Prime Intellect API answered HTTP {status} with a body that is not JSON while "
                f"{self.request.action} (is the API base URL right?): {self._excerpt(response.body)}",
                http_status=status,
            )
        try:
            return self.parse(payload)
        except PayloadError as exc:
            problem = str(exc)
        raise PrimeResponseError(
            f"The Prime Intellect API answered HTTP {status} with JSON of an unexpected shape while "
            f"{self.request.action}: {problem}",
            http_status=status,
        )

    def _status_error(self, response: ApiResponse) -> PrimeAPIError:
        status = response.status
        found = _error_details(response.body, self.settings.api_key)
        details = [f"{where}: {text}" if where else text for where, text in found]
        said = "; ".join(details) if details else self._excerpt(response.body)
        said_part = f" The API said: {said}" if said else ""
        where = f"while {self.request.action}"
        permission = self.request.permission
        if status == 401:
            return PrimeAuthError(
                f"The Prime Intellect API rejected the API key (HTTP 401) {where}. Check the API key and "
                f'that it has the "{permission}" permission.{said_part}',
                http_status=status,
            )
        if status == 403:
            return PrimeAuthError(
                f"The Prime Intellect API refused access (HTTP 403) {where}. The API key lacks the "
                f'"{permission}" permission, or the pods belong to another team.{said_part}',
                http_status=status,
            )
        if status == 404:
            request = self.request
            if request.missing is not None and says_pod_not_found(response.body, request.pod_id):
                return PrimeNotFoundError(
                    f"{request.missing} (HTTP 404 {where}).{said_part}", http_status=status
                )
            about = (
                f", and the answer does not say that pod {request.pod_id} was not found"
                if request.pod_id
                else ""
            )
            return PrimeResponseError(
                f"HTTP 404 from {request.url} {where}{about}: the connection's API base URL or path looks "
                f"wrong. Set its host to the API root (normally {DEFAULT_BASE_URL}, optionally ending in "
                f"/api/v1, nothing else).{said_part}",
                http_status=status,
            )
        if status == 402:
            return PrimeBillingError(
                f"The Prime Intellect API answered HTTP 402 Payment Required {where}: the account behind "
                "this API key has a billing problem (no credit or no payment method); fix it in the "
                f"Prime Intellect dashboard.{said_part}",
                http_status=status,
                details=details,
            )
        if status in _TRANSIENT or status >= 500:
            return PrimeTransientError(f"HTTP {status} {where}.{said_part}", http_status=status)
        if 400 <= status < 500:
            if any(_SOLD_OUT.search(text) for text in details):
                headline = (
                    f"The offer sold out (HTTP {status}) {where}: choose another offer "
                    "(PrimeHook.list_gpu_offers) and create the pod again."
                )
            else:
                fields = [name for name, _ in found if name]
                named = f" field {', '.join(fields)}" if fields else " the request"
                headline = f"The Prime Intellect API rejected{named} (HTTP {status}) {where}."
            return PrimeRequestError(headline + said_part, http_status=status, details=details)
        return PrimeResponseError(f"Unexpected HTTP {status} {where}.{said_part}", http_status=status)


#: Words of a 404 saying a thing does not exist (as opposed to a router that has no such path).
_NOT_FOUND_WORDS = re.compile(r"not found|does not exist|doesn't exist|no such|unknown", re.IGNORECASE)
_POD_WORD = re.compile(r"\bpods?\b", re.IGNORECASE)


def says_pod_not_found(body: bytes, pod_id: str | None) -> bool:
    """Whether a 404 body is the API saying *that pod* was not found (the rule of docs/hook.md).

    It must be a JSON object whose ``detail``, ``message`` or ``errors[].details`` text says
    something was not found ("not found", "does not exist", "no such", "unknown") and names the
    pod: its id, or the word "pod" (the simulator says ``{"detail": "Pod <id> not found"}``). A
    router's bare ``{"detail": "Not Found"}`` (FastAPI, Starlette), an HTML or text page, an empty
    body or another JSON shape is not: it means the request went to a path the API does not have,
    so "the pod is gone" must not be concluded from it.
    """
    payload = _decode_json(body)
    if not isinstance(payload, Mapping):
        return False
    texts = [payload.get("detail"), payload.get("message")]
    errors = payload.get("errors")
    for item in errors if isinstance(errors, list) else []:
        texts.append(item.get("details") if isinstance(item, Mapping) else item)
    for text in texts:
        if not isinstance(text, str) or not _NOT_FOUND_WORDS.search(text):
            continue
        if (pod_id and pod_id in text) or _POD_WORD.search(text):
            return True
    return False


def check_declared_length(headers: Mapping[str, str]) -> None:
    """Refuse at once a body whose Content-Length already exceeds the limit."""
    declared = headers.get("content-length", "")
    if declared.strip().isdigit() and int(declared) > MAX_RESPONSE_BYTES:
        raise ResponseTooLarge


def too_large_failure() -> TransportFailure:
    return TransportFailure(
        f"The response was larger than {MAX_RESPONSE_BYTES // (1024 * 1024)} MiB and was refused",
        PrimeResponseError,
        hint="Is the API base URL right?",
    )


def too_many_redirects(exc: BaseException) -> TransportFailure:
    return TransportFailure(f"Too many redirects ({exc})", PrimeResponseError)


def transport_failure(
    exc: BaseException, url: str, *, timeout: bool, sent: bool, secret: str = ""
) -> TransportFailure:
    """Describe a library's transport exception; a TLS failure says what is likely wrong.

    ``sent`` is the client's judgement (from its library's exception class) of whether the request
    may have reached the server; a TLS failure always happened before it. ``secret`` (the API key)
    is scrubbed from the library's text before it is shortened (a library may quote the header).
    """
    root = _root_cause(exc)

    def _short(text: str, limit: int = 160) -> str:
        return _shorten(scrub(text, secret), limit)

    if isinstance(root, ssl.SSLCertVerificationError):
        return TransportFailure(
            f"TLS certificate verification failed ({_short(str(root))})",
            PrimeResponseError,
            sent=False,
            hint="Check the API base URL; behind a proxy with its own certificate authority, set the "
            "connection extra 'verify' to the path of its CA bundle.",
        )
    trouble = _tls_trouble(root, url, timeout=timeout)
    if trouble is not None:
        timed_out, hint = trouble
        return TransportFailure(
            f"The TLS handshake {'timed out' if timed_out else 'failed'} ({type(root).__name__}: "
            f"{_short(str(root))})",
            PrimeConnectionError if timed_out else PrimeResponseError,
            sent=False,
            hint=hint,
        )
    what = "Timed out" if timeout else "Connection failed"
    detail = f"{type(root).__name__}: {_short(str(root))}" if str(root) else type(root).__name__
    if root is not exc:
        detail = f"{type(exc).__name__} ({detail})"
    return TransportFailure(f"{what}: {detail}", sent=sent)


def _tls_trouble(root: BaseException, url: str, *, timeout: bool) -> tuple[bool, str] | None:
    """(timed out, what to do) for an https handshake that failed as against a plain-HTTP server.

    Such a server answers the TLS greeting with HTTP text (OpenSSL: WRONG_VERSION_NUMBER, or
    "record layer failure" from 3.2), or waits for a request line and the handshake times out.
    A timeout is transient (a slow server is possible); a wrong version is not.
    """
    parts = urlsplit(url)
    text = str(root)
    plain = isinstance(root, ssl.SSLError) and any(marker in text for marker in _PLAIN_HTTP_MARKERS)
    stalled = (isinstance(root, TimeoutError) and "handshake" in text) or (
        timeout and isinstance(root, ssl.SSLError)
    )
    if parts.scheme != "https" or not (plain or stalled):
        return None
    hint = "The server may speak plain HTTP, not HTTPS" + (" (or be slow)." if stalled and not plain else ".")
    if is_loopback(parts.hostname or ""):
        plain_url = urlunsplit(("http", parts.netloc, "", "", ""))
        hint += (
            f" For a local simulator or tunnel on this machine, set the connection host to {plain_url} "
            "(a host without a scheme means https)."
        )
    return stalled and not plain, hint


def _root_cause(exc: BaseException) -> BaseException:
    # requests nests the real error in args/.reason (MaxRetryError → NewConnectionError → OSError);
    # httpx chains it with `from`. Follow both, a few levels deep.
    current = exc
    for _ in range(8):
        nxt = current.__cause__ or current.__context__ or getattr(current, "reason", None)
        if not isinstance(nxt, BaseException) and current.args and isinstance(current.args[0], BaseException):
            nxt = current.args[0]
        if not isinstance(nxt, BaseException) or nxt is current:
            break
        current = nxt
    return current


def _shorten(text: str, limit: int = 160) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


_NOT_JSON = object()


def _decode_json(body: bytes) -> Any:
    """The JSON document in ``body``, or :data:`_NOT_JSON`."""
    try:
        return json.loads(body)
    except (ValueError, RecursionError):
        return _NOT_JSON


def _excerpt(body: bytes, secret: str = "") -> str:
    """A short, readable excerpt of a body (HTML tags dropped): enough to tell a proxy page from JSON.

    The key is scrubbed from the whole body before anything is cut or reflowed: a key straddling
    the cut would otherwise survive as a prefix (scrubbing finds only whole keys).
    """
    text = scrub(body.decode("utf-8", errors="replace"), secret)[: _EXCERPT_CHARS * 8]
    text = re.sub(r"<[^>]*>", " ", text)
    return _shorten(text, _EXCERPT_CHARS) if text.strip() else "(empty body)"


def _error_details(body: bytes, secret: str = "") -> list[tuple[str | None, str]]:
    """(field, text) pairs from ``{"errors": [{param, details}]}``, ``{"detail": str | [{loc, msg}]}``
    or ``{"message": str}``; bounded, so a huge error body cannot make a huge message. Each text
    is scrubbed of the key before it is shortened."""
    payload = _decode_json(body)
    if not isinstance(payload, Mapping):
        return []
    found: list[tuple[str | None, str]] = []
    errors = payload.get("errors")
    for item in errors if isinstance(errors, list) else []:
        if isinstance(item, Mapping):
            param = item.get("param")
            found.append((str(param) if param else None, str(item.get("details"))))
        elif isinstance(item, str):
            found.append((None, item))
    detail = payload.get("detail")
    if isinstance(detail, str):
        found.append((None, detail))
    for item in detail if isinstance(detail, list) else []:
        if isinstance(item, Mapping):
            loc = item.get("loc")
            where = ".".join(str(part) for part in loc) if isinstance(loc, list) else ""
            found.append((where or None, str(item.get("msg"))))
    message = payload.get("message")
    if not found and isinstance(message, str):
        found.append((None, message))
    shown = [
        (scrub(where, secret) if where else where, _shorten(scrub(text, secret), 200))
        for where, text in found[:_DETAILS_SHOWN]
    ]
    if len(found) > _DETAILS_SHOWN:
        shown.append((None, f"and {len(found) - _DETAILS_SHOWN} more"))
    return shown


def _summarise_validation(exc: ValidationError) -> str:
    errors = exc.errors(include_url=False)
    parts = []
    for error in errors[:3]:
        where = ".".join(str(p) for p in error["loc"]) or "body"
        parts.append(f"{where}: {error['msg']}")
    more = len(errors) - 3
    return "; ".join(parts) + (f" (and {more} more problems)" if more > 0 else "")
