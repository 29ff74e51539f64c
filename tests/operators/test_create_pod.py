"""PrimeCreatePodOperator against the simulator over HTTP: choose, create or adopt, wait, clean up."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest

from airflow_provider_prime._compat import AirflowSensorTimeout
from airflow_provider_prime.deployment import deployment_id
from airflow_provider_prime.exceptions import (
    PrimeConfigError,
    PrimeError,
    PrimeNoOfferError,
    PrimePodFailedError,
    PrimeTransientError,
)
from airflow_provider_prime.operators.pod import PrimeCreatePodOperator
from airflow_provider_prime.operators.pod_names import derived_pod_name
from airflow_provider_prime.testing import (
    STATUS_PATH,
    CreateLifecycle,
    Fault,
    ManualClock,
    Scenario,
    provisioned_pod,
    ready_pod,
)
from airflow_provider_prime.triggers.pod_lifecycle import OwnedPodTrigger
from airflow_provider_prime.waiting import DEFERRAL_MARGIN, LAST_CHECK_TIME
from tests.clocks import FakeClock
from tests.operators.conftest import (
    SLOW_BOOT,
    TaskDeferralTimeout,
    TaskDeferred,
    TaskInstance,
    account,
    billing_after_deletes,
    billing_pods,
    create,
    make_context,
)
from tests.simulated import connection_env, until
from tests.triggers.supervisor import TaskInstanceState, airflow_told

FAILURE = "pip could not build flash-attn: CUDA toolkit not found"
NAME = derived_pod_name("train_dag", "manual__1", "create_pod", -1, deployment=deployment_id())


def run_trigger(trigger: Any) -> dict[str, Any]:
    async def first() -> dict[str, Any]:
        async for event in trigger.run():
            return dict(event.payload)
        raise AssertionError("no event")

    return asyncio.run(first())


# -- choosing, creating, adopting --------------------------------------------------------------


def test_creates_the_cheapest_match_pushes_its_id_and_hands_over_when_ready(lifecycle_sim, logs):
    sim = lifecycle_sim()
    ti = TaskInstance()
    handover = create(gpu_count=1).execute(make_context(ti))

    (pod_id,) = handover
    assert ti.xcom["pod_id"] == pod_id
    assert handover[pod_id]["price_hr"] == pytest.approx(2.49)  # the 1x H100 offer, not the 8x one
    assert handover[pod_id]["status"] == "ACTIVE"
    assert handover[pod_id]["ssh_connections"]
    assert all(handover[pod_id]["ssh_connections"])
    assert account(sim)["created"] == {NAME: 1}
    assert account(sim)["pods"][pod_id]["billing"]  # success: the pod is the training's now
    events = [e["event"] for e in logs]
    pushed = next(i for i, e in enumerate(events) if pod_id in e and "created" in e)
    ready = next(i for i, e in enumerate(events) if e.startswith("All pods ready"))
    assert pushed < ready  # the id was logged before the wait


def test_a_retry_adopts_the_pod_of_the_first_try(lifecycle_sim):
    sim = lifecycle_sim(SLOW_BOOT)
    first = create(timeout=0.3, terminate_on_failure=False)
    with pytest.raises(AirflowSensorTimeout):
        first.execute(make_context())
    (pod_id,) = billing_pods(sim)

    sim.set_pod_state(pod_id, "ACTIVE", installation_status="FINISHED", ssh_nodes=1, ip_nodes=1)
    again = create().execute(make_context())

    assert set(again) == {pod_id}
    assert account(sim)["created"] == {NAME: 1}


def test_a_retry_waits_for_a_lagging_list_before_it_creates_again(prime_simulator_factory, prime_connect):
    """Found by the model test: the first try's create reached the server and its process died; the
    retry's lookup (two empty reads that agree) trusted a list that had not caught up yet and
    created a second pod. A retry now looks again until the list can show an earlier try's pod."""
    sim_clock = ManualClock(1000.0)
    lagging = CreateLifecycle(active_after=1, installed_after=36_000, deleting_for=0.5, list_lag=20.0)
    sim = prime_simulator_factory(Scenario(lifecycle=lagging), clock=sim_clock)
    prime_connect(sim)
    create(wait_for_ready=False).execute(make_context())  # try 1: the create, then SIGKILL
    (pod_id,) = billing_pods(sim)

    retry = TaskInstance()
    retry.try_number = 2
    again = create(wait_for_ready=False)
    again.clock = FakeClock(time.time(), on_pause=sim_clock.advance)  # its pauses move the API's time
    assert set(again.execute(make_context(retry))) == {pod_id}
    assert account(sim)["created"] == {NAME: 1}
    assert again.clock.elapsed >= 20.0  # it looked again until the list showed the pod


def test_if_exists_fail_refuses_a_live_pod_of_that_name_that_is_not_its_own(lifecycle_sim):
    sim = lifecycle_sim(SLOW_BOOT)
    sim.add_pod(ready_pod("pod-theirs", ready_at=0.0, name="shared-box"))
    with pytest.raises(PrimeConfigError, match=r"shared-box.*pod-theirs.*not this task instance's"):
        create(name="shared-box", if_exists="fail").execute(make_context())
    assert account(sim)["created"] == {}
    assert account(sim)["deleted"] == {}


def test_a_full_request_is_created_as_given(lifecycle_sim):
    sim = lifecycle_sim()
    request = {
        "cloudId": "sim-h100-80gb-8x",
        "gpuType": "H100_80GB",
        "gpuCount": 8,
        "socket": "SXM5",
        "name": "given",
    }
    handover = create(request=request, gpu_type=None, wait_for_ready=False).execute(make_context())
    assert account(sim)["created"] == {"given": 1}
    assert handover[next(iter(handover))]["status"] == "PROVISIONING"


def test_no_matching_offer_creates_nothing(lifecycle_sim):
    sim = lifecycle_sim()
    with pytest.raises(PrimeNoOfferError):
        create(gpu_type="H100_80GB", gpu_count=3).execute(make_context())
    assert account(sim)["created"] == {}


@pytest.mark.parametrize("how", ["refused port", "TLS to a plain-HTTP server"])
def test_an_unreachable_api_fails_fast_and_creates_nothing(lifecycle_sim, monkeypatch, how):
    sim = lifecycle_sim()
    if how == "refused port":
        sim.stop()  # nothing listens on its port any more
    else:
        https = sim.base_url.replace("http://", "https://")
        monkeypatch.setenv(*connection_env(https, sim.api_key).popitem())
    with pytest.raises(PrimeError) as caught:
        create().execute(make_context())
    assert not isinstance(caught.value, PrimePodFailedError)
    assert account(sim)["created"] == {}


def test_an_api_that_drops_every_call_fails_before_any_create(lifecycle_sim):
    sim = lifecycle_sim()
    sim.inject(Fault.drop(times=100))
    with pytest.raises(PrimeTransientError):
        create().execute(make_context())
    assert account(sim)["created"] == {}
    assert not [r for r in sim.stats.log if r.method == "POST"]


def test_a_lost_create_answer_still_gives_one_pod(lifecycle_sim):
    sim = lifecycle_sim()
    sim.inject(Fault.answer_lost(times=1))
    handover = create().execute(make_context())
    assert account(sim)["created"] == {NAME: 1}
    assert billing_pods(sim) == list(handover)


# -- the wait fails: the pod is deleted --------------------------------------------------------


def test_a_failed_installation_fails_with_the_reason_and_deletes_the_pod(lifecycle_sim):
    sim = lifecycle_sim(CreateLifecycle(active_after=1, installed_after=2, installation_failure=FAILURE))
    ti = TaskInstance()
    with pytest.raises(PrimePodFailedError, match=FAILURE):
        create().execute(make_context(ti))
    assert account(sim)["deleted"] == {NAME: 1}
    assert ti.xcom["pod_id"] in account(sim)["pods"]  # pushed before the wait, kept for the record


@pytest.mark.parametrize(
    "bad_answer",
    [
        Fault.malformed_json(path="/api/v1/pods/status"),
        Fault.http_error(401, path="/api/v1/pods/status"),
        Fault.http_error(404, body_shape="detail", message="Not Found", path="/api/v1/pods/status"),
    ],
    ids=["garbled 200", "lone 401", "lone 404"],
)
def test_one_bad_status_answer_does_not_fail_the_wait_in_the_worker(lifecycle_sim, bad_answer):
    """The create just got a good answer; one bad status answer is trouble, not a verdict (before,
    the worker's wait failed at once and deleted its healthy pod)."""
    sim = lifecycle_sim()
    sim.inject(bad_answer)
    ti = TaskInstance()
    handover = create().execute(make_context(ti))
    assert handover[ti.xcom["pod_id"]]["status"] == "ACTIVE"
    assert account(sim)["deleted"] == {}
    assert billing_pods(sim) == [ti.xcom["pod_id"]]


def test_a_wait_timeout_in_the_worker_deletes_the_pod(lifecycle_sim):
    sim = lifecycle_sim(SLOW_BOOT)
    with pytest.raises(AirflowSensorTimeout):
        create(timeout=0.3).execute(make_context())
    assert account(sim)["deleted"] == {NAME: 1}


def test_terminate_on_failure_false_leaves_the_pod(lifecycle_sim):
    sim = lifecycle_sim(SLOW_BOOT)
    with pytest.raises(AirflowSensorTimeout):
        create(timeout=0.3, terminate_on_failure=False).execute(make_context())
    assert account(sim)["deleted"] == {}
    assert len(billing_pods(sim)) == 1


def test_a_user_named_pod_from_before_the_run_is_used_but_never_deleted(lifecycle_sim):
    sim = lifecycle_sim(SLOW_BOOT)
    sim.add_pod(
        provisioned_pod("pod-shared", SLOW_BOOT, name="shared-box")
    )  # never ready: the wait times out
    with pytest.raises(AirflowSensorTimeout):
        create(name="shared-box", timeout=0.3).execute(make_context())
    assert account(sim)["deleted"] == {}
    with pytest.raises(AirflowSensorTimeout):
        create(name="shared-box", timeout=0.3, terminate_preexisting=True).execute(make_context())
    assert account(sim)["deleted"] == {"shared-box": 1}
    assert billing_after_deletes(sim) == []


def test_the_last_check_of_the_wait_in_the_worker_gets_a_whole_request(lifecycle_sim, monkeypatch):
    """Before, the worker's wait gave the hook the bare deadline, so a check made at the deadline
    was refused its request (the sensor gives it ``LAST_CHECK_TIME``)."""
    lifecycle_sim(SLOW_BOOT)
    operator = create(timeout=100, poll_interval=30)
    operator.clock = clock = FakeClock(time.time())  # the hook reads its request deadlines on the real one
    deadlines: list[float] = []
    asked = operator.hook.get_pods_status

    def get_pods_status(pod_ids: Any, deadline: float | None = None) -> Any:
        deadlines.append(deadline)
        return asked(pod_ids, deadline=deadline)

    monkeypatch.setattr(operator.hook, "get_pods_status", get_pods_status)
    with pytest.raises(AirflowSensorTimeout):
        operator.execute(make_context())
    start = clock.start
    assert clock.pauses == [30, 30, 30, 10]  # the last pause ends at the deadline, not after it
    assert deadlines == [start + 100] * 3 + [start + 90 + LAST_CHECK_TIME, start + 100 + LAST_CHECK_TIME]


def test_refusals_past_the_grace_name_the_api_and_the_connection(lifecycle_sim, logs):
    """Before, the worker's wait was given no ``api=``: its messages said "the Prime API" only."""
    sim = lifecycle_sim(SLOW_BOOT)
    sim.inject(Fault.http_error(401, path="/api/v1/pods/status", times=100))
    operator = create(poll_interval=30, timeout=3600)
    operator.clock = FakeClock(time.time())
    with pytest.raises(PrimeError, match="401"):
        operator.execute(make_context())
    (giving_up,) = [e["event"] for e in logs if "giving up" in e["event"]]
    assert giving_up.startswith(f"The Prime API at {sim.base_url} (connection 'prime_default') has refused")
    assert account(sim)["deleted"] == {NAME: 1}


def test_on_kill_deletes_the_pod_the_task_owns(lifecycle_sim):
    sim = lifecycle_sim(SLOW_BOOT)
    operator = create(wait_for_ready=False)
    operator.execute(make_context())
    operator.on_kill()
    assert account(sim)["deleted"] == {NAME: 1}


# -- deferred ----------------------------------------------------------------------------------


def deferral(operator: PrimeCreatePodOperator, ti: TaskInstance) -> TaskDeferred:
    with pytest.raises(TaskDeferred) as caught:
        operator.execute(make_context(ti))
    return caught.value


def test_defers_with_plain_kwargs_a_deadline_before_airflows_timeout_and_the_pod_id(lifecycle_sim):
    sim = lifecycle_sim(SLOW_BOOT)
    ti = TaskInstance()
    deferred = deferral(create(deferrable=True, timeout=600), ti)

    trigger = deferred.trigger
    assert isinstance(trigger, OwnedPodTrigger)
    classpath, kwargs = trigger.serialize()
    assert classpath == "airflow_provider_prime.triggers.pod_lifecycle.OwnedPodTrigger"
    assert kwargs["pod_ids"] == [ti.xcom["pod_id"]]
    assert kwargs["terminate_on_kill"] is True
    assert sim.api_key not in json.dumps(kwargs)
    assert deferred.timeout.total_seconds() > 600 + DEFERRAL_MARGIN - 5
    assert deferred.kwargs == {
        "pod_id": ti.xcom["pod_id"],
        "price_hr": pytest.approx(2.49),
        "owned": True,
        "offer": ti.xcom["offer"],  # the chosen offer and why, for the return value
    }
    assert json.loads(json.dumps(deferred.kwargs)) == deferred.kwargs


def test_the_deferred_wait_resumes_with_the_handover_and_the_price(lifecycle_sim):
    lifecycle_sim()
    ti = TaskInstance()
    operator = create(deferrable=True)
    deferred = deferral(operator, ti)
    event = run_trigger(deferred.trigger)
    handover = operator.execute_complete(make_context(ti), event, **deferred.kwargs)
    assert handover[ti.xcom["pod_id"]]["price_hr"] == pytest.approx(2.49)
    assert handover[ti.xcom["pod_id"]]["offer"]["cloud_id"] == "sim-h100-80gb-1x"


@pytest.mark.parametrize(
    ("lifecycle", "timeout", "error"),
    [
        (
            CreateLifecycle(active_after=1, installed_after=2, installation_failure=FAILURE),
            30,
            PrimePodFailedError,
        ),
        (SLOW_BOOT, 0.5, AirflowSensorTimeout),
    ],
)
def test_a_deferred_wait_that_fails_or_times_out_deletes_the_pod(lifecycle_sim, lifecycle, timeout, error):
    sim = lifecycle_sim(lifecycle)
    ti = TaskInstance()
    operator = create(deferrable=True, timeout=timeout, poll_interval=0.05)
    deferred = deferral(operator, ti)
    event = run_trigger(deferred.trigger)
    with pytest.raises(error):
        create(deferrable=True).execute_complete(make_context(ti), event, **deferred.kwargs)
    assert account(sim)["deleted"] == {NAME: 1}


def test_airflows_own_deferral_timeout_deletes_the_pod(lifecycle_sim):
    sim = lifecycle_sim(SLOW_BOOT)
    ti = TaskInstance()
    deferral(create(deferrable=True), ti)
    resumed = create(deferrable=True)  # a new worker process: nothing but the XCom and the pod
    with pytest.raises(TaskDeferralTimeout):
        resumed.resume_execution("__fail__", {"error": "Trigger timeout"}, make_context(ti))
    assert account(sim)["deleted"] == {NAME: 1}


def test_the_triggers_on_kill_deletes_the_pod_and_a_restart_does_not(lifecycle_sim, monkeypatch):
    sim = lifecycle_sim(SLOW_BOOT)
    ti = TaskInstance()
    trigger = deferral(create(deferrable=True), ti).trigger
    trigger.clock = FakeClock(time.time())  # its settle after the deferral takes no real time
    airflow_told(monkeypatch, trigger, TaskInstanceState.FAILED)  # what on_kill asks first (3.3)

    async def cancelled_then(kill: bool) -> None:
        polled = sum(r.path == STATUS_PATH for r in sim.stats.log)
        task = asyncio.ensure_future(run_trigger_async(trigger))
        await until(lambda: sum(r.path == STATUS_PATH for r in sim.stats.log) > polled)  # it is waiting
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await trigger.cleanup()  # what every cancellation runs, a triggerer restart included
        if kill:
            await trigger.on_kill()  # what Airflow 3.3 adds for a user's action

    asyncio.run(cancelled_then(kill=False))
    assert account(sim)["deleted"] == {}
    asyncio.run(cancelled_then(kill=True))
    assert account(sim)["deleted"] == {NAME: 1}


async def run_trigger_async(trigger: Any) -> None:
    async for _ in trigger.run():
        return
