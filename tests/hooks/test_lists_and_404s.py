"""Issue 19 findings 8, 11, 16 and 23 (DELETE answer) through PrimeHook, sync and async, on the simulator.

* 11: a 404 means "that pod is gone" only when the API says so; a router's 404 (wrong base URL
  or path) is an error naming the URL, so a delete never reports success for a pod still billing.
* 16: the pod list is read by what was received (a capped page loses nothing) and absence is
  never concluded from one read of a list that changed between pages.
* 8: after a create whose answer was lost, a list that lags the create is looked at again
  (bounded) before the create is called "may not have happened"; the pod is adopted, never doubled.
* 23: a DELETE answered 200 with a body that is not JSON is a success.

Backoff and adoption pauses are recorded (and advance the simulator's manual clock), never slept.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from airflow_provider_prime.exceptions import (
    PrimeNotFoundError,
    PrimeResponseError,
    PrimeTransientError,
)
from airflow_provider_prime.hooks._errors import says_pod_not_found
from airflow_provider_prime.hooks._plans import ADOPTION_PAUSES, FIND_READS
from airflow_provider_prime.models import PodRequest
from airflow_provider_prime.testing import (
    PODS_PATH,
    CreateLifecycle,
    Fault,
    ManualClock,
    PrimeSimulator,
    Scenario,
    fixed_pod,
)
from tests.hooks.callers import Pauses, Twin
from tests.simulated import FAST_RETRY

Make = Callable[..., PrimeSimulator]


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def pauses(clock: ManualClock) -> Pauses:
    """The hook's sleeps, recorded; each moves the simulator's clock on instead of waiting."""
    return Pauses(clock)


@pytest.fixture
def make(
    prime_simulator_factory: Make, prime_connect: Callable[..., str], clock: ManualClock
) -> Callable[..., PrimeSimulator]:
    """A simulator on the manual clock, with ``prime_default`` pointing at it (``base_path`` appended)."""

    def build(scenario: object = None, *, base_path: str = "") -> PrimeSimulator:
        sim = prime_simulator_factory(scenario, clock=clock)
        prime_connect(sim.base_url + base_path, api_key=sim.api_key, extra={**FAST_RETRY, "max_retries": 3})
        return sim

    return build


@pytest.fixture
def hook(kind: str, pauses: Pauses) -> Twin:
    return Twin.on(kind, pauses)


def _settle(sim: PrimeSimulator, clock: ManualClock) -> None:
    clock.advance(120)  # past any DELETING phase
    assert sim.billing()["billing"] == {}


# --- 11: which 404 means "gone" ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "pod_id", "gone"),
    [
        (b'{"detail": "Pod p-1 not found"}', "p-1", True),  # the simulator's answer
        (b'{"detail": "Pod not found"}', "p-1", True),
        (b'{"message": "pod p-1 does not exist"}', "p-1", True),
        (b'{"errors": [{"param": "id", "details": "No such pod"}]}', "p-1", True),
        (b'{"detail": "Not Found"}', "p-1", False),  # FastAPI's router
        (b'{"message": "Not Found"}', "p-1", False),
        (b'{"detail": "Item not found"}', "p-1", False),  # another API
        (b"<html><h1>404 Not Found</h1>pod p-1</html>", "p-1", False),
        (b"Not Found", "p-1", False),
        (b"", "p-1", False),
        (b'{"error": "Not Found", "path": "/x/api/v1/pods/p-1"}', "p-1", False),
        (b'["Pod p-1 not found"]', "p-1", False),
    ],
)
def test_the_rule_for_a_pods_404(body: bytes, pod_id: str, gone: bool) -> None:
    assert says_pod_not_found(body, pod_id) is gone


def test_an_unknown_pod_is_not_found_and_its_delete_is_done(
    make: Callable[..., PrimeSimulator], hook: Twin
) -> None:
    make()
    with pytest.raises(PrimeNotFoundError, match="Pod 'nope' does not exist"):
        hook("get_pod", "nope")
    hook("delete_pod", "nope")  # the API says that pod was not found: already gone


def test_a_wrong_base_path_is_an_error_naming_the_url_never_gone(
    make: Callable[..., PrimeSimulator], hook: Twin, clock: ManualClock
) -> None:
    sim = make([fixed_pod("p-1")], base_path="/prime")
    for method in ("get_pod", "delete_pod"):
        with pytest.raises(PrimeResponseError, match="base URL or path looks wrong") as caught:
            hook(method, "p-1")
        assert not isinstance(caught.value, PrimeNotFoundError)
        assert f"{sim.base_url}/prime/api/v1/pods/p-1" in str(caught.value)
        assert "does not say that pod p-1 was not found" in str(caught.value)
    assert sim.billing()["billing"] == {"p-1": 1}  # still billing: nobody may say it is gone


@pytest.mark.parametrize("shape", ["detail", "html", "text", "empty"])
def test_a_router_404_on_delete_is_not_success(
    make: Callable[..., PrimeSimulator], hook: Twin, clock: ManualClock, shape: str
) -> None:
    sim = make([fixed_pod("p-1")])
    sim.inject(Fault.http_error(404, body_shape=shape, pod_id="p-1"))  # type: ignore[arg-type]
    with pytest.raises(PrimeResponseError, match="HTTP 404 from"):
        hook("delete_pod", "p-1")
    assert sim.billing()["billing"] == {"p-1": 1}
    hook("delete_pod", "p-1")
    _settle(sim, clock)


# --- 23: a DELETE answered 200 with a body that is not JSON -----------------------------------


def test_a_delete_answered_200_with_html_is_success(
    make: Callable[..., PrimeSimulator], hook: Twin, clock: ManualClock
) -> None:
    sim = make([fixed_pod("p-1")])
    sim.inject(
        Fault.raw("<html>deleted</html>", content_type="text/html", method="DELETE", after_effect=True)
    )
    hook("delete_pod", "p-1")
    assert sim.stats.by_method_path[f"DELETE {PODS_PATH}p-1"] == 1
    _settle(sim, clock)


# --- 16: paging by what was received; absence from two reads that agree ------------------------


def _named(count: int, name_of: Callable[[int], str] = lambda n: f"job-{n:03d}") -> Scenario:
    return Scenario.of([fixed_pod(f"p{n:03d}", name=name_of(n)) for n in range(count)])


def test_a_server_that_caps_the_page_size_loses_no_pod(
    make: Callable[..., PrimeSimulator], hook: Twin
) -> None:
    sim = make(_named(250))
    sim.configure(page_cap=30)
    assert [pod.id for pod in hook("list_pods")] == [f"p{n:03d}" for n in range(250)]
    assert [pod.id for pod in hook("find_pods_by_name", "job-249")] == ["p249"]


def test_a_pod_deleted_between_pages_does_not_hide_another(
    make: Callable[..., PrimeSimulator], hook: Twin
) -> None:
    sim = make(_named(150))
    sim.inject(Fault.pod_deleted("p005"))  # after page one: p100 slides onto page one, unread
    assert [pod.id for pod in hook("find_pods_by_name", "job-100")] == ["p100"]
    assert sim.stats.by_method_path[f"GET {PODS_PATH}"] >= 4  # more than one read of the list


def test_a_list_that_never_settles_concludes_nothing(make: Callable[..., PrimeSimulator], hook: Twin) -> None:
    sim = make(_named(20, lambda n: "job"))
    sim.inject(*(Fault.pod_deleted(f"p{n:03d}") for n in range(FIND_READS + 1)))  # one per read
    with pytest.raises(PrimeTransientError, match="kept changing while looking for pods named 'job'"):
        hook("find_pods_by_name", "job")


# --- 8: a lost create answer and a list that lags the create ----------------------------------


def test_a_lost_create_answer_and_a_lagging_list_adopt_the_one_pod(
    make: Callable[..., PrimeSimulator], hook: Twin, clock: ManualClock, pauses: list[float]
) -> None:
    sim = make(Scenario.of([], lifecycle=CreateLifecycle(list_lag=10)))
    offer = hook("list_gpu_offers", gpu_type="H100_80GB", gpu_count=1)[0]
    sim.inject(Fault.answer_lost())  # the pod is made, the answer never comes
    pod = hook("create_pod", PodRequest.from_offer(offer, name="train-lag"))
    assert pod.name == "train-lag"
    assert pauses == list(ADOPTION_PAUSES[:3])  # listed at 14 s: looked at 0, 2, 6, 14
    billing = sim.billing()
    assert billing["created"] == {"train-lag": 1}
    assert billing["billing"] == {"train-lag": 1}  # exactly one pod
    assert sim.stats.by_method_path[f"POST {PODS_PATH}"] == 1  # never sent twice
    hook("delete_pod", pod.id)
    _settle(sim, clock)


def test_a_lag_longer_than_the_window_says_the_create_may_not_have_happened(
    make: Callable[..., PrimeSimulator], hook: Twin, clock: ManualClock, pauses: list[float]
) -> None:
    sim = make(Scenario.of([], lifecycle=CreateLifecycle(list_lag=3600)))
    offer = hook("list_gpu_offers", gpu_type="H100_80GB", gpu_count=1)[0]
    sim.inject(Fault.answer_lost())
    with pytest.raises(PrimeTransientError, match="may not have happened"):
        hook("create_pod", PodRequest.from_offer(offer, name="train-lag"))
    assert pauses == list(ADOPTION_PAUSES)  # bounded: about 30 s of looking, then an answer
    (pod_id,) = sim.billing()["pods"]  # the operator's retry (or the backstop) finds it later
    hook("delete_pod", pod_id)
    _settle(sim, clock)
