"""One logical call to the Prime API, without I/O: judge each attempt's outcome, retry, or raise.

The sync and async clients in :mod:`._clients` only move bytes; they hand every answer, or the
:class:`~._errors.TransportFailure` that replaced it, to an :class:`Exchange`, which returns the
parsed result, says how long to wait before trying again, or raises the provider's typed error. So
the two clients cannot drift apart in how they judge answers or retry. The API key travels only in
the ``Authorization`` header (:func:`default_headers`), and every error leaves through
:meth:`Exchange.fail`, which scrubs the key from the message, the details and the cause chain.
"""

from __future__ import annotations

import email.utils
import logging
import math
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import timezone
from typing import Any, Generic, NoReturn, TypeVar

from airflow_provider_prime import __version__
from airflow_provider_prime.exceptions import (
    PrimeAPIError,
    PrimeRejectedError,
    PrimeResponseError,
    PrimeTransientError,
    is_transient,
)
from airflow_provider_prime.hooks._endpoints import ApiRequest
from airflow_provider_prime.hooks._errors import TransportFailure, excerpt, status_error
from airflow_provider_prime.hooks._payloads import NOT_JSON, PayloadError, decode_json
from airflow_provider_prime.hooks._secrets import scrub
from airflow_provider_prime.hooks._settings import PrimeApiSettings

log = logging.getLogger(__name__)

#: Answers a request that was refused before it was handled: resending cannot do anything twice.
_NOT_HANDLED = frozenset({429})

T = TypeVar("T")


@dataclass(frozen=True)
class ApiResponse:
    """An answer as read from the wire; ``headers`` must look up names case-insensitively."""

    status: int
    headers: Mapping[str, str]
    body: bytes


@dataclass(frozen=True)
class Retry:
    """Wait ``delay`` seconds, then send the same request again."""

    delay: float


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

    @property
    def secrets(self) -> tuple[str, ...]:
        """What no message may show: the key, and the request's own secrets (env values)."""
        return (self.settings.api_key, *self.request.secrets)

    def fail(self, error: PrimeAPIError) -> NoReturn:
        """Raise ``error`` scrubbed: the one way an error leaves the exchange."""
        raise self.scrubbed(error)

    def scrubbed(self, error: PrimeAPIError) -> PrimeAPIError:
        """A copy of ``error`` (same class) with the key gone from message, details and the cause chain.

        Only the provider's errors are kept in the chain: a library's exception may quote the body
        or the request, so it is never attached (and the copy suppresses ``__context__``).
        """
        secret = self.secrets
        clean = type(error)(
            scrub(str(error), secret),
            http_status=error.http_status,
            details=[scrub(detail, secret) for detail in error.details],
        )
        cause = error.__cause__
        clean.__cause__ = self.scrubbed(cause) if isinstance(cause, PrimeAPIError) else None
        clean.__suppress_context__ = True
        return clean

    def _gave_up(self, error: PrimeAPIError, what: str) -> PrimeTransientError:
        final = PrimeTransientError(f"{what}: {error}", http_status=error.http_status)
        final.__cause__ = error
        return final

    def _judge(self, response: ApiResponse) -> T:
        status = response.status
        if not 200 <= status < 300:
            raise status_error(self.request, status, response.body, self.secrets)
        if self.request.answer_ignored:
            # A delete's answer is read by nobody (the CLI ignores it too): a 200 whose body is
            # HTML, text or broken JSON still says the delete was accepted.
            return self.parse(None)
        if not response.body.strip() and self.parse_empty is not None:
            return self.parse_empty()
        # Errors are raised outside the except blocks: the decoder's and the parser's exceptions hold
        # the raw body, which must not stay reachable from ours as __context__ (see validated()).
        payload = decode_json(response.body)
        if payload is NOT_JSON and self.request.text_answer:
            payload = response.body.decode("utf-8", errors="replace")
        elif payload is NOT_JSON:
            shown = excerpt(response.body, self.secrets)
            raise PrimeResponseError(
                f"The Prime Intellect API answered HTTP {status} with a body that is not JSON while "
                f"{self.request.action} (is the API base URL right?): {shown}",
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
