"""Both clients over real HTTP (and TLS) on 127.0.0.1: sockets, timeouts, drops, redirects, streaming.

The server is a small stdlib fake (``tests/hooks/fakes.py``); backoff is real but tiny.
"""

from __future__ import annotations

import email.utils
import time
from pathlib import Path
from urllib.parse import urlencode

import pytest

from airflow_provider_prime.exceptions import PrimeAPIError, PrimeResponseError, PrimeTransientError
from airflow_provider_prime.hooks._clients import MAX_RESPONSE_BYTES
from airflow_provider_prime.hooks._settings import PrimeApiSettings
from tests.hooks.callers import Caller
from tests.hooks.fakes import (
    Failure,
    LoopbackServer,
    Reply,
    ScriptedApi,
    Seen,
    always,
    flatten,
    ids,
    self_signed_tls,
    sequence,
    serve_pods,
)


def test_chunks_and_repeated_keys_over_http(over_http: Caller, api: ScriptedApi) -> None:
    statuses = over_http.pods(ids(250) + ids(10))
    # async sends the chunks concurrently, so arrival order varies
    assert sorted(len(s.pod_ids) for s in api.status_requests) == [50, 100, 100]
    assert sorted(flatten(api.status_requests)) == ids(250)
    assert [s.pod_id for s in statuses] == ids(250)  # results keep the requested order


def test_5xx_burst_then_success_over_http(over_http: Caller, api: ScriptedApi) -> None:
    api.script = sequence(Reply(503, b"busy"), Reply(502, b"<html>bad gateway</html>"))
    assert [s.pod_id for s in over_http.pods(["p1"])] == ["p1"]
    assert len(api.seen) == 3


def test_retry_after_http_date_in_the_past_retries_at_once(over_http: Caller, api: ScriptedApi) -> None:
    past = email.utils.formatdate(time.time() - 30, usegmt=True)
    api.script = sequence(Reply(429, {"detail": "slow down"}, {"Retry-After": past}))
    assert len(over_http.pods(["p1"])) == 1
    assert len(api.seen) == 2


def test_read_timeout_is_retried_then_reported(over_http: Caller, api: ScriptedApi) -> None:
    api.script = always(Failure.TIMEOUT)  # the server stalls 1 s
    with pytest.raises(PrimeTransientError, match="Gave up after 2 attempts: Timed out") as caught:
        over_http.pods(["p1"], read_timeout=0.2, max_retries=1)
    assert len(api.seen) == 2
    assert "while reading the status of pod p1" in str(caught.value)


def test_dropped_connection_is_retried(over_http: Caller, api: ScriptedApi) -> None:
    api.script = sequence(Failure.DROP)
    assert [s.pod_id for s in over_http.pods(["p1"])] == ["p1"]
    assert len(api.seen) == 2


def test_refused_connection_gives_up_after_the_retries(
    kind: str, api: ScriptedApi, settings: PrimeApiSettings, closed_port: int
) -> None:
    caller = Caller(kind, api, settings, base_url=f"http://127.0.0.1:{closed_port}")
    with pytest.raises(PrimeTransientError, match="Gave up after 3 attempts: Connection failed") as caught:
        caller.pods(["p1"], max_retries=2)
    assert caught.value.http_status is None


@pytest.mark.parametrize("stream", [False, True], ids=["declared", "streamed"])
def test_oversized_body_is_refused_over_http(over_http: Caller, api: ScriptedApi, stream: bool) -> None:
    api.script = always(Reply(200, b" " * (MAX_RESPONSE_BYTES + 1024), stream=stream))
    with pytest.raises(PrimeAPIError, match="larger than 10 MiB"):
        over_http.pods(["p1"])
    assert len(api.seen) == 1


def test_streamed_body_within_the_limit_is_read_whole(over_http: Caller, api: ScriptedApi) -> None:
    inner = serve_pods()
    api.script = lambda seen: Reply(200, inner(seen).body, stream=True)
    assert len(over_http.pods(ids(100))) == 100


def test_redirect_to_trailing_slash_is_followed_with_the_key(over_http: Caller, api: ScriptedApi) -> None:
    pods = serve_pods()

    def script(seen: Seen) -> Reply:
        if not seen.path.endswith("/"):
            return Reply(307, b"", {"Location": f"{seen.path}/?{urlencode(seen.query)}"})
        return pods(seen)  # the fake answers 401 unless the bearer key came along

    api.script = script
    assert sorted(s.pod_id for s in over_http.pods(["a", "b"])) == ["a", "b"]
    assert [s.path for s in api.seen] == ["/api/v1/pods/status", "/api/v1/pods/status/"]
    assert api.seen[1].pod_ids == ["a", "b"]


@pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")
def test_tls_is_verified_by_default_and_a_ca_bundle_can_be_given(
    kind: str, api: ScriptedApi, settings: PrimeApiSettings, tmp_path: Path
) -> None:
    context, cert = self_signed_tls(tmp_path)
    with LoopbackServer(api, tls=context) as server:
        caller = Caller(kind, api, settings, base_url=server.base_url)
        with pytest.raises(PrimeAPIError, match="TLS certificate verification failed") as caught:
            caller.pods(["p1"])
        assert type(caught.value) is PrimeResponseError  # not transient: no retry fixes a certificate
        assert api.seen == []
        assert [s.pod_id for s in caller.pods(["p1"], verify=str(cert))] == ["p1"]
        assert [s.pod_id for s in caller.pods(["p1"], verify=False)] == ["p1"]


def test_a_redirect_to_another_origin_does_not_carry_the_key(over_http: Caller, api: ScriptedApi) -> None:
    elsewhere = ScriptedApi(key="")  # accepts anything, records what it got
    with LoopbackServer(elsewhere) as other:
        api.script = always(Reply(307, b"", {"Location": f"{other.base_url}/api/v1/pods/status?pod_ids=p1"}))
        assert [s.pod_id for s in over_http.pods(["p1"])] == ["p1"]
    (seen,) = elsewhere.seen
    assert "authorization" not in seen.headers


@pytest.mark.parametrize("scheme", ["https://", ""], ids=["https", "no-scheme"])
def test_https_to_a_plain_http_server_says_so_and_suggests_http(
    kind: str, api: ScriptedApi, settings: PrimeApiSettings, scheme: str
) -> None:
    # The stdlib server answers the TLS greeting with an HTTP 400 (OpenSSL: wrong version number),
    # or, when the greeting holds no line break, waits for one until the handshake times out.
    with LoopbackServer(api) as server:
        host_port = server.base_url.removeprefix("http://")
        caller = Caller(kind, api, settings, base_url=scheme + host_port)
        with pytest.raises(PrimeAPIError, match=r"The TLS handshake (failed|timed out)") as caught:
            caller.pods(["p1"], max_retries=0, connect_timeout=0.5, read_timeout=0.5)
    message = str(caught.value)
    assert "The server may speak plain HTTP, not HTTPS." in message
    assert f"set the connection host to http://{host_port}" in message
    assert api.seen == []  # nothing was understood as a request
