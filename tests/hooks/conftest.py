from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Iterable, Iterator
from typing import Any

import pytest

from airflow_provider_prime.hooks import _clients
from airflow_provider_prime.hooks.prime import AsyncPrimeClient, PrimeApiSettings, PrimeClient
from airflow_provider_prime.models import PodStatus
from tests.hooks.fakes import KEY, FakeApi, LocalApi, ScriptAdapter, script_transport

ENV_VARS = ("PRIME_API_KEY", "PRIME_API_BASE_URL", "PRIME_BASE_URL", "AIRFLOW_CONN_PRIME_DEFAULT")


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    # A developer's own PRIME_API_KEY or connection must not leak into these tests.
    for name in ENV_VARS:
        monkeypatch.delenv(name, raising=False)


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

    def __init__(self, kind: str, api: FakeApi, settings: PrimeApiSettings, base_url: str | None = None):
        self.kind = kind
        self.api = api
        self.settings = settings
        self.over_http = base_url is not None
        if base_url is not None:
            self.settings = dataclasses.replace(settings, base_url=base_url)

    def _settings(self, overrides: dict[str, Any]) -> PrimeApiSettings:
        return dataclasses.replace(self.settings, **overrides)

    def pods(self, pod_ids: Iterable[str], **overrides: Any) -> list[PodStatus]:
        return self._run("get_pods_status", pod_ids, overrides)

    def whoami(self, **overrides: Any) -> str | None:
        return self._run("whoami", None, overrides)

    def _run(self, method: str, arg: Any, overrides: dict[str, Any]) -> Any:
        settings = self._settings(overrides)
        args = () if arg is None else (arg,)
        if self.kind == "sync":
            adapter = None if self.over_http else ScriptAdapter(self.api)
            with PrimeClient(settings, adapter=adapter) as client:
                return getattr(client, method)(*args)

        async def run() -> Any:
            transport = None if self.over_http else script_transport(self.api)
            async with AsyncPrimeClient(settings, transport=transport) as client:
                return await getattr(client, method)(*args)

        return asyncio.run(run())


@pytest.fixture(params=["sync", "async"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def api() -> FakeApi:
    return FakeApi()


@pytest.fixture
def mocked(kind: str, api: FakeApi, settings: PrimeApiSettings, delays: list[float]) -> Caller:
    """The ``kind`` client talking to ``api`` in memory (no sockets), sleeps recorded."""
    return Caller(kind, api, settings)


@pytest.fixture
def local_api(api: FakeApi) -> Iterator[LocalApi]:
    with LocalApi(api, stall=1.0) as server:
        yield server


@pytest.fixture
def over_http(kind: str, api: FakeApi, settings: PrimeApiSettings, local_api: LocalApi) -> Caller:
    """The ``kind`` client talking to ``api`` over real HTTP on 127.0.0.1 (real, tiny backoff)."""
    return Caller(kind, api, settings, base_url=local_api.base_url)
