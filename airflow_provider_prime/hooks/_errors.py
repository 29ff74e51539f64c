"""What a failed call means: an HTTP status or a transport failure as the provider's typed error.

Messages are written for the task log: what was being done, the HTTP status, what the API said
(bounded, scrubbed of the key) and what to do. A 404 is "no such pod" only when the API says so
(:func:`says_pod_not_found`); a TLS failure says what is likely wrong (:func:`transport_failure`).
"""

from __future__ import annotations

import re
import ssl
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

from airflow_provider_prime.exceptions import (
    PrimeAPIError,
    PrimeAuthError,
    PrimeBillingError,
    PrimeConnectionError,
    PrimeNotFoundError,
    PrimeRequestError,
    PrimeResponseError,
    PrimeSoldOutError,
    PrimeTransientError,
)
from airflow_provider_prime.hooks._endpoints import ApiRequest
from airflow_provider_prime.hooks._payloads import decode_json
from airflow_provider_prime.hooks._secrets import scrub
from airflow_provider_prime.hooks._settings import DEFAULT_BASE_URL, is_loopback

_EXCERPT_CHARS = 200
_DETAILS_SHOWN = 5
#: Also retried for requests that are safe to repeat (GET, DELETE).
TRANSIENT_STATUSES = frozenset({408, 429})
_PLAIN_HTTP_MARKERS = ("WRONG_VERSION_NUMBER", "record layer failure", "packet length too long")
#: Phrases (lower case) of a refused create's text that mean "no capacity for this offer now". The API
#: has no code for it (FACTS.md: "the text varies"): the simulator says "Offer <id> is out of stock";
#: the others are the wordings GPU clouds use for the same thing. Matched as whole words, in any case,
#: with ``_``, ``-`` and camel case read as spaces ("OUT_OF_STOCK", "sold-out", "OutOfStock").
SOLD_OUT_PHRASES: tuple[str, ...] = (
    "out of stock",
    "sold out",
    "no stock",
    "insufficient stock",
    "not in stock",
    "no capacity",
    "insufficient capacity",
    "not enough capacity",
    "out of capacity",
)
#: "Not available" says nothing by itself: an image, a disk size or a template is "not available"
#: too, and calling that sold out would wait on (and retry) a create that can never succeed. It
#: means sold out only when what is unavailable is one of these: the nearest of
#: :data:`_OTHER_SUBJECTS` or these words before it (within :data:`_SUBJECT_WINDOW` words, quoted
#: names left out) must be one of them ("The requested GPUs are not available", "Offer x is no
#: longer available"; not "Image 'gpu-x' is not available").
UNAVAILABLE_PHRASES: tuple[str, ...] = (
    "not available",
    "no longer available",
    "unavailable",
    "isn t available",
    "aren t available",
)
CAPACITY_SUBJECTS = frozenset(
    {"offer", "offers", "gpu", "gpus", "capacity", "stock", "instance", "instances", "provider", "providers"}
)
_OTHER_SUBJECTS = frozenset(
    {
        "image",
        "images",
        "template",
        "templates",
        "disk",
        "disks",
        "volume",
        "volumes",
        "field",
        "team",
        "key",
        "file",
        "script",
        "version",
        "feature",
        "option",
        "parameter",
        "network",
        "port",
        "user",
        "account",
    }
)
_SUBJECT_WINDOW = 6
#: Camel case: "OutOfStock", "GPUSoldOut" (not "GPUs": an acronym's plural stays one word).
_CAMEL = re.compile(r"(?<=[a-z])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z]{2})")
#: A quoted name ('ghcr.io/acme/gpu-train:v9', "tpl-1"): its words are not the sentence's words.
_QUOTED = re.compile(r"""(?<!\w)(['"`])[^'"`]*?\1(?!\w)""")


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


def status_error(request: ApiRequest, status: int, body: bytes, secret: str | Sequence[str]) -> PrimeAPIError:
    """The typed error of a non-2xx answer to ``request`` (``secret``, the key, is kept out of it)."""
    found = error_details(body, secret)
    details = [f"{where}: {text}" if where else text for where, text in found]
    said = "; ".join(details) if details else excerpt(body, secret)
    said_part = f" The API said: {said}" if said else ""
    where = f"while {request.action}"
    permission = request.permission
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
        if request.missing is not None and says_pod_not_found(body, request.pod_id):
            return PrimeNotFoundError(f"{request.missing} (HTTP 404 {where}).{said_part}", http_status=status)
        about = (
            f", and the answer does not say that pod {request.pod_id} was not found" if request.pod_id else ""
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
    if status in TRANSIENT_STATUSES or status >= 500:
        return PrimeTransientError(f"HTTP {status} {where}.{said_part}", http_status=status)
    if 400 <= status < 500:
        texts = [text for _, text in found] or [said]
        if request.method == "POST" and not request.idempotent and says_sold_out(texts):
            return PrimeSoldOutError(
                f"The offer sold out (HTTP {status}) {where}, nothing was created: choose another offer "
                "(PrimeHook.list_gpu_offers) and create the pod again, or let the create operator wait "
                f"for capacity (wait_for_capacity=...).{said_part}",
                http_status=status,
                details=details,
            )
        fields = [name for name, _ in found if name]
        named = f" field {', '.join(fields)}" if fields else " the request"
        headline = f"The Prime Intellect API rejected{named} (HTTP {status}) {where}."
        return PrimeRequestError(headline + said_part, http_status=status, details=details)
    return PrimeResponseError(f"Unexpected HTTP {status} {where}.{said_part}", http_status=status)


def says_sold_out(texts: Sequence[str]) -> bool:
    """Whether any of ``texts`` (what a refused create said) says the offer has no capacity now.

    True for one of :data:`SOLD_OUT_PHRASES`, or one of :data:`UNAVAILABLE_PHRASES` said of an
    offer, GPU, capacity, stock, instance or provider (:data:`CAPACITY_SUBJECTS`).
    """
    for text in texts:
        words = _words(text)
        flat = f" {' '.join(words)} "
        if any(f" {phrase} " in flat for phrase in SOLD_OUT_PHRASES):
            return True
        if _says_capacity_unavailable(_words(_QUOTED.sub(" ", text))):
            return True
    return False


def _words(text: str) -> list[str]:
    """The lower-case words of ``text``: camel case, ``_``, ``-`` and punctuation split words."""
    return re.findall(r"[a-z0-9]+", _CAMEL.sub(" ", text).lower())


def _says_capacity_unavailable(words: list[str]) -> bool:
    for phrase in UNAVAILABLE_PHRASES:
        size = len(phrase.split())
        for end in range(size, len(words) + 1):
            if " ".join(words[end - size : end]) != phrase:
                continue
            before = words[max(0, end - size - _SUBJECT_WINDOW) : end - size]
            subject = next(
                (word for word in reversed(before) if word in CAPACITY_SUBJECTS or word in _OTHER_SUBJECTS),
                None,
            )
            if subject in CAPACITY_SUBJECTS:
                return True
    return False


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
    payload = decode_json(body)
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


def excerpt(body: bytes, secret: str | Sequence[str] = "") -> str:
    """A short, readable excerpt of a body (HTML tags dropped): enough to tell a proxy page from JSON.

    The key is scrubbed from the whole body before anything is cut or reflowed: a key straddling
    the cut would otherwise survive as a prefix (scrubbing finds only whole keys).
    """
    text = scrub(body.decode("utf-8", errors="replace"), secret)[: _EXCERPT_CHARS * 8]
    text = re.sub(r"<[^>]*>", " ", text)
    return _shorten(text, _EXCERPT_CHARS) if text.strip() else "(empty body)"


def error_details(body: bytes, secret: str | Sequence[str] = "") -> list[tuple[str | None, str]]:
    """(field, text) pairs from ``{"errors": [{param, details}]}``, ``{"detail": str | [{loc, msg}]}``
    or ``{"message": str}``; bounded, so a huge error body cannot make a huge message. Each text
    is scrubbed of the key before it is shortened."""
    payload = decode_json(body)
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
