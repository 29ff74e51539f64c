"""PrimeJobTrigger: the deferred half of :class:`~airflow_provider_prime.operators.job.PrimeRunJobOperator`.

It follows one phase of a job (``setup`` or ``command``) on its nodes from the triggerer, with no
worker slot: every ``poll_interval`` it polls each node over SSH (one reused connection per node,
:mod:`airflow_provider_prime.job_ssh`) and takes the pods' statuses from the connection's shared
status poller (no extra API request per job); :class:`~airflow_provider_prime.job_wait.JobWait`
judges, on the async driver of :mod:`airflow_provider_prime.waiting`. Each node's lines go to the
task log as they come (``[node 1] ...``). It fires one event: ``done`` (the task's return value),
``failed`` (after killing the other nodes) or ``timeout`` (after killing every node; the deadline
is the task's ``execution_timeout`` or the operator's ``timeout``, whichever ends first).

**Restarts and moves.** The job runs detached, so a trigger that is cancelled (a triggerer that
restarts, a trigger that moves) leaves it running, records on each node how far its log reached
the task log, and the trigger that takes over starts reading there: no line is lost, and only the
lines of a poll that was cut short can be shown twice.

**A user stops the task** (marks it failed, clears it) while it is deferred: Airflow 3.3 calls
:meth:`PrimeJobTrigger.on_kill`, which asks Airflow about its own task instance
(:mod:`~airflow_provider_prime.triggers.task_state`) and kills the job on every node only when the
task is stopped; never when the trigger merely moved. Airflow 3.1 and 3.2 do not call it: the job
then runs on until it ends or the pod is deleted (``docs/training.md``).

Kwargs are plain values; the SSH key and the API key are looked up inside :meth:`run`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_provider_prime import events
from airflow_provider_prime.job_nodes import JobNode
from airflow_provider_prime.job_remote import JobRemote, JobSource, conclude, report_kill
from airflow_provider_prime.job_script import DEFAULT_KILL_GRACE, DEFAULT_LOG_CAP, Scripts
from airflow_provider_prime.job_wait import DEFAULT_MAX_LINES, DEFAULT_UNREACHABLE_GRACE, JobStep, JobWait
from airflow_provider_prime.models import PodStatus
from airflow_provider_prime.triggers import polling
from airflow_provider_prime.triggers.task_end import end_task
from airflow_provider_prime.triggers.task_state import ask_own_state, on_kill_budget, through_cancels
from airflow_provider_prime.waiting import SYSTEM_CLOCK, AsyncDriver, Clock

#: Seconds between two polls of a job's nodes, by default: a failed rank is reported (and the other
#: ranks killed) within this, and a node's output reaches the task log within it.
DEFAULT_JOB_POLL_INTERVAL = 10.0
#: Seconds after a job's deferral before its trigger's first poll. A phase that has already ended
#: (a short setup) fires the trigger's event at its first poll, and an event that comes before the
#: scheduler has processed the exit of the worker that deferred fails the resumed task (Airflow's
#: race, see ``waiting.SETTLE_AFTER_DEFERRAL``). CI saw the scheduler process that exit 5.5 s after
#: the deferral on a loaded machine; a job runs for minutes, so it waits longer than a pod wait does.
JOB_SETTLE_AFTER_DEFERRAL = 15.0
#: Seconds between the trigger's last log line and its event. Airflow's triggerer carries a
#: trigger's log lines and its end over two channels, and closes the task's trigger log file when
#: it learns of the end: lines still in flight then go to the triggerer's own log, not the task's.
#: A job's last poll logs up to ``max_lines`` per node just before the end (CI lost the line after
#: them once); this pause lets them reach the file first. A job runs for minutes: it costs nothing.
LOG_DRAIN_SECONDS = 1.0


class PollerPods:
    """The pods under a job, as the shared status poller last saw them (see :class:`.JobSource`)."""

    def __init__(self, subscription: polling.Subscription, pod_ids: Sequence[str]) -> None:
        self.subscription, self.pod_ids = subscription, list(pod_ids)

    async def latest(self, until: float) -> Mapping[str, PodStatus] | None:
        snapshot = await self.subscription.next(0.0)  # never waits: the nodes set the pace
        if snapshot is None:
            return None
        if snapshot.error is not None:
            raise snapshot.error
        return {pid: snapshot.statuses[pid] for pid in self.pod_ids if pid in snapshot.statuses}


def log_step(log: Any, step: JobStep) -> None:
    """Write a step's lines to the task log (and its notes as warnings)."""
    for line in step.lines:
        log.info("%s", line)
    for note in step.notes:
        log.warning("%s", note)


class PrimeJobTrigger(BaseTrigger):
    """Follow one phase of a job on its nodes until it ends everywhere, fails, or the deadline passes.

    :param nodes: the nodes waited for (:meth:`.JobNode.to_dict` each).
    :param job_dir: the job's directory on every node.
    :param phase: ``"setup"`` or ``"command"``.
    :param offsets: rank -> byte offset of the log to read from (a new reader also starts no earlier
        than what the nodes record as delivered).
    :param deadline: epoch second the wait ends (``None``: none); ``deadline_reason`` says whose.
    :param pins: host key pins (``"host:port"`` -> key) learned by the worker: a node that shows
        another key is refused.
    :param ssh_conn_id: the SSH connection with the key to log in with.
    :param prime_conn_id: the Prime connection the pods' statuses are read with.
    :param end_from_trigger: when the ``command`` phase succeeds, log the result line and record the
        task's return value (the job's result, as the operator's ``execute_complete`` returns it)
        here, ending the task with no worker (:mod:`~airflow_provider_prime.triggers.task_end`; the
        operator decides with ``ends_in_triggerer``). A ``setup`` phase's success never ends the
        task: the worker launches the command after it.
    """

    #: The clock of the wait (a test gives one it moves by hand); never serialized.
    clock: Clock = SYSTEM_CLOCK

    def __init__(
        self,
        *,
        nodes: Sequence[Mapping[str, Any]],
        job_dir: str,
        phase: str = "command",
        offsets: Mapping[Any, int] | None = None,
        deadline: float | None = None,
        deadline_reason: str = "timeout",
        pins: Mapping[str, str] | None = None,
        ssh_conn_id: str = "ssh_default",
        prime_conn_id: str = "prime_default",
        poll_interval: float = DEFAULT_JOB_POLL_INTERVAL,
        unreachable_grace: float = DEFAULT_UNREACHABLE_GRACE,
        max_lines: int = DEFAULT_MAX_LINES,
        log_cap: int = DEFAULT_LOG_CAP,
        kill_grace: float = DEFAULT_KILL_GRACE,
        not_before: float | None = None,
        end_from_trigger: bool = False,
    ) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.nodes = [JobNode.from_dict(node) for node in nodes]
        self.job_dir = job_dir
        self.phase = phase
        self.offsets = {int(rank): int(offset) for rank, offset in (offsets or {}).items()}
        self.deadline = None if deadline is None else float(deadline)
        self.deadline_reason = deadline_reason
        self.pins = dict(pins or {})
        self.ssh_conn_id = ssh_conn_id
        self.prime_conn_id = prime_conn_id
        self.poll_interval = float(poll_interval)
        self.unreachable_grace = float(unreachable_grace)
        self.max_lines = int(max_lines)
        self.log_cap = int(log_cap)
        self.kill_grace = float(kill_grace)
        self.not_before = None if not_before is None else float(not_before)
        self.end_from_trigger = bool(end_from_trigger)

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "nodes": [node.to_dict() for node in self.nodes],
                "job_dir": self.job_dir,
                "phase": self.phase,
                "offsets": {str(rank): offset for rank, offset in self.offsets.items()},
                "deadline": self.deadline,
                "deadline_reason": self.deadline_reason,
                "pins": dict(self.pins),
                "ssh_conn_id": self.ssh_conn_id,
                "prime_conn_id": self.prime_conn_id,
                "poll_interval": self.poll_interval,
                "unreachable_grace": self.unreachable_grace,
                "max_lines": self.max_lines,
                "log_cap": self.log_cap,
                "kill_grace": self.kill_grace,
                "not_before": self.not_before,
                # Left out when unset, as a trigger of an older release serialized it.
                **({"end_from_trigger": True} if self.end_from_trigger else {}),
            },
        )

    @property
    def pod_ids(self) -> list[str]:
        return list(dict.fromkeys(node.pod_id for node in self.nodes))

    @contextlib.asynccontextmanager
    async def _remote(self, kill_grace: float | None = None) -> AsyncIterator[JobRemote]:
        from airflow_provider_prime.job_ssh import HostKeyPins, NodeLinks, aget_login

        grace = self.kill_grace if kill_grace is None else min(self.kill_grace, kill_grace)
        login = await aget_login(self.ssh_conn_id)
        async with NodeLinks(login, HostKeyPins(self.pins)) as links:
            yield JobRemote(self.nodes, links, Scripts(self.job_dir, cap=self.log_cap, grace=grace))

    async def run(self) -> AsyncIterator[TriggerEvent]:
        """Yield exactly one event (see the module docstring), then return."""
        try:
            event: events.Event = await self._follow()
        except Exception as exc:  # the connection lookups, an unusable node: the task says why
            self.log.error("The job's %s could not be followed: %s", self.phase, exc)
            event = events.build_failed(exc)
        if event["status"] == "done" and self.phase == "command" and self.end_from_trigger:
            ended = await end_task(self, event["job"])
            if ended is not None:
                self.log.info("%s", event["message"])  # the line execute_complete logs
                await self.clock.asleep(LOG_DRAIN_SECONDS)
                yield ended
                return
        await self.clock.asleep(LOG_DRAIN_SECONDS)
        yield TriggerEvent(event)  # type: ignore[no-untyped-call]

    async def _follow(self) -> events.Event:
        deadline = float("inf") if self.deadline is None else self.deadline
        settings = await polling.connection_settings(self.prime_conn_id)
        async with self._remote() as remote:
            offsets = await self._resume_offsets(remote)
            wait = JobWait(
                self.nodes,
                phase=self.phase,
                offsets=offsets,
                deadline=deadline,
                unreachable_grace=self.unreachable_grace,
                max_lines=self.max_lines,
            )
            async with polling.subscription(settings, self.pod_ids, self.poll_interval) as sub:
                driver = AsyncDriver(
                    wait,
                    JobSource(remote, wait, PollerPods(sub, self.pod_ids)),
                    interval=self.poll_interval,
                    clock=self.clock,
                    not_before=self.not_before,
                    on_step=lambda step: log_step(self.log, step),
                )
                ending = await driver.run()
            end = await conclude(ending, wait, remote, self.log)
        if end.status == "timeout":
            end = type(end)("timeout", f"{end.message} ({self.deadline_reason})")
        return end.event()

    async def _resume_offsets(self, remote: JobRemote) -> dict[int, int]:
        """Where to read each node's log: after what reached the task log (the node's record or
        this trigger's, whichever is further). A node that cannot be probed now starts at this
        trigger's offset; the wait judges it unreachable if it stays so."""
        offsets = dict(self.offsets)
        try:
            probes = await remote.probe()
        except Exception as exc:
            self.log.warning(
                "Could not read where the log reached on every node (%s); resuming as deferred", exc
            )
            return offsets
        for node, probe in zip(self.nodes, probes, strict=True):
            offsets[node.rank] = max(offsets.get(node.rank, 0), probe.resume_offset(self.phase))
        return offsets

    async def on_kill(self) -> None:
        """Kill the job on every node if Airflow says the task was stopped (Airflow 3.3+).

        Never when the task is still deferred (the trigger moved to another triggerer) or resumed;
        never raises: what could not be done is logged with who must act.
        """
        await through_cancels(self._stop_job())

    async def _stop_job(self) -> None:
        ask_for, kill_for = on_kill_budget()
        state = await ask_own_state(getattr(self, "task_instance", None), timeout=ask_for)
        if not state.stopped:
            spare = self.log.info if state.known else self.log.warning
            spare(
                "Trigger cancelled while its task is not stopped (Airflow: %s): the job keeps running. "
                "A trigger that moved to another triggerer goes on following it there.",
                state.said,
            )
            return
        self.log.warning(
            "Task stopped while its job runs (Airflow: %s): killing the job on every node", state.said
        )

        async def kill_everywhere() -> None:
            # TERM, then KILL within half the budget: the whole on_kill must end inside Airflow's.
            async with self._remote(kill_grace=kill_for / 2) as remote:
                results = await remote.kill([node.rank for node in self.nodes], timeout=kill_for)
                report_kill(results, remote, self.log, "the task was stopped")

        try:
            await asyncio.wait_for(kill_everywhere(), kill_for)
        except Exception as exc:
            self.log.error(
                "Could not kill the job within %.0f s: %s. Its processes may still run: the teardown "
                "that deletes the pod ends them.",
                kill_for,
                exc,
            )


__all__ = [
    "DEFAULT_JOB_POLL_INTERVAL",
    "JOB_SETTLE_AFTER_DEFERRAL",
    "LOG_DRAIN_SECONDS",
    "PollerPods",
    "PrimeJobTrigger",
    "log_step",
]
