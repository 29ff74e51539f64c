"""The pods API through PrimeHook, sync and async (``kind``), over real HTTP against :class:`PodsBackend`.

Create is the call that costs money twice if it is resent: the tests stage the answers that make
a client unsure whether the pod was made, and count the pods left behind.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from airflow_provider_prime.exceptions import (
    PrimeAuthError,
    PrimeBillingError,
    PrimeConfigError,
    PrimeNotFoundError,
    PrimeRequestError,
    PrimeSoldOutError,
    PrimeTransientError,
)
from airflow_provider_prime.hooks._plans import ADOPTION_PAUSES
from airflow_provider_prime.hooks.prime import PrimeHook
from airflow_provider_prime.models import GpuOffer, PodRequest
from tests.hooks.callers import Twin
from tests.hooks.fakes import Failure, PodsBackend, Reply, ScriptedApi, Seen, pod_record
from tests.payloads import make_offer
from tests.simulated import FAST_RETRY

CREATE = "POST /api/v1/pods/"


@pytest.fixture
def backend(api: ScriptedApi) -> PodsBackend:
    pods = PodsBackend([pod_record("pod-a", "train-a"), pod_record("pod-b", "train-b", "TERMINATED")])
    api.script = pods
    return pods


def request_for(name: str, offer: GpuOffer | None = None) -> PodRequest:
    return PodRequest.from_offer(offer or make_offer(), name=name)


def posts(api: ScriptedApi) -> list[Seen]:
    return [seen for seen in api.seen if seen.method == "POST"]


def test_get_pod_and_a_missing_one(twin: Twin, backend: PodsBackend, api: ScriptedApi) -> None:
    pod = twin("get_pod", "pod-a")
    assert (pod.id, pod.name, pod.status) == ("pod-a", "train-a", "ACTIVE")
    with pytest.raises(PrimeNotFoundError, match="Pod 'pod-zzz' does not exist") as caught:
        twin("get_pod", "pod-zzz")
    assert caught.value.http_status == 404
    assert [s.path for s in api.seen] == ["/api/v1/pods/pod-a", "/api/v1/pods/pod-zzz"]


def test_list_pods_reads_every_page(twin: Twin, api: ScriptedApi) -> None:
    api.script = PodsBackend([pod_record(f"pod-{n:03d}", f"job-{n % 7}") for n in range(230)])
    pods = twin("list_pods")
    assert [pod.id for pod in pods] == [f"pod-{n:03d}" for n in range(230)]
    assert [dict(s.query)["offset"] for s in api.seen] == ["0", "100", "200"]
    assert {s.path for s in api.seen} == {"/api/v1/pods/"}  # the trailing-slash form
    assert [pod.id for pod in twin("find_pods_by_name", "job-3")] == [
        f"pod-{n:03d}" for n in range(3, 230, 7)
    ]


def test_create_sends_the_cli_body_and_returns_the_new_pod(
    twin: Twin, backend: PodsBackend, api: ScriptedApi
) -> None:
    request = request_for("train-c")
    pod = twin("create_pod", request)
    assert (pod.name, pod.status) == ("train-c", "PROVISIONING")
    (post,) = posts(api)
    assert post.body == request.to_body()
    assert post.path == "/api/v1/pods/"


@pytest.mark.parametrize(
    "lost",
    [Failure.TIMEOUT, Failure.DROP, Reply(502, b"<html>bad gateway</html>"), Reply(200, b"<html>")],
    ids=["read-timeout", "dropped", "502", "unusable-200"],
)
def test_a_create_whose_answer_was_lost_adopts_the_pod_it_made(
    twin: Twin, backend: PodsBackend, api: ScriptedApi, lost: Reply | Failure
) -> None:
    backend.lost_answers.append(lost)  # the server makes the pod, then the answer never comes
    pod = twin("create_pod", request_for("train-c"))
    assert pod.name == "train-c"
    assert len(posts(api)) == 1  # never sent twice
    assert [p["name"] for p in backend.pods.values()].count("train-c") == 1  # exactly one pod


@pytest.mark.parametrize("lost", [Failure.DROP, Reply(503, b"")], ids=["dropped", "503"])
def test_a_create_that_may_not_have_happened_says_so(
    twin: Twin, backend: PodsBackend, api: ScriptedApi, lost: Reply | Failure, delays: list[float]
) -> None:
    backend.faults[CREATE] = [lost]  # lost before the pod was made
    with pytest.raises(PrimeTransientError, match="Creating pod 'train-c' may not have happened") as caught:
        twin("create_pod", request_for("train-c"))
    assert "trying again is safe" in str(caught.value)
    assert "30 s of looking" in str(caught.value)
    assert delays == list(ADOPTION_PAUSES)  # the list may lag a create: looked again, bounded
    assert len(posts(api)) == 1
    assert backend.created == 0


def test_several_pods_of_the_name_are_an_error_and_none_is_deleted(
    twin: Twin, backend: PodsBackend, api: ScriptedApi
) -> None:
    backend.pods["pod-x"] = pod_record("pod-x", "train-c")
    backend.lost_answers.append(Failure.DROP)
    with pytest.raises(PrimeConfigError, match="2 live pods have that name"):
        twin("create_pod", request_for("train-c"))
    assert len(posts(api)) == 1
    assert not [s for s in api.seen if s.method == "DELETE"]


def test_a_rate_limited_create_is_sent_again(twin: Twin, backend: PodsBackend, api: ScriptedApi) -> None:
    backend.faults[CREATE] = [Reply(429, {"detail": "slow down"}, {"Retry-After": "0"})]
    assert twin("create_pod", request_for("train-c")).name == "train-c"
    assert len(posts(api)) == 2  # a 429 is refused before it is handled: nothing was made
    assert backend.created == 1


def test_a_refused_create_is_retried_because_it_never_left(
    kind: str, set_conn: Callable[..., None], closed_port: int
) -> None:
    set_conn(host=f"http://127.0.0.1:{closed_port}", password="pk-x", extra={**FAST_RETRY, "max_retries": 2})
    with pytest.raises(PrimeTransientError, match="Gave up after 3 attempts: Connection failed") as caught:
        Twin(kind, PrimeHook())("create_pod", request_for("train-c"))
    assert "may not have happened" not in str(caught.value)  # refused: provably nothing was made


@pytest.mark.parametrize(
    ("reply", "error", "fragments"),
    [
        (
            Reply(402, {"detail": "Insufficient balance"}),
            PrimeBillingError,
            ["HTTP 402", "Insufficient balance"],
        ),
        (Reply(401, {"detail": "no"}), PrimeAuthError, ['"Instances → Read and write"']),
        (Reply(403, {"detail": "no"}), PrimeAuthError, ['"Instances → Read and write"']),
        (
            Reply(422, {"errors": [{"param": "pod.diskSize", "details": "must be at least 50"}]}),
            PrimeRequestError,
            ["rejected field pod.diskSize (HTTP 422)", "must be at least 50"],
        ),
        (
            Reply(422, {"detail": [{"loc": ["body", "pod", "vcpus"], "msg": "too many"}]}),
            PrimeRequestError,
            ["rejected field body.pod.vcpus (HTTP 422)"],
        ),
        (
            Reply(400, {"detail": "Offer h100-sxm5-8 is out of stock"}),
            PrimeSoldOutError,
            ["The offer sold out", "choose another offer", "h100-sxm5-8 is out of stock"],
        ),
    ],
    ids=["402", "401", "403", "422-errors", "422-detail", "sold-out"],
)
def test_create_refusals_say_what_to_fix(
    twin: Twin,
    backend: PodsBackend,
    api: ScriptedApi,
    reply: Reply,
    error: type[Exception],
    fragments: list[str],
) -> None:
    backend.faults[CREATE] = [reply]
    with pytest.raises(error) as caught:
        twin("create_pod", request_for("train-c"))
    assert type(caught.value) is error
    for fragment in fragments:
        assert fragment in str(caught.value)
    assert len(posts(api)) == 1
    assert backend.created == 0


def test_delete_is_idempotent(twin: Twin, backend: PodsBackend, api: ScriptedApi) -> None:
    twin("delete_pod", "pod-a")
    assert "pod-a" not in backend.pods
    twin("delete_pod", "pod-a")  # 404: already gone
    backend.faults["DELETE /api/v1/pods/pod-b"] = [Reply(400, {"detail": "Pod is already terminated"})]
    twin("delete_pod", "pod-b")  # refused, and the pod is TERMINATED: done
    backend.faults["DELETE /api/v1/pods/pod-b"] = [Reply(204, b"")]
    twin("delete_pod", "pod-b")


def test_a_delete_refused_for_a_live_pod_is_an_error(twin: Twin, backend: PodsBackend) -> None:
    backend.faults["DELETE /api/v1/pods/pod-a"] = [Reply(400, {"detail": "Pod is locked"})]
    with pytest.raises(PrimeRequestError, match="Pod is locked"):
        twin("delete_pod", "pod-a")
    backend.faults["DELETE /api/v1/pods/pod-a"] = [Reply(403, {"detail": "read only key"})]
    with pytest.raises(PrimeAuthError, match="Instances → Read and write"):
        twin("delete_pod", "pod-a")
    assert "pod-a" in backend.pods


def _offers(seen: Seen) -> Reply:
    query = dict(seen.query)
    page = int(query["page"])
    kind = "multi" if seen.path.endswith("multi-node") else "single"
    items = [make_offer(cloudId=f"{kind}-{n}").model_dump(by_alias=True) for n in range(150)]
    return Reply(200, {"items": items[(page - 1) * 100 : page * 100], "totalCount": len(items)})


def test_gpu_offers_are_read_page_by_page_with_the_filters(twin: Twin, api: ScriptedApi) -> None:
    api.script = _offers
    offers = twin("list_gpu_offers", gpu_type="H100_80GB", gpu_count=8, regions=["united_states", "eu"])
    assert [offer.cloud_id for offer in offers] == [f"single-{n}" for n in range(150)]
    first, second = api.seen
    assert first.path == "/api/v1/availability/gpus"
    assert first.query == [
        ("page", "1"),
        ("page_size", "100"),
        ("gpu_type", "H100_80GB"),
        ("gpu_count", "8"),
        ("regions", "united_states"),
        ("regions", "eu"),
    ]
    assert dict(second.query)["page"] == "2"
    multi = twin("list_gpu_offers", multi_node=True)
    assert multi[0].cloud_id == "multi-0"
    assert api.seen[-1].path == "/api/v1/availability/multi-node"


@pytest.mark.parametrize(
    ("method", "value"),
    [("get_pod", ["a", "b"]), ("delete_pod", ""), ("find_pods_by_name", " "), ("create_pod", {"name": "x"})],
)
def test_bad_arguments_fail_before_any_request(
    twin: Twin, api: ScriptedApi, method: str, value: object
) -> None:
    with pytest.raises(PrimeConfigError):
        twin(method, value)
    assert api.seen == []
