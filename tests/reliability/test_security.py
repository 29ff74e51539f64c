"""Security: the API key never leaks; plain http only on loopback; TLS verified; bodies bounded.

The leak test runs every path a key could escape through (success, each kind of failure, an API
that echoes the key back in its error bodies) with a recognisable key, then scans everything that
was captured: log records and structlog events, stdout/stderr at the file-descriptor level,
exception texts, reprs and tracebacks, trigger kwargs and events, the sensor's XCom value and
rendered template fields, the hook's and settings' reprs. It does not rely on Airflow's log
masking: the captured records are taken before any masking would apply.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import traceback
import tracemalloc
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests
import structlog

from airflow_provider_prime.exceptions import PrimeAPIError, PrimeConfigError, PrimeError, PrimeResponseError
from airflow_provider_prime.hooks._clients import MAX_RESPONSE_BYTES, PrimeClient
from airflow_provider_prime.hooks._settings import (
    PrimeApiSettings,
    settings_from_connection,
    settings_from_environment,
)
from airflow_provider_prime.hooks.prime import PrimeHook
from airflow_provider_prime.sensors.pod_status import PodStatusSensor
from airflow_provider_prime.testing import (
    STATUS_PATH,
    Fault,
    PrimeSimulator,
    PrimeSimulatorProcess,
    Scenario,
    fixed_pod,
)
from airflow_provider_prime.triggers.pod_status import PodStatusTrigger
from tests.reliability.cases import EXTRA, MIB, POD
from tests.reliability.conftest import Observations

#: A key nobody could mistake for anything else, so finding it anywhere is a leak.
SECRET = "pk-LEAK-CANARY-7d3f9a1c5e2b4086"
WAITING = "pod-waiting"


class Evidence:
    """Everything the leak test produced, gathered as text for one scan."""

    def __init__(self) -> None:
        self.texts: list[str] = []

    def add(self, *values: Any) -> None:
        for value in values:
            self.texts.append(value if isinstance(value, str) else repr(value))

    def error(self, exc: BaseException) -> None:
        """The exception, its chain, their reprs and the formatted traceback."""
        seen: BaseException | None = exc
        while seen is not None:
            self.add(str(seen), repr(seen), getattr(seen, "details", ""))
            seen = seen.__cause__ or seen.__context__
        self.add("".join(traceback.format_exception(exc)))

    def blob(self) -> str:
        return "\n".join(self.texts)


def poke_until_done_or_error(sensor: PodStatusSensor, evidence: Evidence, pokes: int = 1) -> Any:
    for _ in range(pokes):
        try:
            result = sensor.poke({})
        except PrimeError as exc:
            evidence.error(exc)
            return exc
        if result:
            return result
    return False


async def trigger_event(conn_id: str, pod_ids: list[str], seconds: float) -> dict[str, Any]:
    trigger = PodStatusTrigger(
        pod_ids=pod_ids, deadline=time.time() + seconds, prime_conn_id=conn_id, poll_interval=0.1
    )
    (event,) = [event.payload async for event in trigger.run()]
    assert isinstance(event, dict)
    return event


@pytest.fixture
def leaky_sim(
    prime_simulator_factory: Callable[..., PrimeSimulator], prime_connect: Callable[..., str]
) -> PrimeSimulator:
    """A simulator that accepts only SECRET, and ``prime_default`` holding SECRET."""
    sim = prime_simulator_factory([fixed_pod(POD), fixed_pod(WAITING, "PROVISIONING")], api_keys=(SECRET,))
    prime_connect(sim, api_key=SECRET)
    return sim


#: Faults whose bodies carry the key back, as a broken proxy or a debugging endpoint might.
ECHOES = [
    Fault.http_error(422, body_shape="errors", message=f"bad header 'Authorization: Bearer {SECRET}'"),
    Fault.http_error(422, body_shape="detail", message=f"token {SECRET} is malformed"),
    Fault.http_error(403, body_shape="detail", message=f"key {SECRET} lacks Instances → Read"),
    Fault.raw(f"<html><body>debug: Authorization: Bearer {SECRET}</body></html>", content_type="text/html"),
    Fault.json_reply({"data": f"Bearer {SECRET}"}),  # wrong shape, the key inside it
]


async def test_the_api_key_never_appears_in_anything_captured(
    leaky_sim: PrimeSimulator,
    prime_connect: Callable[..., str],
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
    observations: Observations,
    request: pytest.FixtureRequest,
) -> None:
    caplog.set_level(logging.DEBUG)  # urllib3, httpx and httpcore debug lines included
    evidence = Evidence()
    with structlog.testing.capture_logs() as structured:
        # the sync path: templated ids rendered, a successful poke, the hook and its settings
        sensor = PodStatusSensor(
            task_id="wait_for_pods", pod_ids=["{{ params.pod }}"], poke_interval=0.1, deferrable=False
        )
        sensor.render_template_fields({"params": {"pod": POD}})
        ready = poke_until_done_or_error(sensor, evidence)
        evidence.add(sensor.pod_ids, repr(sensor), json.dumps(ready.xcom_value))
        hook = PrimeHook()
        settings = hook.get_settings()
        evidence.add(repr(hook), repr(settings), str(settings), settings.fingerprint, hook.test_connection())

        # the async path: success, the serialized kwargs, the event, the sensor's resumption
        trigger = PodStatusTrigger(pod_ids=[POD], deadline=time.time() + 10, poll_interval=0.1)
        (event,) = [e.payload async for e in trigger.run()]
        evidence.add(trigger.serialize(), repr(trigger), json.dumps(event))
        evidence.add(json.dumps(sensor.execute_complete({}, event)))

        # the API echoes the key back: both paths must scrub it from every message
        for echo in ECHOES:
            leaky_sim.inject(echo.model_copy(update={"times": 2}))
            poke_until_done_or_error(
                PodStatusSensor(task_id="echo", pod_ids=[POD], deferrable=False), evidence
            )
            evidence.add(await trigger_event("prime_default", [POD], seconds=10))

        # transient failures carrying the key, logged on every retry, then a timeout naming them
        leaky_sim.inject(Fault.server_error(503, message=f"upstream saw {SECRET}", times=None))
        assert (
            poke_until_done_or_error(
                PodStatusSensor(task_id="busy", pod_ids=[POD], deferrable=False), evidence
            )
            is False
        )
        evidence.add(await trigger_event("prime_default", [POD], seconds=0.8))
        leaky_sim.clear_faults()

        # a key the API does not accept, and a server that is not there at all
        prime_connect(leaky_sim, api_key=SECRET + "-revoked", conn_id="prime_revoked")
        prime_connect("http://127.0.0.1:9", api_key=SECRET, conn_id="prime_nowhere")
        for conn_id in ("prime_revoked", "prime_nowhere"):
            poke_until_done_or_error(
                PodStatusSensor(task_id="other", pod_ids=[POD], prime_conn_id=conn_id, deferrable=False),
                evidence,
            )
            evidence.add(
                await trigger_event(conn_id, [POD], seconds=0.8), PrimeHook(conn_id).test_connection()
            )

    captured = capfd.readouterr()
    evidence.add(captured.out, captured.err)
    evidence.add(*(str(entry) for entry in structured))
    evidence.add(*(record.getMessage() for record in caplog.records))
    evidence.add(*(repr(record.args) for record in caplog.records))
    blob = evidence.blob()

    assert SECRET not in blob
    # ... and the scan had something to look at: each kind of output was captured
    for expected in ("HTTP 422", "HTTP 403", "not JSON", "unexpected shape", "HTTP 503", "HTTP 401"):
        assert expected in blob
    assert "Connection failed" in blob
    assert "***" in blob  # the echoed key was replaced, not the whole message dropped
    assert any("Prime API call failed" in r.getMessage() for r in caplog.records)
    assert leaky_sim.stats.by_key[SECRET] > 0  # the key did travel, where it belongs: the header
    observations.add(
        request,
        kind="leak-scan",
        texts=len(evidence.texts),
        characters=len(blob),
        log_records=len(caplog.records),
        structlog_events=len(structured),
        requests_with_key=leaky_sim.stats.by_key[SECRET],
        echo_faults=len(ECHOES),
    )


@pytest.mark.parametrize(
    "url",
    [
        "http://api.primeintellect.ai",
        "HTTP://api.primeintellect.ai/api/v1",
        "http://10.1.2.3:8080",
        "http://0.0.0.0:8000",
        "http://localhost.example.com",
        "http://127.0.0.1.nip.io",
        "http://[2001:db8::1]:8080",
    ],
)
def test_plain_http_to_a_non_loopback_host_is_refused(url: str) -> None:
    with pytest.raises(PrimeConfigError, match="plain http to a non-loopback host") as caught:
        PrimeApiSettings(base_url=url, api_key=SECRET)
    assert "Use https" in str(caught.value)
    assert SECRET not in str(caught.value)


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:9", "http://127.8.9.10", "http://localhost:9", "http://[::1]:9"]
)
def test_plain_http_to_loopback_is_allowed(url: str) -> None:
    assert PrimeApiSettings(base_url=url, api_key=SECRET).base_url.startswith("http://")


async def test_plain_http_refusal_holds_on_both_paths_before_any_traffic(
    prime_connect: Callable[..., str],
) -> None:
    prime_connect("http://10.1.2.3:8080", api_key=SECRET)
    with pytest.raises(PrimeConfigError, match="plain http"):
        PodStatusSensor(task_id="wait", pod_ids=[POD], deferrable=False).poke({})
    event = await trigger_event("prime_default", [POD], seconds=5)
    assert event["status"] == "failed"
    assert event["error_type"] == "PrimeConfigError"
    assert "plain http" in event["message"]  # refused while reading the connection, before a request


class TestTlsVerification:
    """On unless the connection says otherwise, in the settings and in both clients' configuration.

    A real handshake against a self-signed certificate is in ``tests/hooks/test_http.py``.
    """

    def test_settings_verify_by_default(self, monkeypatch: pytest.MonkeyPatch) -> None:
        conn = type(
            "Conn", (), {"conn_id": "c", "host": None, "port": None, "password": SECRET, "extra": None}
        )
        assert settings_from_connection(conn()).verify is True
        assert PrimeApiSettings(base_url="https://api.primeintellect.ai", api_key=SECRET).verify is True
        monkeypatch.setenv("PRIME_API_KEY", SECRET)
        from_env = settings_from_environment()
        assert from_env is not None
        assert from_env.verify is True
        assert from_env.base_url == "https://api.primeintellect.ai"

    # That both clients refuse an untrusted certificate by default is shown against a real TLS
    # server: tests/hooks/test_http.py::test_tls_is_verified_by_default_and_a_ca_bundle_can_be_given.

    @pytest.mark.parametrize(("verify", "sent"), [(True, True), (False, False)])
    def test_sync_client_sends_the_setting_with_every_request(
        self, monkeypatch: pytest.MonkeyPatch, verify: bool, sent: bool
    ) -> None:
        seen: list[Any] = []

        def no_network(self: Any, request: Any, **kwargs: Any) -> Any:
            seen.append(kwargs.get("verify"))
            raise requests.ConnectionError("no network in this test")

        monkeypatch.setattr(requests.adapters.HTTPAdapter, "send", no_network)
        for name in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):  # they would turn True into a CA path
            monkeypatch.delenv(name, raising=False)
        settings = PrimeApiSettings(
            base_url="https://api.primeintellect.ai",
            api_key=SECRET,
            max_retries=1,
            backoff_max=0,
            verify=verify,
        )
        with PrimeClient(settings) as client, pytest.raises(PrimeError):
            client.get_pods_status([POD])
        assert seen == [sent, sent]


@pytest.fixture(scope="module")
def big_sim() -> Iterator[PrimeSimulatorProcess]:
    """A simulator in its own process, so its 64 MiB bodies never count in this process's memory."""
    with PrimeSimulatorProcess(Scenario.of([fixed_pod(POD)])) as sim:
        yield sim


async def test_oversized_bodies_are_refused_without_being_held_in_memory(
    big_sim: PrimeSimulatorProcess,
    prime_connect: Callable[..., str],
    observations: Observations,
    request: pytest.FixtureRequest,
) -> None:
    prime_connect(big_sim.base_url, api_key=big_sim.api_key, extra={**EXTRA, "read_timeout": 10})
    big_sim.reset()
    big_sim.inject(Fault.oversized(64 * MIB, times=None))
    tracemalloc.start()
    try:
        with pytest.raises(PrimeAPIError, match="larger than 10 MiB") as caught:
            await asyncio.to_thread(PrimeHook().get_pods_status, [POD])
        _, sync_peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        event = await trigger_event("prime_default", [POD], seconds=10)
        _, async_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert type(caught.value) is PrimeResponseError
    assert event["status"] == "failed"
    assert event["error_type"] == "PrimeResponseError"
    assert "larger than 10 MiB" in event["message"]
    assert sync_peak < MAX_RESPONSE_BYTES
    assert async_peak < MAX_RESPONSE_BYTES
    assert big_sim.stats_snapshot()["by_path"][STATUS_PATH] == 2  # one refused request per path
    observations.add(
        request,
        kind="oversized",
        body_mib=64,
        sync_peak_kib=sync_peak // 1024,
        async_peak_kib=async_peak // 1024,
        message=str(caught.value),
    )


#: A key split by a character no key has: each half must stay out of everything (issue 19, 18).
HALVES = ("pk-LEFT-CANARY-91f0c2", "RIGHT-CANARY-4e6b7d")


@pytest.mark.parametrize(
    "inner", ["\n", "\r\n", " ", "\t", "\x00"], ids=["lf", "crlf", "space", "tab", "nul"]
)
async def test_a_key_with_a_break_inside_leaks_through_nothing(
    prime_simulator_factory: Callable[..., PrimeSimulator],
    prime_connect: Callable[..., str],
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
    inner: str,
) -> None:
    caplog.set_level(logging.DEBUG)
    sim = prime_simulator_factory([fixed_pod(POD)])
    prime_connect(sim, api_key=inner.join(HALVES))
    evidence = Evidence()
    with structlog.testing.capture_logs() as structured:
        ok, message = PrimeHook().test_connection()
        evidence.add(message)
        poke_until_done_or_error(PodStatusSensor(task_id="broken", pod_ids=[POD], deferrable=False), evidence)
        evidence.add(await trigger_event("prime_default", [POD], seconds=0.8))
    captured = capfd.readouterr()
    evidence.add(captured.out, captured.err, *(str(entry) for entry in structured))
    evidence.add(*(record.getMessage() for record in caplog.records))
    blob = evidence.blob()
    assert not ok
    assert "API key is unusable" in blob
    assert not any(half in blob or half[:10] in blob for half in HALVES)
    assert sim.stats.by_path[STATUS_PATH] == 0  # refused before any request


async def test_a_key_echoed_across_the_cut_of_an_error_leaves_no_prefix(
    leaky_sim: PrimeSimulator, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    evidence = Evidence()
    for shape in ("detail", "text", "html"):
        leaky_sim.inject(Fault.http_error(422, body_shape=shape, message="x" * 185 + SECRET, times=2))  # type: ignore[arg-type]
        poke_until_done_or_error(PodStatusSensor(task_id="cut", pod_ids=[POD], deferrable=False), evidence)
        evidence.add(await trigger_event("prime_default", [POD], seconds=5))
    evidence.add(*(record.getMessage() for record in caplog.records))
    blob = evidence.blob()
    assert "HTTP 422" in blob
    assert SECRET[:8] not in blob  # "pk-LEAK-": not even the start of the key
