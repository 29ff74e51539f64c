from __future__ import annotations

import json
import socket
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from airflow_provider_prime.hooks._settings import PrimeApiSettings
from tests.hooks.callers import Caller, Pauses, Twin
from tests.hooks.fakes import KEY, LoopbackServer, ScriptedApi
from tests.simulated import FAST_RETRY


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
def delays() -> Pauses:
    """The clients' and hooks' backoff sleeps, recorded instead of slept (give it as ``sleep=``)."""
    return Pauses()


@pytest.fixture(params=["sync", "async"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def api() -> ScriptedApi:
    return ScriptedApi()


@pytest.fixture
def mocked(kind: str, api: ScriptedApi, settings: PrimeApiSettings, delays: Pauses) -> Caller:
    """The ``kind`` client talking to ``api`` in memory (no sockets), sleeps recorded."""
    return Caller(kind, api, settings, pauses=delays)


@pytest.fixture
def local_api(api: ScriptedApi) -> Iterator[LoopbackServer]:
    with LoopbackServer(api, stall=1.0) as server:
        yield server


@pytest.fixture
def over_http(kind: str, api: ScriptedApi, settings: PrimeApiSettings, local_api: LoopbackServer) -> Caller:
    """The ``kind`` client talking to ``api`` over real HTTP on 127.0.0.1 (real, tiny backoff)."""
    return Caller(kind, api, settings, base_url=local_api.base_url)


@pytest.fixture
def set_conn(monkeypatch: pytest.MonkeyPatch) -> Callable[..., None]:
    """Define a connection the way users do in containers: AIRFLOW_CONN_<ID> as JSON."""

    def define(conn_id: str = "prime_default", **fields: Any) -> None:
        payload = {"conn_type": "prime", **fields}
        monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(payload))

    return define


@pytest.fixture
def twin(kind: str, local_api: LoopbackServer, set_conn: Callable[..., None], delays: Pauses) -> Twin:
    """The hook on ``prime_default`` pointed at ``local_api`` (real HTTP), called sync or async."""
    set_conn(host=local_api.base_url, password=KEY, extra={**FAST_RETRY, "read_timeout": 0.5})
    return Twin.on(kind, delays)


@pytest.fixture
def closed_port() -> Iterator[int]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        yield probe.getsockname()[1]  # bound but not listening: connections are refused
