"""The two HTTP clients: :class:`PrimeClient` (requests, for workers) and :class:`AsyncPrimeClient` (httpx).

Two libraries, on purpose. The sync path uses ``requests``: it is what the provider's users and
Airflow's own HTTP-based providers expect (sessions, adapters, ``REQUESTS_CA_BUNDLE``), and it is
a declared dependency. The async path uses ``httpx``: truly asynchronous (a triggerer's event loop
must never block) and already shipped with Airflow. Each client only moves bytes: it sends an
:class:`~._exchange.ApiRequest`, reads a bounded body, maps its library's exceptions to a
:class:`~._exchange.TransportFailure` (including whether the request may have been sent), and lets
an :class:`~._exchange.Exchange` decide what the outcome means. Building requests, parsing answers,
mapping and scrubbing errors and the retry policy live in :mod:`._exchange`, shared by both.
"""

from __future__ import annotations

import asyncio
import functools
import os
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

import httpx

from airflow_provider_prime.exceptions import PrimeAPIError, PrimeResponseError
from airflow_provider_prime.hooks._endpoints import ApiRequest, chunk_pod_ids, status_request
from airflow_provider_prime.hooks._errors import TransportFailure, too_many_redirects, transport_failure
from airflow_provider_prime.hooks._exchange import (
    ApiResponse,
    DeliveryUnknown,
    Exchange,
    Retry,
    default_headers,
)
from airflow_provider_prime.hooks._payloads import parse_pod_statuses
from airflow_provider_prime.hooks._plans import Pause, Plan
from airflow_provider_prime.hooks._settings import PrimeApiSettings
from airflow_provider_prime.models import PodStatus

if TYPE_CHECKING:
    import requests.adapters

#: Status requests of one call in flight at once (async client); enough for thousands of pods.
CHUNK_CONCURRENCY = 4
#: A response body larger than this is refused, so a broken or hostile endpoint cannot fill memory.
MAX_RESPONSE_BYTES = 10 * 1024 * 1024
_READ_CHUNK = 64 * 1024

#: How a client waits between attempts and on a plan's pauses (``time.sleep``, or a test's recorder).
Sleep = Callable[[float], None]
#: The async client's wait (``asyncio.sleep``, or a test's recorder).
AsyncSleep = Callable[[float], Awaitable[Any]]

T = TypeVar("T")


class ResponseTooLarge(Exception):
    """Raised by the body readers when a body exceeds :data:`MAX_RESPONSE_BYTES`."""


class PrimeClient:
    """Synchronous client on one :class:`requests.Session`; use it as a context manager or ``close()`` it.

    ``adapter`` replaces the session's HTTP(S) adapter (a test double, or a custom pool); ``sleep``
    is how it waits between attempts (a test records the delays instead).
    """

    def __init__(
        self,
        settings: PrimeApiSettings,
        *,
        adapter: requests.adapters.BaseAdapter | None = None,
        sleep: Sleep = time.sleep,
    ) -> None:
        # Imported here, not at module level: the triggerer imports this module inside its event
        # loop and never needs requests (about 0.25 s of import time it would block for).
        import requests

        self.settings = settings
        self._sleep = sleep
        self._session = requests.Session()
        self._session.headers.update(default_headers(settings, f"python-requests/{requests.__version__}"))
        if adapter is not None:
            self._session.mount("https://", adapter)
            self._session.mount("http://", adapter)

    def get_pods_status(self, pod_ids: Iterable[str], deadline: float | None = None) -> list[PodStatus]:
        """Statuses of the given (validated, unique) pods, 100 per request; unknown ids are absent."""
        statuses: list[PodStatus] = []
        for chunk in chunk_pod_ids(list(pod_ids)):
            request = status_request(self.settings, chunk)
            page: list[PodStatus] = self.call(Exchange(self.settings, request, parse_pod_statuses, deadline))
            statuses.extend(page)
        return statuses

    def call(self, exchange: Exchange[T]) -> T:
        """Send ``exchange.request`` until the exchange gives a result (or raises)."""
        while True:
            outcome = exchange.settle(self._send(exchange.request, exchange.timeouts()))
            if not isinstance(outcome, Retry):
                return outcome
            self._sleep(outcome.delay)

    def run(self, plan: Plan[T]) -> T:
        """Run ``plan`` (see :mod:`._plans`): each exchange it yields is called, its result sent back;
        each :class:`~._plans.Pause` is slept."""
        step = next(plan)
        while True:
            try:
                if isinstance(step, Pause):
                    self._sleep(step.seconds)
                    result, error = None, None
                else:
                    result, error = self.call(step), None
            except (PrimeAPIError, DeliveryUnknown) as exc:
                result, error = None, exc
            try:  # outside the except block: a plan's own errors get no __context__ from ours
                step = plan.send(result) if error is None else plan.throw(error)
            except StopIteration as done:
                return done.value  # type: ignore[no-any-return]

    def close(self) -> None:
        self._session.close()

    def __enter__(self) -> PrimeClient:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _send(self, request: ApiRequest, timeouts: tuple[float, float]) -> ApiResponse | TransportFailure:
        import requests  # already loaded by __init__; see there
        from urllib3.exceptions import NewConnectionError

        try:
            with self._session.request(
                request.method,
                request.url,
                params=list(request.params),
                json=request.body,
                timeout=timeouts,
                # Per request: a session-level value loses to REQUESTS_CA_BUNDLE (requests#3829).
                verify=self.settings.verify,
                stream=True,
                allow_redirects=True,
            ) as response:
                check_declared_length(response.headers)
                body = _read_bounded(response.iter_content(_READ_CHUNK))
                return ApiResponse(response.status_code, response.headers, body)
        except ResponseTooLarge:
            return too_large_failure()
        except requests.TooManyRedirects as exc:
            return too_many_redirects(exc)
        except requests.ConnectTimeout as exc:
            return transport_failure(exc, request.url, timeout=True, sent=False, secret=self.settings.api_key)
        except requests.Timeout as exc:
            return transport_failure(exc, request.url, timeout=True, sent=True, secret=self.settings.api_key)
        except requests.RequestException as exc:
            # urllib3 reports "no connection was made" (refused, DNS) as NewConnectionError, nested.
            never_sent = isinstance(exc, requests.ConnectionError) and _nested(exc, NewConnectionError)
            return transport_failure(
                exc, request.url, timeout=False, sent=not never_sent, secret=self.settings.api_key
            )


class AsyncPrimeClient:
    """Asynchronous client on one :class:`httpx.AsyncClient`; reusable across calls and event-loop friendly.

    ``transport`` replaces httpx's transport (e.g. ``httpx.MockTransport`` in tests); ``sleep`` is
    how it waits between attempts.
    """

    def __init__(
        self,
        settings: PrimeApiSettings,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        sleep: AsyncSleep = asyncio.sleep,
    ) -> None:
        self.settings = settings
        self._sleep = sleep
        self._transport = transport
        self._client: httpx.AsyncClient | None = None
        self._closed = False
        self._building = asyncio.Lock()
        self._chunk_slots = asyncio.Semaphore(CHUNK_CONCURRENCY)

    async def get_pods_status(self, pod_ids: Iterable[str], deadline: float | None = None) -> list[PodStatus]:
        """Statuses of the given pods; chunks of 100 are fetched concurrently (at most 4 at once)."""
        chunks = chunk_pod_ids(list(pod_ids))
        if len(chunks) == 1:
            return await self._status_chunk(chunks[0], deadline)
        tasks = [asyncio.ensure_future(self._status_chunk(chunk, deadline)) for chunk in chunks]
        try:
            pages = await asyncio.gather(*tasks)
        except BaseException:
            # One chunk failed (or we were cancelled): stop the others and leave nothing running.
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise
        return [status for page in pages for status in page]

    async def call(self, exchange: Exchange[T]) -> T:
        """Async twin of :meth:`PrimeClient.call`."""
        while True:
            outcome = exchange.settle(await self._send(exchange.request, exchange.timeouts()))
            if not isinstance(outcome, Retry):
                return outcome
            await self._sleep(outcome.delay)

    async def run(self, plan: Plan[T]) -> T:
        """Async twin of :meth:`PrimeClient.run`."""
        step = next(plan)
        while True:
            try:
                if isinstance(step, Pause):
                    await self._sleep(step.seconds)
                    result, error = None, None
                else:
                    result, error = await self.call(step), None
            except (PrimeAPIError, DeliveryUnknown) as exc:
                result, error = None, exc
            try:
                step = plan.send(result) if error is None else plan.throw(error)
            except StopIteration as done:
                return done.value  # type: ignore[no-any-return]

    async def aclose(self) -> None:
        self._closed = True
        if self._client is not None:
            await self._client.aclose()

    async def __aenter__(self) -> AsyncPrimeClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def _status_chunk(self, chunk: list[str], deadline: float | None) -> list[PodStatus]:
        async with self._chunk_slots:
            exchange = Exchange(
                self.settings, status_request(self.settings, chunk), parse_pod_statuses, deadline
            )
            return await self.call(exchange)

    async def _http(self) -> httpx.AsyncClient:
        # Built on first use in a worker thread: the first httpx client of a process imports its
        # HTTP stack and a TLS context loads CA certificates, up to a second of blocking work that
        # must not stall a triggerer's event loop.
        if self._client is None:
            async with self._building:  # concurrent first chunks wait for one build
                if self._closed:
                    raise RuntimeError("AsyncPrimeClient is closed")
                if self._client is None:
                    self._client = await asyncio.to_thread(self._build_client)
        return self._client

    def _build_client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            headers=default_headers(self.settings, f"python-httpx/{httpx.__version__}"),
            verify=_ssl_context(self.settings.verify),
            follow_redirects=True,
            transport=self._transport,
        )

    async def _send(
        self, request: ApiRequest, timeouts: tuple[float, float]
    ) -> ApiResponse | TransportFailure:
        client = await self._http()
        connect, read = timeouts
        try:
            async with client.stream(
                request.method,
                request.url,
                params=list(request.params),
                json=request.body,
                timeout=httpx.Timeout(read, connect=connect),
            ) as response:
                check_declared_length(response.headers)
                body = await _aread_bounded(response.aiter_bytes(_READ_CHUNK))
                return ApiResponse(response.status_code, response.headers, body)
        except ResponseTooLarge:
            return too_large_failure()
        except httpx.TooManyRedirects as exc:
            return too_many_redirects(exc)
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            # No connection was made (refused, DNS, TLS handshake, no free slot): nothing was sent.
            return transport_failure(
                exc,
                request.url,
                timeout=isinstance(exc, httpx.TimeoutException),
                sent=False,
                secret=self.settings.api_key,
            )
        except httpx.TimeoutException as exc:
            return transport_failure(exc, request.url, timeout=True, sent=True, secret=self.settings.api_key)
        except httpx.HTTPError as exc:
            return transport_failure(exc, request.url, timeout=False, sent=True, secret=self.settings.api_key)


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


def _nested(exc: BaseException, kind: type[BaseException]) -> bool:
    """Whether ``kind`` is somewhere in the exceptions requests/urllib3 nest in ``exc``."""
    current: object = exc
    for _ in range(8):
        if isinstance(current, kind):
            return True
        if not isinstance(current, BaseException):
            return False
        current = getattr(current, "reason", None) or (current.args[0] if current.args else None)
    return False


def _read_bounded(chunks: Iterator[bytes]) -> bytes:
    body = bytearray()
    for chunk in chunks:
        body += chunk
        if len(body) > MAX_RESPONSE_BYTES:
            raise ResponseTooLarge
    return bytes(body)


async def _aread_bounded(chunks: AsyncIterator[bytes]) -> bytes:
    body = bytearray()
    async for chunk in chunks:
        body += chunk
        if len(body) > MAX_RESPONSE_BYTES:
            raise ResponseTooLarge
    return bytes(body)


def _ssl_context(verify: bool | str) -> ssl.SSLContext:
    """The TLS context for ``verify``, built once per process (and per CA environment variables).

    Loading a CA bundle costs about 0.1 s of CPU, and httpx does it in every ``AsyncClient()``;
    contexts are safe to share between clients. httpx 0.28 deprecates a CA bundle path for
    ``verify``; an SSLContext works on every version.
    """
    return _cached_ssl_context(verify, os.environ.get("SSL_CERT_FILE"), os.environ.get("SSL_CERT_DIR"))


@functools.lru_cache(maxsize=8)
def _cached_ssl_context(verify: bool | str, cert_file: str | None, cert_dir: str | None) -> ssl.SSLContext:
    # cert_file/cert_dir are only cache keys: httpx reads them itself for verify=True.
    if isinstance(verify, str):
        return ssl.create_default_context(cafile=verify)
    return httpx.create_ssl_context(verify=verify)
