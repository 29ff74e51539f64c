"""The process model: workers that can be killed at any point, triggerers whose triggers move.

* :class:`SimTime` gives the provider's modules the simulator's clock as their ``time``: ``time()``
  is the simulator's wall time and ``sleep()`` moves that clock instead of sleeping, so a wait in
  a worker takes no real time and every run of an example sees the same pod states.
* :class:`Worker` runs one process of a task (``execute`` or ``resume_execution``) under a
  :class:`KillPlan`. Kill points are every HTTP request the sync client is about to send or has
  just been answered, every XCom push and every Variable change: SIGTERM calls ``on_kill`` there
  and lets the task go on (as the Task SDK's handler does) until SIGKILL after a grace of some
  more points; ``AirflowTaskTimeout`` is raised there (the Task SDK then calls ``on_kill``);
  SIGKILL makes the process stop having effects from that point on: everything it tries next
  raises :class:`ProcessKilled` (a ``BaseException``, like the signal) and sends nothing.
* :class:`Triggerer` runs triggers rebuilt from their serialized kwargs, in its own event loop,
  the way Airflow's ``TriggerRunner.run_trigger`` does: a cancel carrying the user-action message
  calls ``on_kill`` (Airflow 3.3), any other cancel only ``cleanup``.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import os
import selectors
import sys
import time as real_time
import types
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone, tzinfo
from typing import Any

from airflow.sdk.execution_time import task_runner

from airflow_provider_prime.hooks import _clients
from airflow_provider_prime.testing import ManualClock, PrimeSimulator
from tests.model.fake_airflow import Deployment, FakeComms, TIKey

try:
    from airflow.sdk.exceptions import AirflowTaskTimeout, TaskDeferred
except ImportError:  # Airflow 3.1
    from airflow.exceptions import AirflowTaskTimeout, TaskDeferred  # type: ignore[attr-defined,no-redef]

#: Airflow's cancel message for "the user acted on the task" (``triggerer_job_runner``).
USER_ACTION = "__airflow_user_action__"
#: Environment variable of the per-deployment identity (``[prime] deployment_id``).
DEPLOYMENT_ENV = "AIRFLOW__PRIME__DEPLOYMENT_ID"


#: Status answers the async clients (the triggerers' shared pollers) have received, in all.
STATUS_ANSWERS = [0]


class ProcessKilled(BaseException):
    """SIGKILL: the process is gone; nothing after this point has any effect."""


# -- time ------------------------------------------------------------------------------------------


class SimTime(types.ModuleType):
    """The ``time`` module as the provider sees it in the model: the simulator's clock."""

    def __init__(self, clock: ManualClock, epoch: float) -> None:
        super().__init__("time")
        self._clock, self._epoch = clock, epoch

    def time(self) -> float:
        return self._epoch + self._clock()

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            self._clock.advance(seconds)

    def __getattr__(self, name: str) -> Any:
        return getattr(real_time, name)


def sim_datetime(fake: SimTime) -> type[datetime]:
    """``datetime`` whose ``now()`` is the simulator's wall time (everything else is datetime's)."""

    class SimDateTime(datetime):
        @classmethod
        def now(cls, tz: tzinfo | None = None) -> SimDateTime:
            return cls.fromtimestamp(fake.time(), tz)

        @classmethod
        def utcnow(cls) -> SimDateTime:
            return cls.fromtimestamp(fake.time(), timezone.utc).replace(tzinfo=None)

    return SimDateTime


@contextlib.contextmanager
def simulated_time(clock: ManualClock, epoch: float) -> Iterator[SimTime]:
    """Every provider module (not the simulator's) sees :class:`SimTime` as ``time``, its sleep as
    the default ``sleep`` of the hook and clients, and a ``datetime`` whose ``now()`` is the
    simulator's."""
    fake = SimTime(clock, epoch)
    replacements = {
        "time": (real_time, fake),
        "datetime": (datetime, sim_datetime(fake)),
        "_sleep": (real_time.sleep, fake.sleep),  # the clients' backoff and look-again pauses
    }
    patched: list[tuple[types.ModuleType, str, Any]] = []
    for name, module in list(sys.modules.items()):
        if not name.startswith("airflow_provider_prime.") or ".testing" in name:
            continue
        for attribute, (real, replacement) in replacements.items():
            if getattr(module, attribute, None) is real:
                patched.append((module, attribute, real))
                setattr(module, attribute, replacement)
    # Parameters defaulting to the real sleep (``PrimeHook(sleep=time.sleep)``, the clients'):
    # the default was bound when the module loaded, so it is the function's default that changes.
    defaults: list[tuple[Any, str]] = []
    for name, module in list(sys.modules.items()):
        if not name.startswith("airflow_provider_prime.") or ".testing" in name:
            continue
        for value in list(vars(module).values()):
            function = getattr(value, "__init__", value) if isinstance(value, type) else value
            kwdefaults = getattr(function, "__kwdefaults__", None)
            if not isinstance(kwdefaults, dict):
                continue
            for parameter, default in kwdefaults.items():
                if default is real_time.sleep:
                    kwdefaults[parameter] = fake.sleep
                    defaults.append((kwdefaults, parameter))
    try:
        yield fake
    finally:
        for module, attribute, real in patched:
            setattr(module, attribute, real)
        for kwdefaults, parameter in defaults:
            kwdefaults[parameter] = real_time.sleep


# -- workers ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class KillPlan:
    """What kills a worker process: ``kind`` at kill point ``at`` (1-based); SIGTERM's SIGKILL follows
    ``grace`` points later (None: the task ends within the grace). ``zombie``: the whole worker
    died with the process, so Airflow still says "running" until it notices."""

    kind: str = "none"  # none | sigterm | timeout | sigkill
    at: int = 1
    grace: int | None = None
    zombie: bool = False

    def __str__(self) -> str:
        if self.kind == "none":
            return "no kill"
        extra = (
            f", SIGKILL {self.grace} points later"
            if self.kind == "sigterm" and self.grace is not None
            else ""
        )
        return f"{self.kind} at point {self.at}{extra}{' (worker lost)' if self.zombie else ''}"


@dataclass
class Outcome:
    """How a worker process ended."""

    kind: str  # success | deferred | failed | killed
    value: Any = None
    error: BaseException | None = None
    deferred: TaskDeferred | None = None
    points: int = 0
    on_kill_called: bool = False


class Process:
    """The state of one worker process: its kill plan and how far it got."""

    current: Process | None = None

    def __init__(self, plan: KillPlan, on_kill: Callable[[], None]) -> None:
        self.plan, self._on_kill = plan, on_kill
        self.points = 0
        self.dead = False
        self.sigterm_at: int | None = None
        self.on_kill_called = False
        self.timed_out = False
        self.owner: tuple[str, TIKey] | None = None
        self.on_kill_error: Exception | None = None

    def point(self, what: str) -> None:
        if self.dead:
            raise ProcessKilled(f"the process was killed before {what}")
        self.points += 1
        plan = self.plan
        if (
            self.sigterm_at is not None
            and plan.grace is not None
            and self.points > self.sigterm_at + plan.grace
        ):
            self._die(what)
        if self.points != plan.at:
            return
        if plan.kind == "sigkill":
            self._die(what)
        elif plan.kind == "timeout" and not self.timed_out:
            self.timed_out = True
            raise AirflowTaskTimeout()
        elif plan.kind == "sigterm" and self.sigterm_at is None:
            self.sigterm_at = self.points
            self.call_on_kill()

    def call_on_kill(self) -> None:
        """``on_kill`` as the Task SDK calls it; what it raises is logged, a SIGKILL inside it is not."""
        self.on_kill_called = True
        try:
            self._on_kill()
        except ProcessKilled:
            raise
        except Exception as exc:
            self.on_kill_error = exc

    def _die(self, what: str) -> None:
        self.dead = True
        raise ProcessKilled(f"SIGKILL at {what}")


class Worker:
    """Runs task processes of every deployment against one simulator, one at a time."""

    def __init__(self, fake_comms: FakeComms) -> None:
        self.comms = fake_comms
        self._original_send = _clients.PrimeClient._send
        #: pod name -> the (deployment, task instance) whose processes sent a create for it
        self.claims: dict[str, set[tuple[str, TIKey]]] = {}
        #: pod id -> the (deployment, task instance) whose process sent a DELETE for it
        self.deleted_by: dict[str, set[tuple[str, TIKey]]] = {}

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        """Kill points on the sync client, and the fake comms as ``SUPERVISOR_COMMS``."""
        original = self._original_send

        def send(client: Any, request: Any, timeouts: Any) -> Any:
            process = Process.current
            if process is not None:
                process.point(f"{request.method} {request.url}")
                if request.method == "POST" and isinstance(request.body, dict) and process.owner is not None:
                    name = (request.body.get("pod") or {}).get("name")
                    self.claims.setdefault(str(name), set()).add(process.owner)
                if request.method == "DELETE" and process.owner is not None:
                    pod_id = str(request.url).rstrip("/").rsplit("/", 1)[-1]
                    self.deleted_by.setdefault(pod_id, set()).add(process.owner)
            answer = original(client, request, timeouts)
            if process is not None:
                process.point(f"the answer to {request.method} {request.url}")
            return answer

        original_async = _clients.AsyncPrimeClient._send

        async def asend(client: Any, request: Any, timeouts: Any) -> Any:
            try:
                return await original_async(client, request, timeouts)
            finally:
                if str(request.url).split("?")[0].endswith("/pods/status"):
                    STATUS_ANSWERS[0] += 1

        _clients.PrimeClient._send = send  # type: ignore[method-assign]
        _clients.AsyncPrimeClient._send = asend  # type: ignore[method-assign]
        had = hasattr(task_runner, "SUPERVISOR_COMMS")
        previous = getattr(task_runner, "SUPERVISOR_COMMS", None)
        task_runner.SUPERVISOR_COMMS = self.comms  # type: ignore[attr-defined]
        try:
            yield
        finally:
            _clients.PrimeClient._send = original  # type: ignore[method-assign]
            _clients.AsyncPrimeClient._send = original_async  # type: ignore[method-assign]
            if had:
                task_runner.SUPERVISOR_COMMS = previous  # type: ignore[attr-defined]
            else:
                del task_runner.SUPERVISOR_COMMS

    def run(
        self,
        deployment: Deployment,
        operator: Any,
        call: Callable[[], Any],
        plan: KillPlan,
        owner: TIKey | None = None,
    ) -> Outcome:
        """Run ``call`` (execute or resume) as one process of ``deployment`` under ``plan``."""
        process = Process(plan, operator.on_kill)
        process.owner = None if owner is None else (deployment.name, owner)
        with acting_for(deployment, self.comms, process):
            try:
                value = call()
            except TaskDeferred as deferred:
                return Outcome("deferred", deferred=deferred, points=process.points)
            except ProcessKilled as killed:
                return Outcome(
                    "killed", error=killed, points=process.points, on_kill_called=process.on_kill_called
                )
            except AirflowTaskTimeout as timeout:
                try:  # _run_execute_callable: on_kill, then the timeout fails the task
                    process.call_on_kill()
                except ProcessKilled as killed:
                    return Outcome("killed", error=killed, points=process.points, on_kill_called=True)
                return Outcome("failed", error=timeout, points=process.points, on_kill_called=True)
            except Exception as error:
                return Outcome(
                    "failed", error=error, points=process.points, on_kill_called=process.on_kill_called
                )
            if plan.kind == "sigterm" and process.sigterm_at is not None:
                # The supervisor fails a task that was told to stop, whatever execute returned.
                return Outcome("failed", value=value, points=process.points, on_kill_called=True)
            return Outcome(
                "success", value=value, points=process.points, on_kill_called=process.on_kill_called
            )


@contextlib.contextmanager
def acting_for(
    deployment: Deployment, fake_comms: FakeComms, process: Process | None = None
) -> Iterator[None]:
    """Airflow answers for ``deployment``, its deployment id is configured, ``process`` is current."""
    previous = os.environ.get(DEPLOYMENT_ENV)
    os.environ[DEPLOYMENT_ENV] = deployment.deployment_id
    fake_comms.deployment = deployment
    fake_comms.gate = process.point if process is not None else (lambda _what: None)
    Process.current = process
    try:
        yield
    finally:
        Process.current = None
        fake_comms.gate = lambda _what: None
        fake_comms.deployment = None
        if previous is None:
            os.environ.pop(DEPLOYMENT_ENV, None)
        else:
            os.environ[DEPLOYMENT_ENV] = previous


class ModelTI:
    """The ``ti`` of a task context: identity, try number and XCom, written into the deployment.

    An XCom push is a kill point: a SIGKILLed process pushes nothing.
    """

    def __init__(self, deployment: Deployment, key: TIKey, try_number: int) -> None:
        self._deployment, self.key = deployment, key
        self.dag_id, self.run_id, self.task_id, self.map_index = (
            key.dag_id,
            key.run_id,
            key.task_id,
            key.map_index,
        )
        self.try_number = try_number
        self.id = uuid.uuid5(uuid.NAMESPACE_URL, f"{deployment.name}/{key}/{try_number}")

    def xcom_push(self, key: str, value: Any) -> None:
        process = Process.current
        if process is not None:
            process.point(f"xcom_push {key}")
        self._deployment.xcom[(self.key, key)] = value

    def xcom_pull(
        self, task_ids: str | list[str] | None = None, key: str = "return_value", **kwargs: Any
    ) -> Any:
        """As the Task SDK pulls: one value for one task and map index; with a list of task ids and
        no ``map_indexes``, every map index of each task, in order (``[None]`` for a task with none)."""
        xcom = self._deployment.xcom
        if isinstance(task_ids, list):
            values: list[Any] = []
            for task_id in task_ids:
                task = (self.dag_id, self.run_id, task_id)
                found = [
                    (k.map_index, v)
                    for (k, xcom_key), v in xcom.items()
                    if xcom_key == key and (k.dag_id, k.run_id, k.task_id) == task
                ]
                values.extend([v for _, v in sorted(found, key=lambda item: item[0])] or [None])
            return values
        index = kwargs.get("map_indexes")
        index = self.map_index if index is None else index
        return xcom.get((TIKey(self.dag_id, self.run_id, task_ids or self.task_id, index), key))


# -- triggerers ------------------------------------------------------------------------------------


@dataclass
class Deferral:
    """A deferred task instance: its trigger as Airflow stores it, and how to resume the task."""

    classpath: str
    kwargs: dict[str, Any]
    method_name: str
    method_kwargs: dict[str, Any]
    timeout_at: float | None  # simulator wall time of Airflow's deferral timeout
    triggerer: int = 0
    event: dict[str, Any] | None = None


#: How much faster than real time a triggerer's event loop runs: the shared poller's interval and
#: every asyncio timeout pass this many times faster. Kept low enough that a loopback request on a
#: loaded machine still answers well within the transport's (then shorter) read timeout.
LOOP_SPEED = 5.0


class _FastSelector(selectors.DefaultSelector):
    def select(self, timeout: float | None = None) -> Any:
        return super().select(None if timeout is None else timeout / LOOP_SPEED)


class FastLoop(asyncio.SelectorEventLoop):
    """An event loop whose clock runs :data:`LOOP_SPEED` times faster than real time (its waits
    are that much shorter): a triggerer's polling takes a fraction of the wall time it would."""

    def __init__(self) -> None:
        super().__init__(_FastSelector())

    def time(self) -> float:
        return super().time() * LOOP_SPEED


@dataclass
class Running:
    trigger: Any
    task: asyncio.Task[None]


@dataclass
class Triggerer:
    """One triggerer process of a deployment: an event loop that runs only while the model ticks it."""

    deployment: Deployment
    number: int
    comms: FakeComms
    airflow_33: bool = True
    loop: asyncio.AbstractEventLoop = field(default_factory=FastLoop)
    running: dict[TIKey, Running] = field(default_factory=dict)
    events: dict[TIKey, dict[str, Any]] = field(default_factory=dict)
    on_kill_errors: list[BaseException] = field(default_factory=list)

    def start(self, key: TIKey, deferral: Deferral, try_number: int) -> Any:
        module, _, name = deferral.classpath.rpartition(".")
        cls = getattr(importlib.import_module(module), name)
        # The settle delay guards against a race in Airflow's scheduler that the model has not got.
        trigger = cls(**{**deferral.kwargs, "not_before": None})
        trigger.task_instance = types.SimpleNamespace(
            id=uuid.uuid5(uuid.NAMESPACE_URL, f"{self.deployment.name}/{key}/{try_number}"),
            dag_id=key.dag_id,
            run_id=key.run_id,
            task_id=key.task_id,
            map_index=key.map_index,
            try_number=try_number,
        )
        trigger.trigger_id = hash((self.deployment.name, key)) & 0xFFFF
        task = self.loop.create_task(self._run(key, trigger))
        self.running[key] = Running(trigger, task)
        with acting_for(self.deployment, self.comms):  # it starts: a cancel now reaches its run()
            self.loop.run_until_complete(_yield(3))
        return trigger

    async def _run(self, key: TIKey, trigger: Any) -> None:
        try:
            async for event in trigger.run():
                self.events[key] = dict(event.payload)
        except asyncio.CancelledError as cancel:
            if self.airflow_33 and cancel.args and cancel.args[0] == USER_ACTION:
                try:
                    await asyncio.wait_for(trigger.on_kill(), 30)
                except asyncio.CancelledError:
                    pass
                except Exception as exc:
                    self.on_kill_errors.append(exc)
            raise
        finally:
            with contextlib.suppress(Exception):
                await trigger.cleanup()

    def cancel(self, key: TIKey, *, user_action: bool) -> None:
        """Cancel one trigger (user action: ``on_kill`` runs) and let it finish."""
        running = self.running.pop(key, None)
        if running is None:
            return
        running.task.cancel(USER_ACTION if user_action else None)
        with acting_for(self.deployment, self.comms):
            self.loop.run_until_complete(_settle(running.task))

    def tick(self, sim: PrimeSimulator, polls: int, budget: float = 60.0) -> dict[TIKey, dict[str, Any]]:
        """Run until this triggerer got ``polls`` more status answers (then lets every subscriber
        judge the last one) or every trigger is done. Counted in answers, not in time, so a loaded
        machine runs the same history; ``budget`` (loop seconds) only bounds a trigger that hangs."""
        if not self.running:
            return {}

        async def until() -> None:
            start = STATUS_ANSWERS[0]
            end = self.loop.time() + budget
            while self.loop.time() < end:
                if all(r.task.done() for r in self.running.values()):
                    break
                if STATUS_ANSWERS[0] >= start + polls:
                    await _yield(50)  # the subscribers judge the last answer
                    break
                await asyncio.sleep(0.005)

        with acting_for(self.deployment, self.comms):
            self.loop.run_until_complete(until())
        fired: dict[TIKey, dict[str, Any]] = {}
        for key in [k for k, r in self.running.items() if r.task.done()]:
            running = self.running.pop(key)
            if key in self.events:
                fired[key] = self.events.pop(key)
            elif not running.task.cancelled() and running.task.exception() is not None:
                fired[key] = {"__crashed__": repr(running.task.exception())}
        return fired

    def stop(self) -> None:
        for key in list(self.running):
            self.cancel(key, user_action=False)
        with acting_for(self.deployment, self.comms):
            self.loop.run_until_complete(asyncio.sleep(0))
        self.loop.close()


async def _yield(times: int) -> None:
    for _ in range(times):
        await asyncio.sleep(0)


async def _settle(task: asyncio.Task[None]) -> None:
    with contextlib.suppress(BaseException):
        await task
