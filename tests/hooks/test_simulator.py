"""PrimeHook against the package's own Prime API simulator, over real HTTP, sync and async.

The simulator is the faithful one (OpenAPI shapes, 422 past 100 ids, its own fault catalogue), so
these tests check the hook against the API's contract rather than against our own fake.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from airflow_provider_prime.exceptions import (
    PrimeAPIError,
    PrimeAuthError,
    PrimeRequestError,
    PrimeResponseError,
    PrimeTransientError,
)
from airflow_provider_prime.hooks.prime import PrimeHook
from airflow_provider_prime.models import PodRequest, PodStatus
from airflow_provider_prime.testing import PODS_PATH, STATUS_PATH, Fault, PrimeSimulator, bulk_scenario
from tests.hooks.callers import Twin
from tests.simulated import FAST_RETRY

Fetch = Callable[[list[str]], list[PodStatus]]
FAST = {**FAST_RETRY, "max_retries": 3}


@pytest.fixture
def prime_connection_extra() -> dict[str, Any]:
    """The plugin's ``prime_connect`` uses these fast settings unless a test gives others."""
    return dict(FAST)


@pytest.fixture
def fetch(kind: str) -> Fetch:
    """``PrimeHook().get_pods_status`` or its async twin, behind one signature."""

    def run(pod_ids: list[str]) -> list[PodStatus]:
        hook = PrimeHook()
        if kind == "sync":
            return hook.get_pods_status(pod_ids)
        return asyncio.run(hook.aget_pods_status(pod_ids))

    return run


@pytest.fixture
def sim(prime_simulator: PrimeSimulator, prime_connect: Callable[..., str]) -> PrimeSimulator:
    prime_simulator.set_scenario(bulk_scenario(250, ready_at=0))
    prime_connect(prime_simulator)
    return prime_simulator


def _pod_ids(count: int) -> list[str]:
    return [f"pod-{n:05d}" for n in range(count)]


def test_250_pods_in_three_requests_each_id_once(sim: PrimeSimulator, fetch: Fetch) -> None:
    statuses = fetch(_pod_ids(250) + _pod_ids(20) + ["pod-99999"])
    assert sorted(s.pod_id for s in statuses) == _pod_ids(250)  # the unknown id is simply absent
    assert all(s.status == "ACTIVE" and s.installation_status == "FINISHED" for s in statuses)
    assert sim.stats.by_path[STATUS_PATH] == 3
    assert set(sim.stats.by_pod_id.values()) == {1}
    assert sim.stats.by_status[422] == 0  # never more than the simulator's 100 ids per request


@pytest.mark.parametrize("http_date", [False, True])
def test_rate_limit_with_retry_after_is_survived(sim: PrimeSimulator, fetch: Fetch, http_date: bool) -> None:
    sim.inject(Fault.rate_limited(retry_after=30, http_date=http_date, times=2))  # capped to 0.05 s
    assert len(fetch(["pod-00001"])) == 1
    assert sim.stats.by_status[429] == 2
    assert sim.stats.by_path[STATUS_PATH] == 3


def test_html_502_burst_exhausts_the_retries(sim: PrimeSimulator, fetch: Fetch) -> None:
    sim.inject(Fault.server_error(502, html=True, times=None))
    with pytest.raises(PrimeTransientError, match="Gave up after 4 attempts: HTTP 502") as caught:
        fetch(["pod-00001"])
    assert "<" not in str(caught.value)
    assert sim.stats.by_path[STATUS_PATH] == 4


def test_slow_answer_times_out_then_recovers(
    sim: PrimeSimulator, prime_connect: Callable[..., str], fetch: Fetch
) -> None:
    prime_connect(sim, extra={**FAST, "read_timeout": 0.2})
    sim.inject(Fault.slow(1.0, times=1))
    assert len(fetch(["pod-00001"])) == 1
    assert sim.stats.by_path[STATUS_PATH] == 2


@pytest.mark.parametrize("shape", ["errors", "detail", "detail_list"])
def test_422_is_not_retried_in_any_body_shape(sim: PrimeSimulator, fetch: Fetch, shape: str) -> None:
    sim.inject(Fault.http_error(422, body_shape=shape, message="pod_ids is invalid"))  # type: ignore[arg-type]
    with pytest.raises(PrimeRequestError, match="HTTP 422") as caught:
        fetch(["pod-00001"])
    assert caught.value.details
    assert sim.stats.by_path[STATUS_PATH] == 1


def test_wrong_key_is_an_auth_error_without_retry(
    sim: PrimeSimulator, prime_connect: Callable[..., str], fetch: Fetch
) -> None:
    prime_connect(sim, api_key="not-the-key")
    with pytest.raises(PrimeAuthError, match="Instances → Read"):
        fetch(["pod-00001"])
    assert sim.stats.by_path[STATUS_PATH] == 1


@pytest.mark.parametrize(
    ("fault", "check"),
    [
        (
            Fault.unknown_enums(),
            lambda s: s[0].status == "HIBERNATING" and s[0].provider_type == "quantumcloud",
        ),
        (Fault.extra_fields(), lambda s: s[0].pod_id == "pod-00001"),
        (Fault.null_data(), lambda s: s == []),
    ],
)
def test_tolerated_payload_variations(
    sim: PrimeSimulator, fetch: Fetch, fault: Fault, check: Callable[[list[PodStatus]], bool]
) -> None:
    sim.inject(fault)
    assert check(fetch(["pod-00001"]))


@pytest.mark.parametrize("fault", [Fault.malformed_json(), Fault.wrong_shape(), Fault.oversized()])
def test_unusable_payloads_are_api_errors_without_retry(
    sim: PrimeSimulator, fetch: Fetch, fault: Fault
) -> None:
    sim.inject(fault)
    with pytest.raises(PrimeAPIError) as caught:
        fetch(["pod-00001"])
    assert type(caught.value) is PrimeResponseError
    assert sim.stats.by_path[STATUS_PATH] == 1


def test_connection_test_against_the_simulator(
    sim: PrimeSimulator, prime_connect: Callable[..., str]
) -> None:
    ok, message = PrimeHook().test_connection()
    assert ok
    who = f"Connected to Prime Intellect at {sim.base_url} as Simulated User 1 <user1@simulator.invalid>"
    assert message.startswith(f"{who} (scopes: ")
    assert "instances: read, write" in message  # whoami's scope object, as the key's grants
    prime_connect(sim, api_key="not-the-key")
    ok, message = PrimeHook().test_connection()
    assert not ok
    assert "HTTP 401" in message


# --- the pods API against the simulator: create, lose the answer, adopt; billing stats ------------


@pytest.fixture
def twin_on_sim(kind: str, sim: PrimeSimulator) -> Twin:
    return Twin(kind, PrimeHook())


def test_a_create_whose_answer_never_came_leaves_exactly_one_pod(
    twin_on_sim: Twin, sim: PrimeSimulator, prime_connect: Callable[..., str]
) -> None:
    prime_connect(sim, extra={**FAST, "read_timeout": 0.5})
    (offer,) = [o for o in twin_on_sim("list_gpu_offers", gpu_type="H100_80GB", gpu_count=1)]
    sim.inject(Fault.answer_lost(hang=True, times=1))  # the pod is made, the answer never comes
    pod = twin_on_sim("create_pod", PodRequest.from_offer(offer, name="train-lost"))
    assert pod.name == "train-lost"
    billing = sim.billing()
    assert billing["created"] == {"train-lost": 1}
    assert billing["billing"].get("train-lost") == 1
    assert sim.stats.by_method_path[f"POST {PODS_PATH}"] == 1  # never sent twice
    twin_on_sim("delete_pod", pod.id)
    twin_on_sim("delete_pod", pod.id)  # idempotent
    assert sim.billing()["deleted"] == {"train-lost": 1}


def test_a_sold_out_offer_says_to_choose_another(twin_on_sim: Twin, sim: PrimeSimulator) -> None:
    offers = twin_on_sim("list_gpu_offers", gpu_type="B200_180GB")
    sold_out = next(o for o in offers if o.cloud_id == "sim-b200-8x-sold-out")
    with pytest.raises(PrimeRequestError, match="The offer sold out") as caught:
        twin_on_sim("create_pod", PodRequest.from_offer(sold_out, name="train-b200"))
    assert "choose another offer" in str(caught.value)
    assert sim.billing()["created"] == {}


def test_a_read_only_key_cannot_create(
    prime_simulator_factory: Callable[..., PrimeSimulator], prime_connect: Callable[..., str], kind: str
) -> None:
    sim = prime_simulator_factory(read_only_keys=["pk-read-only"])
    prime_connect(sim, api_key="pk-read-only")
    hook = Twin(kind, PrimeHook())
    offer = hook("list_gpu_offers", gpu_type="H100_80GB", gpu_count=1)[0]
    with pytest.raises(PrimeAuthError, match="Instances → Read and write"):
        hook("create_pod", PodRequest.from_offer(offer, name="train-ro"))
    assert sim.billing()["created"] == {}
