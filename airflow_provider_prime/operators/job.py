"""PrimeRunJobOperator: run a command on every node of the pods, detached, and follow it to its end.

A try of the task:

1. finds the job's nodes: every node of every pod, rank 0 the first node of the first pod
   (:mod:`airflow_provider_prime.job_nodes`), from ``pods`` (the create operator's or the sensor's
   return value, or a list of them) or from ``pod_ids`` (read from the API; a pod that is not ready
   is refused, naming it and why);
2. probes every node over SSH and takes the whole job's plan (:mod:`airflow_provider_prime.job_plan`):
   return the result of a job that already succeeded, adopt one that runs, or launch (``setup``
   on every node first when given, then ``command``);
3. follows the phase until every node ends, in the triggerer (``deferrable``) or in the worker:
   each node's lines reach the task log as they come, the first node to fail fails the task and the
   others are killed, a pod that fails under the job fails it with the platform's reason.

The job runs in a directory named after the task instance (:mod:`airflow_provider_prime.job_ids`),
the same for every try, so a retry adopts what a killed worker left running. Its processes are
killed on every exit path Airflow gives the task code: see ``docs/training.md``.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Coroutine, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any, ClassVar, NoReturn

from airflow.sdk.bases.operator import TRIGGER_FAIL_REPR

from airflow_provider_prime import events
from airflow_provider_prime._compat import AirflowTaskTimeout
from airflow_provider_prime.deployment import deployment_id
from airflow_provider_prime.exceptions import (
    PrimeConfigError,
    PrimeError,
    PrimeJobFailedError,
    PrimePodFailedError,
)
from airflow_provider_prime.hooks.prime import PrimeHook
from airflow_provider_prime.job_env import DEFAULT_MASTER_PORT, node_env, user_env
from airflow_provider_prime.job_ids import job_dir, job_id
from airflow_provider_prime.job_nodes import JobNode, handover_of, job_nodes
from airflow_provider_prime.job_plan import PlanKind, check_if_running, plan_launch
from airflow_provider_prime.job_remote import JobEnd, JobRemote, JobSource, conclude, report_kill
from airflow_provider_prime.job_script import DEFAULT_KILL_GRACE, DEFAULT_LOG_CAP, Probe, Scripts
from airflow_provider_prime.job_ssh import require_asyncssh
from airflow_provider_prime.job_wait import (
    DEFAULT_MAX_LINES,
    DEFAULT_UNREACHABLE_GRACE,
    JobWait,
)
from airflow_provider_prime.models import PodStatus
from airflow_provider_prime.operators._arguments import seconds
from airflow_provider_prime.operators._masking import MasksRenderedSecrets
from airflow_provider_prime.pod_ids import pod_ids_from
from airflow_provider_prime.triggers.job import (
    DEFAULT_JOB_POLL_INTERVAL,
    JOB_SETTLE_AFTER_DEFERRAL,
    PrimeJobTrigger,
    log_step,
)
from airflow_provider_prime.triggers.task_end import ends_in_triggerer
from airflow_provider_prime.waiting import DEFERRAL_MARGIN, AsyncDriver

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_provider_prime.job_ssh import SshLogin

#: Seconds ``on_kill`` spends killing the job on the nodes, at most: Airflow sends SIGKILL about 5 s
#: after SIGTERM.
ON_KILL_BUDGET = 4.0
#: Seconds a failing task spends killing the job on the nodes before it reports its error.
FAILURE_KILL_BUDGET = 15.0


@dataclass(frozen=True)
class _Job:
    """One try's view of the job: its nodes, identity and connections."""

    nodes: tuple[JobNode, ...]
    id: str
    dir: str
    login: SshLogin
    deadline: float
    deadline_reason: str

    @property
    def pod_ids(self) -> list[str]:
        return list(dict.fromkeys(node.pod_id for node in self.nodes))


@dataclass(frozen=True)
class _Next:
    """What a try does after its launches: ``end`` (the job ended), or wait for ``phase`` on
    ``ranks`` from ``offsets`` (then, for a setup, launch ``command`` with those launch counts)."""

    end: JobEnd | None = None
    phase: str = "command"
    ranks: tuple[int, ...] = ()
    offsets: Mapping[int, int] | None = None
    command: Mapping[int, int] | None = None
    pins: Mapping[str, str] | None = None


class HookPods:
    """The pods under a job as the API says now: one status request per poll (in the worker)."""

    def __init__(self, hook: PrimeHook, pod_ids: Sequence[str]) -> None:
        self.hook, self.pod_ids = hook, list(pod_ids)

    async def latest(self, until: float) -> Mapping[str, PodStatus] | None:
        statuses = await self.hook.aget_pods_status(self.pod_ids, deadline=until)
        return {status.pod_id: status for status in statuses}


class PrimeRunJobOperator(MasksRenderedSecrets):
    """Run ``command`` on every node of the pods (detached, adoptable by a retry), and follow it.

    :param command: the command (templated), run with ``bash -l`` on every node, in ``working_dir``.
    :param pods: where to run: the return value of ``PrimeCreatePodOperator`` or ``PodStatusSensor``
        (``create.output``), or a list of them (a mapped create). Exactly one of ``pods`` and ``pod_ids``.
    :param pod_ids: where to run, by id (templated): the pods are read from the API and must be ready.
    :param setup: run first on every node (templated); ``command`` starts on no node before ``setup``
        has succeeded on all of them. A node whose setup succeeded before does not run it again.
    :param env: variables for every node (templated), on top of the job's (``PRIME_*``, ``MASTER_ADDR``...,
        which it may not name). Values are masked in Airflow's rendered fields, not on the node.
    :param working_dir: where the phases run (created if missing); default the job's directory.
    :param ssh_conn_id: the Airflow SSH connection whose key logs in (the SSH provider's conventions:
        ``private_key`` or ``key_file`` in its extra). Host, port and user come from the pods.
    :param prime_conn_id: the Prime connection (to read the pods).
    :param master_port: ``MASTER_PORT``/``PRIME_MASTER_PORT`` (rank 0 listens there).
    :param gpus_per_node: ``PRIME_GPUS_PER_NODE``; default counted on the node (``nvidia-smi -L``).
    :param if_running: ``"adopt"`` (default) a job that runs from an earlier try, or ``"restart"`` it.
    :param deferrable: follow the job in the triggerer (no worker slot); default
        ``[operators] default_deferrable``.
    :param poll_interval: seconds between two polls of the nodes.
    :param timeout: how long the job may run (seconds or ``timedelta``); with ``execution_timeout``,
        whichever ends first ends the job (killed on every node), also while deferred.
    :param unreachable_grace: seconds a node may not answer over SSH before the job fails.
    :param max_lines: lines of one node logged per poll, at most; the rest are counted.
    """

    template_fields: Sequence[str] = ("command", "setup", "env", "working_dir", "pods", "pod_ids")
    template_fields_renderers: ClassVar[dict[str, str]] = {"command": "bash", "setup": "bash", "env": "json"}
    ui_color = "#e8f4e8"

    def __init__(
        self,
        *,
        command: str,
        pods: Any = None,
        pod_ids: Any = None,
        setup: str | None = None,
        env: Mapping[str, Any] | None = None,
        working_dir: str | None = None,
        ssh_conn_id: str = "ssh_default",
        prime_conn_id: str = "prime_default",
        master_port: int = DEFAULT_MASTER_PORT,
        gpus_per_node: int | None = None,
        if_running: str = "adopt",
        deferrable: bool | None = None,
        poll_interval: timedelta | float = DEFAULT_JOB_POLL_INTERVAL,
        timeout: timedelta | float | None = None,
        unreachable_grace: timedelta | float = DEFAULT_UNREACHABLE_GRACE,
        max_lines: int = DEFAULT_MAX_LINES,
        log_cap: int = DEFAULT_LOG_CAP,
        kill_grace: float = DEFAULT_KILL_GRACE,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        require_asyncssh()  # at parse time, saying how to install it, rather than when the job starts
        if (pods is None) == (pod_ids is None):
            raise PrimeConfigError(f"{self.task_id}: give exactly one of pods= and pod_ids=")
        if not isinstance(command, str) or not command.strip():
            raise PrimeConfigError(f"{self.task_id}: command must be a non-empty string")
        if setup is not None and not isinstance(setup, str):
            raise PrimeConfigError(f"{self.task_id}: setup must be a string")
        self.command = command
        self.pods = pods
        self.pod_ids = pod_ids
        self.setup = setup
        self.env = dict(env) if env is not None else None
        self.working_dir = working_dir
        self.ssh_conn_id = ssh_conn_id
        self.prime_conn_id = prime_conn_id
        self.master_port = int(master_port)
        self.gpus_per_node = gpus_per_node
        self.if_running = check_if_running(if_running)
        if deferrable is None:
            from airflow.configuration import conf

            deferrable = conf.getboolean("operators", "default_deferrable", fallback=False)
        self.deferrable = bool(deferrable)
        self.poll_interval = seconds(poll_interval)
        self.timeout = None if timeout is None else seconds(timeout)
        self.unreachable_grace = seconds(unreachable_grace)
        self.max_lines = int(max_lines)
        self.log_cap = int(log_cap)
        self.kill_grace = float(kill_grace)
        if self.poll_interval <= 0:
            raise PrimeConfigError(f"{self.task_id}: poll_interval must be positive")
        self._job: _Job | None = None
        #: The job's processes are known dead or killed (the phase ended, or a kill ran): no other kill.
        self._ended = False
        #: Why the task was killed (``on_kill``): set first, so no launch follows it.
        self._killed: str | None = None

    # --- Airflow's entry points ----------------------------------------------------------------

    def secrets(self) -> Iterable[str]:
        """The ``env`` values, as the nodes get them (masked in the rendered fields and the task log)."""
        env = self.env if isinstance(self.env, Mapping) else {}
        return [str(value) for value in env.values() if value is not None and str(value)]

    def execute(self, context: Context) -> Any:
        self.mask_secrets()
        job = self._job = self._find_job(context)
        self.log.info(
            "Job %s on %d node(s) of pod(s) %s; its directory on each node is ~/%s",
            job.id,
            len(job.nodes),
            ", ".join(job.pod_ids),
            job.dir,
        )
        envs = self._envs(job)  # a bad env is refused before anything runs
        with self._killed_on_failure(job):
            nxt = self._run(self._start(job, envs))
            return self._go_on(job, nxt)

    def execute_complete(
        self,
        context: Context,
        event: dict[str, Any] | None = None,
        command_counts: Mapping[str, int] | None = None,
    ) -> Any:
        """The trigger's event: the job's result, the next phase, or its failure."""
        parsed = events.parse_event(event)
        if parsed["status"] == "done" and parsed["job"].get("phase") == "setup":
            job = self._job = self._find_job(context)
            self.log.info("%s", parsed["message"])
            envs = self._envs(job)
            with self._killed_on_failure(job):
                nxt = self._run(self._launch_command(job, envs, dict(command_counts or {})))
                return self._go_on(job, nxt)
        if parsed["status"] == "failed" and parsed["error_type"] not in _VERDICTS:
            # The trigger could not follow the job (no SSH connection in the triggerer, say), so it
            # killed nothing: the task is about to fail, and its job must not run on.
            self.log.error("The trigger could not follow the job: %s", parsed["message"])
            self._kill_now(self._find_job(context), FAILURE_KILL_BUDGET, "the trigger could not follow it")
        self._ended = True  # the trigger killed what had to be killed
        return self._finish(_end_of(parsed))

    def resume_execution(self, next_method: str, next_kwargs: dict[str, Any] | None, context: Context) -> Any:
        """Kill the job when Airflow fails the deferred task itself (deferral timeout, trigger
        crash): it then resumes the task with ``__fail__`` and never calls ``execute_complete``."""
        if next_method == TRIGGER_FAIL_REPR:
            try:
                job = self._find_job(context)
            except Exception as exc:
                self.log.error("Could not find the job's nodes to kill it: %s", exc)
            else:
                self._kill_now(job, FAILURE_KILL_BUDGET, "Airflow failed the deferred task")
        return super().resume_execution(next_method, next_kwargs, context)

    def on_kill(self) -> None:
        """SIGTERM or ``execution_timeout`` in the worker: kill the job's processes on every node,
        within :data:`ON_KILL_BUDGET` (on its own event loop: the task's may be mid-step)."""
        # First: whatever this try was about to launch is not launched (Airflow's SIGTERM handler
        # returns into execute(), and SIGKILL comes seconds later).
        self._killed = self._killed or "the task was killed (SIGTERM or execution_timeout)"
        job = self._job
        if job is not None and not self._ended:
            self._kill_now(job, ON_KILL_BUDGET, "the task was killed")

    # --- the steps ---------------------------------------------------------------------------------

    def _find_job(self, context: Context) -> _Job:
        from airflow_provider_prime.job_ssh import get_login

        ti = context["ti"]
        nodes = self._nodes()
        ident = job_id(ti.dag_id, ti.run_id, ti.task_id, ti.map_index, deployment=deployment_id())
        deadline, reason = self._deadline(context)
        return _Job(nodes, ident, job_dir(ident), get_login(self.ssh_conn_id), deadline, reason)

    def _nodes(self) -> tuple[JobNode, ...]:
        if self.pods is not None:
            return job_nodes(_resolved(self.pods))
        ids = pod_ids_from(self.pod_ids)
        statuses = {status.pod_id: status for status in PrimeHook(self.prime_conn_id).get_pods_status(ids)}
        return job_nodes(handover_of(ids, statuses))

    def _deadline(self, context: Context) -> tuple[float, str]:
        """The job's end: ``timeout`` from now, or ``execution_timeout`` from the try's start."""
        ends: list[tuple[float, str]] = []
        if self.timeout is not None:
            ends.append((time.time() + self.timeout, f"timeout={self.timeout:g}s"))
        if self.execution_timeout is not None:
            started = getattr(context["ti"], "start_date", None)
            start = started.timestamp() if started is not None else time.time()
            ends.append(
                (
                    start + self.execution_timeout.total_seconds(),
                    f"execution_timeout={self.execution_timeout}",
                )
            )
        return min(ends) if ends else (float("inf"), "no deadline")

    def _envs(self, job: _Job) -> dict[int, dict[str, str]]:
        user_env(self.env)  # refused before anything is launched
        return {
            node.rank: node_env(
                job.nodes,
                node.rank,
                job_id=job.id,
                job_dir=job.dir,
                master_port=self.master_port,
                gpus_per_node=self.gpus_per_node,
                env=self.env,
            )
            for node in job.nodes
        }

    def _run(self, step: Coroutine[Any, Any, _Next]) -> _Next:
        return asyncio.run(step)

    def _links(self, job: _Job, pins: Mapping[str, str] | None = None) -> Any:
        from airflow_provider_prime.job_ssh import HostKeyPins, NodeLinks

        return NodeLinks(job.login, HostKeyPins(pins))

    def _remote(self, job: _Job, links: Any, grace: float | None = None) -> JobRemote:
        scripts = Scripts(job.dir, cap=self.log_cap, grace=self.kill_grace if grace is None else grace)
        return JobRemote(job.nodes, links, scripts, stopped=lambda: self._killed)

    async def _start(self, job: _Job, envs: Mapping[int, Mapping[str, str]]) -> _Next:
        """Probe, plan, kill and launch; then follow the phase here, or say what to defer for."""
        async with self._links(job) as links:
            remote = self._remote(job, links)
            probes = await remote.probe()
            plan = plan_launch(probes, if_running=self.if_running, has_setup=self.setup is not None)
            self.log.info("Job %s: %s", job.id, plan.reason)
            if plan.kind is PlanKind.DONE:
                # Launch nothing, but show what no try delivered to the log yet (a worker killed
                # before it followed the job), then return the result: here, it takes one poll.
                offsets = {n.rank: probes[n.rank].resume_offset("command") for n in job.nodes}
                ranks = tuple(n.rank for n in job.nodes)
                return _Next(await self._follow(job, links, _Next(ranks=ranks, offsets=offsets)))
            if plan.kill:
                report_kill(await remote.kill(plan.kill), remote, self.log, "restarting it")
            launched: dict[int, Probe] = {}
            if plan.setup and self.setup is not None:
                launched = await remote.launch(
                    "setup", self.setup, envs, plan.setup, working_dir=self.working_dir
                )
            if plan.wait_setup:
                offsets = {r: (launched.get(r) or probes[r]).resume_offset("setup") for r in plan.wait_setup}
                nxt = _Next(
                    phase="setup",
                    ranks=plan.wait_setup,
                    offsets=offsets,
                    command=plan.command,
                    pins=links.pins.to_dict(),
                )
                if self.deferrable:
                    return nxt
                end = await self._follow(job, links, nxt)
                if end.status != "done":
                    return _Next(end)
            return await self._launch_and_follow(job, links, plan.command, probes, envs)

    async def _launch_command(
        self, job: _Job, envs: Mapping[int, Mapping[str, str]], counts: Mapping[str, int]
    ) -> _Next:
        """After a deferred setup: launch the command (guarded by the counts the plan saw)."""
        async with self._links(job) as links:
            remote = self._remote(job, links)
            probes = await remote.probe()
            return await self._launch_and_follow(
                job, links, {int(r): c for r, c in counts.items()}, probes, envs
            )

    async def _launch_and_follow(
        self,
        job: _Job,
        links: Any,
        counts: Mapping[int, int],
        probes: Sequence[Probe],
        envs: Mapping[int, Mapping[str, str]],
    ) -> _Next:
        remote = self._remote(job, links)
        launched = (
            await remote.launch("command", self.command, envs, counts, working_dir=self.working_dir)
            if counts
            else {}
        )
        for rank, probe in sorted(launched.items()):
            if "launched" not in probe.action:
                self.log.info(
                    "Node %d: not launched (%s): another try got there first", rank, " ".join(probe.action)
                )
        offsets = {
            n.rank: (launched.get(n.rank) or probes[n.rank]).resume_offset("command") for n in job.nodes
        }
        nxt = _Next(
            phase="command",
            ranks=tuple(n.rank for n in job.nodes),
            offsets=offsets,
            pins=links.pins.to_dict(),
        )
        if self.deferrable:
            return nxt
        return _Next(await self._follow(job, links, nxt))

    async def _follow(self, job: _Job, links: Any, nxt: _Next) -> JobEnd:
        """Follow a phase in the worker, on the same drivers and step as the trigger."""
        nodes = [node for node in job.nodes if node.rank in nxt.ranks]
        remote = JobRemote(nodes, links, Scripts(job.dir, cap=self.log_cap, grace=self.kill_grace))
        wait = JobWait(
            nodes,
            phase=nxt.phase,
            offsets=nxt.offsets,
            deadline=job.deadline,
            unreachable_grace=self.unreachable_grace,
            max_lines=self.max_lines,
        )
        hook = PrimeHook(self.prime_conn_id)
        hook.get_settings()  # looked up here: the worker's connection API is synchronous
        pods = HookPods(hook, job.pod_ids)
        driver = AsyncDriver(
            wait,
            JobSource(remote, wait, pods),
            interval=self.poll_interval,
            on_step=lambda step: log_step(self.log, step),
        )
        end = await conclude(await driver.run(), wait, remote, self.log)
        if end.status == "timeout":
            return JobEnd("timeout", f"{end.message} ({job.deadline_reason})")
        return end

    def _go_on(self, job: _Job, nxt: _Next) -> Any:
        if nxt.end is not None:
            return self._finish(nxt.end)
        self._defer(job, nxt)

    def _defer(self, job: _Job, nxt: _Next) -> NoReturn:
        now = time.time()
        trigger = PrimeJobTrigger(
            nodes=[node.to_dict() for node in job.nodes if node.rank in nxt.ranks],
            job_dir=job.dir,
            phase=nxt.phase,
            offsets=dict(nxt.offsets or {}),
            deadline=None if job.deadline == float("inf") else job.deadline,
            deadline_reason=job.deadline_reason,
            pins=dict(nxt.pins or {}),
            ssh_conn_id=self.ssh_conn_id,
            prime_conn_id=self.prime_conn_id,
            poll_interval=self.poll_interval,
            unreachable_grace=self.unreachable_grace,
            max_lines=self.max_lines,
            log_cap=self.log_cap,
            kill_grace=self.kill_grace,
            not_before=now + max(self.poll_interval, JOB_SETTLE_AFTER_DEFERRAL),
            end_from_trigger=nxt.phase == "command" and ends_in_triggerer(self),
        )
        timeout = (
            None
            if job.deadline == float("inf")
            else timedelta(seconds=max(0.0, job.deadline - now) + DEFERRAL_MARGIN)
        )
        kwargs = (
            {"command_counts": {str(r): c for r, c in (nxt.command or {}).items()}}
            if nxt.phase == "setup"
            else None
        )
        self.defer(trigger=trigger, method_name="execute_complete", kwargs=kwargs, timeout=timeout)

    def _finish(self, end: JobEnd) -> Any:
        self._ended = True  # conclude() killed what still ran
        if end.status == "done":
            self.log.info("%s", end.message)
            return end.job
        if end.status == "timeout":
            raise AirflowTaskTimeout(end.message)
        raise end.error or PrimeError(end.message)

    # --- the kill on every exit path -------------------------------------------------------------

    def _killed_on_failure(self, job: _Job) -> _KillOnFailure:
        return _KillOnFailure(self, job)

    def _kill_now(self, job: _Job, budget: float, why: str) -> None:
        """Kill the job on every node from a thread with its own event loop, within ``budget``."""

        async def kill() -> None:
            async with self._links(job) as links:
                remote = self._remote(job, links, grace=min(self.kill_grace, budget / 2))
                report_kill(
                    await remote.kill([n.rank for n in job.nodes], timeout=budget), remote, self.log, why
                )

        def work() -> None:
            try:
                asyncio.run(asyncio.wait_for(kill(), budget))
            except Exception as exc:
                self.log.error(
                    "Could not kill the job within %.0f s (%s): %s. Its processes may still run: the "
                    "teardown that deletes the pod ends them.",
                    budget,
                    why,
                    exc,
                )

        self._ended = True
        thread = threading.Thread(target=work, name="prime-job-kill", daemon=True)
        thread.start()
        thread.join(budget + 1.0)


class _KillOnFailure:
    """Kill the job when the task's code fails while the job may run (not when it defers)."""

    def __init__(self, operator: PrimeRunJobOperator, job: _Job) -> None:
        self.operator, self.job = operator, job

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: object) -> None:
        if kind is None or _is_deferral(error) or self.operator._ended:
            return
        self.operator._kill_now(self.job, FAILURE_KILL_BUDGET, f"the task failed: {type(error).__name__}")


#: Failures a trigger's wait concluded on, having killed what still ran (:func:`.job_remote.conclude`).
_VERDICTS = frozenset({PrimeJobFailedError.__name__, PrimePodFailedError.__name__})


def _is_deferral(error: BaseException | None) -> bool:
    return type(error).__name__ == "TaskDeferred"


def _end_of(event: events.Event) -> JobEnd:
    if event["status"] == "done":
        return JobEnd("done", event["message"], dict(event["job"]))
    if event["status"] == "timeout":
        return JobEnd("timeout", event["message"])
    error = events.event_error(event)
    return JobEnd("failed", event["message"], error=error)


def _resolved(pods: Any) -> Any:
    """``pods`` as the handover(s): a lazily resolved list of a mapped create becomes a list."""
    if isinstance(pods, (Mapping, list, tuple)):
        return pods
    try:
        return list(pods)
    except TypeError:
        return pods


__all__ = ["ON_KILL_BUDGET", "PrimeRunJobOperator"]
