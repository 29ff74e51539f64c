"""A job's nodes, driven over SSH: the thin I/O between the pure job modules and the nodes.

:class:`JobRemote` sends the scripts of :mod:`.job_script` to every node through the job's
:class:`.job_ssh.NodeLinks` (one reused connection per node) and parses their answers. The
operator (in the worker) and its trigger (in the triggerer) both use it, on an event loop; it
decides nothing: :mod:`.job_plan` says what to launch or kill, :mod:`.job_wait` what a poll means.

:class:`JobSource` is the source of a job's wait for the async driver of :mod:`.waiting`: each
check polls every node at once (the log read from the wait's offsets, which also records them as
delivered, since the lines before them are in the task log) and takes the pods' latest statuses
from a :class:`PodsView` (the shared status poller in the triggerer, the hook in the worker). On
its way out it records the final offsets on the nodes, so a trigger that restarts or moves, or a
retry that adopts, starts reading after the last line that reached the log.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from airflow_provider_prime import events
from airflow_provider_prime.exceptions import PrimeJobError, PrimeJobFailedError
from airflow_provider_prime.job_nodes import JobNode
from airflow_provider_prime.job_script import (
    REMOTE_COMMAND,
    Poll,
    Probe,
    ResultRead,
    Scripts,
    commit_script,
    launch_script,
    parse_poll,
    parse_probe,
    parse_result,
)
from airflow_provider_prime.job_wait import JobFacts, JobOutcome, JobStep, JobWait
from airflow_provider_prime.models import PodStatus
from airflow_provider_prime.waiting import Ending

#: Seconds one script may take on a node (a kill waits its grace, a launch its pid file, at most).
SCRIPT_TIMEOUT = 30.0
#: Seconds the final record of offsets may take when a wait ends (it is a courtesy, not a must).
COMMIT_TIMEOUT = 5.0

__all__ = [
    "COMMIT_TIMEOUT",
    "REMOTE_COMMAND",
    "SCRIPT_TIMEOUT",
    "JobEnd",
    "JobRemote",
    "JobSource",
    "NodeRunner",
    "PodsView",
    "conclude",
    "report_kill",
]


class Log(Protocol):
    """The logger a task or a trigger has (``self.log``)."""

    def info(self, msg: Any, /, *args: Any) -> Any: ...

    def warning(self, msg: Any, /, *args: Any) -> Any: ...

    def error(self, msg: Any, /, *args: Any) -> Any: ...


class NodeRunner(Protocol):
    """What :class:`JobRemote` needs of the SSH links (:class:`.job_ssh.NodeLinks`)."""

    async def run(self, node: JobNode, script: str, *, timeout: float) -> bytes: ...


class PodsView(Protocol):
    """Where a job's wait reads the pods' statuses: ``None`` when nothing new came since the last
    call; raises when fetching them failed as a whole."""

    async def latest(self, until: float) -> Mapping[str, PodStatus] | None: ...


class JobRemote:
    """The job's scripts on its nodes. Every method runs on all the nodes it is given at once."""

    def __init__(
        self,
        nodes: Sequence[JobNode],
        links: NodeRunner,
        scripts: Scripts,
        *,
        stopped: Callable[[], str | None] = lambda: None,
    ) -> None:
        self.nodes = {node.rank: node for node in nodes}
        self.links = links
        self.scripts = scripts
        #: Why the task was killed, once it was (``on_kill``): nothing is launched after that.
        self.stopped = stopped

    async def _run(self, rank: int, script: str, timeout: float = SCRIPT_TIMEOUT) -> bytes:
        return await self.links.run(self.nodes[rank], script, timeout=timeout)

    async def _probe(self, rank: int, script: str, timeout: float = SCRIPT_TIMEOUT) -> Probe:
        """Run a script that reports the job (:func:`.job_script.parse_probe`); a refusal or an
        unreadable answer names the node."""
        output = await self._run(rank, script, timeout)
        try:
            return parse_probe(output)
        except PrimeJobError as exc:
            raise PrimeJobError(f"{self.nodes[rank].label}: {exc}") from exc

    async def _each(
        self, ranks: Sequence[int], call: Callable[[int], Awaitable[Any]]
    ) -> dict[int, Any | BaseException]:
        answers = await asyncio.gather(*(call(rank) for rank in ranks), return_exceptions=True)
        for answer in answers:
            if isinstance(answer, asyncio.CancelledError):
                raise answer
        return dict(zip(ranks, answers, strict=True))

    async def probe(self) -> list[Probe]:
        """Every node's probe, in rank order; the first node that cannot be probed raises."""

        async def one(rank: int) -> Probe:
            return await self._probe(rank, self.scripts.probe())

        answers = await self._each(sorted(self.nodes), one)
        return [_raise_or(answers[rank]) for rank in sorted(self.nodes)]

    async def launch(
        self,
        phase: str,
        text: str,
        envs: Mapping[int, Mapping[str, str]],
        expect: Mapping[int, int],
        *,
        working_dir: str | None = None,
    ) -> dict[int, Probe]:
        """Launch ``phase`` on the ranks of ``expect`` (each guarded by its launch count)."""

        async def one(rank: int) -> Probe:
            script = launch_script(
                self.scripts.job_dir,
                phase,
                text,
                envs[rank],
                expect_launches=expect[rank],
                working_dir=working_dir,
            )
            return await self._probe(rank, script)

        self._refuse_if_stopped(phase)
        answers = await self._each(sorted(expect), one)
        if self.stopped():  # the kill came while launching: what it missed is killed now
            ran = [r for r, a in answers.items() if isinstance(a, Probe) and "launched" in a.action]
            if ran:
                await self.kill(ran)
            self._refuse_if_stopped(phase)
        return {rank: _raise_or(answer) for rank, answer in answers.items()}

    def _refuse_if_stopped(self, phase: str) -> None:
        why = self.stopped()
        if why:
            raise PrimeJobError(f"Not launching the job's {phase}: {why}")

    async def kill(
        self, ranks: Sequence[int], *, timeout: float = SCRIPT_TIMEOUT
    ) -> dict[int, Probe | BaseException]:
        """Kill the job's process groups on ``ranks``; never raises (each node's error is returned)."""

        async def one(rank: int) -> Probe:
            return await self._probe(rank, self.scripts.kill(), timeout)

        return await self._each(sorted(ranks), one)

    async def poll(self, offsets: Mapping[int, int], until: float) -> dict[int, Poll | BaseException]:
        """Poll every node: its phases and its log from ``offsets`` (recorded as delivered)."""
        timeout = max(1.0, min(SCRIPT_TIMEOUT, until - time.time()))

        async def one(rank: int) -> Poll:
            offset = offsets.get(rank, 0)
            return parse_poll(await self._run(rank, self.scripts.poll(offset, commit=offset), timeout))

        return await self._each(sorted(self.nodes), one)

    async def commit(self, offsets: Mapping[int, int], *, timeout: float = COMMIT_TIMEOUT) -> None:
        """Record ``offsets`` as delivered on every node, best effort (errors are dropped)."""

        async def one(rank: int) -> bytes:
            return await self._run(rank, commit_script(self.scripts.job_dir, offsets.get(rank, 0)), timeout)

        await self._each(sorted(self.nodes), one)

    async def result(self) -> ResultRead:
        """Rank 0's result file."""
        try:
            return parse_result(await self._run(0, self.scripts.result()))
        except Exception as exc:
            return ResultRead(problem=f"it could not be read ({exc})")


def _raise_or(answer: Any) -> Any:
    if isinstance(answer, BaseException):
        raise answer
    return answer


class JobSource:
    """The source of a job's wait (see :class:`.waiting.AsyncDriver`): every check polls the nodes
    and takes the pods' latest statuses; leaving it records the wait's offsets on the nodes."""

    def __init__(self, remote: JobRemote, wait: JobWait, pods: PodsView) -> None:
        self.remote, self.wait, self.pods = remote, wait, pods

    def __call__(self) -> JobSource:
        return self

    async def __aenter__(self) -> Callable[[float], Awaitable[JobFacts]]:
        return self.fetch

    async def __aexit__(self, *exc_info: object) -> None:
        # A courtesy: without it the next reader re-reads what the last poll read.
        with contextlib.suppress(Exception, asyncio.CancelledError):
            await asyncio.wait_for(self.remote.commit(self.wait.offsets), COMMIT_TIMEOUT + 1.0)

    async def fetch(self, until: float) -> JobFacts:
        polls, pods = await asyncio.gather(
            self.remote.poll(self.wait.offsets, until), self.pods.latest(until), return_exceptions=True
        )
        if isinstance(polls, BaseException):
            raise polls
        if isinstance(pods, asyncio.CancelledError):
            raise pods
        if isinstance(pods, Exception):
            return JobFacts(polls, None, pods_error=pods)
        if isinstance(pods, BaseException):
            raise pods
        return JobFacts(polls, pods)


@dataclass(frozen=True)
class JobEnd:
    """How a phase's wait ended, as the task reports it: ``done`` (``job`` is what it returns),
    ``failed`` (``error``), or ``timeout``; the event a trigger sends is :meth:`event`."""

    status: str
    message: str
    job: dict[str, Any] = field(default_factory=dict)
    error: Exception | None = None

    def event(self) -> events.Event:
        if self.status == "done":
            return events.build_done(self.job, self.message)
        if self.status == "failed":
            return events.build_failed(self.error or PrimeJobFailedError(self.message))
        return events.build_timeout(self.message)


async def conclude(ending: Ending[JobStep], wait: JobWait, remote: JobRemote, log: Log) -> JobEnd:
    """End a phase's wait: read rank 0's result on success; kill what still runs on failure or
    timeout (and say where that failed). The same in the worker and in the triggerer."""
    step = ending.step
    nodes = len(wait.nodes)
    if step is not None and step.outcome is JobOutcome.SUCCEEDED:
        if wait.phase != "command":
            return JobEnd(
                "done", f"The job's {wait.phase} succeeded on {nodes} node(s)", {"phase": wait.phase}
            )
        read = await remote.result()
        if read.problem:
            log.warning("Rank 0's result is not returned: %s", read.problem)
        # A sweep: what the command left running in its groups that ignored the runner's TERM.
        report_kill(await remote.kill(sorted(wait.nodes)), remote, log, "the job succeeded", quiet=True)
        return JobEnd("done", f"The job succeeded on {nodes} node(s)", step.xcom(read.value))
    if step is not None and step.outcome is JobOutcome.FAILED:
        if step.kill:
            report_kill(await remote.kill(step.kill), remote, log, "the job failed")
        return JobEnd("failed", str(step.error), error=step.error)
    report_kill(await remote.kill(sorted(wait.nodes)), remote, log, "the job timed out")
    return JobEnd("timeout", wait.timeout_message())


def report_kill(
    results: Mapping[int, Probe | BaseException],
    remote: JobRemote,
    log: Log,
    why: str,
    *,
    quiet: bool = False,
) -> bool:
    """Log what a kill did on each node (``quiet``: only where it failed); whether it reached every node."""
    failed = {rank: answer for rank, answer in results.items() if isinstance(answer, BaseException)}
    done = sorted(rank for rank in results if rank not in failed)
    if done and not quiet:
        log.info("Killed the job's processes on node(s) %s (%s)", ", ".join(map(str, done)), why)
    for rank, error in failed.items():
        log.error(
            "Could not kill the job on %s: %s. Its processes may still run there: the teardown that "
            "deletes the pod ends them, or kill them by hand (%s)",
            remote.nodes[rank].label,
            error,
            f"kill -- -<pid> of {remote.scripts.job_dir}/command.pid",
        )
    return not failed
