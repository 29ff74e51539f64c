from __future__ import annotations

import asyncio
import dataclasses
import json
import socket
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import pytest

from airflow_provider_prime.hooks import _clients
from airflow_provider_prime.hooks._clients import AsyncPrimeClient, PrimeClient
from airflow_provider_prime.hooks._exchange import Exchange, parse_identity, whoami_request
from airflow_provider_prime.hooks._settings import PrimeApiSettings
from airflow_provider_prime.hooks.prime import PrimeHook
from airflow_provider_prime.models import PodStatus
from tests.hooks.fakes import KEY, InMemoryAdapter, LoopbackServer, ScriptedApi, in_memory_transport


@pytest.fixture
def settings() -> PrimeApiSettings:
    """Fast settings: millisecond backoff, so retry tests cost nothing."""
    return PrimeApiSettings(
        base_url="https://api.prime.test",
        api_key=KEY,
        connect_timeout=2,
        read_timeout=2,
        max_retries=3,
        backoff_base=0.001,
        backoff_max=0.004,
        retry_after_max=0.05,
    )


@pytest.fixture
def delays(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Record the clients' backoff sleeps instead of sleeping."""
    recorded: list[float] = []

    async def asleep(delay: float) -> None:
        recorded.append(delay)

    monkeypatch.setattr(_clients, "_sleep", recorded.append)
    monkeypatch.setattr(_clients, "_asleep", asleep)
    return recorded


class Caller:
    """Runs the sync or the async client against a fake API, in memory or over real HTTP."""

    def __init__(self, kind: str, api: ScriptedApi, settings: PrimeApiSettings, base_url: str | None = None):
        self.kind = kind
        self.api = api
        self.settings = settings
        self.over_http = base_url is not None
        if base_url is not None:
            self.settings = dataclasses.replace(settings, base_url=base_url)

    def pods(self, pod_ids: Iterable[str], **overrides: Any) -> list[PodStatus]:
        ids = list(dict.fromkeys(pod_ids))
        return self.run(lambda client: client.get_pods_status(ids), **overrides)  # type: ignore[no-any-return]

    def whoami(self, **overrides: Any) -> str | None:
        return self.run(  # type: ignore[no-any-return]
            lambda client: client.call(
                Exchange(client.settings, whoami_request(client.settings), parse_identity)
            ),
            **overrides,
        )

    def run(self, use: Callable[[Any], Any], **overrides: Any) -> Any:
        """``use(client)`` on a fresh client of this kind; awaited when the client is async."""
        settings = dataclasses.replace(self.settings, **overrides)
        if self.kind == "sync":
            adapter = None if self.over_http else InMemoryAdapter(self.api)
            with PrimeClient(settings, adapter=adapter) as client:
                return use(client)

        async def run() -> Any:
            transport = None if self.over_http else in_memory_transport(self.api)
            async with AsyncPrimeClient(settings, transport=transport) as client:
                return await use(client)

        return asyncio.run(run())


@pytest.fixture(params=["sync", "async"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def api() -> ScriptedApi:
    return ScriptedApi()


@pytest.fixture
def mocked(kind: str, api: ScriptedApi, settings: PrimeApiSettings, delays: list[float]) -> Caller:
    """The ``kind`` client talking to ``api`` in memory (no sockets), sleeps recorded."""
    return Caller(kind, api, settings)


@pytest.fixture
def local_api(api: ScriptedApi) -> Iterator[LoopbackServer]:
    with LoopbackServer(api, stall=1.0) as server:
        yield server


@pytest.fixture
def over_http(kind: str, api: ScriptedApi, settings: PrimeApiSettings, local_api: LoopbackServer) -> Caller:
    """The ``kind`` client talking to ``api`` over real HTTP on 127.0.0.1 (real, tiny backoff)."""
    return Caller(kind, api, settings, base_url=local_api.base_url)


FAST_EXTRA = {"backoff_base": 0.001, "backoff_max": 0.002, "retry_after_max": 0.05}


@pytest.fixture
def set_conn(monkeypatch: pytest.MonkeyPatch) -> Callable[..., None]:
    """Define a connection the way users do in containers: AIRFLOW_CONN_<ID> as JSON."""

    def define(conn_id: str = "prime_default", **fields: Any) -> None:
        payload = {"conn_type": "prime", **fields}
        monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(payload))

    return define


class Twin:
    """Calls a hook method, or its async twin (``a`` + name), by ``kind``: one test checks both."""

    def __init__(self, kind: str, hook: PrimeHook) -> None:
        self.kind, self.hook = kind, hook

    def __call__(self, method: str, *args: Any, **kwargs: Any) -> Any:
        if self.kind == "sync":
            return getattr(self.hook, method)(*args, **kwargs)
        return asyncio.run(getattr(self.hook, f"a{method}")(*args, **kwargs))


@pytest.fixture
def twin(kind: str, local_api: LoopbackServer, set_conn: Callable[..., None]) -> Twin:
    """The hook on ``prime_default`` pointed at ``local_api`` (real HTTP), called sync or async."""
    set_conn(host=local_api.base_url, password=KEY, extra={**FAST_EXTRA, "read_timeout": 0.5})
    return Twin(kind, PrimeHook())


@pytest.fixture
def closed_port() -> Iterator[int]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        yield probe.getsockname()[1]  # bound but not listening: connections are refused
