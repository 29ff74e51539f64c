"""Attacks on issue 22: sold-out detection, capacity waits, fallbacks, the pod log tail, the retry policy.

Each finding is a test marked ``xfail(strict=True, reason="F<n>: ...")`` that fails on the code as
it is; the attacks that held are plain passing tests asserting what holds. Everything talks HTTP to
the simulator (the operator fixtures of ``tests/operators``); worker waits run on a
:class:`~tests.clocks.FakeClock`, so nothing sleeps on the real clock to prove an order.
"""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta
from typing import Any

import pytest

from airflow_provider_prime.exceptions import (
    PrimeAuthError,
    PrimeBillingError,
    PrimeError,
    PrimeNoOfferError,
    PrimeRequestError,
    PrimeSoldOutError,
    PrimeTransientError,
)
from airflow_provider_prime.hooks import _plans
from airflow_provider_prime.models import GpuOffer
from airflow_provider_prime.offers import OfferWish, choose_offer
from airflow_provider_prime.testing import GPUS_PATH, PODS_PATH, Fault, PrimeSimulator
from airflow_provider_prime.triggers.capacity import PrimeCapacityTrigger
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

H100 = "sim-h100-80gb-1x"
A100 = "sim-a100-80gb-1x-community"
LISTS = f"GET {GPUS_PATH}"
CREATES = f"POST {PODS_PATH}"
SECRET = "hf_CapAdversary0123456789secret"


def requests(sim: PrimeSimulator, what: str) -> int:
    return int(sim.stats.by_method_path[what])


def set_stock(sim: PrimeSimulator, cloud_id: str, status: str) -> None:
    if hasattr(sim, "set_stock"):
        sim.set_stock(cloud_id, status)
        return
    offers = tuple(
        offer.model_copy(update={"stock_status": status}) if offer.cloud_id == cloud_id else offer
        for offer in sim.scenario.offers
    )
    sim._scenario = sim.scenario.model_copy(update={"offers": offers})


def refuse_create(sim: PrimeSimulator, status: int, message: str) -> None:
    """The next create is answered ``status`` with ``{"detail": message}`` (nothing made)."""
    sim.inject(
        Fault.http_error(status, body_shape="detail", message=message, method="POST", path=PODS_PATH, times=1)
    )


def waiting(clock: FakeClock, **kwargs: Any) -> Any:
    """A worker-side capacity wait on ``clock``: polls every 10 s for at most 10 minutes."""
    kwargs.setdefault("gpu_count", 1)
    kwargs.setdefault("wait_for_ready", False)
    operator = create(wait_for_capacity=timedelta(minutes=10), poll_interval=10, **kwargs)
    operator.clock = clock
    return operator


def run_trigger(
    trigger: PrimeCapacityTrigger, while_running: Any = None, limit: float = 20.0
) -> dict[str, Any]:
    async def first() -> dict[str, Any]:
        side = asyncio.ensure_future(while_running()) if while_running else None
        try:
            async with asyncio.timeout(limit) if hasattr(asyncio, "timeout") else _nothing():
                async for event in trigger.run():
                    return dict(event.payload)
        finally:
            if side is not None:
                side.cancel()
        raise AssertionError("no event")

    return asyncio.run(first())


class _nothing:
    async def __aenter__(self) -> None:
        return None

    async def __aexit__(self, *_: object) -> None:
        return None


# -- sold-out detection: what a refused create is called -----------------------------------------------


NOT_SOLD_OUT = [
    "Image 'ghcr.io/acme/train:v9' is not available",
    "Field 'disk_size': 5000 GB is not available for this offer",
    "Custom template tpl-123 is unavailable to your team",
]


@pytest.mark.xfail(
    strict=True,
    reason="F1: SOLD_OUT_PHRASES' 'not available'/'unavailable' match any 4xx text: a bad image or disk "
    "size becomes PrimeSoldOutError (waited on, retried by PRIME_RETRY_POLICY) instead of failing at once",
)
@pytest.mark.parametrize("said", NOT_SOLD_OUT, ids=["image", "disk", "template"])
def test_a_bad_request_whose_text_says_not_available_is_not_sold_out(lifecycle_sim, said):
    sim = lifecycle_sim()
    refuse_create(sim, 422, said)
    with pytest.raises(PrimeRequestError) as caught:
        create(gpu_count=1).execute(make_context())
    assert not isinstance(caught.value, PrimeSoldOutError), str(caught.value)


@pytest.mark.xfail(
    strict=True,
    reason="F1 (consequence): a 422 for an unavailable image makes wait_for_capacity re-POST the same "
    "doomed create every poll until the deadline (61 creates in 10 minutes) instead of failing at once",
)
def test_a_bad_image_is_not_waited_on_as_if_sold_out(lifecycle_sim):
    sim = lifecycle_sim()
    sim.inject(
        Fault.http_error(
            422,
            body_shape="detail",
            message="Image 'ghcr.io/acme/train:v9' is not available",
            method="POST",
            path=PODS_PATH,
            times=None,
        )
    )
    with pytest.raises(PrimeError) as caught:
        waiting(FakeClock()).execute(make_context())
    assert not isinstance(caught.value, (PrimeSoldOutError, PrimeNoOfferError)), str(caught.value)
    assert requests(sim, CREATES) == 1


SOLD_OUT_MISSED = [
    "OutOfStock",
    "SoldOut: H100_80GB",
    "Insufficient stock for this offer",
    "GPU not in stock",
]


@pytest.mark.xfail(
    strict=True,
    reason="F2: says_sold_out misses camel-case codes (OutOfStock, SoldOut) and 'stock' wordings: a "
    "sold-out create fails at once as a plain PrimeRequestError and wait_for_capacity never waits",
)
@pytest.mark.parametrize(
    "said", SOLD_OUT_MISSED, ids=["OutOfStock", "SoldOut", "insufficient-stock", "not-in-stock"]
)
def test_out_of_stock_style_answers_are_sold_out(lifecycle_sim, said):
    sim = lifecycle_sim()
    refuse_create(sim, 400, said)
    with pytest.raises(PrimeSoldOutError):
        create(gpu_count=1).execute(make_context())
    assert account(sim)["created"] == {}


SOLD_OUT_HELD = ["Offer is OUT_OF_STOCK", "sold-out", "Not enough capacity in US-CA-2", "NO  CAPACITY"]


@pytest.mark.parametrize("said", SOLD_OUT_HELD)
def test_held_sold_out_wordings_with_odd_spelling_are_sold_out(lifecycle_sim, said):
    sim = lifecycle_sim()
    refuse_create(sim, 400, said)
    with pytest.raises(PrimeSoldOutError, match="nothing was created"):
        create(gpu_count=1).execute(make_context())
    assert account(sim)["created"] == {}


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (500, PrimeTransientError),
        (503, PrimeTransientError),
        (401, PrimeAuthError),
        (403, PrimeAuthError),
        (402, PrimeBillingError),
    ],
)
def test_held_a_5xx_auth_or_billing_answer_saying_sold_out_is_not_sold_out(
    lifecycle_sim, monkeypatch, status, kind
):
    """Held: the status decides first; only a plain 4xx refusal of a create is judged by its text."""
    monkeypatch.setattr(_plans, "ADOPTION_PAUSES", (0.01,))  # a 5xx create is looked up, not re-sent
    sim = lifecycle_sim()
    sim.inject(
        Fault.http_error(
            status,
            body_shape="detail",
            message="Offer is sold out",
            method="POST",
            path=PODS_PATH,
            times=None,
        )
    )
    with pytest.raises(kind) as caught:
        create(gpu_count=1, wait_for_capacity=600).execute(make_context())
    assert not isinstance(caught.value, PrimeSoldOutError)
    assert requests(sim, CREATES) == 1  # a POST that may have reached the server is never re-sent
    assert billing_after_deletes(sim) == []


def test_held_a_sold_out_refusal_then_capacity_flapping_creates_exactly_one_pod(lifecycle_sim):
    """Held: sold out at the create, back, gone at the next look, back: one pod, never two."""
    sim = lifecycle_sim()
    refuse_create(sim, 400, f"Offer {H100} is out of stock")
    flips = iter(["Unavailable", "High", "Unavailable", "High"])

    def pause(_: float) -> None:
        state = next(flips, None)
        if state is not None:
            set_stock(sim, H100, state)

    clock = FakeClock(on_pause=pause)
    handover = waiting(clock).execute(make_context())
    (pod_id,) = handover
    assert requests(sim, CREATES) == 2  # the refused one and the one that made the pod
    assert list(account(sim)["created"].values()) == [1]
    assert billing_after_deletes(sim) == [pod_id]


# -- garbled availability answers during a capacity wait -------------------------------------------------

GARBLED = "<html><body>502 upstream hiccup (served as 200 by a proxy)</body></html>"


@pytest.mark.xfail(
    strict=True,
    reason="F3: one garbled availability answer (PrimeResponseError) fires 'failed' and ends a deferred "
    "capacity wait of hours; the status waits allow garbled answers a grace (readiness.MIN_TROUBLE_GRACE)",
)
def test_one_garbled_offers_answer_does_not_end_a_deferred_capacity_wait(lifecycle_sim):
    sim = lifecycle_sim()
    set_stock(sim, H100, "Unavailable")
    trigger = PrimeCapacityTrigger(
        wish={"gpu_type": "H100_80GB", "gpu_count": 1},
        deadline=time.time() + 60,
        poll_interval=0.05,
        prime_conn_id="prime_default",
    )

    async def hiccup_then_capacity() -> None:
        await until(lambda: requests(sim, LISTS) >= 2)
        sim.inject(Fault.raw(GARBLED, content_type="text/html", method="GET", path=GPUS_PATH, times=1))
        await until(lambda: requests(sim, LISTS) >= 5)
        set_stock(sim, H100, "High")

    event = run_trigger(trigger, hiccup_then_capacity)
    assert event["status"] == "success", event
    assert requests(sim, CREATES) == 0


@pytest.mark.xfail(
    strict=True,
    reason="F3: the worker's capacity wait raises on one garbled availability answer (not transient)",
)
def test_one_garbled_offers_answer_does_not_end_a_worker_capacity_wait(lifecycle_sim):
    sim = lifecycle_sim()
    set_stock(sim, H100, "Unavailable")

    def pause(_: float) -> None:
        if len(clock.pauses) == 1:
            sim.inject(Fault.raw(GARBLED, content_type="text/html", method="GET", path=GPUS_PATH, times=1))
        if len(clock.pauses) == 3:
            set_stock(sim, H100, "High")

    clock = FakeClock(on_pause=pause)
    handover = waiting(clock).execute(make_context())
    assert len(handover) == 1
    assert requests(sim, CREATES) == 1


def test_held_a_transient_offers_failure_is_waited_out_in_the_worker(lifecycle_sim):
    sim = lifecycle_sim()
    set_stock(sim, H100, "Unavailable")

    def pause(_: float) -> None:
        if len(clock.pauses) == 1:
            sim.inject(Fault.server_error(503, method="GET", path=GPUS_PATH, times=3))  # outlasts retries
        if len(clock.pauses) == 3:
            set_stock(sim, H100, "High")

    clock = FakeClock(on_pause=pause)
    handover = waiting(clock).execute(make_context())
    (pod_id,) = handover
    assert requests(sim, CREATES) == 1
    assert billing_after_deletes(sim) == [pod_id]


# -- the deadline ----------------------------------------------------------------------------------------


def test_held_the_deadline_survives_a_triggerer_restart_and_the_pod_wait_keeps_its_timeout(lifecycle_sim):
    """Held: the capacity deadline is absolute (a rebuilt trigger keeps it), a capacity that is back
    resumes into a create whose own ready-wait deadline counts from the create, not from the wait."""
    sim = lifecycle_sim()
    set_stock(sim, H100, "Unavailable")
    ti = TaskInstance()
    operator = create(gpu_count=1, deferrable=True, wait_for_capacity=600, poll_interval=0.05, timeout=900)
    with pytest.raises(TaskDeferred) as caught:
        operator.execute(make_context(ti))
    first = caught.value
    _classpath, kwargs = first.trigger.serialize()
    rebuilt = PrimeCapacityTrigger(**kwargs)  # what a restarted (or another) triggerer runs
    assert rebuilt.deadline == first.trigger.deadline == first.kwargs["capacity_deadline"]
    set_stock(sim, H100, "High")
    event = run_trigger(rebuilt)
    assert event["status"] == "success"
    resumed = create(gpu_count=1, deferrable=True, wait_for_capacity=600, poll_interval=0.05, timeout=900)
    with pytest.raises(TaskDeferred) as caught:
        resumed.execute_after_capacity(make_context(ti), event, **first.kwargs)
    ready = caught.value.trigger
    assert ready.deadline == pytest.approx(time.time() + 900, abs=30)  # the pod wait's own timeout
    assert account(sim)["created"]
    assert list(account(sim)["created"].values()) == [1]
    operator_pod = ti.xcom["pod_id"]
    resumed.hook.delete_pod(operator_pod)
    assert billing_after_deletes(sim) == []


def test_held_a_resume_after_the_deadline_gives_up_without_creating(lifecycle_sim):
    """Held: a success event that arrives after the deadline (a slow worker) still creates if capacity
    is there; with no capacity left it gives up at once rather than deferring again past the deadline."""
    sim = lifecycle_sim()
    set_stock(sim, H100, "Unavailable")
    operator = create(gpu_count=1, deferrable=True, wait_for_capacity=600, poll_interval=0.05)
    event = {"status": "success", "message": "Capacity found", "pods": {}}
    with pytest.raises(PrimeNoOfferError, match="reached its deadline"):
        operator.execute_after_capacity(make_context(), event, capacity_deadline=time.time() - 1)
    assert account(sim)["created"] == {}


# -- fallbacks, spot, the XCom's "why" ----------------------------------------------------------------------


def offer(
    cloud_id: str, gpu: str, price: float, *, spot: bool = False, country: str = "US", stock: str = "High"
) -> GpuOffer:
    return GpuOffer.model_validate(
        {
            "cloudId": cloud_id,
            "gpuType": gpu,
            "gpuCount": 1,
            "country": country,
            "isSpot": spot,
            "stockStatus": stock,
            "prices": {"onDemand": price},
        }
    )


@pytest.mark.xfail(
    strict=True,
    reason="F4: Choice.why says 'on-demand (no spot offer fits)' while a spot offer of a later GPU type "
    "fits: the XCom's reason is false (type outranks spot; the text must say 'of this type/region')",
)
def test_why_does_not_claim_no_spot_offer_fits_when_one_of_a_later_type_does():
    offers = [offer("h100-od", "H100_80GB", 3.0), offer("a100-spot", "A100_80GB", 0.5, spot=True)]
    choice = choose_offer(offers, OfferWish(gpu_type=("H100_80GB", "A100_80GB"), spot="prefer"))
    assert choice.offer.cloud_id == "h100-od"  # the rule: type first (held)
    assert "no spot offer fits" not in choice.why, choice.why


def test_held_ties_choose_the_same_offer_whatever_the_listing_order():
    a, b = offer("b-offer", "H100_80GB", 2.0), offer("a-offer", "H100_80GB", 2.0)
    wish = OfferWish(gpu_type="H100_80GB")
    assert choose_offer([a, b], wish).offer.cloud_id == choose_offer([b, a], wish).offer.cloud_id == "a-offer"


def test_held_duplicates_and_a_templated_list_are_one_preference_order():
    wish = OfferWish(gpu_type='["A100_80GB", "H100_80GB", "A100_80GB"]')
    assert wish.gpu_types == ("A100_80GB", "H100_80GB")
    offers = [offer("h", "H100_80GB", 1.0), offer("a", "A100_80GB", 9.0)]
    choice = choose_offer(offers, wish)
    assert choice.offer.cloud_id == "a"
    assert "choice 1 of 2" in choice.why


@pytest.mark.parametrize("empty", [[], "[]", "", None])
def test_held_an_empty_gpu_type_list_is_refused_before_any_request(lifecycle_sim, empty):
    sim = lifecycle_sim()
    with pytest.raises(PrimeError, match="gpu_type"):
        create(gpu_type=empty, wait_for_capacity=60).execute(make_context())
    assert requests(sim, LISTS) == 0
    assert requests(sim, CREATES) == 0


def test_held_spot_only_with_no_spot_offer_says_so_and_creates_nothing(lifecycle_sim):
    sim = lifecycle_sim()
    with pytest.raises(PrimeNoOfferError, match=r"not a spot offer \(spot='only'\)"):
        create(gpu_count=1, spot="only").execute(make_context())
    assert account(sim)["created"] == {}


def test_held_a_price_cap_moves_to_the_fallback_and_the_xcom_says_why(lifecycle_sim):
    sim = lifecycle_sim()
    ti = TaskInstance()
    handover = create(
        gpu_type=["H100_80GB", "A100_80GB"], gpu_count=1, max_price=1.0, wait_for_ready=False
    ).execute(make_context(ti))
    (pod_id,) = handover
    chosen = ti.xcom["offer"]
    assert chosen["gpu_type"] == "A100_80GB"
    assert chosen["price_hr"] <= 1.0
    assert "no offer of H100_80GB fits" in chosen["why"]
    assert handover[pod_id]["offer"] == chosen
    sim_pod = account(sim)["pods"][pod_id]
    assert sim_pod["billing"]
    create().hook.delete_pod(pod_id)
    assert billing_after_deletes(sim) == []
