"""The two HTTP clients: :class:`PrimeClient` (requests, for workers) and :class:`AsyncPrimeClient` (httpx).

Each only moves bytes: it sends an :class:`~._transport.ApiRequest`, reads a bounded body, maps its
library's exceptions to a :class:`~._transport.TransportFailure`, and lets an
:class:`~._transport.Exchange` decide what the outcome means. Building requests, parsing answers,
mapping errors and the retry policy live in :mod:`._transport`, shared by both.
"""

from __future__ import annotations

import asyncio
import functools
import os
import ssl
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

import httpx

from airflow_provider_prime.hooks._settings import PrimeApiSettings
from airflow_provider_prime.hooks._transport import (
    MAX_RESPONSE_BYTES,
    ApiRequest,
    ApiResponse,
    Exchange,
    ResponseTooLarge,
    Retry,
    TransportFailure,
    check_declared_length,
    chunk_pod_ids,
    default_headers,
    parse_identity,
    parse_pod_statuses,
    status_request,
    too_large_failure,
    transport_failure,
    whoami_request,
)
from airflow_provider_prime.models import PodStatus

if TYPE_CHECKING:
    import requests.adapters

#: Status requests of one call in flight at once (async client); enough for thousands of pods.
CHUNK_CONCURRENCY = 4
_READ_CHUNK = 64 * 1024

# Indirections so tests can record the backoff delays instead of sleeping through them.
_sleep: Callable[[float], None] = time.sleep
_asleep: Callable[[float], Any] = asyncio.sleep

T = TypeVar("T")


class PrimeClient:
    """Synchronous client on one :class:`requests.Session`; use it as a context manager or ``close()`` it.

    ``adapter`` replaces the session's HTTP(S) adapter (a test double, or a custom pool).
    """

    def __init__(
        self, settings: PrimeApiSettings, *, adapter: requests.adapters.BaseAdapter | None = None
    ) -> None:
        # Imported here, not at module level: the triggerer imports this module inside its event
        # loop and never needs requests (about 0.25 s of import time it would block for).
        import requests

        self.settings = settings
        self._session = requests.Session()
        self._session.headers.update(default_headers(settings, f"python-requests/{requests.__version__}"))
        if adapter is not None:
            self._session.mount("https://", adapter)
            self._session.mount("http://", adapter)

    def get_pods_status(self, pod_ids: Iterable[str]) -> list[PodStatus]:
        """Statuses of the given pods (de-duplicated, 100 per request); unknown ids are simply absent."""
        statuses: list[PodStatus] = []
        for chunk in chunk_pod_ids(pod_ids):
            statuses.extend(self._call(status_request(self.settings, chunk), parse_pod_statuses))
        return statuses

    def whoami(self) -> str | None:
        """Check the key with ``GET /api/v1/user/whoami``; returns the name/email it belongs to, if given."""
        return self._call(whoami_request(self.settings), parse_identity)

    def close(self) -> None:
        self._session.close()

    def __enter__(self) -> PrimeClient:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _call(self, request: ApiRequest, parse: Callable[[Any], T]) -> T:
        exchange = Exchange(self.settings, request, parse)
        while True:
            outcome = exchange.settle(self._send(request))
            if not isinstance(outcome, Retry):
                return outcome
            _sleep(outcome.delay)

    def _send(self, request: ApiRequest) -> ApiResponse | TransportFailure:
        import requests  # already loaded by __init__; see there

        try:
            with self._session.get(
                request.url,
                params=list(request.params),
                timeout=(self.settings.connect_timeout, self.settings.read_timeout),
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
        except requests.Timeout as exc:
            return transport_failure(exc, timeout=True)
        except requests.TooManyRedirects as exc:
            return TransportFailure(f"Too many redirects ({exc})", retryable=False)
        except requests.RequestException as exc:
            return transport_failure(exc, timeout=False)


class AsyncPrimeClient:
    """Asynchronous client on one :class:`httpx.AsyncClient`; reusable across calls and event-loop friendly.

    ``transport`` replaces httpx's transport (e.g. ``httpx.MockTransport`` in tests).
    """

    def __init__(
        self, settings: PrimeApiSettings, *, transport: httpx.AsyncBaseTransport | None = None
    ) -> None:
        self.settings = settings
        self._transport = transport
        self._client: httpx.AsyncClient | None = None
        self._closed = False
        self._building = asyncio.Lock()
        self._chunk_slots = asyncio.Semaphore(CHUNK_CONCURRENCY)

    async def get_pods_status(self, pod_ids: Iterable[str]) -> list[PodStatus]:
        """Statuses of the given pods; chunks of 100 are fetched concurrently (at most 4 at once)."""
        chunks = chunk_pod_ids(pod_ids)
        if len(chunks) == 1:
            return await self._status_chunk(chunks[0])
        tasks = [asyncio.ensure_future(self._status_chunk(chunk)) for chunk in chunks]
        try:
            pages = await asyncio.gather(*tasks)
        except BaseException:
            # One chunk failed (or we were cancelled): stop the others and leave nothing running.
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise
        return [status for page in pages for status in page]

    async def whoami(self) -> str | None:
        """Async twin of :meth:`PrimeClient.whoami`."""
        return await self._call(whoami_request(self.settings), parse_identity)

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

    async def _status_chunk(self, chunk: list[str]) -> list[PodStatus]:
        async with self._chunk_slots:
            return await self._call(status_request(self.settings, chunk), parse_pod_statuses)

    async def _call(self, request: ApiRequest, parse: Callable[[Any], T]) -> T:
        exchange = Exchange(self.settings, request, parse)
        while True:
            outcome = exchange.settle(await self._send(request))
            if not isinstance(outcome, Retry):
                return outcome
            await _asleep(outcome.delay)

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
            timeout=httpx.Timeout(self.settings.read_timeout, connect=self.settings.connect_timeout),
            verify=_ssl_context(self.settings.verify),
            follow_redirects=True,
            transport=self._transport,
        )

    async def _send(self, request: ApiRequest) -> ApiResponse | TransportFailure:
        client = await self._http()
        try:
            async with client.stream("GET", request.url, params=list(request.params)) as response:
                check_declared_length(response.headers)
                body = await _aread_bounded(response.aiter_bytes(_READ_CHUNK))
                return ApiResponse(response.status_code, response.headers, body)
        except ResponseTooLarge:
            return too_large_failure()
        except httpx.TimeoutException as exc:
            return transport_failure(exc, timeout=True)
        except httpx.TooManyRedirects as exc:
            return TransportFailure(f"Too many redirects ({exc})", retryable=False)
        except httpx.HTTPError as exc:
            return transport_failure(exc, timeout=False)


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


__all__ = ["CHUNK_CONCURRENCY", "AsyncPrimeClient", "PrimeClient"]
