"""wait_for_capacity, ordered fallbacks, sold-out creates: the create operator and the simulator over HTTP.

The worker wait runs on a :class:`~tests.clocks.FakeClock` whose pauses change the simulator's stock, so
nothing sleeps on the real clock; the deferred wait runs the real :class:`PrimeCapacityTrigger`.
"""

from __future__ import annotations

import asyncio
import json
import time
from datetime import timedelta
from typing import Any

import pytest

from airflow_provider_prime._compat import AirflowException
from airflow_provider_prime.deployment import deployment_id
from airflow_provider_prime.exceptions import (
    PrimeAuthError,
    PrimeCapacityTimeoutError,
    PrimeConfigError,
    PrimeNoOfferError,
    PrimeResponseError,
    PrimeSoldOutError,
)
from airflow_provider_prime.operators.pod import GAVE_UP, PrimeCreatePodOperator
from airflow_provider_prime.operators.pod_names import derived_pod_name
from airflow_provider_prime.readiness import trouble_grace
from airflow_provider_prime.testing import GPUS_PATH, PODS_PATH, Fault, PrimeSimulator
from airflow_provider_prime.triggers.capacity import PrimeCapacityTrigger, refusal_memory
from airflow_provider_prime.triggers.pod_lifecycle import OwnedPodTrigger
from tests.clocks import FakeClock
from tests.operators.conftest import (
    TaskDeferred,
    TaskInstance,
    account,
    billing_after_deletes,
    create,
    make_context,
)
from tests.simulated import until

NAME = derived_pod_name("train_dag", "manual__1", "create_pod", -1, deployment=deployment_id())
H100 = "sim-h100-80gb-1x"
A100 = "sim-a100-80gb-1x-community"
LISTS = f"GET {GPUS_PATH}"
CREATES = f"POST {PODS_PATH}"
CONN = "prime_default"


def sold_out_once(sim: PrimeSimulator, words: str = "is out of stock") -> None:
    """The next create is refused 400 as sold out (nothing made) while the list still shows the offer."""
    message = f"Offer {H100} {words}"
    sim.inject(
        Fault.http_error(400, body_shape="detail", message=message, method="POST", path=PODS_PATH, times=1)
    )


def set_stock(sim: PrimeSimulator, cloud_id: str, status: str) -> None:
    """The offer's stock from now on, pods untouched: the simulator's ``set_stock`` once it has one."""
    if hasattr(sim, "set_stock"):
        sim.set_stock(cloud_id, status)
        return
    offers = tuple(
        offer.model_copy(update={"stock_status": status}) if offer.cloud_id == cloud_id else offer
        for offer in sim.scenario.offers
    )
    sim._scenario = sim.scenario.model_copy(update={"offers": offers})


def requests(sim: PrimeSimulator, what: str) -> int:
    return int(sim.stats.by_method_path[what])


def waiting(clock: FakeClock, **kwargs: Any) -> PrimeCreatePodOperator:
    """A worker-side capacity wait on ``clock``, polling every 10 s, for at most 10 minutes."""
    kwargs.setdefault("gpu_count", 1)
    kwargs.setdefault("wait_for_ready", False)  # the ready-wait is not what these tests are about
    operator = create(wait_for_capacity=timedelta(minutes=10), poll_interval=10, **kwargs)
    operator.clock = clock
    return operator


def lines(logs: list[dict[str, Any]], start: str) -> list[str]:
    return [str(e["event"]) for e in logs if str(e["event"]).startswith(start)]


# -- without wait_for_capacity: fail at once, as before -----------------------------------------------


def test_no_offer_fails_at_once_without_wait_for_capacity(lifecycle_sim):
    sim = lifecycle_sim()
    set_stock(sim, H100, "Unavailable")
    with pytest.raises(PrimeNoOfferError, match="out of stock"):
        create(gpu_count=1).execute(make_context())
    assert requests(sim, LISTS) == 1
    assert account(sim)["created"] == {}


def test_a_create_refused_as_sold_out_is_a_sold_out_error_and_forgets_its_record(
    lifecycle_sim, owner_records
):
    sim = lifecycle_sim()
    sold_out_once(sim)
    with pytest.raises(PrimeSoldOutError, match="nothing was created"):
        create(gpu_count=1, name="my-pod").execute(make_context())
    assert account(sim)["created"] == {}
    assert owner_records.get(deployment_id(), "my-pod") is None  # a refusal made nothing to own


# -- waiting in the worker ---------------------------------------------------------------------------------


def test_waits_in_the_worker_until_capacity_is_back_then_creates_exactly_one_pod(lifecycle_sim, logs):
    sim = lifecycle_sim()
    set_stock(sim, H100, "Unavailable")

    def pause(_: float) -> None:
        if len(clock.pauses) == 3:  # three looks at a sold-out list, then capacity is back
            set_stock(sim, H100, "High")

    clock = FakeClock(on_pause=pause)
    ti = TaskInstance()
    handover = waiting(clock).execute(make_context(ti))

    (pod_id,) = handover
    assert account(sim)["created"] == {NAME: 1}
    assert requests(sim, CREATES) == 1
    assert clock.pauses[:3] == [10, 10, 10]  # one look per poll interval
    assert handover[pod_id]["offer"]["cloud_id"] == H100 == ti.xcom["offer"]["cloud_id"]
    awaited = lines(logs, "Waiting for capacity")
    assert len(awaited) == 2  # at the start and when the offers changed, not at every poll
    assert "H100_80GB x1" in awaited[0]
    assert "stock Unavailable" in awaited[0]
    assert "stock High: fits" in awaited[1]
    assert billing_after_deletes(sim) == [pod_id]  # the training's pod now


def test_a_sold_out_create_passes_the_offer_over_for_a_while_then_creates_once(lifecycle_sim, logs):
    sim = lifecycle_sim()
    sold_out_once(sim)
    clock = FakeClock()
    handover = waiting(clock).execute(make_context())

    assert len(handover) == 1
    assert requests(sim, CREATES) == 2  # the refused one (nothing made) and the one that made the pod
    assert account(sim)["created"] == {NAME: 1}
    assert clock.pauses[0] == 10  # one look per poll interval
    # The list still showed the offer: it was passed over for refusal_memory, then created.
    assert sum(clock.pauses) == pytest.approx(refusal_memory(10))
    assert [e for e in logs if "was refused as sold out: The offer sold out" in str(e["event"])]
    assert lines(logs, "Waiting for capacity")[0].count("out of stock (Sold out)") == 1


def test_a_sold_out_first_choice_in_the_worker_wait_falls_back_at_once(lifecycle_sim, logs):
    sim = lifecycle_sim()
    sold_out_once(sim)
    clock = FakeClock()
    ti = TaskInstance()
    handover = waiting(clock, gpu_type=["H100_80GB", "A100_80GB"]).execute(make_context(ti))
    (pod_id,) = handover
    assert clock.pauses == []  # no wait: the next choice fit
    assert ti.xcom["offer"]["cloud_id"] == A100
    assert requests(sim, CREATES) == 2
    assert [e for e in logs if f"Offer {H100} is passed over until" in str(e["event"])]
    assert billing_after_deletes(sim) == [pod_id]


def test_every_choice_refused_without_wait_for_capacity_is_the_refusal(lifecycle_sim):
    sim = lifecycle_sim()
    sold_out_once(sim)
    sim.inject(
        Fault.http_error(
            400,
            body_shape="detail",
            message=f"Offer {A100} is sold out",
            method="POST",
            path=PODS_PATH,
            times=1,
        )
    )
    with pytest.raises(PrimeSoldOutError, match="sold out"):
        create(gpu_type=["H100_80GB", "A100_80GB"], gpu_count=1).execute(make_context())
    assert requests(sim, CREATES) == 2
    assert account(sim)["created"] == {}


def test_a_deferred_refusal_carries_the_refused_offer_to_the_trigger_and_the_resumed_task(lifecycle_sim):
    sim = lifecycle_sim()
    sold_out_once(sim)
    set_stock(sim, A100, "Unavailable")
    kwargs: dict[str, Any] = {"gpu_type": ["H100_80GB", "A100_80GB"], "gpu_count": 1, "deferrable": True}
    deferred = deferral(
        lambda: create(wait_for_capacity=600, poll_interval=15, **kwargs).execute(make_context())
    )
    refused = deferred.kwargs["refused_cloud_ids"]
    assert list(refused) == [H100]
    assert refused[H100] == pytest.approx(time.time() + refusal_memory(15), abs=5)
    assert deferred.trigger.serialize()[1]["refused_cloud_ids"] == refused
    # Resumed (say the trigger saw the A100 back): the H100 is still passed over, the A100 is created.
    set_stock(sim, A100, "High")
    ti = TaskInstance()
    event = {"status": "success", "message": "Capacity found", "pods": {}}
    resumed = create(wait_for_capacity=600, wait_for_ready=False, **kwargs)
    handover = resumed.execute_after_capacity(make_context(ti), event, **deferred.kwargs)
    (pod_id,) = handover
    assert ti.xcom["offer"]["cloud_id"] == A100
    assert requests(sim, CREATES) == 2
    assert billing_after_deletes(sim) == [pod_id]


def test_garbled_offer_answers_past_the_grace_end_the_worker_wait(lifecycle_sim):
    sim = lifecycle_sim()
    set_stock(sim, H100, "Unavailable")

    def pause(_: float) -> None:
        if len(clock.pauses) == 1:
            sim.inject(Fault.raw("<html>proxy</html>", content_type="text/html", path=GPUS_PATH, times=None))

    clock = FakeClock(on_pause=pause)
    with pytest.raises(PrimeResponseError):
        waiting(clock).execute(make_context())
    # The first garbled answer at 10 s (the first look), the grace (60 s: 3 polls of 10 s are less) on.
    assert clock.elapsed == pytest.approx(10 + trouble_grace(10))
    assert account(sim)["created"] == {}


def test_gives_up_at_the_deadline_with_the_no_offer_explanation(lifecycle_sim):
    sim = lifecycle_sim()
    set_stock(sim, H100, "Unavailable")
    clock = FakeClock()
    with pytest.raises(PrimeCapacityTimeoutError) as caught:  # a PrimeNoOfferError the policy fails
        waiting(clock).execute(make_context())
    text = str(caught.value)
    assert text.startswith("No GPU offer matches H100_80GB x1")
    assert f"cloud_id={H100}: out of stock (Unavailable)" in text
    assert text.endswith(GAVE_UP)
    assert sum(clock.pauses) == pytest.approx(600)
    assert requests(sim, LISTS) == 61  # the create's, then one per 10 s for 10 minutes
    assert account(sim)["created"] == {}


def test_a_kill_during_the_wait_creates_nothing(lifecycle_sim):
    sim = lifecycle_sim()
    set_stock(sim, H100, "Unavailable")

    def pause(_: float) -> None:
        if len(clock.pauses) == 2:
            operator.on_kill()
            set_stock(sim, H100, "High")  # capacity back right after the kill: still no create

    clock = FakeClock(on_pause=pause)
    operator = waiting(clock)
    with pytest.raises(AirflowException, match="stopped, the task was killed"):
        operator.execute(make_context())
    assert requests(sim, CREATES) == 0
    assert requests(sim, LISTS) == 2  # the create's, one poll; none after the kill
    assert account(sim)["created"] == {}


def test_an_error_waiting_cannot_fix_ends_the_wait(lifecycle_sim):
    sim = lifecycle_sim()
    set_stock(sim, H100, "Unavailable")

    def pause(_: float) -> None:
        sim.inject(Fault.http_error(403, times=1))

    with pytest.raises(PrimeAuthError):
        waiting(FakeClock(on_pause=pause)).execute(make_context())
    assert account(sim)["created"] == {}


# -- ordered fallbacks -------------------------------------------------------------------------------------


def test_takes_the_second_gpu_type_when_the_first_is_gone_and_says_why(lifecycle_sim, logs):
    sim = lifecycle_sim()
    set_stock(sim, H100, "Unavailable")
    ti = TaskInstance()
    handover = create(gpu_type=["H100_80GB", "A100_80GB"], gpu_count=1).execute(make_context(ti))

    (pod_id,) = handover
    offer = handover[pod_id]["offer"]
    assert offer == ti.xcom["offer"]
    assert (offer["cloud_id"], offer["gpu_type"], offer["is_spot"]) == (A100, "A100_80GB", False)
    assert "GPU type A100_80GB is choice 2 of 2 (no offer of H100_80GB fits)" in offer["why"]
    assert handover[pod_id]["price_hr"] == pytest.approx(0.89)
    assert requests(sim, LISTS) == 1  # one request for both types (no type filter)
    assert lines(logs, "Chose offer")


@pytest.mark.parametrize(
    "rendered",
    ['["H100_80GB", "A100_80GB"]', "['H100_80GB', 'A100_80GB']", ["H100_80GB", "A100_80GB"]],
    ids=["json", "jinja-of-a-list", "native"],
)
def test_a_templated_list_survives_rendering(rendered):
    operator = create(gpu_type=rendered, regions='["US", "CA"]', spot="Prefer")
    wish = operator._wish()
    assert wish.gpu_types == ("H100_80GB", "A100_80GB")
    assert wish.regions == ("US", "CA")
    assert wish.spot == "prefer"
    assert "spot" in PrimeCreatePodOperator.template_fields


@pytest.mark.parametrize(
    ("arguments", "match"),
    [
        ({"gpu_type": "[H100_80GB, A100]"}, "gpu_type is the text"),
        ({"spot": "sometimes"}, "spot must be one of never, prefer, only"),
        ({"regions": "[1]"}, "regions must be non-empty names"),
    ],
)
def test_bad_lists_and_spot_are_refused_before_any_request(lifecycle_sim, arguments, match):
    sim = lifecycle_sim()
    with pytest.raises(PrimeConfigError, match=match):
        create(**arguments).execute(make_context())
    assert sim.stats.total == 0 or requests(sim, LISTS) == 0


def test_a_full_request_with_wait_for_capacity_is_refused_before_any_request(lifecycle_sim):
    sim = lifecycle_sim()
    request = {"cloud_id": H100, "gpu_type": "H100_80GB", "gpu_count": 1, "socket": "SXM5"}
    with pytest.raises(PrimeConfigError, match="a full request names its offer itself"):
        create(request=request, wait_for_capacity=60).execute(make_context())
    assert sim.stats.total == 0


def test_no_gpu_type_is_still_only_refused_when_a_pod_must_be_created(lifecycle_sim):
    lifecycle_sim()
    with pytest.raises(PrimeConfigError, match="Give gpu_type"):
        create(gpu_type=None, name="nothing-to-adopt").execute(make_context())


def test_a_negative_wait_for_capacity_is_refused():
    with pytest.raises(PrimeConfigError, match="wait_for_capacity must not be negative"):
        create(wait_for_capacity=-1)


# -- waiting deferred --------------------------------------------------------------------------------------


def run_trigger(trigger: Any, while_running: Any = None) -> dict[str, Any]:
    async def first() -> dict[str, Any]:
        side = asyncio.ensure_future(while_running()) if while_running else None
        try:
            async for event in trigger.run():
                return dict(event.payload)
        finally:
            if side is not None:
                await side
        raise AssertionError("no event")

    return asyncio.run(first())


def deferral(call: Any) -> TaskDeferred:
    with pytest.raises(TaskDeferred) as caught:
        call()
    return caught.value


def test_a_deferred_wait_through_a_sold_out_period_creates_exactly_one_pod(lifecycle_sim, logs):
    sim = lifecycle_sim()
    set_stock(sim, H100, "Unavailable")
    ti = TaskInstance()
    operator = create(gpu_count=1, deferrable=True, wait_for_capacity=600, poll_interval=0.05)
    deferred = deferral(lambda: operator.execute(make_context(ti)))

    trigger = deferred.trigger
    assert isinstance(trigger, PrimeCapacityTrigger)
    classpath, kwargs = trigger.serialize()
    assert classpath == "airflow_provider_prime.triggers.capacity.PrimeCapacityTrigger"
    assert json.loads(json.dumps(kwargs)) == kwargs
    assert sim.api_key not in json.dumps(kwargs)
    assert kwargs["wish"]["gpu_type"] == "H100_80GB"
    assert kwargs["not_before"] is None
    deadline = deferred.kwargs["capacity_deadline"]
    assert kwargs["deadline"] == deadline
    assert 600 < deferred.timeout.total_seconds() < 700
    assert deferred.method_name == "execute_after_capacity"
    assert not ti.xcom  # nothing created, nothing pushed
    (deferring,) = lines(logs, "Deferring the wait for capacity to the triggerer")
    assert f"cloud_id={H100}, stock Unavailable: out of stock" in deferring  # in the worker's own log

    lists_before = requests(sim, LISTS)

    async def capacity_comes_back() -> None:
        await until(lambda: requests(sim, LISTS) >= lists_before + 3)  # three sold-out looks
        set_stock(sim, H100, "High")

    event = run_trigger(PrimeCapacityTrigger(**kwargs), capacity_comes_back)
    assert event["status"] == "success"
    assert requests(sim, CREATES) == 0  # the trigger never creates

    resumed = create(gpu_count=1, deferrable=True, wait_for_capacity=600, poll_interval=0.05)
    ready_wait = deferral(lambda: resumed.execute_after_capacity(make_context(ti), event, **deferred.kwargs))
    assert isinstance(ready_wait.trigger, OwnedPodTrigger)  # then the create's own ready-wait, deferred
    assert account(sim)["created"] == {NAME: 1}
    assert requests(sim, CREATES) == 1
    assert ti.xcom["offer"]["cloud_id"] == H100


def test_a_resumed_task_that_finds_the_capacity_gone_again_defers_with_the_same_deadline(lifecycle_sim):
    sim = lifecycle_sim()
    ti = TaskInstance()
    operator = create(gpu_count=1, deferrable=True, wait_for_capacity=600, poll_interval=0.05)
    event = {"status": "success", "message": "Capacity found", "pods": {}}
    set_stock(sim, H100, "Unavailable")  # gone again between the trigger's look and the worker's
    deadline = 1e10
    again = deferral(
        lambda: operator.execute_after_capacity(make_context(ti), event, capacity_deadline=deadline)
    )
    assert isinstance(again.trigger, PrimeCapacityTrigger)
    assert again.kwargs == {"capacity_deadline": deadline}
    assert again.trigger.deadline == deadline
    assert account(sim)["created"] == {}


def test_a_sold_out_refusal_defers_with_a_first_fire_one_poll_later(lifecycle_sim):
    sim = lifecycle_sim()
    sold_out_once(sim, "is sold out")
    operator = create(gpu_count=1, deferrable=True, wait_for_capacity=600, poll_interval=30)
    deferred = deferral(lambda: operator.execute(make_context()))
    trigger = deferred.trigger
    assert trigger.not_before == pytest.approx(deferred.kwargs["capacity_deadline"] - 600 + 30, abs=2)
    assert account(sim)["created"] == {}


def test_the_deadline_in_the_triggerer_is_a_no_offer_error_in_the_task(lifecycle_sim):
    sim = lifecycle_sim()
    set_stock(sim, H100, "Unavailable")
    operator = create(gpu_count=1, deferrable=True, wait_for_capacity=600, poll_interval=0.05)
    deferred = deferral(lambda: operator.execute(make_context()))
    _, kwargs = deferred.trigger.serialize()
    kwargs["deadline"] = asyncio.run(_soon(0.3))  # the same wait, its deadline brought near
    event = run_trigger(PrimeCapacityTrigger(**kwargs))
    assert event["status"] == "timeout"
    with pytest.raises(PrimeCapacityTimeoutError) as caught:
        operator.execute_after_capacity(make_context(), event, **deferred.kwargs)
    assert f"cloud_id={H100}: out of stock (Unavailable)" in str(caught.value)
    assert str(caught.value).endswith(GAVE_UP)
    assert account(sim)["created"] == {}


async def _soon(seconds: float) -> float:
    import time

    return time.time() + seconds


def test_the_trigger_logs_the_nearest_offers_once_per_change(lifecycle_sim, logs):
    sim = lifecycle_sim()
    set_stock(sim, H100, "Unavailable")
    wish = {"gpu_type": ["H100_80GB", "A100_80GB"], "gpu_count": 1, "regions": ["canada", "US"]}
    set_stock(sim, A100, "Unavailable")
    trigger = PrimeCapacityTrigger(
        wish=wish, deadline=1e10, poll_interval=0.02, prime_conn_id="prime_default"
    )
    lists_before = requests(sim, LISTS)

    async def back() -> None:
        await until(lambda: requests(sim, LISTS) >= lists_before + 4)
        set_stock(sim, A100, "Medium")

    event = run_trigger(trigger, back)
    assert event["status"] == "success"
    assert "A100_80GB x1 in CA" in event["message"]
    awaited = lines(logs, "Waiting for capacity")
    assert len(awaited) == 2
    assert "H100_80GB x1 or else A100_80GB x1" not in awaited[0]  # described once: types, then count
    assert "H100_80GB or else A100_80GB x1 in canada or else US" in awaited[0]
    assert requests(sim, LISTS) >= lists_before + 5
