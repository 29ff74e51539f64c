"""Both clients, sync (requests) and async (httpx), against the in-memory fake API.

Every test runs twice (``kind`` = sync / async): the two must behave identically. Backoff sleeps
are recorded, not slept (``delays``), so exact request counts and waits can be asserted.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import threading
import time
from typing import Any

import httpx
import pytest

from airflow_provider_prime.exceptions import (
    PrimeAPIError,
    PrimeAuthError,
    PrimeBillingError,
    PrimeRequestError,
    PrimeResponseError,
    PrimeTransientError,
)
from airflow_provider_prime.hooks._clients import CHUNK_CONCURRENCY, MAX_RESPONSE_BYTES, AsyncPrimeClient
from airflow_provider_prime.hooks._settings import PrimeApiSettings
from tests.hooks.callers import Caller
from tests.hooks.fakes import (
    KEY,
    ConcurrencyTransport,
    Failure,
    Reply,
    ScriptedApi,
    always,
    flatten,
    ids,
    pod,
    sequence,
    serve_pods,
)

HTML_502 = b"<html><head><title>502 Bad Gateway</title></head><body><center>nginx</center></body></html>"


def test_statuses_are_parsed_with_snake_case_and_node_lists(mocked: Caller, api: ScriptedApi) -> None:
    api.script = serve_pods(
        {
            "p1": pod("p1"),
            "p2": pod("p2", "STOPPED", sshConnection=[None], ip=[None]),
            "p3": pod("p3", sshConnection=["root@a -p 1", None], ip=["1.1.1.1", None]),
        }
    )
    statuses = {s.pod_id: s for s in mocked.pods(["p1", "p2", "p3", "gone"])}
    assert set(statuses) == {"p1", "p2", "p3"}  # an unknown id is simply absent
    assert statuses["p1"].installation_status == "FINISHED"
    assert statuses["p1"].ssh_connections == ["root@10.0.0.1 -p 22"]
    assert statuses["p2"].ssh_connections == [None]
    assert statuses["p3"].ips == ["1.1.1.1", None]


def test_request_has_repeated_keys_bearer_key_and_user_agent(mocked: Caller, api: ScriptedApi) -> None:
    mocked.pods(["b", "a", "b"])
    (seen,) = api.seen
    assert seen.method == "GET"
    assert seen.path == "/api/v1/pods/status"
    assert seen.query == [("pod_ids", "b"), ("pod_ids", "a")]
    assert seen.headers["authorization"] == f"Bearer {KEY}"
    assert seen.headers["accept"] == "application/json"
    assert seen.headers["user-agent"].startswith("airflow-provider-prime/0.")


def test_250_ids_with_duplicates_take_three_requests(mocked: Caller, api: ScriptedApi) -> None:
    requested = ids(250) + list(reversed(ids(40)))
    statuses = mocked.pods(requested)
    assert sorted(len(s.pod_ids) for s in api.status_requests) == [50, 100, 100]
    assert sorted(flatten(api.status_requests)) == ids(250)  # each id asked exactly once
    assert sorted(s.pod_id for s in statuses) == ids(250)


def test_429_waits_for_retry_after_seconds(mocked: Caller, api: ScriptedApi, delays: list[float]) -> None:
    api.script = sequence(Reply(429, {"detail": "slow down"}, {"Retry-After": "0.03"}))
    assert [s.pod_id for s in mocked.pods(["p1"])] == ["p1"]
    assert len(api.seen) == 2
    assert delays == [0.03]


def test_429_waits_for_retry_after_http_date_capped(
    mocked: Caller, api: ScriptedApi, delays: list[float]
) -> None:
    later = email.utils.formatdate(time.time() + 3600, usegmt=True)
    api.script = sequence(Reply(429, b"", {"Retry-After": later}), Reply(429, b"", {"Retry-After": "0"}))
    mocked.pods(["p1"])
    assert len(api.seen) == 3
    assert delays == [0.05, 0.0]  # an hour is capped to retry_after_max; "0" means at once


def test_5xx_burst_then_success(
    mocked: Caller, api: ScriptedApi, delays: list[float], caplog: pytest.LogCaptureFixture
) -> None:
    api.script = sequence(Reply(503, b"unavailable"), Reply(500, b""), Reply(504, HTML_502))
    with caplog.at_level(logging.DEBUG):
        assert [s.pod_id for s in mocked.pods(["p1"])] == ["p1"]
    # each retry is a debug line: the waits log trouble themselves, once and then at a bounded rate
    retries = [r for r in caplog.records if "retry" in r.getMessage()]
    assert [r.levelno for r in retries] == [logging.DEBUG] * 3
    assert len(api.seen) == 4
    assert len(delays) == 3
    assert all(0.0 <= d <= 0.004 for d in delays)  # jittered under the tiny test backoff


def test_retries_are_bounded_and_the_last_error_kept(
    mocked: Caller, api: ScriptedApi, delays: list[float]
) -> None:
    api.script = always(Reply(502, HTML_502, {"Content-Type": "text/html"}))
    with pytest.raises(PrimeTransientError) as caught:
        mocked.pods(["p1", "p2"])
    assert len(api.seen) == 4  # the first attempt + max_retries=3
    assert len(delays) == 3
    message = str(caught.value)
    assert "Gave up after 4 attempts" in message
    assert "HTTP 502" in message
    assert "pods p1, p2" in message
    assert "502 Bad Gateway" in message
    assert "<" not in message  # an excerpt, not the page
    assert caught.value.http_status == 502
    assert isinstance(caught.value.__cause__, PrimeAPIError)


def test_zero_retries_means_one_request(mocked: Caller, api: ScriptedApi) -> None:
    api.script = always(Reply(503))
    with pytest.raises(PrimeTransientError, match="after 1 attempts"):
        mocked.pods(["p1"], max_retries=0)
    assert len(api.seen) == 1


@pytest.mark.parametrize("failure", [Failure.TIMEOUT, Failure.CONNECT, Failure.DROP])
def test_transport_failures_are_retried(
    mocked: Caller, api: ScriptedApi, delays: list[float], failure: Failure
) -> None:
    api.script = sequence(failure, failure)
    assert [s.pod_id for s in mocked.pods(["p1"])] == ["p1"]
    assert len(api.seen) == 3


def test_persistent_timeouts_give_up_with_the_cause(mocked: Caller, api: ScriptedApi) -> None:
    api.script = always(Failure.TIMEOUT)
    with pytest.raises(PrimeTransientError) as caught:
        mocked.pods(["p1"], max_retries=2)
    assert len(api.seen) == 3
    assert "Gave up after 3 attempts: Timed out" in str(caught.value)
    assert "while reading the status of pod p1" in str(caught.value)
    assert caught.value.http_status is None


@pytest.mark.parametrize(
    ("reply", "error", "fragments"),
    [
        (
            Reply(401, {"detail": "Invalid API key"}),
            PrimeAuthError,
            ["HTTP 401", '"Instances → Read" permission', "Invalid API key", "pod p1"],
        ),
        (Reply(403, b""), PrimeAuthError, ["HTTP 403", "Instances → Read"]),
        (
            Reply(404, b"Not Found"),
            PrimeResponseError,
            ["HTTP 404", "https://api.prime.test/api/v1/pods/", "base URL"],
        ),
        (Reply(402, {"detail": "Insufficient"}), PrimeBillingError, ["402", "billing", "Insufficient"]),
        (
            Reply(422, {"errors": [{"param": "pod_ids", "details": "invalid id"}]}),
            PrimeRequestError,
            ["HTTP 422", "pod_ids: invalid id", "pod p1"],
        ),
        (
            Reply(422, {"detail": [{"loc": ["query", "pod_ids"], "msg": "field required", "type": "x"}]}),
            PrimeRequestError,
            ["HTTP 422", "query.pod_ids: field required"],
        ),
        (Reply(400, b"bad"), PrimeRequestError, ["HTTP 400", "bad"]),
        (Reply(304, b""), PrimeResponseError, ["Unexpected HTTP 304"]),
    ],
)
def test_client_errors_are_never_retried(
    mocked: Caller,
    api: ScriptedApi,
    reply: Reply,
    error: type[PrimeAPIError],
    fragments: list[str],
) -> None:
    api.script = always(reply)
    with pytest.raises(error) as caught:
        mocked.pods(["p1"])
    assert len(api.seen) == 1
    assert type(caught.value) is error
    assert caught.value.http_status == reply.status
    for fragment in fragments:
        assert fragment in str(caught.value)


def test_422_details_are_kept_on_the_exception(mocked: Caller, api: ScriptedApi) -> None:
    errors = [{"param": "pod_ids", "details": "a"}, {"param": "x", "details": "b"}]
    api.script = always(Reply(422, {"errors": errors}))
    with pytest.raises(PrimeRequestError) as caught:
        mocked.pods(["p1"])
    assert caught.value.details == ["pod_ids: a", "x: b"]


@pytest.mark.parametrize(
    ("body", "fragments"),
    [
        (b"<html>maintenance</html>", ["not JSON", "maintenance", "HTTP 200"]),
        (b"", ["not JSON", "(empty body)"]),
        (b"{truncated", ["not JSON"]),
        (b"[" * 50_000, ["not JSON"]),
        (b'{"data": {"podId": "p1"}}', ["unexpected shape", "data"]),
        (b"[]", ["unexpected shape"]),
        (b'{"data": [{"podId": "p1"}]}', ["data.0.providerType: Field required", "data.0.status"]),
        (b'{"data": [null]}', ["data.0"]),
        (b'{"data": [{"podId": 7, "providerType": "x", "status": "ACTIVE"}]}', ["data.0.podId"]),
    ],
)
def test_bad_bodies_are_api_errors_not_decoder_errors(
    mocked: Caller, api: ScriptedApi, body: bytes, fragments: list[str]
) -> None:
    api.script = always(Reply(200, body))
    with pytest.raises(PrimeAPIError) as caught:
        mocked.pods(["p1"])
    assert type(caught.value) is PrimeResponseError
    assert len(api.seen) == 1
    for fragment in fragments:
        assert fragment in str(caught.value)
    assert "while reading the status of pod p1" in str(caught.value)


def test_unknown_enums_and_fields_are_kept_or_ignored(mocked: Caller, api: ScriptedApi) -> None:
    record = pod("p1", "HIBERNATING", providerType="new_cloud", installationStatus="WARMING", priceHr=1.5)
    record["primePortMapping"] = [{"internal": 22}]
    api.script = always(Reply(200, {"data": [record], "status": "ok", "meta": {"x": 1}}))
    (status,) = mocked.pods(["p1"])
    assert (status.status, status.provider_type, status.installation_status) == (
        "HIBERNATING",
        "new_cloud",
        "WARMING",
    )


@pytest.mark.parametrize("body", [{"data": None, "status": "ok"}, {"status": "ok"}, {}])
def test_null_or_missing_data_is_an_empty_list(
    mocked: Caller, api: ScriptedApi, body: dict[str, object]
) -> None:
    api.script = always(Reply(200, body))
    assert mocked.pods(["p1"]) == []


def test_an_oversized_body_is_refused_without_retry(mocked: Caller, api: ScriptedApi) -> None:
    api.script = always(Reply(200, b" " * (MAX_RESPONSE_BYTES + 1)))
    with pytest.raises(PrimeAPIError, match="larger than 10 MiB") as caught:
        mocked.pods(["p1"])
    assert len(api.seen) == 1
    assert type(caught.value) is PrimeResponseError


def test_a_declared_oversized_body_is_refused_before_reading(mocked: Caller, api: ScriptedApi) -> None:
    api.script = always(Reply(200, b"{}", {"Content-Length": str(MAX_RESPONSE_BYTES + 1)}))
    with pytest.raises(PrimeAPIError, match="larger than 10 MiB"):
        mocked.pods(["p1"])


def test_the_key_never_leaks_even_when_the_server_echoes_it(
    mocked: Caller, api: ScriptedApi, caplog: pytest.LogCaptureFixture
) -> None:
    echo = f"bad token Bearer {KEY}".encode()
    for reply in (Reply(401, echo), Reply(422, {"detail": f"key {KEY} invalid"}), Reply(200, echo)):
        api.script = always(reply)
        with pytest.raises(PrimeAPIError) as caught:
            mocked.pods(["p1"])
        assert KEY not in str(caught.value)
        assert KEY not in repr(caught.value)
        assert "***" in str(caught.value)
    api.script = always(Reply(503, echo))
    with caplog.at_level(logging.DEBUG), pytest.raises(PrimeTransientError) as caught:
        mocked.pods(["p1"])
    assert KEY not in str(caught.value)
    assert KEY not in str(caught.value.__cause__)
    assert "retry 1 of 3" in caplog.text
    assert KEY not in caplog.text
    assert KEY not in repr(mocked.settings)


def test_whoami_names_the_account(mocked: Caller, api: ScriptedApi) -> None:
    api.script = always(Reply(200, {"data": {"name": "Ada", "email": "ada@example.com"}}))
    assert mocked.whoami() == "Ada <ada@example.com>"
    assert api.seen[0].path == "/api/v1/user/whoami"
    api.key = "another-key"
    with pytest.raises(PrimeAuthError, match="while checking the API key"):
        mocked.whoami()


# --- async-only properties ----------------------------------------------------------------------


async def test_async_chunks_run_concurrently_within_the_bound(settings: PrimeApiSettings) -> None:
    transport = ConcurrencyTransport()
    async with AsyncPrimeClient(settings, transport=transport) as client:
        statuses = await client.get_pods_status(ids(1000))
    assert transport.started == 10
    assert transport.peak == CHUNK_CONCURRENCY
    assert [s.pod_id for s in statuses] == ids(1000)  # chunk order preserved


async def test_async_failure_in_one_chunk_cancels_the_rest(settings: PrimeApiSettings) -> None:
    transport = ConcurrencyTransport(fail_pod="pod-0150")  # in the 2nd chunk
    async with AsyncPrimeClient(settings, transport=transport) as client:
        with pytest.raises(PrimeAuthError, match="pods pod-0100"):
            await client.get_pods_status(ids(1000))
    assert transport.started < 10  # chunks not yet started were never sent
    assert transport.in_flight == 0
    assert [t for t in asyncio.all_tasks() if t is not asyncio.current_task()] == []


async def test_async_cancellation_leaves_nothing_running(settings: PrimeApiSettings) -> None:
    transport = ConcurrencyTransport()
    async with AsyncPrimeClient(settings, transport=transport) as client:
        call = asyncio.ensure_future(client.get_pods_status(ids(1000)))
        await transport.first_started.wait()
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
    assert transport.in_flight == 0
    assert [t for t in asyncio.all_tasks() if t is not asyncio.current_task()] == []


async def test_async_client_is_built_off_the_event_loop_once(
    settings: PrimeApiSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Building an httpx client loads CA certificates (and, the first time, httpx's HTTP stack):
    # blocking work that must happen in a worker thread, once per AsyncPrimeClient.
    loop_thread = threading.current_thread()
    threads: list[threading.Thread] = []
    build = httpx.AsyncClient.__init__

    def spy(self: httpx.AsyncClient, *args: Any, **kwargs: Any) -> None:
        threads.append(threading.current_thread())
        build(self, *args, **kwargs)

    monkeypatch.setattr(httpx.AsyncClient, "__init__", spy)
    transport = ConcurrencyTransport()
    async with AsyncPrimeClient(settings, transport=transport) as client:
        assert threads == []  # nothing built by the constructor
        await client.get_pods_status(ids(1000))
        await client.get_pods_status(ids(10))
    assert transport.started == 11
    assert len(threads) == 1  # the four concurrent first chunks wait for one build
    assert loop_thread not in threads
    closed = AsyncPrimeClient(settings, transport=transport)
    await closed.aclose()
    with pytest.raises(RuntimeError, match="closed"):
        await closed.get_pods_status(["p1"])


def test_no_retry_sleeps_past_the_deadline(mocked: Caller, api: ScriptedApi, delays: list[float]) -> None:
    api.script = always(Reply(503, b"busy", {"Retry-After": "5"}))
    with pytest.raises(PrimeTransientError, match="before the wait's deadline after 1 attempts"):
        mocked.run(lambda client: client.get_pods_status(["p1"], time.time() + 2), retry_after_max=60)
    assert len(api.seen) == 1
    assert delays == []  # the 5 s wait would have ended past the deadline: not slept


def test_each_attempt_is_cut_to_the_time_left(mocked: Caller, api: ScriptedApi) -> None:
    deadline = time.time() + 1.0
    mocked.run(lambda client: client.get_pods_status(["p1"], deadline), connect_timeout=10, read_timeout=30)
    (seen,) = api.seen
    assert seen.timeouts is not None
    assert all(0 < timeout <= 1.0 for timeout in seen.timeouts)
    mocked.run(lambda client: client.get_pods_status(["p1"]))
    assert api.seen[1].timeouts == (2.0, 2.0)  # without a deadline: the settings' own


def test_a_deadline_already_passed_sends_nothing(mocked: Caller, api: ScriptedApi) -> None:
    with pytest.raises(PrimeTransientError, match="deadline passed before reading the status of pod p1"):
        mocked.run(lambda client: client.get_pods_status(["p1"], time.time() - 1))
    assert api.seen == []
