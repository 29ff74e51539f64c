"""The readiness decision: are the requested pods ready, still coming, or beyond saving?

Pure functions, no I/O and no clock: the sensor's ``poke`` and the trigger's poll loop both call
:func:`assess`, so the two paths can never disagree about what "ready" means.

Rules (see ``docs/readiness.md``):

* ready: every requested pod is ``ACTIVE``; its installation is ``FINISHED`` (when waited for);
  every node has an SSH connection (when required).
* failed at once: a pod is ``ERROR``, ``TERMINATED``, ``DELETING`` or ``STOPPED``; its installation
  is ``ERROR``/``TERMINATED`` or reports an ``installationFailure`` (when installation is waited
  for); a pod stayed missing from the API's answer for longer than the grace period.
* waiting: everything else, including ``UNKNOWN`` and statuses this version does not know yet.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any

from airflow_provider_prime.models import InstallationState, PodState, PodStatus
from airflow_provider_prime.pod_ids import unique_ids

#: Pod statuses that no amount of waiting turns into ACTIVE.
FAILED_POD_STATES = frozenset(
    {PodState.ERROR.value, PodState.TERMINATED.value, PodState.DELETING.value, PodState.STOPPED.value}
)
#: Installation statuses that mean the image will never finish installing.
FAILED_INSTALLATION_STATES = frozenset({InstallationState.ERROR.value, InstallationState.TERMINATED.value})
#: Default seconds a requested pod may be absent from the API's answer before the wait fails.
DEFAULT_MISSING_GRACE = 60.0
#: Pods named one by one in a progress line; the rest are counted, so a 500-pod wait logs one
#: readable line rather than a page.
SUMMARY_POD_LIMIT = 10


class Outcome(str, Enum):
    """Where a pod, or a whole wait, stands."""

    READY = "ready"
    WAITING = "waiting"
    FAILED = "failed"


@dataclass(frozen=True)
class Requirements:
    """What "ready" demands; the sensor builds one and passes it (as plain values) to the trigger."""

    wait_for_installation: bool = True
    require_ssh: bool = True
    missing_grace: float = DEFAULT_MISSING_GRACE

    def to_kwargs(self) -> dict[str, Any]:
        """Plain values for a trigger's serialized kwargs."""
        return {
            "wait_for_installation": self.wait_for_installation,
            "require_ssh": self.require_ssh,
            "missing_grace": self.missing_grace,
        }


@dataclass(frozen=True)
class PodReport:
    """The assessment of one pod: its outcome, a human sentence, and the status it came from."""

    pod_id: str
    outcome: Outcome
    detail: str
    status: PodStatus | None = None

    def line(self) -> str:
        """``<pod id>: <detail>``, the form used in logs and error messages."""
        return f"{self.pod_id}: {self.detail}"


@dataclass(frozen=True)
class Verdict:
    """The decision for a whole wait: FAILED if any pod failed, READY if all are, else WAITING."""

    outcome: Outcome
    pods: tuple[PodReport, ...]

    @property
    def ready(self) -> bool:
        return self.outcome is Outcome.READY

    @property
    def failed(self) -> bool:
        return self.outcome is Outcome.FAILED

    @property
    def reason(self) -> str:
        """Why the wait failed, one clause per failed pod ("" when nothing failed)."""
        return "; ".join(p.line() for p in self.pods if p.outcome is Outcome.FAILED)

    def summary(self, limit: int = SUMMARY_POD_LIMIT) -> str:
        """One line of progress a human can read while waiting: ready count, then what is pending.

        At most ``limit`` pending pods are described (failed ones first); the others are counted.
        """
        ready = sum(p.outcome is Outcome.READY for p in self.pods)
        pending = sorted(
            (p for p in self.pods if p.outcome is not Outcome.READY),
            key=lambda p: p.outcome is not Outcome.FAILED,
        )
        clauses = [p.line() for p in pending[:limit]]
        if len(pending) > limit:
            clauses.append(f"and {len(pending) - limit} more not ready")
        return "; ".join([f"{ready}/{len(self.pods)} pods ready", *clauses])

    def handover(self) -> dict[str, dict[str, Any]]:
        """The JSON-serialisable mapping handed to downstream tasks (XCom ``return_value``)."""
        return {p.pod_id: handover_entry(p.status) for p in self.pods if p.status is not None}


def handover_entry(status: PodStatus) -> dict[str, Any]:
    """What a downstream task needs to connect to one pod."""
    return {
        "status": status.status,
        "installation_status": status.installation_status,
        "provider_type": status.provider_type,
        "ssh_connections": status.ssh_connections,
        "ips": status.ips,
    }


def track_missing(
    missing_since: Mapping[str, float], pod_ids: Iterable[str], statuses: Iterable[PodStatus], now: float
) -> dict[str, float]:
    """Update the "missing since" clock: absent ids keep (or get) a start time, present ids drop it."""
    present = {s.pod_id for s in statuses}
    return {pid: missing_since.get(pid, now) for pid in unique_ids(pod_ids) if pid not in present}


def assess_pod(status: PodStatus, requirements: Requirements) -> PodReport:
    """Classify one pod that the API reported."""
    pid, state, install = status.pod_id, status.status, status.installation_status
    failure = (status.installation_failure or "").strip()
    if state in FAILED_POD_STATES:
        detail = f"pod is {state}"
        if failure:
            detail += f" (installation failure: {failure})"
        return PodReport(pid, Outcome.FAILED, detail, status)
    if requirements.wait_for_installation and (install in FAILED_INSTALLATION_STATES or failure):
        detail = f"installation {install or 'failed'}" + (f": {failure}" if failure else "")
        return PodReport(pid, Outcome.FAILED, f"pod is {state}, {detail}", status)
    if state != PodState.ACTIVE.value:
        return PodReport(pid, Outcome.WAITING, f"pod is {state}", status)
    if requirements.wait_for_installation and install != InstallationState.FINISHED.value:
        progress = f" {status.installation_progress}%" if status.installation_progress is not None else ""
        detail = f"ACTIVE, installation {install or 'not started'}{progress}"
        return PodReport(pid, Outcome.WAITING, detail, status)
    if requirements.require_ssh:
        nodes = status.ssh_connections
        waiting = [i + 1 for i, ssh in enumerate(nodes) if not (ssh and ssh.strip())]
        if not nodes:
            return PodReport(pid, Outcome.WAITING, "ACTIVE, waiting for an SSH connection", status)
        if waiting:
            which = ", ".join(str(n) for n in waiting)
            return PodReport(
                pid, Outcome.WAITING, f"ACTIVE, waiting for SSH on node {which} of {len(nodes)}", status
            )
    return PodReport(pid, Outcome.READY, "ready", status)


def assess(
    pod_ids: Sequence[str],
    statuses: Iterable[PodStatus],
    requirements: Requirements,
    *,
    missing_since: Mapping[str, float] | None = None,
    now: float = 0.0,
) -> Verdict:
    """Decide readiness of ``pod_ids`` from the statuses the API returned.

    ``missing_since`` maps a pod id to the epoch second it was first seen missing (kept by the
    caller with :func:`track_missing`); a pod missing for ``requirements.missing_grace`` seconds or
    more at ``now`` fails. Statuses for ids that were not requested are ignored.
    """
    by_id = {s.pod_id: s for s in statuses}
    missing_since = missing_since or {}
    reports: list[PodReport] = []
    for pid in unique_ids(pod_ids):
        status = by_id.get(pid)
        if status is not None:
            reports.append(assess_pod(status, requirements))
            continue
        gone_for = now - missing_since.get(pid, now)
        if gone_for >= requirements.missing_grace:
            detail = f"not found or not visible to this API key (missing for {gone_for:.0f}s)"
            reports.append(PodReport(pid, Outcome.FAILED, detail))
        else:
            reports.append(PodReport(pid, Outcome.WAITING, "not in the API's answer yet"))
    outcomes = {r.outcome for r in reports}
    if Outcome.FAILED in outcomes:
        overall = Outcome.FAILED
    elif reports and outcomes == {Outcome.READY}:
        overall = Outcome.READY
    else:
        overall = Outcome.WAITING
    return Verdict(overall, tuple(reports))
