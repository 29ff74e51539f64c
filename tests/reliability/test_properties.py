"""Property-based tests (hypothesis) of response parsing and of the readiness decision.

* Whatever bytes, status and ``Retry-After`` a server sends, the hook's response path
  (:class:`~airflow_provider_prime.hooks._exchange.Exchange`, shared by both clients) returns pod
  statuses, asks for a retry, or raises one of the provider's own errors: never a KeyError,
  TypeError, ValidationError or JSONDecodeError. Valid payloads, however many unknown enum values
  and extra fields they carry, always parse.
* :func:`~airflow_provider_prime.readiness.assess` never raises, and is never READY unless every
  requested pod was reported ACTIVE, installed (when required) and reachable over SSH on every
  node (when required).
"""

from __future__ import annotations

import json
import math
import random
from typing import Any

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from airflow_provider_prime.exceptions import PrimeError
from airflow_provider_prime.hooks._endpoints import status_request
from airflow_provider_prime.hooks._exchange import ApiResponse, Exchange, Retry, RetryPolicy
from airflow_provider_prime.hooks._payloads import parse_pod_statuses
from airflow_provider_prime.hooks._settings import PrimeApiSettings
from airflow_provider_prime.models import InstallationState, PodState, PodStatus
from airflow_provider_prime.readiness import Outcome, Requirements, assess

SETTINGS = PrimeApiSettings(
    base_url="https://api.primeintellect.ai", api_key="pk-property-key", max_retries=1, retry_after_max=5.0
)
FAST = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# -- JSON, valid pods, and mutations of them ----------------------------------------------------

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20)
)
json_values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=20,
)
enum_text = st.sampled_from([s.value for s in PodState]) | st.text(max_size=12)
install_text = st.sampled_from([s.value for s in InstallationState]) | st.text(max_size=12)
node_values = st.none() | st.text(max_size=30) | st.lists(st.none() | st.text(max_size=30), max_size=4)
pod_ids = st.text(alphabet="abcdef0123456789-", min_size=1, max_size=12)

valid_pods = st.fixed_dictionaries(
    {"podId": pod_ids, "providerType": enum_text, "status": enum_text},
    optional={
        "sshConnection": node_values,
        "ip": node_values,
        "installationStatus": st.none() | install_text,
        "installationFailure": st.none() | st.text(max_size=30),
        "installationProgress": st.none() | st.integers(0, 100) | st.floats(0, 100),
        "priceHr": json_values,  # fields beyond the schema, as the live API sends
        "primePortMapping": json_values,
        "somethingNew": json_values,
    },
)


@st.composite
def mutated_pods(draw: st.DrawFn) -> Any:
    """A valid pod with one field dropped, replaced by arbitrary JSON, or the pod itself replaced."""
    pod = dict(draw(valid_pods))
    action = draw(st.sampled_from(["drop", "replace", "whole"]))
    key = draw(st.sampled_from(sorted(pod)))
    if action == "drop":
        del pod[key]
    elif action == "replace":
        pod[key] = draw(json_values)
    else:
        return draw(json_values)
    return pod


envelopes = st.fixed_dictionaries(
    {"data": st.none() | st.lists(valid_pods | mutated_pods(), max_size=4) | json_values},
    optional={"status": json_values, "extra": json_values},
)
bodies = (
    st.one_of(json_values, envelopes).map(lambda value: json.dumps(value).encode())
    | st.binary(max_size=200)
    | envelopes.map(lambda value: json.dumps(value).encode()).flatmap(
        lambda body: st.integers(0, len(body)).map(lambda cut: body[:cut])  # cut off mid-document
    )
)
statuses = st.sampled_from([200, 201, 204, 401, 403, 404, 422, 429, 500, 502, 503]) | st.integers(100, 599)
retry_after = st.none() | st.text(max_size=40) | st.floats().map(str) | st.integers(-10, 10**6).map(str)


@FAST
@given(status=statuses, body=bodies, retry_after=retry_after)
def test_any_answer_gives_statuses_a_retry_or_a_provider_error(
    status: int, body: bytes, retry_after: Any
) -> None:
    exchange = Exchange(SETTINGS, status_request(SETTINGS, ["a"]), parse_pod_statuses, rng=random.Random(0))
    headers = {} if retry_after is None else {"retry-after": retry_after}
    failure: PrimeError | None = None
    try:
        outcome = exchange.settle(ApiResponse(status, headers, body))
    except PrimeError as error:
        failure = error
    if failure is not None:
        assert str(failure)  # a message for the task log, never empty
        return
    if isinstance(outcome, Retry):
        assert 0 <= outcome.delay <= max(SETTINGS.retry_after_max, SETTINGS.backoff_max)
    else:
        assert 200 <= status < 300
        assert all(isinstance(pod, PodStatus) for pod in outcome)


@FAST
@given(pods=st.lists(valid_pods, max_size=5), status=st.one_of(st.none(), st.text(max_size=5)))
def test_valid_payloads_always_parse_whatever_their_enums_and_extra_fields(
    pods: list[dict[str, Any]], status: str | None
) -> None:
    body = json.dumps({"data": pods, "status": status}).encode()
    exchange = Exchange(SETTINGS, status_request(SETTINGS, ["a"]), parse_pod_statuses)
    parsed = exchange.settle(ApiResponse(200, {}, body))
    assert isinstance(parsed, list)
    assert [p.pod_id for p in parsed] == [p["podId"] for p in pods]
    assert [p.status for p in parsed] == [p["status"] for p in pods]  # unknown values kept as text
    for pod, original in zip(parsed, pods, strict=True):
        progress = pod.installation_progress
        assert progress is None or isinstance(progress, int)
        assert len(pod.ssh_connections) == _nodes(original.get("sshConnection"))


def _nodes(value: Any) -> int:
    return 0 if value is None else 1 if isinstance(value, str) else len(value)


@FAST
@given(retry_after=retry_after, retry_number=st.integers(1, 10))
def test_retry_delays_are_bounded_whatever_the_header(retry_after: str | None, retry_number: int) -> None:
    policy = RetryPolicy(max_retries=10, backoff_base=1.0, backoff_max=30.0, retry_after_max=60.0)
    delay = policy.delay(retry_number, retry_after, random.Random(retry_number))
    assert 0.0 <= delay <= 60.0
    assert not math.isnan(delay)


# -- readiness ---------------------------------------------------------------------------------

IDS = ["p1", "p2", "p3", "p4"]
ssh_values = (
    st.none()
    | st.sampled_from(["", "  ", "root@10.0.0.1 -p 22"])
    | st.lists(st.none() | st.sampled_from(["", "root@10.0.0.2 -p 22"]), max_size=3)
)
arbitrary_statuses = st.builds(
    PodStatus,
    pod_id=st.sampled_from(IDS),
    provider_type=st.just("runpod") | st.text(max_size=8),
    status=st.sampled_from([s.value for s in PodState]) | st.text(max_size=8),
    ssh_connection=ssh_values,
    ip=ssh_values,
    installation_status=st.none()
    | st.sampled_from([s.value for s in InstallationState])
    | st.text(max_size=8),
    installation_failure=st.none() | st.sampled_from(["", " ", "CUDA toolkit not found"]),
    installation_progress=st.none() | st.integers(0, 100),
)
#: One way a ready pod can fall short, or none.
DEFECTS = {
    "status": st.sampled_from(["PROVISIONING", "PENDING", "UNKNOWN", "STOPPED", "ERROR", "HIBERNATING"]),
    "installation_status": st.sampled_from([None, "PENDING", "ACTIVE", "ERROR", "QUEUED"]),
    "installation_failure": st.sampled_from(["CUDA toolkit not found", "x"]),
    "ssh_connection": st.sampled_from([None, "", "  ", [], [None], ["root@10.0.0.1 -p 22", None], [""]]),
}


@st.composite
def near_ready_statuses(draw: st.DrawFn) -> PodStatus:
    """A fully ready pod with zero, one or two defects: the boundary the decision must get right."""
    fields: dict[str, Any] = {
        "pod_id": draw(st.sampled_from(IDS)),
        "provider_type": "runpod",
        "status": "ACTIVE",
        "installation_status": "FINISHED",
        "ssh_connection": draw(st.sampled_from(["root@10.0.0.1 -p 22", ["root@10.0.0.1 -p 22"] * 2])),
    }
    for name in draw(st.lists(st.sampled_from(sorted(DEFECTS)), max_size=2, unique=True)):
        fields[name] = draw(DEFECTS[name])
    return PodStatus(**fields)


#: Mostly pods at the boundary, some arbitrary ones.
pod_statuses = st.one_of(
    near_ready_statuses(), near_ready_statuses(), near_ready_statuses(), arbitrary_statuses
)
times = st.floats(allow_nan=True, allow_infinity=True) | st.floats(0, 1e10)


@st.composite
def waits(draw: st.DrawFn) -> tuple[list[str], list[PodStatus]]:
    """What the API reported (each pod once) and the ids asked for: mostly among the reported
    ones, so that "every requested pod ready" is often close, sometimes with an unreported id."""
    reported = draw(st.lists(pod_statuses, max_size=4, unique_by=lambda s: s.pod_id))
    known = [s.pod_id for s in reported]
    requested = draw(st.lists(st.sampled_from(known), min_size=1, max_size=5)) if known else []
    requested += draw(st.lists(st.sampled_from(IDS), max_size=1))  # sometimes one more, maybe unreported
    return draw(st.permutations(requested)), reported


def _boundary(**changes: Any) -> tuple[list[str], list[PodStatus]]:
    """One ready pod with ``changes`` applied, waited for alone."""
    fields: dict[str, Any] = {
        "pod_id": "p1",
        "provider_type": "runpod",
        "status": "ACTIVE",
        "installation_status": "FINISHED",
        "ssh_connection": "root@10.0.0.1 -p 22",
        **changes,
    }
    return ["p1"], [PodStatus(**fields)]


#: Boundary cases always checked, whatever hypothesis draws besides.
BOUNDARY = [
    _boundary(ssh_connection=None),
    _boundary(ssh_connection=[None]),
    _boundary(ssh_connection=["root@10.0.0.1 -p 22", None]),
    _boundary(ssh_connection=" "),
    _boundary(ssh_connection=[]),
    _boundary(installation_status="ACTIVE"),
    _boundary(installation_status=None),
    _boundary(installation_failure="CUDA toolkit not found"),
    _boundary(status="UNKNOWN"),
    _boundary(status="STOPPED", ssh_connection=[None]),
    (["p1", "p2"], _boundary()[1]),  # one requested pod never reported
]


def _with_boundary_examples(test: Any) -> Any:
    for wait in BOUNDARY:
        test = example(wait, True, True, 60.0, {}, 0.0)(test)
    return test


@settings(max_examples=300, deadline=None)
@_with_boundary_examples
@given(
    wait=waits(),
    wait_for_installation=st.booleans(),
    require_ssh=st.booleans(),
    missing_grace=st.floats(min_value=0, max_value=1e6) | st.just(math.inf),
    missing_since=st.dictionaries(st.sampled_from(IDS), times, max_size=4),
    now=times,
)
def test_assess_is_ready_only_when_every_requested_pod_is(
    wait: tuple[list[str], list[PodStatus]],
    wait_for_installation: bool,
    require_ssh: bool,
    missing_grace: float,
    missing_since: dict[str, float],
    now: float,
) -> None:
    requested, reported = wait
    requirements = Requirements(wait_for_installation, require_ssh, missing_grace)
    verdict = assess(requested, reported, requirements, missing_since=missing_since, now=now)

    unique = list(dict.fromkeys(requested))
    assert [p.pod_id for p in verdict.pods] == unique  # one report per requested pod, in order
    verdict.summary()
    json.dumps(verdict.handover())
    if verdict.failed:
        assert verdict.reason
    if not verdict.ready:
        return
    by_id = {s.pod_id: s for s in reported}
    assert unique, "nothing requested can never be ready"
    for pod_id in unique:
        pod = by_id.get(pod_id)
        assert pod is not None
        assert pod.status == PodState.ACTIVE.value
        if wait_for_installation:
            assert pod.installation_status == InstallationState.FINISHED.value
            assert not (pod.installation_failure or "").strip()
        if require_ssh:
            assert pod.ssh_connections
            assert all(ssh is not None and ssh.strip() for ssh in pod.ssh_connections)
    assert set(verdict.handover()) == set(unique)
    assert all(p.outcome is Outcome.READY for p in verdict.pods)
