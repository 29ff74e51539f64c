"""The job decision: is the job running, finished, or failed, and what reaches the task log?

:class:`JobWait` is the step a job's wait takes for every poll, in the worker and in the triggerer
alike (the same shape as :class:`.readiness.PodWait`): :meth:`JobWait.answer` takes what one poll
learned (:class:`JobFacts`: each node's :class:`.job_script.Poll`, or the error that reaching it raised,
and the pods' statuses from the shared poller) and a clock, and returns a :class:`JobStep`: the lines to log,
the nodes whose process groups to kill, and the outcome. It does no I/O.

Rules (see ``docs/training.md``):

* **succeeded**: the phase exited 0 on every node, and each node's output was read to its end.
  The XCom is ``{"nodes": [{rank, host, exit_code, seconds}], "result": ...}`` (:meth:`JobStep.xcom`).
* **failed** at once, and every node is killed (the others' processes, and what an ended phase left
  behind that ignores TERM):
  - a node's phase exited non-zero, was killed, or vanished without an exit code (the first one to
    end, by the node's clock, then the lowest rank): the message names its rank, host and exit code,
    with its last lines;
  - a pod under the job is ``ERROR``, ``TERMINATED``, ``DELETING`` or ``STOPPED``, or is missing
    from the poller's answer (:class:`.PrimePodFailedError`, with the platform's reason);
  - a node has not answered over SSH for ``unreachable_grace`` seconds, or showed another host key
    than the one pinned for the job;
  - the job's directory is gone from a node (the pod was replaced or its disk wiped).
* **running**: anything else. A failed poll of the pods as a whole is never a verdict on the pods
  (:meth:`JobWait.trouble`).

**Output.** Each node's lines are logged as they come, prefixed ``[node <rank>] ``. At most
``max_lines`` lines per node per poll are logged (the latest); the others, and whatever the node
skipped beyond the byte cap of a read, are counted in one line that says where the whole log is
on the node. The wait keeps each node's byte offset (:attr:`JobWait.offsets`): the next poll of the
node reads from it, and a driver that logged the step's lines commits it as ``delivered``.
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from enum import Enum
from typing import Any

from airflow_provider_prime.exceptions import PrimeJobFailedError, PrimePodFailedError
from airflow_provider_prime.job_nodes import JobNode
from airflow_provider_prime.job_script import (
    LOG_FILE,
    Phase,
    PhaseState,
    Poll,
    read_lines,
)
from airflow_provider_prime.job_ssh import PrimeHostKeyChangedError
from airflow_provider_prime.log_throttles import ApiTrouble
from airflow_provider_prime.models import PodStatus
from airflow_provider_prime.readiness import Outcome, Requirements, assess_pod

#: Seconds a node may stay unreachable over SSH before the job fails.
DEFAULT_UNREACHABLE_GRACE = 120.0
#: Lines of one node logged per poll at most (the latest); the rest are counted.
DEFAULT_MAX_LINES = 500
#: Lines of a failed node quoted in the error.
FAILURE_TAIL = 20
_POD_RULES = Requirements(wait_for_installation=False, require_ssh=False)


class JobOutcome(str, Enum):
    """Where a job's wait stands after a poll."""

    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


@dataclass(frozen=True)
class NodeResult:
    """How one node's phase ended (``seconds`` by the node's clock)."""

    rank: int
    host: str
    exit_code: int | None
    seconds: int | None

    def to_dict(self) -> dict[str, Any]:
        return {"rank": self.rank, "host": self.host, "exit_code": self.exit_code, "seconds": self.seconds}


@dataclass(frozen=True)
class JobStep:
    """What one poll means: lines to log, notes to warn about, ranks to kill, and the outcome.

    ``again``: output is still waiting on an ended node; poll again without sleeping.
    """

    outcome: JobOutcome
    lines: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    kill: tuple[int, ...] = ()
    error: Exception | None = None
    nodes: tuple[NodeResult, ...] = ()
    again: bool = False

    @property
    def done(self) -> bool:
        """The wait is over (for a driver of :mod:`.waiting`)."""
        return self.outcome is not JobOutcome.RUNNING

    def xcom(self, result: Any = None) -> dict[str, Any]:
        """The task's return value on success: every node's end, and rank 0's ``result``."""
        return {"nodes": [node.to_dict() for node in self.nodes], "result": result}


@dataclass(frozen=True)
class JobFacts:
    """What one poll fetched: each polled node's answer (or the error reaching it raised; ranks not
    in ``polls`` were not polled this time) and the pods' statuses (``None``: no answer this time),
    or the error fetching them raised (``pods_error``: never a verdict on the pods)."""

    polls: Mapping[int, Poll | BaseException]
    pods: Mapping[str, PodStatus] | None = None
    pods_error: Exception | None = None


@dataclass(frozen=True)
class _Failure:
    rank: int
    ended: float
    message: str


class JobWait:
    """One wait for a phase of a job on its nodes, from poll to poll.

    Holds what must outlive one poll: each node's log offset, the last lines of each node (for a
    failure's message), when each unreachable node was first unreachable, and when each pod went
    missing.

    :param nodes: the nodes waited for (all of the job's, or the subset whose setup is awaited).
    :param phase: ``"command"`` or ``"setup"``.
    :param offsets: where each node's log is read from (rank -> byte offset; default 0), e.g.
        :meth:`.job_script.Probe.resume_offset` of each node after an adoption.
    :param deadline: the epoch second the wait ends (the task's ``execution_timeout`` or
        ``timeout``), for :meth:`timeout_message`; the driver enforces it.
    """

    def __init__(
        self,
        nodes: Sequence[JobNode],
        *,
        phase: str = "command",
        offsets: Mapping[int, int] | None = None,
        deadline: float,
        unreachable_grace: float = DEFAULT_UNREACHABLE_GRACE,
        max_lines: int = DEFAULT_MAX_LINES,
        missing_grace: float = 0.0,
    ) -> None:
        if not nodes:
            raise ValueError("a job wait needs at least one node")
        self.nodes = {node.rank: node for node in nodes}
        self.phase = phase
        self.offsets = {rank: int((offsets or {}).get(rank, 0)) for rank in self.nodes}
        self.deadline = deadline
        self.unreachable_grace = unreachable_grace
        self.max_lines = max_lines
        self.missing_grace = missing_grace
        self.unreachable_since: dict[int, float] = {}
        self.missing_since: dict[str, float] = {}
        self.phases: dict[int, Phase] = {}
        self.log_paths: dict[int, str] = {}
        self.drained: dict[int, bool] = {}
        self._tails: dict[int, collections.deque[str]] = {
            rank: collections.deque(maxlen=FAILURE_TAIL) for rank in self.nodes
        }
        self._trouble = ApiTrouble()

    # --- the step --------------------------------------------------------------------------

    @property
    def due(self) -> float:
        """The latest moment of the next poll (for a driver of :mod:`.waiting`): the deadline."""
        return self.deadline

    def answer(self, facts: JobFacts, now: float) -> JobStep:
        """Take one poll's facts (the step a driver of :mod:`.waiting` calls)."""
        step = self.take(facts.polls, facts.pods, now)
        if facts.pods_error is None:
            return step
        line = self._trouble.failed(facts.pods_error, now)
        return dataclasses.replace(step, notes=(*step.notes, line)) if line else step

    def take(
        self,
        polls: Mapping[int, Poll | BaseException],
        pods: Mapping[str, PodStatus] | None,
        now: float,
    ) -> JobStep:
        """Take one poll: each node's answer (or the error reaching it raised; ranks not in ``polls``
        were not polled this time) and the shared poller's statuses (``None``: no answer this time)."""
        lines: list[str] = []
        failures: list[_Failure] = []
        again = False
        for rank, node in self.nodes.items():
            if rank not in polls:
                continue
            poll = polls[rank]
            if isinstance(poll, BaseException):
                failure = self._unreachable(node, poll, now)
                if failure:
                    failures.append(failure)
                continue
            self.unreachable_since.pop(rank, None)
            self.drained[rank] = self._read(node, poll, lines)
            failure = self._judge(node, poll, now)
            if failure:
                failures.append(failure)
            elif not self.drained[rank] and self._ended(rank):
                again = True
        notes = self._recovered(now) if pods is not None else ()
        # A failure kills every node: an ended phase may have left processes that ignore TERM in its
        # group, and a node of a failed pod may still answer (one node of several died).
        every = tuple(self.nodes)
        pod_error = self._pods(pods, now)
        if pod_error is not None:
            return JobStep(JobOutcome.FAILED, tuple(lines), notes, every, pod_error)
        if failures:
            first = min(failures, key=lambda f: (f.ended, f.rank))
            error = PrimeJobFailedError(first.message)
            return JobStep(JobOutcome.FAILED, tuple(lines), notes, every, error)
        if all(self._ended(r) and self.phases[r].succeeded and self.drained.get(r) for r in self.nodes):
            results = tuple(
                NodeResult(r, self.nodes[r].host, self.phases[r].exit_code, self.phases[r].seconds)
                for r in sorted(self.nodes)
            )
            return JobStep(JobOutcome.SUCCEEDED, tuple(lines), notes, nodes=results)
        return JobStep(JobOutcome.RUNNING, tuple(lines), notes, again=again)

    def trouble(self, error: Exception, now: float) -> JobStep:
        """Take a failed poll of the pods as a whole: never a verdict on them; warn at a bounded rate."""
        line = self._trouble.failed(error, now)
        return JobStep(JobOutcome.RUNNING, notes=(line,) if line else ())

    def timeout_message(self) -> str:
        """Why the wait timed out: which nodes were still running."""
        when = datetime.fromtimestamp(self.deadline, tz=timezone.utc).isoformat(timespec="seconds")
        running = [r for r in self.nodes if not self._ended(r)]
        which = ", ".join(self.nodes[r].label for r in running) or "none"
        return f"The job's {self.phase} did not finish by the deadline {when}; still running on: {which}"

    # --- pieces ----------------------------------------------------------------------------

    def _read(self, node: JobNode, poll: Poll, lines: list[str]) -> bool:
        """Log what the poll read from ``node``; whether its output is read to the end."""
        rank, chunk = node.rank, poll.chunk
        phase = poll.probe.phase(self.phase)
        self.phases[rank] = phase
        if not poll.probe.absent:
            self.log_paths[rank] = poll.probe.log_path
        if chunk is None:
            return True
        ended = phase.state is not PhaseState.RUNNING
        read = read_lines(chunk, final=ended)
        self.offsets[rank] = read.next_offset
        prefix = f"[node {rank}] "
        self._tails[rank].extend(read.lines)
        shown = read.lines[-self.max_lines :] if self.max_lines > 0 else ()
        skipped = read.skipped_lines + len(read.lines) - len(shown)
        if skipped:
            where = self.log_paths.get(rank, f"<job dir>/{LOG_FILE}")
            lines.append(f"{prefix}skipped {skipped} lines; the whole log is at {where} on {node.host}")
        lines.extend(prefix + line for line in shown)
        return read.next_offset >= chunk.size

    def _judge(self, node: JobNode, poll: Poll, now: float) -> _Failure | None:
        phase = self.phases[node.rank]
        ended = phase.ended_at if phase.ended_at is not None else now
        if poll.probe.absent:
            return _Failure(
                node.rank,
                now,
                f"The job's directory is gone from {node.label}: the pod was replaced or its disk "
                "wiped. The job cannot be followed there; a retry launches it again",
            )
        if phase.state is PhaseState.RUNNING or phase.succeeded:
            return None
        if phase.state is PhaseState.EXITED:
            why = f"exited with code {phase.exit_code}"
        elif phase.state is PhaseState.KILLED:
            why = "was killed by a kill of this job (another try with if_running='restart', or a task kill)"
        elif phase.state is PhaseState.LOST:
            why = (
                "ended without an exit code: its processes were killed from outside the job "
                "(SIGKILL, out of memory) or the node restarted"
            )
        else:
            why = "was never launched there"
        tail = list(self._tails[node.rank])
        quoted = "\n".join(f"  {line}" for line in tail) if tail else "  (no output)"
        where = self.log_paths.get(node.rank, f"<job dir>/{LOG_FILE}")
        message = (
            f"The job's {self.phase} failed on {node.label}: it {why}. Its last {len(tail)} lines:\n"
            f"{quoted}\nThe whole log is at {where} on {node.host}."
        )
        return _Failure(node.rank, ended, message)

    def _unreachable(self, node: JobNode, error: BaseException, now: float) -> _Failure | None:
        if isinstance(error, PrimeHostKeyChangedError):  # waiting cannot make it the same machine
            return _Failure(node.rank, now, f"{error}")
        since = self.unreachable_since.setdefault(node.rank, now)
        if now - since < self.unreachable_grace:
            return None
        return _Failure(
            node.rank,
            now,
            f"{node.label} has not answered over SSH for {now - since:.0f} s (the grace is "
            f"{self.unreachable_grace:.0f} s): {error}. Check that the pod still runs and that its SSH "
            "port is reachable from Airflow",
        )

    def _pods(self, pods: Mapping[str, PodStatus] | None, now: float) -> Exception | None:
        """A failure of the pods under the job."""
        if pods is None:
            return None
        reasons: list[str] = []
        broken: set[str] = set()
        for pod_id in dict.fromkeys(node.pod_id for node in self.nodes.values()):
            status = pods.get(pod_id)
            if status is None:
                since = self.missing_since.setdefault(pod_id, now)
                if now - since >= self.missing_grace:
                    reasons.append(f"{pod_id}: not in the Prime API's answer any more (deleted?)")
                    broken.add(pod_id)
                continue
            self.missing_since.pop(pod_id, None)
            report = assess_pod(status, _POD_RULES)
            if report.outcome is Outcome.FAILED:
                reasons.append(report.line())
                broken.add(pod_id)
        if not reasons:
            return None
        return PrimePodFailedError(f"A pod under the job failed while it ran: {'; '.join(reasons)}")

    def _recovered(self, now: float) -> tuple[str, ...]:
        line = self._trouble.answered(now)
        return (line,) if line else ()

    def _ended(self, rank: int) -> bool:
        phase = self.phases.get(rank)
        return phase is not None and phase.state is not PhaseState.RUNNING


__all__ = [
    "DEFAULT_MAX_LINES",
    "DEFAULT_UNREACHABLE_GRACE",
    "FAILURE_TAIL",
    "JobFacts",
    "JobOutcome",
    "JobStep",
    "JobWait",
    "NodeResult",
    "PrimeJobFailedError",
]
