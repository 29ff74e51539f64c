"""The readiness decision: are the requested pods ready, still coming, or beyond saving?

:func:`assess` is pure (no I/O, no clock). :class:`PodWait` is the step object around it that
every readiness wait takes for every answer or error, on the drivers of :mod:`.waiting` (the
sensor in every mode, the create operator in the worker, the triggers): track missing pods, assess,
turn the verdict into ready / wait / fail, log the progress. So no two paths can disagree about
what "ready" means, nor say it differently.

Rules (see ``docs/readiness.md``):

* ready: every requested pod is ``ACTIVE``; its installation is ``FINISHED`` (when waited for);
  every node has an SSH connection (when required).
* failed at once: a pod is ``ERROR``, ``TERMINATED``, ``DELETING`` or ``STOPPED``; its installation
  is ``ERROR``/``TERMINATED`` or reports an ``installationFailure`` (when installation is waited
  for); a pod stayed missing from the API's answer for longer than the grace period.
* waiting: everything else, including ``UNKNOWN`` and statuses this version does not know yet.

API errors (:meth:`PodWait.trouble`) are about the whole request, never a verdict on a pod:

* transient ones (429, 5xx, timeouts, no answer) are waited out, up to the deadline; a wait that
  never got one answer fails at ``first_answer_by`` (a wrong URL never heals);
* any other (401/403, 404, a garbled answer) fails at once while the wait has had no good answer
  (a wrong key or path: fix the connection); after good answers it is trouble for
  :func:`trouble_grace` seconds (the larger of :data:`TROUBLE_GRACE_POLLS` poll intervals and
  :data:`MIN_TROUBLE_GRACE`), and the wait fails only if such errors go on that long with no good
  answer in between. One bad answer from a proxy or the API fails no wait, and deletes no pod.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from enum import Enum
from typing import Any, Protocol

from airflow_provider_prime.exceptions import (
    PrimeConnectionError,
    PrimePodFailedError,
    is_transient,
)
from airflow_provider_prime.log_throttles import ApiTrouble, ProgressThrottle
from airflow_provider_prime.models import (
    FAILED_INSTALLATION_STATES,
    FAILED_POD_STATES,
    GONE_STATES,
    InstallationState,
    PodState,
    PodStatus,
)
from airflow_provider_prime.pod_ids import unique_ids
from airflow_provider_prime.ssh import node_entry

#: Default seconds a requested pod may be absent from the API's answer before the wait fails.
DEFAULT_MISSING_GRACE = 60.0
#: Seconds, at least, that refusals or garbled answers may go on after good answers before a wait fails.
MIN_TROUBLE_GRACE = 60.0
#: Poll intervals that refusals or garbled answers may go on after good answers before a wait fails.
TROUBLE_GRACE_POLLS = 3
#: Lines of a failed pod's own log a failure message quotes unless told otherwise (``pod_log_tail``).
DEFAULT_POD_LOG_TAIL = 50
#: Most failed pods whose log one failure message quotes (the others are counted).
POD_LOGS_QUOTED = 3
#: Most characters of one pod's log in a failure message: a trigger's event carrying it is stored
#: in Airflow's database, so it stays small whatever ``pod_log_tail`` asks (the newest lines win).
POD_LOG_CHARS = 4000
#: Seconds reading the failed pods' logs may take: a failure is never held up long by its log.
POD_LOG_READ_TIME = 20.0
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
    """What a downstream task needs to connect to one pod.

    ``ssh_connections``, ``ips`` and ``nodes`` have one entry per node in every case, ``None``
    where the platform gave nothing (``sshConnection: null`` on a one-node pod is ``[None]``, not
    ``[]``), so ``pod["ips"][0]`` never raises. The node count is the longer of the two lists.
    Each of ``nodes`` also carries the SSH target parsed into ``user``, ``host`` and ``port``
    (:func:`airflow_provider_prime.ssh.node_entry`).
    """
    ssh, ips = status.ssh_connections, status.ips
    count = max(len(ssh), len(ips), 1)
    ssh += [None] * (count - len(ssh))
    ips += [None] * (count - len(ips))
    return {
        "status": status.status,
        "installation_status": status.installation_status,
        "provider_type": status.provider_type,
        "ssh_connections": ssh,
        "ips": ips,
        "nodes": [node_entry(target, ip) for target, ip in zip(ssh, ips, strict=True)],
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


#: The line logged when every pod is ready (``%s``: the summary, e.g. "2/2 pods ready").
READY_LINE = "All pods ready: %s"


class WaitLog(Protocol):
    """The logger a :class:`PodWait` writes to (the sensor's or the trigger's ``self.log``)."""

    def debug(self, msg: str, /, *args: Any) -> Any: ...

    def info(self, msg: str, /, *args: Any) -> Any: ...

    def warning(self, msg: str, /, *args: Any) -> Any: ...


@dataclass(frozen=True)
class Step:
    """What one answer (or error) means for a wait: go on waiting, hand over, or fail with ``error``."""

    outcome: Outcome
    verdict: Verdict | None = None
    error: Exception | None = None

    @property
    def handover(self) -> dict[str, dict[str, Any]]:
        """What is known of the pods, for the XCom or an event (empty before any answer)."""
        return self.verdict.handover() if self.verdict is not None else {}

    @property
    def done(self) -> bool:
        """Whether the wait is over (ready, or failed)."""
        return self.outcome is not Outcome.WAITING

    @property
    def again(self) -> bool:
        """A readiness wait never checks again without a pause."""
        return False


@dataclass(frozen=True)
class StatusAnswer:
    """One answer of the status endpoint for a wait, and whether any of its pods changed since the
    previous one (``news``; the trigger's shared poller knows)."""

    statuses: Mapping[str, PodStatus]
    news: bool = True


def by_id(statuses: Iterable[PodStatus]) -> dict[str, PodStatus]:
    """The statuses of an answer, by pod id (the facts :meth:`PodWait.answer` takes)."""
    return {s.pod_id: s for s in statuses}


def trouble_grace(poll_interval: float | None) -> float:
    """Seconds a wait that had good answers rides out non-transient errors: the larger of
    :data:`TROUBLE_GRACE_POLLS` poll intervals and :data:`MIN_TROUBLE_GRACE`."""
    return max(TROUBLE_GRACE_POLLS * (poll_interval or 0.0), MIN_TROUBLE_GRACE)


class PodWait:
    """One wait for pods, from answer to answer: the step ``poke`` and the trigger share.

    Holds what must outlive one answer: the "missing since" clock, the last verdict, the progress
    throttle, the API-trouble log, and ``first_answer_by``: the epoch second by which the API must
    have answered this wait once (``None`` once it has, or when there is no such bound). A wait whose
    every attempt got no answer at all (DNS, refused port, TLS handshake) fails at that moment
    with a message about the connection; one that had answers and then lost the API waits on.

    :param api: how to name the API in messages, e.g. its base URL and connection id.
    :param answered: the API already gave this wait a good answer (before a deferral, say), so a
        refusal or a garbled answer is trouble to ride out (see :meth:`trouble`), not a verdict.
    :param poll_interval: seconds between two requests of this wait; sets :func:`trouble_grace`.
    :param log_ready: log :data:`READY_LINE` at info (the sensor) or debug (the trigger, whose event
        is logged by Airflow and whose thousands of lines at once would be most of a burst's cost).
    """

    def __init__(
        self,
        pod_ids: list[str],
        requirements: Requirements,
        log: WaitLog,
        *,
        deadline: float,
        api: str = "the Prime API",
        missing_since: Mapping[str, float] | None = None,
        first_answer_by: float | None = None,
        answered: bool = False,
        poll_interval: float | None = None,
        log_ready: bool = True,
    ) -> None:
        self.pod_ids = pod_ids
        self.requirements = requirements
        self.deadline = deadline
        self.api = api
        self.missing_since = dict(missing_since or {})
        self.first_answer_by = first_answer_by
        self.answered = answered
        self.trouble_grace = trouble_grace(poll_interval)
        self.verdict: Verdict | None = None
        self._log = log
        self._log_ready = log.info if log_ready else log.debug
        self._progress = ProgressThrottle()
        self._trouble = ApiTrouble()
        self._refused_since: float | None = None  # first non-transient error since the last answer
        self._line = ""
        self._waiting = Step(Outcome.WAITING)

    @property
    def due(self) -> float:
        """The latest moment of the next check: the deadline, or the bound on the first answer."""
        bound = self.first_answer_by
        return self.deadline if bound is None else min(self.deadline, bound)

    def answer(
        self, statuses: Mapping[str, PodStatus] | StatusAnswer, now: float, *, news: bool = True
    ) -> Step:
        """Take an answer of the API (pod id -> status; ids not in it were missing from the answer).

        ``news=False`` (or a :class:`StatusAnswer` that says so) tells that no status of these pods
        changed since the previous answer (the trigger's poller knows): the verdict is then reused,
        unless a pod is missing (its grace period runs on the clock) or there is no verdict yet.
        """
        if isinstance(statuses, StatusAnswer):
            news = statuses.news
            statuses = statuses.statuses
        recovered = self._trouble.answered(now)
        if recovered:
            self._log.info("%s", recovered)
        self.first_answer_by = None
        self.answered, self._refused_since = True, None
        if news or self.verdict is None or self.missing_since:
            found = [statuses[pid] for pid in self.pod_ids if pid in statuses]
            self.missing_since = track_missing(self.missing_since, self.pod_ids, found, now)
            verdict = assess(
                self.pod_ids, found, self.requirements, missing_since=self.missing_since, now=now
            )
            self.verdict, self._line = verdict, verdict.summary()
            self._waiting = Step(Outcome.WAITING, verdict)
        verdict = self.verdict
        if verdict.ready:
            self._log_ready(READY_LINE, self._line)
            return Step(Outcome.READY, verdict)
        if verdict.failed:
            return Step(Outcome.FAILED, verdict, PrimePodFailedError(f"Pod wait failed: {verdict.reason}"))
        if self._progress.due(self._line, now):
            self._log.info("Waiting for pods: %s", self._line)
        return self._waiting

    def trouble(self, error: Exception, now: float) -> Step:
        """Take a failed API call: wait on if waiting can help (logged at a bounded rate), else fail.

        A failed request says nothing about any one pod. Transient errors are waited out (until
        ``first_answer_by`` while there was never an answer). Others fail the wait at once only
        before any good answer; after one, they fail it when they have gone on for
        :attr:`trouble_grace` seconds without a good answer in between.
        """
        transient = is_transient(error)
        if not transient and not self.answered:
            return Step(Outcome.FAILED, self.verdict, error)
        line = self._trouble.failed(error, now)
        if line:
            self._log.warning("%s", line)
        if not transient:
            since = self._refused_since = now if self._refused_since is None else self._refused_since
            if now - since >= self.trouble_grace:
                self._log.warning(
                    "%s has refused or garbled every request for %.0f s (the grace after good answers "
                    "is %.0f s): giving up",
                    self.api,
                    now - since,
                    self.trouble_grace,
                )
                return Step(Outcome.FAILED, self.verdict, error)
            return self._waiting
        if self.first_answer_by is not None:
            if not got_no_answer(error):
                self.first_answer_by = None  # an HTTP answer, even a 503: something is listening
            elif now >= self.first_answer_by:
                return Step(Outcome.FAILED, self.verdict, PrimeConnectionError(self._unreachable(error)))
        return self._waiting

    @property
    def refusing(self) -> bool:
        """Whether the API has refused or garbled requests since the last good answer (a grace runs)."""
        return self._refused_since is not None

    def handover(self) -> dict[str, dict[str, Any]]:
        """What the last answer said about the pods (empty before any answer)."""
        return self._waiting.handover

    @property
    def summary(self) -> str:
        """The last progress line (what each pod still lacks), or that no answer came yet."""
        return self._line or "no answer from the API yet"

    def timeout_message(self, last_known: str | None = None) -> str:
        """Why the wait timed out: what each pod still lacked, and the last API error if any."""
        when = datetime.fromtimestamp(self.deadline, tz=timezone.utc).isoformat(timespec="seconds")
        if last_known is None:
            last_known = self.summary
            if self._trouble.last_error is not None:
                last_known += f"; the last API call failed: {self._trouble.last_error}"
        return f"Pods not ready by the deadline {when}; last known: {last_known}"

    def _unreachable(self, error: BaseException) -> str:
        return (
            f"{self.api} has not answered this wait once, so the connection is likely wrong; giving up "
            f"instead of waiting for the whole timeout. Check the host and port of the API base URL, that "
            f"the host name resolves (DNS), TLS (https to a plain-HTTP server, or a proxy's own "
            f"certificate authority: the connection extra 'verify'), and proxy settings (HTTPS_PROXY, "
            f"NO_PROXY). Last error: {error}"
        )


# -- the pod's log in a failure message -----------------------------------------------------------

#: Reads the last lines of one pod's log (``PrimeHook.get_pod_log`` with its tail and a deadline).
LogReader = Callable[[str], list[str]]
#: The async twin, for a trigger (``PrimeHook.aget_pod_log``).
AsyncLogReader = Callable[[str], Awaitable[list[str]]]


class LogSource(Protocol):
    """What reads a pod's log: :class:`~airflow_provider_prime.hooks.prime.PrimeHook`."""

    def get_pod_log(
        self, pod_id: str, tail: int = ..., *, deadline: float | None = None, secrets: Sequence[str] = ...
    ) -> list[str]: ...

    async def aget_pod_log(
        self, pod_id: str, tail: int = ..., *, deadline: float | None = None, secrets: Sequence[str] = ...
    ) -> list[str]: ...


def log_reader(
    hook: LogSource, tail: int = DEFAULT_POD_LOG_TAIL, secrets: Iterable[str] = ()
) -> LogReader | None:
    """A reader of ``tail`` lines through ``hook``, each read bounded by :data:`POD_LOG_READ_TIME`;
    None for ``tail=0`` (no log wanted). ``secrets`` (the create's env values: a pod may print them,
    ``set -x`` or a traceback) are scrubbed from every line like the API key."""
    if tail <= 0:
        return None
    hidden = tuple(secrets)

    def read(pod_id: str) -> list[str]:
        return hook.get_pod_log(pod_id, tail, deadline=time.time() + POD_LOG_READ_TIME, secrets=hidden)

    return read


def alog_reader(
    hook: LogSource, tail: int = DEFAULT_POD_LOG_TAIL, secrets: Iterable[str] = ()
) -> AsyncLogReader | None:
    """Async :func:`log_reader` (a trigger's)."""
    if tail <= 0:
        return None
    hidden = tuple(secrets)

    async def read(pod_id: str) -> list[str]:
        deadline = time.time() + POD_LOG_READ_TIME
        return await hook.aget_pod_log(pod_id, tail, deadline=deadline, secrets=hidden)

    return read


def pods_worth_a_log(step: Step) -> list[str]:
    """The pods whose own log may say why the wait failed: ``ERROR``, or a failed installation.

    Only for a failed verdict (a :class:`PrimePodFailedError`): a pod gone (``TERMINATED``,
    ``DELETING``), stopped or missing has no story in its log, and an API error is not about a pod.
    """
    if step.verdict is None or not isinstance(step.error, PrimePodFailedError):
        return []
    picked = []
    for report in step.verdict.pods:
        status = report.status
        if report.outcome is not Outcome.FAILED or status is None:
            continue
        install_failed = status.installation_status in FAILED_INSTALLATION_STATES or bool(
            (status.installation_failure or "").strip()
        )
        if status.status == PodState.ERROR.value or install_failed:
            picked.append(report.pod_id)
    return picked


def log_section(pod_id: str, lines: list[str] | BaseException) -> str:
    """What a failure message says of one pod's log: its last lines, that it is empty, or why it
    could not be read (one clause: the failure itself is the message's point, not the log)."""
    if isinstance(lines, BaseException):
        why = " ".join(str(lines).split()) or type(lines).__name__
        if len(why) > 300:
            why = why[:299] + "…"
        return f"The log of pod {pod_id} could not be read ({why})."
    if not lines:
        return f"The log of pod {pod_id} is empty."
    kept: list[str] = []
    size = 0
    for line in reversed(lines):
        size += len(line) + 3
        if size > POD_LOG_CHARS and kept:
            break
        kept.append(line)
    kept.reverse()
    cut = f" (the {len(lines) - len(kept)} lines before them left out)" if len(kept) < len(lines) else ""
    noun = "line" if len(kept) == 1 else f"{len(kept)} lines"
    body = "\n".join(f"  | {line}" for line in kept)
    return f"The last {noun} of pod {pod_id}'s log{cut}:\n{body}"


def pods_worth_a_log_of_event(error: BaseException, pods: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """:func:`pods_worth_a_log` for a failed wait known only by its event (error and handover):
    the pods of a :class:`PrimePodFailedError` that the last answer showed and that are not gone,
    going or stopped (so ``ERROR``, or their installation failed: the only other ways to fail)."""
    if not isinstance(error, PrimePodFailedError):
        return []
    no_story = GONE_STATES | {PodState.STOPPED.value}
    return [pid for pid, entry in pods.items() if entry.get("status") not in no_story]


def error_with_pod_logs(error: Exception, pod_ids: list[str], read: LogReader | None) -> Exception:
    """``error`` (same class) ending with the log sections of ``pod_ids`` (the first
    :data:`POD_LOGS_QUOTED`); unchanged when ``read`` is None or no pod is named. Never raises for a
    log. For a wait whose failure was decided elsewhere (the create's deferred wait: the log is read
    in the worker, where the env values to scrub are known, never in the triggerer)."""
    quoted = pod_ids[:POD_LOGS_QUOTED] if read is not None else []
    if not quoted or read is None:
        return error
    sections = []
    for pod_id in quoted:
        try:
            got: list[str] | BaseException = read(pod_id)
        except Exception as exc:
            got = exc
        sections.append(log_section(pod_id, got))
    if len(pod_ids) > len(quoted):
        sections.append(f"({len(pod_ids) - len(quoted)} more failed pods: their logs are not quoted here.)")
    return type(error)("\n".join([str(error), *sections]))


def with_log_sections(step: Step, pod_ids: list[str], logs: Sequence[list[str] | BaseException]) -> Step:
    """``step`` whose error (same class) ends with each pod's log section; pods over
    :data:`POD_LOGS_QUOTED` are counted, not read."""
    assert step.error is not None
    sections = [log_section(pid, got) for pid, got in zip(pod_ids, logs, strict=True)]
    more = len(pods_worth_a_log(step)) - len(pod_ids)
    if more > 0:
        sections.append(f"({more} more failed pods: their logs are not quoted here.)")
    error = type(step.error)("\n".join([str(step.error), *sections]))
    return dataclasses.replace(step, error=error)


def add_pod_logs(step: Step, read: LogReader | None) -> Step:
    """``step`` with the failed pods' log tails in its error (:func:`pods_worth_a_log`); unchanged
    when nothing is to be read or ``read`` is None (``pod_log_tail=0``). Never raises for a log."""
    pod_ids = pods_worth_a_log(step)[:POD_LOGS_QUOTED] if read is not None else []
    if not pod_ids or read is None:
        return step
    logs: list[list[str] | BaseException] = []
    for pod_id in pod_ids:
        try:
            logs.append(read(pod_id))
        except Exception as exc:
            logs.append(exc)
    return with_log_sections(step, pod_ids, logs)


async def aadd_pod_logs(step: Step, read: AsyncLogReader | None) -> Step:
    """Async :func:`add_pod_logs`: the logs are read concurrently."""
    pod_ids = pods_worth_a_log(step)[:POD_LOGS_QUOTED] if read is not None else []
    if not pod_ids or read is None:
        return step
    got = await asyncio.gather(*(read(pod_id) for pod_id in pod_ids), return_exceptions=True)
    logs: list[list[str] | BaseException] = []
    for item in got:
        if isinstance(item, BaseException) and not isinstance(item, Exception):
            raise item  # a cancellation is not a log that could not be read
        logs.append(item)
    return with_log_sections(step, pod_ids, logs)


def describe_api(base_url: str, conn_id: str) -> str:
    """How messages name the API a wait talks to."""
    return f"The Prime API at {base_url} (connection {conn_id!r})"


def got_no_answer(error: BaseException) -> bool:
    """Whether nothing answered at all: a :class:`PrimeConnectionError` is in the error's cause chain.

    (The hook raises "gave up after N attempts" as the transient error *from* the last attempt's.)
    """
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, PrimeConnectionError):
            return True
        seen = seen.__cause__
    return False
