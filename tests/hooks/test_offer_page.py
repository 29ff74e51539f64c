"""An availability answer of the wrong shape is an error, never "no offers" (issue 22, F10).

Read as an empty list, a 200 ``{}`` or envelope would be "capacity gone" for the capacity event
trigger (the next good answer fires a second DAG run: GPUs rented twice) and "no offer" for a create.
Through PrimeHook, sync and async, over HTTP to the simulator.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from airflow_provider_prime.exceptions import PrimeResponseError
from airflow_provider_prime.testing import GPUS_PATH, Fault, PrimeSimulator
from tests.hooks.callers import Pauses, Twin
from tests.simulated import FAST_RETRY


@pytest.fixture
def sim(prime_simulator_factory: Callable[..., PrimeSimulator], prime_connect: Any) -> PrimeSimulator:
    simulator = prime_simulator_factory()
    prime_connect(simulator, extra=FAST_RETRY)
    return simulator


@pytest.fixture
def hook(kind: str, delays: Pauses, sim: PrimeSimulator) -> Twin:
    return Twin.on(kind, delays)


@pytest.mark.parametrize(
    "body",
    [{}, {"data": {"podId": "pod-1"}, "status": "ok"}, {"error": "upstream"}, {"totalCount": 0}],
    ids=["empty", "envelope", "error", "count-only"],
)
def test_an_answer_without_items_is_a_response_error(
    hook: Twin, sim: PrimeSimulator, body: dict[str, Any]
) -> None:
    sim.inject(Fault.json_reply(body, path=GPUS_PATH, times=1))
    with pytest.raises(PrimeResponseError, match="no 'items'"):
        hook("list_gpu_offers", gpu_type="H100_80GB", gpu_count=1)


def test_items_null_is_a_page_without_offers(hook: Twin, sim: PrimeSimulator) -> None:
    sim.inject(Fault.json_reply({"items": None, "totalCount": 0}, path=GPUS_PATH, times=1))
    assert hook("list_gpu_offers", gpu_type="H100_80GB", gpu_count=1) == []


def test_the_simulators_pages_still_read(hook: Twin) -> None:
    assert hook("list_gpu_offers", gpu_type="H100_80GB", gpu_count=1)
