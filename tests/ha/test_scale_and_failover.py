"""Production shape on real processes: a 200-wait fan-out over two triggerers, a triggerer killed
mid-wait, and the API rate-limiting everyone.

What only this tier shows: that the shared poller's promise (one request per interval per 100
distinct pods) holds per triggerer process when Airflow spreads the triggers over several; that a
wait survives its triggerer dying, not restarting, with the other one taking it over; and that a
429 storm slows every triggerer down as the API asks instead of failing waits. The fan-outs start
in the triggerer (``tests/ha/dags/ha_fan_out.py`` says why they are not mapped tasks).
"""

from __future__ import annotations

import math
import time
from datetime import timedelta

import pytest

from airflow_provider_prime.testing.faults import Fault
from airflow_provider_prime.testing.process import PrimeSimulatorProcess
from scripts.airflow_stack import AirflowStack, wait_until
from tests.e2e.pods import add_booting_pods, make_ready, timestamp
from tests.ha.conftest import TRIGGERERS
from tests.ha.runs import (
    STEP_TIMEOUT,
    requests_floor,
    settle,
    status_requests,
    triggerer_of,
    wait_all_deferred,
    wait_finished,
    wait_tis,
)
from tests.ha.wait_options import POKE_INTERVAL, TIMEOUT, fan_out_dag_id, wait_task_id

pytestmark = pytest.mark.ha

#: Poll intervals counted in a steady-state window.
WINDOW_INTERVALS = 5


def start_fan_out(
    stack: AirflowStack, simulator: PrimeSimulatorProcess, prefix: str, waits: int, pods: int
) -> tuple[str, list[str]]:
    """A run of ``ha_fan_out_<waits>`` over ``pods`` booting pods (wait ``i`` on pod ``i mod pods``)."""
    pod_ids = [f"{prefix}-{i}" for i in range(pods)]
    add_booting_pods(simulator, dict.fromkeys(pod_ids, 1))
    watcher = stack.trigger(fan_out_dag_id(waits), {"pod_ids": [pod_ids[i % pods] for i in range(waits)]})
    return watcher.run_id, pod_ids


def pods_by_triggerer(tis: list[dict[str, object]], waits: list[str]) -> dict[int, set[str]]:
    held: dict[int, set[str]] = {}
    for ti in tis:
        triggerer = triggerer_of(ti)
        assert triggerer is not None
        held.setdefault(triggerer, set()).add(waits[int(str(ti["task_id"]).removeprefix("wait_"))])
    return held


def assert_all_succeeded_in_time(stack: AirflowStack, run_id: str, count: int) -> None:
    run = stack.api.dag_run(fan_out_dag_id(count), run_id)
    assert run["state"] == "success"
    deadline = timestamp(run["start_date"]) + timedelta(seconds=TIMEOUT)
    tis = wait_tis(stack, fan_out_dag_id(count), run_id)
    assert len(tis) == count
    assert {ti["state"] for ti in tis} == {"success"}
    assert {ti["try_number"] for ti in tis} == {1}  # nothing was retried
    assert max(timestamp(ti["end_date"]) for ti in tis) < deadline


def assert_read_only(simulator: PrimeSimulatorProcess) -> None:
    """Only status reads reached the API: nothing was created or deleted, once or twice."""
    log = simulator.stats_snapshot(log=None)["log"]
    assert {(r["method"], r["path"].rstrip("/")) for r in log} == {("GET", "/api/v1/pods/status")}


def test_a_fan_out_over_two_triggerers_polls_once_per_interval_per_triggerer(
    ha_stack: AirflowStack, ha_simulator: PrimeSimulatorProcess, pod_prefix: str
) -> None:
    ha_simulator.reset()
    run_id, pod_ids = start_fan_out(ha_stack, ha_simulator, pod_prefix, waits=200, pods=50)
    waits = [pod_ids[i % 50] for i in range(200)]
    tis = wait_all_deferred(ha_stack, fan_out_dag_id(200), run_id, 200)
    held = pods_by_triggerer(tis, waits)
    # More waits than one triggerer's capacity: Airflow spread them over both.
    assert set(held) == {c.job_id for c in ha_stack.triggerer_components.values()}
    assert len(held) == TRIGGERERS

    # Steady state (every trigger has joined its triggerer's poller): count whole intervals.
    start = settle(3 * POKE_INTERVAL)
    end = settle(WINDOW_INTERVALS * POKE_INTERVAL)
    window = [r for r in status_requests(ha_simulator, start) if r["time"] < end]
    full_sets = [pods for pods in held.values()]
    ticks = [r for r in window if set(r["pod_ids"]) in full_sets]
    joins = [r for r in window if set(r["pod_ids"]) not in full_sets]
    floor = requests_floor(held.values())
    assert floor <= TRIGGERERS * math.ceil(len(pod_ids) / 100)
    # At most the floor per interval (plus one tick per poller at the window's edge) plus joins...
    assert len(ticks) <= WINDOW_INTERVALS * floor + len(held)
    assert len(window) <= WINDOW_INTERVALS * floor + len(held) + len(joins)
    # ...and every triggerer is polling all its pods, not only some.
    for pods in held.values():
        assert sum(set(r["pod_ids"]) == pods for r in ticks) >= WINDOW_INTERVALS - 1

    for pod_id in pod_ids:
        make_ready(ha_simulator, pod_id, 1)
    assert wait_finished(ha_stack, fan_out_dag_id(200), run_id) == "success"
    assert_all_succeeded_in_time(ha_stack, run_id, 200)
    handover = ha_stack.api.xcom(fan_out_dag_id(200), run_id, wait_task_id(7))
    assert set(handover) == {waits[7]}
    assert handover[waits[7]]["status"] == "ACTIVE"
    assert len(handover[waits[7]]["ssh_connections"]) == 1
    assert_read_only(ha_simulator)


def test_waits_survive_their_triggerer_dying_and_move_to_the_other(
    ha_stack: AirflowStack, ha_simulator: PrimeSimulatorProcess, pod_prefix: str
) -> None:
    ha_simulator.reset()
    run_id, pod_ids = start_fan_out(ha_stack, ha_simulator, pod_prefix, waits=20, pods=10)
    tis = wait_all_deferred(ha_stack, fan_out_dag_id(20), run_id, 20)
    counts: dict[int, int] = {}
    for ti in tis:
        job = triggerer_of(ti)
        assert job is not None
        counts[job] = counts.get(job, 0) + 1
    victim_job = max(counts, key=lambda job: counts[job])
    victim = ha_stack.triggerer_by_job(victim_job)
    assert victim is not None
    survivor = next(c for c in ha_stack.triggerer_components.values() if c is not victim)
    wait_until(lambda: status_requests(ha_simulator), 60, "the triggerers polling")

    killed_at = time.time()
    ha_stack.kill(victim.name)  # SIGKILL to its process group: no goodbye, no hand-over
    try:
        # Once the dead job's heartbeat is stale, the survivor adopts every one of its triggers.
        wait_until(
            lambda: (
                {triggerer_of(ti) for ti in wait_tis(ha_stack, fan_out_dag_id(20), run_id)}
                == {survivor.job_id}
            ),
            STEP_TIMEOUT,
            f"{survivor.name} taking over {victim.name}'s triggers",
            1.0,
        )
        # The survivor polls for all the pods, the moved ones included.
        wait_until(
            lambda: any(set(r["pod_ids"]) == set(pod_ids) for r in status_requests(ha_simulator, killed_at)),
            STEP_TIMEOUT,
            "a request for every pod after the take-over",
        )
        for pod_id in pod_ids:
            make_ready(ha_simulator, pod_id, 1)
        assert wait_finished(ha_stack, fan_out_dag_id(20), run_id) == "success"
        assert_all_succeeded_in_time(ha_stack, run_id, 20)
        assert_read_only(ha_simulator)
    finally:
        ha_stack.start([victim.name])  # two triggerers again for the tests after this one


def test_a_rate_limited_api_slows_every_triggerer_down_and_no_wait_fails(
    ha_stack: AirflowStack, ha_simulator: PrimeSimulatorProcess, pod_prefix: str
) -> None:
    retry_after, duration = 3 * POKE_INTERVAL, 8 * POKE_INTERVAL
    ha_simulator.reset()
    run_id, pod_ids = start_fan_out(ha_stack, ha_simulator, pod_prefix, waits=10, pods=5)
    tis = wait_all_deferred(ha_stack, fan_out_dag_id(10), run_id, 10)
    pollers = len({triggerer_of(ti) for ti in tis})
    settle(2 * POKE_INTERVAL)

    fault_at = time.time()
    ha_simulator.inject(Fault.rate_limited(retry_after=retry_after, times=None, duration=duration))
    for pod_id in pod_ids:  # ready now, but the API only says 429 until the fault is over
        make_ready(ha_simulator, pod_id, 1)
    assert wait_finished(ha_stack, fan_out_dag_id(10), run_id) == "success"

    assert_all_succeeded_in_time(ha_stack, run_id, 10)
    during = [r for r in status_requests(ha_simulator, fault_at) if r["time"] < fault_at + duration]
    assert during
    assert {r["status"] for r in during} == {429}
    # Each poller waited Retry-After between its requests: at most one per retry_after seconds
    # (plus the one each had in flight), against one per poke interval without the fault.
    assert len(during) <= pollers * (math.floor(duration / retry_after) + 1)
    assert len(during) < pollers * duration / POKE_INTERVAL
    after = [r for r in status_requests(ha_simulator, fault_at + duration)]
    assert any(r["status"] == 200 for r in after)  # it recovered...
    # ...and only then did the waits learn the pods were ready.
    for ti in wait_tis(ha_stack, fan_out_dag_id(10), run_id):
        assert timestamp(ti["end_date"]).timestamp() >= fault_at + duration
