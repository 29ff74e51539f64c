"""Attacks on issue 22: sold-out detection, capacity waits, fallbacks, the pod log tail, the retry policy.

Each finding is a test marked ``xfail(strict=True, reason="F<n>: ...")`` that fails on the code as
it is; the attacks that held are plain passing tests asserting what holds. Everything talks HTTP to
the simulator (the operator fixtures of ``tests/operators``); worker waits run on a
:class:`~tests.clocks.FakeClock`, so nothing sleeps on the real clock to prove an order.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest

from airflow_provider_prime import retry as retry_module
from airflow_provider_prime._compat import RETRY_POLICY
from airflow_provider_prime.exceptions import (
    PrimeAuthError,
    PrimeBillingError,
    PrimeConnectionError,
    PrimeError,
    PrimeNoOfferError,
    PrimePodFailedError,
    PrimeRequestError,
    PrimeResponseError,
    PrimeSoldOutError,
    PrimeTransientError,
)
from airflow_provider_prime.models import GpuOffer
from airflow_provider_prime.offers import OfferWish, choose_offer
from airflow_provider_prime.testing import GPUS_PATH, PODS_PATH, CreateLifecycle, Fault, PrimeSimulator
from airflow_provider_prime.triggers.capacity import PrimeCapacityTrigger
from tests.clocks import FakeClock
from tests.operators.conftest import (
    TaskInstance,
    account,
    billing_after_deletes,
    create,
    make_context,
)

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


def run_trigger(trigger: PrimeCapacityTrigger, while_running: Any = None, limit: float = 20.0) -> dict[str, Any]:
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
            422, body_shape="detail", message="Image 'ghcr.io/acme/train:v9' is not available",
            method="POST", path=PODS_PATH, times=None,
        )
    )
    with pytest.raises(PrimeError) as caught:
        waiting(FakeClock()).execute(make_context())
    assert not isinstance(caught.value, (PrimeSoldOutError, PrimeNoOfferError)), str(caught.value)
    assert requests(sim, CREATES) == 1


SOLD_OUT_MISSED = ["OutOfStock", "SoldOut: H100_80GB", "Insufficient stock for this offer", "GPU not in stock"]


@pytest.mark.xfail(
    strict=True,
    reason="F2: says_sold_out misses camel-case codes (OutOfStock, SoldOut) and 'stock' wordings: a "
    "sold-out create fails at once as a plain PrimeRequestError and wait_for_capacity never waits",
)
@pytest.mark.parametrize("said", SOLD_OUT_MISSED, ids=["OutOfStock", "SoldOut", "insufficient-stock", "not-in-stock"])
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
    [(500, PrimeTransientError), (503, PrimeTransientError), (401, PrimeAuthError), (403, PrimeAuthError),
     (402, PrimeBillingError)],
)
def test_held_a_5xx_auth_or_billing_answer_saying_sold_out_is_not_sold_out(lifecycle_sim, status, kind):
    """Held: the status decides first; only a plain 4xx refusal of a create is judged by its text."""
    sim = lifecycle_sim()
    sim.inject(
        Fault.http_error(
            status, body_shape="detail", message="Offer is sold out", method="POST", path=PODS_PATH,
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
