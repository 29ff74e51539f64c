"""Every fault, staged over real HTTP, and the rules that decide which requests it hits."""

from __future__ import annotations

import json
from email.utils import parsedate_to_datetime

import httpx
import pytest

from airflow_provider_prime.testing import (
    NO_RESPONSE,
    STATUS_PATH,
    WHOAMI_PATH,
    Fault,
    FaultKind,
    ManualClock,
    PrimeSimulator,
    fixed_pod,
)
from tests.testing.http import Factory, get_status, pods_of


@pytest.fixture(autouse=True)
def _pods(sim: PrimeSimulator) -> None:
    sim.add_pod(fixed_pod("a"), fixed_pod("b", nodes=2))


def test_rate_limit_with_retry_after_in_seconds(sim: PrimeSimulator, http: httpx.Client) -> None:
    sim.inject(Fault.rate_limited(retry_after=2))
    response = get_status(http, "a")
    assert response.status_code == 429
    assert response.headers["retry-after"] == "2"
    assert "detail" in response.json()
    assert get_status(http, "a").status_code == 200  # times=1 by default


def test_rate_limit_with_retry_after_as_http_date(sim: PrimeSimulator, http: httpx.Client) -> None:
    sim.inject(Fault.rate_limited(retry_after=30, http_date=True))
    response = get_status(http, "a")
    when = parsedate_to_datetime(response.headers["retry-after"])
    sent = parsedate_to_datetime(response.headers["date"])
    assert response.status_code == 429
    assert 29 <= (when - sent).total_seconds() <= 31


def test_rate_limit_without_retry_after(sim: PrimeSimulator, http: httpx.Client) -> None:
    sim.inject(Fault.rate_limited())
    response = get_status(http, "a")
    assert response.status_code == 429
    assert "retry-after" not in response.headers


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_server_errors_with_json_or_html_bodies(sim: PrimeSimulator, http: httpx.Client, status: int) -> None:
    sim.inject(Fault.server_error(status), Fault.server_error(status, html=True))
    as_json = get_status(http, "a")
    assert as_json.status_code == status
    assert isinstance(as_json.json()["detail"], str)
    as_html = get_status(http, "a")
    assert as_html.status_code == status
    assert as_html.headers["content-type"] == "text/html"
    assert as_html.text.startswith("<html>")
    assert str(status) in as_html.text
    with pytest.raises(json.JSONDecodeError):
        as_html.json()


@pytest.mark.parametrize("status", [401, 402, 403, 404, 422])
def test_client_errors_in_every_body_shape(sim: PrimeSimulator, http: httpx.Client, status: int) -> None:
    sim.inject(
        Fault.http_error(status, message="nope"),
        Fault.http_error(status, body_shape="detail", message="nope"),
        Fault.http_error(status, body_shape="detail_list", message="nope"),
        Fault.http_error(status, body_shape="text", message="nope"),
        Fault.http_error(status, body_shape="empty"),
    )
    bodies = [get_status(http, "a") for _ in range(5)]
    assert [r.status_code for r in bodies] == [status] * 5
    assert bodies[0].json() == {"errors": [{"param": "request", "details": "nope"}]}
    assert bodies[1].json() == {"detail": "nope"}
    assert bodies[2].json()["detail"][0]["msg"] == "nope"
    assert bodies[3].text == "nope"
    assert bodies[4].content == b""
    assert "content-type" not in bodies[4].headers


def test_default_error_messages_say_what_happened(sim: PrimeSimulator, http: httpx.Client) -> None:
    sim.inject(Fault.http_error(403, body_shape="detail"))
    assert "permission" in get_status(http, "a").json()["detail"]


def test_slow_answers_trip_a_short_read_timeout_and_otherwise_arrive_intact(
    sim: PrimeSimulator, http: httpx.Client
) -> None:
    sim.inject(Fault.slow(3.0), Fault.slow(0.2))
    with pytest.raises(httpx.ReadTimeout):
        get_status(http, "a", timeout=httpx.Timeout(5.0, read=0.3))
    late = get_status(http, "a")
    assert list(pods_of(late)) == ["a"]
    assert [r.note for r in sim.stats.log] == ["slow", "slow"]


def test_dropped_connections_get_no_response(sim: PrimeSimulator, http: httpx.Client) -> None:
    sim.inject(Fault.drop(), Fault.drop(delay=0.1))
    for _ in range(2):
        with pytest.raises(httpx.RemoteProtocolError):
            get_status(http, "a")
    assert get_status(http, "a").status_code == 200  # the client reconnects and is served
    assert sim.stats.by_status[NO_RESPONSE] == 2


def test_hanging_requests_never_answer_and_do_not_stop_the_server_stopping(
    prime_simulator_factory: Factory,
) -> None:
    sim = prime_simulator_factory()
    sim.inject(Fault.hang())
    with pytest.raises(httpx.ReadTimeout):
        httpx.get(sim.base_url + WHOAMI_PATH, timeout=httpx.Timeout(5.0, read=0.3))
    with httpx.Client(base_url=sim.base_url, timeout=5.0) as other:
        assert other.get(WHOAMI_PATH).status_code == 401  # other connections are served meanwhile
    sim.stop()
    assert not sim.running


def test_malformed_json(sim: PrimeSimulator, http: httpx.Client) -> None:
    sim.inject(Fault.malformed_json())
    response = get_status(http, "a")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    with pytest.raises(json.JSONDecodeError):
        response.json()


def test_json_of_the_wrong_shape_and_null_data(sim: PrimeSimulator, http: httpx.Client) -> None:
    sim.inject(Fault.wrong_shape(), Fault.wrong_shape([1, 2]), Fault.null_data())
    assert isinstance(get_status(http, "a").json()["data"], dict)
    assert get_status(http, "a").json() == [1, 2]
    assert get_status(http, "a").json() == {"data": None, "status": "ok"}


def test_unknown_enum_values(sim: PrimeSimulator, http: httpx.Client) -> None:
    sim.inject(Fault.unknown_enums(), Fault.unknown_enums(status=None, installation_status=None))
    pods = pods_of(get_status(http, "a", "b"))
    assert {p["status"] for p in pods.values()} == {"HIBERNATING"}
    assert {p["providerType"] for p in pods.values()} == {"quantumcloud"}
    assert {p["installationStatus"] for p in pods.values()} == {"QUEUED"}
    only_provider = pods_of(get_status(http, "a"))["a"]
    assert (only_provider["status"], only_provider["providerType"]) == ("ACTIVE", "quantumcloud")


def test_extra_fields_and_missing_fields(sim: PrimeSimulator, http: httpx.Client) -> None:
    sim.inject(Fault.extra_fields(), Fault.pods(drop_fields=["providerType", "ip"]))
    extra = pods_of(get_status(http, "a"))["a"]
    assert {"priceHr", "primePortMapping", "newThing"} <= set(extra)
    assert extra["status"] == "ACTIVE"
    missing = pods_of(get_status(http, "a"))["a"]
    assert "providerType" not in missing
    assert "ip" not in missing
    assert missing["podId"] == "a"


def test_oversized_bodies_are_valid_json_of_the_asked_size(sim: PrimeSimulator, http: httpx.Client) -> None:
    sim.inject(Fault.oversized(3 * 1024 * 1024))
    response = get_status(http, "a")
    assert len(response.content) == 3 * 1024 * 1024
    assert response.json()["data"] == []


def test_raw_and_custom_json_replies(sim: PrimeSimulator, http: httpx.Client) -> None:
    sim.inject(
        Fault.raw("<p>maintenance</p>", status=200, content_type="text/html"),
        Fault.json_reply({"error": "teapot"}, status=418, headers={"x-extra": "1"}),
    )
    raw = get_status(http, "a")
    assert (raw.status_code, raw.text, raw.headers["content-type"]) == (
        200,
        "<p>maintenance</p>",
        "text/html",
    )
    teapot = get_status(http, "a")
    assert (teapot.status_code, teapot.json(), teapot.headers["x-extra"]) == (418, {"error": "teapot"}, "1")


# when faults strike ---------------------------------------------------------------------------------


def test_times_counts_down_and_none_means_until_cleared(sim: PrimeSimulator, http: httpx.Client) -> None:
    sim.inject(Fault.server_error(503, times=3))
    assert [get_status(http, "a").status_code for _ in range(4)] == [503, 503, 503, 200]
    (fault_id,) = sim.inject(Fault.server_error(503, times=None))
    assert [get_status(http, "a").status_code for _ in range(5)] == [503] * 5
    assert sim.faults[0]["hits"] == 5
    assert sim.faults[0]["remaining"] is None
    sim.clear_faults(fault_id)
    assert sim.faults == []
    assert get_status(http, "a").status_code == 200


def test_time_windows_follow_the_simulator_clock(
    sim: PrimeSimulator, http: httpx.Client, clock: ManualClock
) -> None:
    sim.inject(Fault.server_error(503, times=None, after=10.0, duration=5.0))
    codes = []
    for _ in range(8):
        codes.append(get_status(http, "a").status_code)
        clock.advance(2.5)  # t = 0, 2.5, ... 17.5
    assert codes == [200, 200, 200, 200, 503, 503, 200, 200]
    assert sim.faults == []  # expired faults are dropped


def test_probability_strikes_some_requests(sim: PrimeSimulator, http: httpx.Client) -> None:
    sim.inject(Fault.server_error(500, times=None, probability=0.5))
    codes = [get_status(http, "a").status_code for _ in range(100)]
    assert 0 < codes.count(500) < 100
    sim.clear_faults()
    sim.inject(Fault.server_error(500, probability=0.0))
    assert all(get_status(http, "a").status_code == 200 for _ in range(20))


def test_faults_can_target_a_path_a_key_or_a_pod(prime_simulator_factory: Factory) -> None:
    sim = prime_simulator_factory(api_keys=("k1", "k2"))
    sim.add_pod(fixed_pod("a"), fixed_pod("b"))
    k1 = httpx.Client(base_url=sim.base_url, headers={"Authorization": "Bearer k1"})
    k2 = httpx.Client(base_url=sim.base_url, headers={"Authorization": "Bearer k2"})
    sim.inject(Fault.server_error(503, path=WHOAMI_PATH, times=None))
    assert (k1.get(WHOAMI_PATH).status_code, get_status(k1, "a").status_code) == (503, 200)
    sim.clear_faults()
    sim.inject(Fault.server_error(503, api_key="k2", times=None))
    assert (get_status(k1, "a").status_code, get_status(k2, "a").status_code) == (200, 503)
    sim.clear_faults()
    sim.inject(Fault.server_error(503, pod_id="b", times=None))
    assert (get_status(k1, "a").status_code, get_status(k1, "a", "b").status_code) == (200, 503)
    k1.close()
    k2.close()


def test_the_first_armed_matching_fault_wins(sim: PrimeSimulator, http: httpx.Client) -> None:
    sim.inject(Fault.server_error(502, path=WHOAMI_PATH), Fault.server_error(503), Fault.server_error(504))
    assert [get_status(http, "a").status_code for _ in range(3)] == [503, 504, 200]
    assert http.get(WHOAMI_PATH).status_code == 502


def test_faults_spare_the_control_endpoints(sim: PrimeSimulator, http: httpx.Client) -> None:
    sim.inject(Fault.drop(times=None))
    assert http.get("/_sim/health").json()["status"] == "ok"
    assert http.get("/_sim/faults").json()[0]["kind"] == "drop"


def test_faults_over_http(sim: PrimeSimulator, http: httpx.Client) -> None:
    armed = http.post(
        "/_sim/faults", json=[{"kind": "http_error", "status": 503, "times": 2}, {"kind": "drop"}]
    )
    assert armed.status_code == 200
    assert len(armed.json()["ids"]) == 2
    assert [get_status(http, "a").status_code for _ in range(2)] == [503, 503]
    with pytest.raises(httpx.RemoteProtocolError):
        get_status(http, "a")
    http.post("/_sim/faults", json={"kind": "slow", "delay": 0.1, "times": None})
    assert http.delete("/_sim/faults").status_code == 200
    assert sim.faults == []


@pytest.mark.parametrize(
    "bad",
    [{"kind": "nonsense"}, {"kind": "http_error"}, {"kind": "drop", "times": 0}, {"kind": "slow", "x": 1}],
)
def test_invalid_faults_are_refused_with_reasons(http: httpx.Client, bad: dict[str, object]) -> None:
    response = http.post("/_sim/faults", json=bad)
    assert response.status_code == 400
    assert response.json()["detail"]


def test_fault_kinds_are_all_exercised() -> None:
    exercised = {
        Fault.rate_limited().kind, Fault.slow(1).kind, Fault.drop().kind, Fault.hang().kind,
        Fault.malformed_json().kind, Fault.null_data().kind, Fault.raw("").kind, Fault.extra_fields().kind,
        Fault.oversized().kind, Fault.pod_deleted("a").kind, Fault.node_dies("a").kind,
    }  # fmt: skip
    assert exercised == set(FaultKind)


def test_a_node_dies_fault_without_ssh_nodes_turns_its_pod_error_on_the_next_request(
    sim: PrimeSimulator, http: httpx.Client, clock: ManualClock
) -> None:
    """The simulator's SSH-node kill (tests/testing/test_ssh_pods.py) without nodes: the pod errs."""
    sim.add_pod(fixed_pod("a"), fixed_pod("b"))
    sim.inject(Fault.node_dies("a", after=30), Fault.node_dies("gone"))
    assert http.get(WHOAMI_PATH).status_code == 200  # an unknown target: nothing dies
    assert get_status(http, "a").json()["data"][0]["status"] == "ACTIVE"
    clock.advance(30)
    answer = get_status(http, "a", "b").json()["data"]  # the fault strikes on this request
    assert [pod["status"] for pod in answer] == ["ERROR", "ACTIVE"]
    assert answer[0]["sshConnection"]  # other fields kept
    assert sim.faults == []


def test_faults_without_a_path_hit_every_api_path(sim: PrimeSimulator, http: httpx.Client) -> None:
    sim.inject(Fault.server_error(500, times=None))
    assert http.get(WHOAMI_PATH).status_code == 500
    assert http.get(STATUS_PATH).status_code == 500
    assert http.get("/api/v2/whatever").status_code == 500  # a gateway fault precedes routing
