"""The fault table: every bad day of the API the provider must survive, and what surviving means.

One :class:`FaultCase` per row. ``tests/reliability/test_faults.py`` runs each row twice, through
the sync poke path (``PodStatusSensor.poke`` → ``PrimeHook.get_pods_status`` → requests) and the
async trigger path (``PodStatusTrigger.run`` → shared poller → ``AsyncPrimeClient`` → httpx),
against the simulator over real HTTP, and ``bench/reliability_report.py`` turns what was observed
into the table of ``docs/reliability.md``.

Outcomes, the same words for both paths:

* ``RECOVERS``: the fault passes and the wait ends in success (poke returns the handover; the
  trigger fires ``success``).
* ``WAITS``: the wait goes on, the cause logged (poke returns False; the trigger keeps polling and
  fires ``timeout`` at its deadline, naming the cause).
* ``FAILS``: the wait fails with a typed error whose message names the cause and what to do
  (poke raises; the trigger fires ``failed`` with the same ``error_type``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from airflow_provider_prime.testing import Fault, PodScript, fixed_pod, stopped_pod

#: Connection extra of every reliability test: tiny timeouts and backoffs so the suite is fast.
EXTRA: dict[str, Any] = {
    "connect_timeout": 0.3,
    "read_timeout": 0.3,
    "max_retries": 2,
    "backoff_base": 0.01,
    "backoff_max": 0.02,
    "retry_after_max": 0.3,
}
#: Requests one logical status call may make: the first attempt and ``max_retries`` retries.
ATTEMPTS = 1 + EXTRA["max_retries"]
#: The trigger's poll interval in these tests, seconds.
POLL_INTERVAL = 0.1
#: How long a trigger is given when the expected outcome is to wait on (its deadline), seconds.
WAIT_DEADLINE = 1.0
#: Deadline for the other outcomes: generous, never reached when the code is right.
LONG_DEADLINE = 10.0
#: Pokes made when the expected outcome is to wait on.
WAIT_POKES = 2

POD = "pod-ready"
GHOST = "pod-ghost"
STOPPED = "pod-stopped"
SSH_NODE = "root@203.0.113.7 -p 22"
MIB = 1024 * 1024


class Outcome(str, Enum):
    RECOVERS = "recovers"
    WAITS = "waits"
    FAILS = "fails"


@dataclass(frozen=True)
class FaultCase:
    """One row of the fault table.

    :param faults: builds the faults to inject before the wait starts (fresh objects per run).
    :param outcome: what must happen, on both paths.
    :param attempts: most requests one poll may make (1 when retrying would be wrong).
    :param requests: the exact total on each path, when it does not depend on timing.
    :param error_type: for ``FAILS``, the exception class (sync) and ``error_type`` (async).
    :param says: text the error, the trigger's event or the sensor's log must contain.
    :param never_says: text that must not appear there (raw HTML, a JSON decoder's jargon).
    :param min_gap: the least seconds between two requests (a honoured ``Retry-After``).
    :param handover: fields the successful handover of :data:`POD` must have.
    :param server: ``"simulator"``, or ``"blackhole"`` (a port whose backlog is full: connects
        time out; requests are counted by the client).
    :param api_key: the key the connection uses instead of the simulator's (``None``: its own).
    :param extra: connection extra overriding :data:`EXTRA` for this case.
    :param wait_deadline: the trigger's deadline when it waits on (long enough for one full poll).
    """

    id: str
    fault: str
    faults: Callable[[], list[Fault]] = list
    pods: Callable[[], list[PodScript]] = lambda: [fixed_pod(POD)]
    pod_ids: tuple[str, ...] = (POD,)
    outcome: Outcome = Outcome.RECOVERS
    attempts: int = ATTEMPTS
    requests: int | None = None
    error_type: str | None = None
    says: tuple[str, ...] = ()
    never_says: tuple[str, ...] = ()
    min_gap: float | None = None
    handover: dict[str, Any] = field(default_factory=dict)
    missing_grace: float = 60.0
    max_pokes: int = 3
    server: str = "simulator"
    api_key: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    wait_deadline: float = WAIT_DEADLINE

    @property
    def connection_extra(self) -> dict[str, Any]:
        return {**EXTRA, **self.extra}

    @property
    def deadline(self) -> float:
        return self.wait_deadline if self.outcome is Outcome.WAITS else LONG_DEADLINE

    @property
    def pokes(self) -> int:
        return WAIT_POKES if self.outcome is Outcome.WAITS else self.max_pokes


def _fails(
    case_id: str, fault: str, faults: Callable[[], list[Fault]], error_type: str, *says: str, **more: Any
) -> FaultCase:
    """A fault no retry can fix: one request, a typed error at once."""
    return FaultCase(
        case_id,
        fault,
        faults,
        outcome=Outcome.FAILS,
        attempts=1,
        requests=1,
        error_type=error_type,
        says=says,
        **more,
    )


NGINX_WELCOME = (
    "<html><head><title>Welcome to nginx!</title></head><body><h1>Welcome to nginx!</h1></body></html>"
)
INVALID_ID_MESSAGE = "pod id 'pod-ready' is not a valid pod id"

CASES: tuple[FaultCase, ...] = (
    # -- rate limiting -------------------------------------------------------------------------
    FaultCase(
        "429-retry-after-seconds",
        "429 with `Retry-After: 1` (seconds), twice",
        lambda: [Fault.rate_limited(retry_after=1, times=2)],
        requests=3,
        min_gap=0.25,  # Retry-After honoured, capped by retry_after_max (0.3 s here)
    ),
    FaultCase(
        "429-retry-after-http-date",
        "429 with `Retry-After` as an HTTP date 2 s ahead, twice",
        lambda: [Fault.rate_limited(retry_after=2, http_date=True, times=2)],
        requests=3,
        min_gap=0.25,
    ),
    FaultCase(
        "429-without-retry-after",
        "429 without `Retry-After`, twice",
        lambda: [Fault.rate_limited(times=2)],
        requests=3,
    ),
    FaultCase(
        "429-persistent",
        "429 without `Retry-After`, on every request",
        lambda: [Fault.rate_limited(times=None)],
        outcome=Outcome.WAITS,
        says=("HTTP 429", "Too many requests"),
    ),
    FaultCase(
        "429-persistent-retry-after",
        "429 with `Retry-After: 1`, on every request",
        lambda: [Fault.rate_limited(retry_after=1, times=None)],
        outcome=Outcome.WAITS,
        says=("HTTP 429",),
        min_gap=0.25,
        wait_deadline=1.5,  # one poll is three requests 0.3 s apart
    ),
    # -- server errors -------------------------------------------------------------------------
    FaultCase(
        "5xx-burst",
        "503 twice (a burst shorter than the retries)",
        lambda: [Fault.server_error(503, times=2)],
        requests=3,
    ),
    FaultCase(
        "5xx-burst-outlasting-retries",
        "500 four times (a burst longer than one poll's retries)",
        lambda: [Fault.server_error(500, times=4)],
        requests=5,
    ),
    FaultCase(
        "5xx-persistent",
        "503 on every request",
        lambda: [Fault.server_error(503, times=None)],
        outcome=Outcome.WAITS,
        says=("HTTP 503",),
    ),
    FaultCase(
        "html-502",
        "502 with an nginx HTML page, once",
        lambda: [Fault.server_error(502, html=True, times=1)],
        requests=2,
    ),
    FaultCase(
        "html-502-persistent",
        "502 with an nginx HTML page, on every request",
        lambda: [Fault.server_error(502, html=True, times=None)],
        outcome=Outcome.WAITS,
        says=("HTTP 502", "502 Bad Gateway"),
        never_says=("<html", "<center>", "JSONDecodeError"),
    ),
    # -- transport -----------------------------------------------------------------------------
    FaultCase(
        "read-timeout",
        "answer 1 s late (read timeout 0.3 s), once",
        lambda: [Fault.slow(1.0, times=1)],
        requests=2,
    ),
    FaultCase(
        "read-timeout-persistent",
        "no answer at all (connection left hanging), every request",
        lambda: [Fault.hang(times=None)],
        outcome=Outcome.WAITS,
        says=("Timed out", "ReadTimeout"),
        wait_deadline=1.5,  # one poll is three read timeouts
    ),
    FaultCase(
        "connect-timeout",
        "connection never accepted (listen backlog full; connect timeout 0.3 s)",
        outcome=Outcome.WAITS,
        says=("Timed out", "ConnectTimeout"),
        server="blackhole",
        wait_deadline=1.5,  # one poll is three connect timeouts
    ),
    FaultCase(
        "dropped-connection",
        "connection closed without an answer, twice",
        lambda: [Fault.drop(times=2)],
        requests=3,
    ),
    FaultCase(
        "dropped-connection-persistent",
        "connection closed without an answer, every request",
        lambda: [Fault.drop(times=None)],
        outcome=Outcome.WAITS,
        says=("Connection failed",),
    ),
    # -- bodies that are not the documented payload --------------------------------------------
    _fails(
        "not-json",
        "200 with an HTML page instead of JSON",
        lambda: [Fault.raw(NGINX_WELCOME, content_type="text/html")],
        "PrimeResponseError",
        "not JSON",
        "Welcome to nginx!",
        "is the API base URL right?",
        never_says=("<html", "JSONDecodeError", "Expecting value"),
    ),
    _fails(
        "truncated-json",
        "200 with a JSON document cut off in the middle",
        lambda: [Fault.malformed_json()],
        "PrimeResponseError",
        "not JSON",
        never_says=("JSONDecodeError",),
    ),
    _fails(
        "wrong-shape-envelope",
        "200 with `data` an object instead of a list",
        lambda: [Fault.wrong_shape()],
        "PrimeResponseError",
        "unexpected shape",
        "data",
    ),
    _fails(
        "wrong-shape-pod",
        "200 with a pod lacking the required `status`",
        lambda: [Fault.pods(drop_fields=["status"])],
        "PrimeResponseError",
        "unexpected shape",
        "status",
    ),
    FaultCase(
        "unknown-status",
        "unknown enum values (status HIBERNATING, installation QUEUED, provider quantumcloud)",
        lambda: [Fault.unknown_enums(times=None)],
        outcome=Outcome.WAITS,
        attempts=1,
        says=("HIBERNATING",),
    ),
    FaultCase(
        "unknown-provider-type",
        "an unknown provider type on an otherwise ready pod",
        lambda: [Fault.unknown_enums(status=None, installation_status=None, times=None)],
        requests=1,
        handover={"provider_type": "quantumcloud", "status": "ACTIVE"},
    ),
    FaultCase(
        "extra-fields",
        "fields beyond the schema on every pod (`priceHr`, `primePortMapping`, ...)",
        lambda: [Fault.extra_fields(times=None)],
        requests=1,
        handover={"status": "ACTIVE", "installation_status": "FINISHED"},
    ),
    # -- pods absent, or present without connections -------------------------------------------
    FaultCase(
        "data-null-once",
        "`data: null` once, then the pod",
        lambda: [Fault.null_data(times=1)],
        requests=2,
    ),
    FaultCase(
        "data-null-persistent",
        "`data: null` on every request (missing grace 0.3 s)",
        lambda: [Fault.null_data(times=None)],
        outcome=Outcome.FAILS,
        attempts=1,
        error_type="PrimePodFailedError",
        says=(f"{POD}: not found or not visible to this API key",),
        missing_grace=0.3,
        max_pokes=20,
    ),
    FaultCase(
        "pod-missing-from-data",
        "one requested pod never in `data` (missing grace 0.3 s)",
        pod_ids=(POD, GHOST),
        outcome=Outcome.FAILS,
        attempts=1,
        error_type="PrimePodFailedError",
        says=(f"{GHOST}: not found or not visible to this API key",),
        missing_grace=0.3,
        max_pokes=20,
    ),
    _fails(
        "stopped-null-connections",
        "a STOPPED pod reporting `sshConnection: [null]`, `ip: [null]`",
        list,
        "PrimePodFailedError",
        f"{STOPPED}: pod is STOPPED",
        pods=lambda: [stopped_pod(STOPPED)],
        pod_ids=(STOPPED,),
    ),
    FaultCase(
        "active-null-connections",
        "an ACTIVE, installed pod reporting `sshConnection: [<ssh>, null]` (node 2 not reachable)",
        lambda: [Fault.pods({"sshConnection": [SSH_NODE, None], "ip": ["203.0.113.7", None]}, times=None)],
        outcome=Outcome.WAITS,
        attempts=1,
        says=("waiting for SSH on node 2 of 2",),
    ),
    # -- the API refuses: no retry can fix these ----------------------------------------------
    _fails(
        "401-errors-body",
        '401 with `{"errors": [...]}`',
        lambda: [Fault.http_error(401, body_shape="errors", times=None)],
        "PrimeAuthError",
        "HTTP 401",
        "Check the API key",
        "Instances → Read",
        "Authorization failed",
    ),
    _fails(
        "401-detail-body",
        '401 with `{"detail": ...}`',
        lambda: [Fault.http_error(401, body_shape="detail", times=None)],
        "PrimeAuthError",
        "HTTP 401",
        "Check the API key",
        "Authorization failed",
    ),
    _fails(
        "401-unknown-key",
        "401 from the simulator itself: the connection's key is not one it accepts",
        list,
        "PrimeAuthError",
        "HTTP 401",
        "Check the API key",
        api_key="pk-revoked-0000",
    ),
    _fails(
        "403-errors-body",
        '403 with `{"errors": [...]}`',
        lambda: [Fault.http_error(403, body_shape="errors", times=None)],
        "PrimeAuthError",
        "HTTP 403",
        "Instances → Read",
        "Forbidden",
    ),
    _fails(
        "403-detail-body",
        '403 with `{"detail": ...}`',
        lambda: [Fault.http_error(403, body_shape="detail", times=None)],
        "PrimeAuthError",
        "HTTP 403",
        "Instances → Read",
        "Forbidden",
    ),
    _fails(
        "404-errors-body",
        '404 with `{"errors": [...]}`',
        lambda: [Fault.http_error(404, body_shape="errors", times=None)],
        "PrimeResponseError",
        "HTTP 404",
        "API base URL",
    ),
    _fails(
        "404-detail-body",
        '404 with `{"detail": ...}`',
        lambda: [Fault.http_error(404, body_shape="detail", times=None)],
        "PrimeResponseError",
        "HTTP 404",
        "API base URL",
        "Not Found",
    ),
    _fails(
        "422-errors-body",
        '422 with `{"errors": [{"param", "details"}]}`',
        lambda: [Fault.http_error(422, body_shape="errors", message=INVALID_ID_MESSAGE, times=None)],
        "PrimeRequestError",
        "HTTP 422",
        INVALID_ID_MESSAGE,
    ),
    _fails(
        "422-detail-body",
        '422 with `{"detail": "..."}`',
        lambda: [Fault.http_error(422, body_shape="detail", message=INVALID_ID_MESSAGE, times=None)],
        "PrimeRequestError",
        "HTTP 422",
        INVALID_ID_MESSAGE,
    ),
    _fails(
        "422-detail-list-body",
        '422 with FastAPI\'s `{"detail": [{"loc", "msg"}]}`',
        lambda: [Fault.http_error(422, body_shape="detail_list", message=INVALID_ID_MESSAGE, times=None)],
        "PrimeRequestError",
        "HTTP 422",
        f"query.pod_ids: {INVALID_ID_MESSAGE}",
    ),
    _fails(
        "oversized-body",
        "200 with a 32 MiB body (limit 10 MiB)",
        lambda: [Fault.oversized(32 * MIB, times=None)],
        "PrimeResponseError",
        "larger than 10 MiB",
        # the simulator takes a while to build its first 32 MiB body: not a timeout case
        extra={"read_timeout": 5},
    ),
)

CASES_BY_ID = {case.id: case for case in CASES}
assert len(CASES_BY_ID) == len(CASES), "fault case ids must be unique"
