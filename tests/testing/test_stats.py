"""Request statistics: counters per path, pod, key and status, the bounded log, reset, threads."""

from __future__ import annotations

import threading

import httpx

from airflow_provider_prime.testing import (
    NO_KEY,
    STATUS_PATH,
    WHOAMI_PATH,
    Fault,
    PrimeSimulator,
    SimulatorStats,
    fixed_pod,
)
from tests.testing.http import Factory, get_status


def test_counts_per_path_pod_key_and_status(sim: PrimeSimulator, http: httpx.Client) -> None:
    sim.add_pod(fixed_pod("a"), fixed_pod("b"))
    get_status(http, "a", "b")
    get_status(http, "a", "a", "unknown")
    http.get(WHOAMI_PATH)
    httpx.get(sim.base_url + WHOAMI_PATH)
    httpx.get(sim.base_url + WHOAMI_PATH, headers={"Authorization": "Bearer bad"})
    stats = sim.stats
    assert stats.total == 5
    assert stats.by_path == {STATUS_PATH: 2, WHOAMI_PATH: 3}
    assert stats.by_pod_id == {"a": 3, "b": 1, "unknown": 1}  # every occurrence, as sent
    assert stats.by_key == {sim.api_key: 3, NO_KEY: 1, "bad": 1}
    assert stats.by_status == {200: 3, 401: 2}


def test_the_log_records_each_request_in_order(sim: PrimeSimulator, http: httpx.Client) -> None:
    sim.inject(Fault.rate_limited())
    get_status(http, "x")
    get_status(http, "y", "z")
    first, second = sim.stats.log
    assert (first.path, first.pod_ids, first.status, first.note) == (STATUS_PATH, ("x",), 429, "http_error")
    assert (second.pod_ids, second.status, second.note, second.api_key) == (
        ("y", "z"),
        200,
        None,
        sim.api_key,
    )
    assert first.time <= second.time
    assert first.method == "GET"


def test_control_requests_are_not_counted(sim: PrimeSimulator, http: httpx.Client) -> None:
    http.get("/_sim/health")
    http.get("/_sim/stats")
    assert sim.stats.total == 0


def test_the_log_is_bounded_but_counters_are_not(prime_simulator_factory: Factory) -> None:
    sim = prime_simulator_factory(log_size=5)
    with httpx.Client(base_url=sim.base_url) as client:
        for i in range(12):
            get_status(client, f"p{i}")
    assert sim.stats.total == 12
    assert [record.pod_ids for record in sim.stats.log] == [(f"p{i}",) for i in range(7, 12)]


def test_reset_forgets_stats_and_faults_but_keeps_pods(sim: PrimeSimulator, http: httpx.Client) -> None:
    sim.add_pod(fixed_pod("a"))
    sim.inject(Fault.drop(times=None, path=WHOAMI_PATH))
    get_status(http, "a")
    sim.reset()
    assert sim.stats.total == 0
    assert sim.stats.log == []
    assert sim.faults == []
    assert sim.pod_status("a") is not None


def test_snapshot_is_plain_json_data_also_over_http(sim: PrimeSimulator, http: httpx.Client) -> None:
    get_status(http, "a")
    get_status(http, "b")
    over_http = http.get("/_sim/stats", params={"log": 1}).json()
    assert over_http == sim.stats_snapshot(log=1)
    assert over_http["by_status"] == {"200": 2}
    assert [entry["pod_ids"] for entry in over_http["log"]] == [["b"]]
    assert "log" not in http.get("/_sim/stats").json()
    assert len(http.get("/_sim/stats", params={"log": "all"}).json()["log"]) == 2


def test_recording_from_many_threads_loses_nothing() -> None:
    stats = SimulatorStats(log_size=100)

    def hammer(n: int) -> None:
        for _ in range(2000):
            stats.record("GET", "/p", [f"pod{n}"], "k", 200)

    threads = [threading.Thread(target=hammer, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    readers = [stats.snapshot(log_limit=10) for _ in range(50)]  # reads while writes happen
    for thread in threads:
        thread.join()
    assert stats.total == 8000
    assert stats.by_key["k"] == 8000
    assert stats.by_pod_id == {f"pod{n}": 2000 for n in range(4)}
    assert len(stats.log) == 100
    assert all(r["total"] <= 8000 for r in readers)


def test_concurrent_clients_are_all_counted(sim: PrimeSimulator) -> None:
    sim.add_pod(fixed_pod("a"))

    def poll() -> None:
        with httpx.Client(base_url=sim.base_url, headers={"Authorization": f"Bearer {sim.api_key}"}) as c:
            for _ in range(50):
                assert get_status(c, "a").status_code == 200

    threads = [threading.Thread(target=poll) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sim.stats.by_pod_id["a"] == 300
    assert sim.stats.by_status == {200: 300}
