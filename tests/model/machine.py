"""The model of the pod lifecycle: a hypothesis state machine over the real operators and triggers.

Two Airflow deployments (``prod`` and ``staging``) share one Prime key and one DAG, ``train``, with
the same ``scheduled__`` run ids. Each run has three create tasks: ``create`` (mapped over two
indexes, with derived names or one static name), ``create_1`` (unmapped: its key in Airflow's
task-state answer is the mapped ``create[1]``'s too) and ``named`` (a user's name, sometimes of a
pod that existed before the run: a borrowed pod); a training task downstream uses their pods
until the run ends, and the teardown ``terminate`` then gives them back.

The rules are what happens to such a deployment: runs start, tasks run (in the worker or deferred),
kills land at any point of a process (:mod:`.processes`), retries run, triggers tick, move to the
other triggerer and restart, Airflow's deferral timeout fires, users mark tasks failed or clear
them, runs end, are cleared or deleted, the reaper runs, the API loses, garbles and delays answers
and its list lags, pods break, time passes.

Checked after every step (:meth:`LifecycleModel.check`):

1. at most one live pod per task instance per deployment;
2. no pod whose task instance, or its downstream use, is alive is ever deleted (nor a borrowed pod);
3. no API key or env secret in anything captured: logs and exceptions (as Airflow's masker leaves
   them: that is what a user sees), trigger events and kwargs, XCom, Variables, rendered fields
   (as the Task SDK stores them), what was sent to Airflow;

and at the end, once every task has ended and the backstop (the reaper) has run: 4. no pod bills.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import re
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, ClassVar, TypeVar

import structlog
from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.sdk import DAG
from airflow.sdk.api.datamodels._generated import DagRunState, TaskInstanceState
from airflow.sdk.bases.operator import TRIGGER_FAIL_REPR
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from airflow_provider_prime.operators.pod import PrimeCreatePodOperator, PrimeTerminatePodOperator
from airflow_provider_prime.operators.reaper import PrimeReapPodsOperator
from airflow_provider_prime.testing import (
    PODS_PATH,
    STATUS_PATH,
    CreateLifecycle,
    Fault,
    ManualClock,
    PrimeSimulator,
    Scenario,
    ready_pod,
)
from tests.model.fake_airflow import TI as AirflowTI
from tests.model.fake_airflow import Deployment, FakeComms, Run, TIKey
from tests.model.processes import (
    Deferral,
    KillPlan,
    ModelTI,
    Outcome,
    Triggerer,
    Worker,
    simulated_time,
)
from tests.model.secrets import SecretScanner
from tests.simulated import FAST_RETRY

T = TypeVar("T")

DAG_ID = "train"
API_KEY = "pk-live-7Hq2ZxW9vLm4Rt8Kp3Nd6Fs1Bc5Yg0Ja"
ENV_SECRETS = {"HF_TOKEN": "hf_Qm8VxT3wLr6Np2Kz9Bj4Hd7Cs", "WANDB_KEY": "wandb-5Tg8Mx2Lq7Vr4Nz1Kp6Hc3"}
#: Created pods: ACTIVE after 2 pod seconds, installed after 5, TERMINATED 1 s after a DELETE.
LIFECYCLE = CreateLifecycle(active_after=2.0, installed_after=5.0, deleting_for=1.0)
#: The wait's own timeout (simulated seconds): long enough to get ready, short enough to run out.
WAIT_TIMEOUT = 600.0
POLL_INTERVAL = 1.0
MAX_RUNS = 2
MAX_RUNS_EVER = 9
RETRIES = 1

KILLS = st.builds(
    KillPlan,
    kind=st.sampled_from(["none", "none", "sigterm", "timeout", "sigkill"]),
    at=st.integers(1, 14),
    grace=st.none() | st.integers(0, 4),
    zombie=st.booleans(),
)
FAULTS: dict[str, Any] = {
    "create answer lost": lambda: Fault.answer_lost(),
    "create answered 502 after it took effect": lambda: Fault.server_error(
        502, html=True, method="POST", path=PODS_PATH, after_effect=True
    ),
    "create refused 503": lambda: Fault.server_error(503, method="POST", path=PODS_PATH),
    "list lags once": lambda: _empty_list(1),
    "list lags three times": lambda: _empty_list(3),
    "status garbled": lambda: Fault.malformed_json(path=STATUS_PATH),
    "status lone 401": lambda: Fault.http_error(401, path=STATUS_PATH),
    "status router 404": lambda: Fault.http_error(
        404, body_shape="detail", message="Not Found", path=STATUS_PATH
    ),
    "delete fails twice": lambda: Fault.server_error(500, method="DELETE", path=PODS_PATH + "*", times=2),
    "delete router 404": lambda: Fault.http_error(
        404, body_shape="detail", message="Not Found", method="DELETE", path=PODS_PATH + "*"
    ),
    "get pod router 404": lambda: Fault.http_error(
        404, body_shape="detail", message="Not Found", method="GET", path=PODS_PATH + "?*"
    ),
    "server echoes the key": lambda: Fault.http_error(401, message=f"invalid API key {API_KEY}"),
    "server echoes the key past 200 characters": lambda: Fault.http_error(
        400, message="x" * 190 + API_KEY, body_shape="detail"
    ),
    "server echoes an env secret": lambda: Fault.http_error(
        422, message=f"envVars: value {ENV_SECRETS['HF_TOKEN']} is invalid", method="POST", path=PODS_PATH
    ),
    "slow answers": lambda: Fault.slow(0.05, times=3),
    "connection dropped": lambda: Fault.drop(),
}


def _empty_list(times: int) -> Fault:
    """``GET /pods/`` answers an empty list: a pod created a moment ago is not listed yet."""
    body = {"total_count": 0, "offset": 0, "limit": 100, "data": []}
    return Fault.json_reply(body, method="GET", path=PODS_PATH, times=times)


@dataclass(frozen=True)
class CreateSpec:
    """One create task of the DAG."""

    task_id: str
    map_count: int | None  # None: not mapped
    naming: str  # derived | static (one user name for every map index) | user
    deferrable: bool


@dataclass(frozen=True)
class Move:
    """One thing that happens: its ``kind`` (a method of :class:`LifecycleModel`) and the choices it
    needs (which deployment first, which eligible item, the kill plan, how much time passes)."""

    kind: str
    which: int = 0
    pick: int = 0
    plan: KillPlan = field(default_factory=KillPlan)
    seconds: float = 1.0
    clear: bool = False


def moves(*kinds: str) -> st.SearchStrategy[Move]:
    """Moves of ``kinds`` (a kind named twice is drawn twice as often)."""
    return st.builds(
        Move,
        kind=st.sampled_from(kinds),
        which=st.integers(0, 1),
        pick=st.integers(0, 999),
        plan=KILLS,
        seconds=st.sampled_from([0.0, 1.0, 3.0, 10.0, 60.0]),
        clear=st.booleans(),
    )


#: Airflow's own work: workers run and resume tasks, triggerers poll, runs end, lost workers are
#: noticed (the heartbeat timeout fails their try before any retry). Weighted toward the creates.
WORK = (
    "run_task",
    "run_task",
    "run_task",
    "resume_task",
    "resume_task",
    "triggerer_runs",
    "triggerer_runs",
    "triggerer_runs",
    "end_run",
    "worker_loss_noticed",
)
#: What users do to tasks and runs.
USER_ACTS = ("user_acts_on_task", "user_acts_on_task", "clear_run", "delete_run")
#: What happens to triggerers and deferrals.
TRIGGERER_TROUBLE = ("trigger_moves", "trigger_moves", "triggerer_restarts", "deferral_times_out")


@dataclass
class TIRecord:
    """What the model knows of a task instance beyond Airflow's row."""

    deferral: Deferral | None = None
    zombie: bool = False


@dataclass
class Violation:
    invariant: str
    detail: str
    signature: str


class InvariantBroken(AssertionError):
    pass


#: Violations to record without failing, by signature prefix (``3@rendered fields``, ``2@reaper_runs``,
#: ``4``...) or tag (``#shared-name``): how a survey of code with known bugs goes on to find the next kind.
TOLERATED = tuple(t.strip() for t in os.environ.get("PRIME_MODEL_TOLERATE", "").split(",") if t.strip())
#: Known open bugs, by the tag their violations carry: tolerated in the bounded profile (``make test``)
#: until their fix lands, reported by the long one. Remove an entry when its fix is merged.
KNOWN_OPEN = {
    "#shared-name": "B1-B6 of the adversary report: a user-chosen name that both deployments use "
    "(the same DAG file in staging and prod): a documented limit (docs/lifecycle.md, names you choose)",
}
#: Names (user-chosen, shared by both deployments) that tag a violation ``#shared-name``.
SHARED_NAME = re.compile(r"\b(job|static)-20\d\d-")


def step(rule_method: Callable[..., None]) -> Callable[..., None]:
    """Remember which rule runs, to name the violations it causes."""

    @functools.wraps(rule_method)
    def run(self: LifecycleModel, **kwargs: Any) -> None:
        self.current_step = rule_method.__name__
        started = time.perf_counter()
        try:
            rule_method(self, **kwargs)
        finally:
            LifecycleModel.timings[rule_method.__name__] += time.perf_counter() - started
            LifecycleModel.counts[rule_method.__name__] += 1

    return run


@dataclass
class World:
    """Everything one example runs on."""

    sim: PrimeSimulator
    clock: ManualClock
    epoch: float
    comms: FakeComms
    worker: Worker
    deployments: list[Deployment]
    triggerers: dict[str, list[Triggerer]]
    records: dict[tuple[str, TIKey], TIRecord] = field(default_factory=dict)
    borrowed: dict[str, str] = field(default_factory=dict)  # pod id -> name
    deleted_seen: set[str] = field(default_factory=set)
    log: list[str] = field(default_factory=list)

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.epoch + self.clock(), tz=timezone.utc)


class LifecycleModel(RuleBasedStateMachine):
    """See the module docstring."""

    def __init__(self) -> None:
        super().__init__()
        self._stack = contextlib.ExitStack()
        clock = ManualClock()
        sim = PrimeSimulator(Scenario(lifecycle=LIFECYCLE), api_keys=(API_KEY,), clock=clock).start()
        self._stack.callback(sim.stop)
        comms = FakeComms()
        deployments = [Deployment("prod", "prod-eu"), Deployment("staging", "staging-eu")]
        self.world = World(
            sim=sim,
            clock=clock,
            epoch=sim.pods._epoch,
            comms=comms,
            worker=Worker(comms),
            deployments=deployments,
            triggerers={},
        )
        self.specs: list[CreateSpec] = []
        self.airflow_33 = True
        self.scanner = SecretScanner([API_KEY, *ENV_SECRETS.values()])
        self._logs = self._stack.enter_context(structlog.testing.capture_logs())
        self._records = _LogRecords()
        root = logging.getLogger()
        for printer in [h for h in root.handlers if isinstance(h, logging.StreamHandler)]:
            root.removeHandler(printer)  # thousands of lines per example: scanned, not printed
            self._stack.callback(root.addHandler, printer)
        root.addHandler(self._records)
        self._stack.callback(root.removeHandler, self._records)
        self._stack.enter_context(_environment(sim))
        self._stack.enter_context(simulated_time(clock, self.world.epoch))
        self._stack.enter_context(self.world.worker.installed())
        self._scanned_logs = 0
        self._scanned_records = 0
        self.violations: list[Violation] = []
        self.steps = 0
        self.current_step = "setup"

    # -- setting up ----------------------------------------------------------------------------

    @initialize(
        mapped_naming=st.sampled_from(["derived", "derived", "static"]),
        deferrable=st.tuples(st.booleans(), st.booleans(), st.booleans()),
        airflow_33=st.booleans(),
        user_names=st.sampled_from(["per deployment", "per deployment", "shared"]),
    )
    def setup(
        self, mapped_naming: str, deferrable: tuple[bool, bool, bool], airflow_33: bool, user_names: str
    ) -> None:
        """The DAG both deployments run. ``user_names="shared"``: the names a user chose are the same
        in both (one DAG file deployed to staging and prod), as derived names never are."""
        self.shared_names = user_names == "shared"
        self.specs = [
            CreateSpec("create", 2, mapped_naming, deferrable[0]),
            CreateSpec("create_1", None, "derived", deferrable[1]),
            CreateSpec("named", None, "user", deferrable[2]),
        ]
        self.airflow_33 = airflow_33
        for deployment in self.world.deployments:
            self.world.triggerers[deployment.name] = [
                Triggerer(deployment, n, self.world.comms, airflow_33=airflow_33) for n in range(2)
            ]
            self._stack.callback(_stop_all, self.world.triggerers[deployment.name])
        self._note(
            f"setup: create mapped x2 ({mapped_naming} names), deferrable={deferrable}, "
            f"Airflow {'3.3' if airflow_33 else '3.1/3.2'} trigger on_kill, user names {user_names}"
        )

    # -- runs ----------------------------------------------------------------------------------

    @precondition(lambda self: bool(self.specs) and any(self._can_start(d) for d in self.world.deployments))
    @rule(which=st.integers(0, 1), borrowed=st.booleans())
    @step
    def start_run(self, which: int, borrowed: bool) -> None:
        chosen = self._choose(lambda d: [d] if self._can_start(d) else [], which, 0)
        if chosen is None:
            return
        deployment = chosen[0]
        run_id = f"scheduled__2026-01-0{len(self._run_ids_ever(deployment)) + 1}T00:00:00+00:00"
        self._ever.setdefault(deployment.name, []).append(run_id)
        if borrowed:  # the user's own pod of that name exists already: the create adopts it
            name = self._user_name(deployment, run_id, "named")
            pod_id = f"borrowed-{deployment.name}-{len(self.world.borrowed)}"
            self.world.sim.add_pod(ready_pod(pod_id, ready_at=0.0).model_copy(update={"name": name}))
            self.world.borrowed[pod_id] = name
        self.world.clock.advance(1.0)
        deployment.runs[(DAG_ID, run_id)] = Run(DAG_ID, run_id, DagRunState.RUNNING, self.world.now())
        for spec in self.specs:
            for index in range(spec.map_count) if spec.map_count else [-1]:
                key = TIKey(DAG_ID, run_id, spec.task_id, index)
                deployment.tis[key] = AirflowTI(key, None, 0, RETRIES + 1)
        self._note(
            f"{deployment.name}: run {run_id} starts{' (the named pod exists already)' if borrowed else ''}"
        )

    @property
    def _ever(self) -> dict[str, list[str]]:
        if not hasattr(self, "_ever_runs"):
            self._ever_runs: dict[str, list[str]] = {}
        return self._ever_runs

    def _run_ids_ever(self, deployment: Deployment) -> list[str]:
        return self._ever.get(deployment.name, [])

    def _can_start(self, deployment: Deployment) -> bool:
        """At most MAX_RUNS runs going at once, MAX_RUNS_EVER in all (deleted runs make room)."""
        going = sum(1 for r in deployment.runs.values() if r.state == DagRunState.RUNNING)
        return going < MAX_RUNS and len(self._run_ids_ever(deployment)) < MAX_RUNS_EVER

    @step
    def end_run(self, which: int, pick: int, plan: KillPlan) -> None:
        """Training ends, the teardown gives the pods back, the run is over."""
        chosen = self._choose(self._endable_runs, which, pick)
        if chosen is None:
            return
        deployment, run = chosen
        run.training = False
        self._teardown(deployment, run, plan)
        tis = deployment.tis_of(run.dag_id, run.run_id)
        success = all(ti.state == TaskInstanceState.SUCCESS for ti in tis)
        run.state = DagRunState.SUCCESS if success else DagRunState.FAILED
        self._note(f"{deployment.name}: run {run.run_id} ends {run.state.value}")

    def _teardown(self, deployment: Deployment, run: Run, plan: KillPlan) -> Outcome:
        pod_ids = [
            value
            for (key, xcom_key), value in deployment.xcom.items()
            if xcom_key == "pod_id" and (key.dag_id, key.run_id) == (run.dag_id, run.run_id)
        ]
        key = TIKey(run.dag_id, run.run_id, "terminate")
        with self._dag():
            operator = PrimeTerminatePodOperator(
                task_id="terminate",
                pod_ids=pod_ids or None,
                poll_interval=POLL_INTERVAL,
                timeout=120,
                deferrable=False,
            )
            # The creates are upstream of their teardown: it reads their pod_owned verdicts.
            for spec in self.specs:
                EmptyOperator(task_id=spec.task_id) >> operator
        context = self._context(deployment, key, 1, run)
        outcome = self.world.worker.run(deployment, operator, lambda: operator.execute(context), plan)
        self._scan_outcome(f"terminate {deployment.name} {run.run_id}", outcome)
        self._note(f"{deployment.name}: teardown of {run.run_id} ({plan}): {_describe(outcome)}")
        return outcome

    @step
    def clear_run(self, which: int, pick: int) -> None:
        """A user clears the whole run: every task will run again (a new try), training restarts."""
        chosen = self._choose(self._clearable_runs, which, pick)
        if chosen is None:
            return
        deployment, run = chosen
        for ti in deployment.tis_of(run.dag_id, run.run_id):
            self._cancel_trigger(deployment, ti.key, user_action=True, new_state=None)
            ti.state = None
            self._record(deployment, ti.key).zombie = False
        run.state, run.training = DagRunState.RUNNING, True
        run.start_date = self.world.now()
        self._note(f"{deployment.name}: run {run.run_id} cleared")

    @step
    def delete_run(self, which: int, pick: int) -> None:
        """A user deletes a run: its task instances are gone from Airflow, its triggers cancelled."""
        chosen = self._choose(self._runs, which, pick)
        if chosen is None:
            return
        deployment, run = chosen
        tis = deployment.tis_of(run.dag_id, run.run_id)
        deployment.delete_run(run.dag_id, run.run_id)
        for ti in tis:
            self._cancel_trigger(deployment, ti.key, user_action=True, new_state="gone")
        self._note(f"{deployment.name}: run {run.run_id} deleted")

    # -- tasks ---------------------------------------------------------------------------------

    @step
    def run_task(self, which: int, pick: int, plan: KillPlan) -> None:
        """The scheduler starts a try of a create task (first try, retry, or after a clear)."""
        chosen = self._choose(self._runnable, which, pick)
        if chosen is None:
            return
        deployment, ti = chosen
        ti.try_number += 1
        ti.state = TaskInstanceState.RUNNING
        deployment.clear_xcom(ti.key)
        record = self._record(deployment, ti.key)
        record.deferral, record.zombie = None, False
        operator = self._create_operator(deployment, ti.key)
        context = self._context(deployment, ti.key, ti.try_number)
        self._render(deployment, ti.key, operator, context)
        outcome = self.world.worker.run(
            deployment, operator, lambda: operator.execute(context), plan, owner=ti.key
        )
        self._settle(deployment, ti, outcome, plan, "execute")

    @step
    def resume_task(self, which: int, pick: int, plan: KillPlan) -> None:
        """A deferred task resumes in a worker: with its trigger's event, or to fail (``__fail__``)."""
        chosen = self._choose(self._resumable, which, pick)
        if chosen is None:
            return
        deployment, ti = chosen
        record = self._record(deployment, ti.key)
        deferral = record.deferral
        assert deferral is not None
        assert deferral.event is not None
        ti.state = TaskInstanceState.RUNNING
        operator = self._create_operator(deployment, ti.key)
        context = self._context(deployment, ti.key, ti.try_number)
        event = deferral.event
        if "__fail__" in event:
            method, kwargs = TRIGGER_FAIL_REPR, {"error": event["__fail__"]}
        else:
            method, kwargs = deferral.method_name, {**deferral.method_kwargs, "event": event}
        record.deferral = None
        self._render(deployment, ti.key, operator, context)
        outcome = self.world.worker.run(
            deployment,
            operator,
            lambda: operator.resume_execution(method, kwargs, context),
            plan,
            owner=ti.key,
        )
        self._settle(deployment, ti, outcome, plan, f"resume ({method})")

    def _settle(
        self, deployment: Deployment, ti: AirflowTI, outcome: Outcome, plan: KillPlan, what: str
    ) -> None:
        """Airflow's bookkeeping after a task process ended."""
        record = self._record(deployment, ti.key)
        self._scan_outcome(f"{what.split()[0]} {deployment.name} {ti.key}", outcome)
        if outcome.kind == "success":
            ti.state = TaskInstanceState.SUCCESS
            self._scan("return value", json.dumps(outcome.value, default=str))
        elif outcome.kind == "deferred":
            deferred = outcome.deferred
            assert deferred is not None
            classpath, kwargs = deferred.trigger.serialize()
            self._scan("trigger kwargs", json.dumps(kwargs, default=str))
            timeout_at = None
            if deferred.timeout is not None:
                timeout_at = self.world.epoch + self.world.clock() + deferred.timeout.total_seconds()
            record.deferral = Deferral(
                classpath, kwargs, deferred.method_name, dict(deferred.kwargs or {}), timeout_at
            )
            ti.state = TaskInstanceState.DEFERRED
            self._start_trigger(deployment, ti, record.deferral, triggerer=ti.try_number % 2)
        elif outcome.kind == "killed" and plan.zombie:
            record.zombie = True  # Airflow still says running until it notices the lost worker
        else:
            self._fail_try(ti)
        self._note(f"{deployment.name}: {ti.key} try {ti.try_number} {what} ({plan}): {_describe(outcome)}")

    @staticmethod
    def _fail_try(ti: AirflowTI) -> None:
        ti.state = (
            TaskInstanceState.UP_FOR_RETRY if ti.try_number < ti.max_tries else TaskInstanceState.FAILED
        )

    @step
    def worker_loss_noticed(self, which: int, pick: int) -> None:
        """The scheduler notices a lost worker (no heartbeat): the try fails."""
        chosen = self._choose(self._zombies, which, pick)
        if chosen is None:
            return
        deployment, ti = chosen
        self._record(deployment, ti.key).zombie = False
        self._fail_try(ti)
        self._note(f"{deployment.name}: lost worker of {ti.key} noticed: {ti.state}")

    @step
    def user_acts_on_task(self, which: int, pick: int, clear: bool) -> None:
        """A user marks a deferred or running task failed, or clears it."""
        chosen = self._choose(self._actionable, which, pick)
        if chosen is None:
            return
        deployment, ti = chosen
        new_state = None if clear else TaskInstanceState.FAILED
        self._cancel_trigger(deployment, ti.key, user_action=True, new_state=new_state)
        ti.state = new_state
        record = self._record(deployment, ti.key)
        record.zombie, record.deferral = False, None
        self._note(f"{deployment.name}: a user {'clears' if clear else 'marks failed'} {ti.key}")

    # -- triggerers ----------------------------------------------------------------------------

    def _start_trigger(
        self, deployment: Deployment, ti: AirflowTI, deferral: Deferral, triggerer: int
    ) -> None:
        deferral.triggerer = triggerer
        self.world.triggerers[deployment.name][triggerer].start(ti.key, deferral, ti.try_number)

    def _cancel_trigger(
        self, deployment: Deployment, key: TIKey, *, user_action: bool, new_state: Any
    ) -> None:
        """Airflow cancels the trigger of ``key`` (after changing the row to ``new_state``)."""
        record = self._record(deployment, key)
        if record.deferral is None:
            return
        ti = deployment.tis.get(key)
        if ti is not None and new_state != "gone":
            ti.state = new_state
        triggerer = self.world.triggerers[deployment.name][record.deferral.triggerer]
        triggerer.cancel(key, user_action=user_action)
        self._scan_trigger_errors(triggerer)
        record.deferral = None

    @step
    def triggerer_runs(self, which: int, number: int, seconds: float) -> None:
        """Time passes and a triggerer's loop runs: its shared poller polls twice."""
        chosen = self._choose(self._busy_triggerers, which, number)
        if chosen is None:
            return
        deployment, triggerer = chosen
        self.world.clock.advance(seconds)
        fired = triggerer.tick(self.world.sim, polls=2)
        self._scan_trigger_errors(triggerer)
        for key, event in fired.items():
            self._scan(f"trigger event {key}", json.dumps(event, default=str))
            ti = deployment.tis.get(key)
            record = self._record(deployment, key)
            if ti is None or record.deferral is None:
                continue
            if "__crashed__" in event:
                event = {"__fail__": "Trigger failure"}
            record.deferral.event = event
            ti.state = TaskInstanceState.SCHEDULED
            self._note(f"{deployment.name}: trigger of {key} fired: {event.get('status', event)}")

    @step
    def trigger_moves(self, which: int, pick: int) -> None:
        """A triggerer's heartbeat went stale: Airflow 3.3 cancels its triggers as if by a user
        (``on_kill`` runs while the task is still deferred) and another triggerer takes them over."""
        chosen = self._choose(self._deferred, which, pick)
        if chosen is None:
            return
        deployment, ti = chosen
        deferral = self._record(deployment, ti.key).deferral
        assert deferral is not None
        old = self.world.triggerers[deployment.name][deferral.triggerer]
        old.cancel(ti.key, user_action=True)
        self._scan_trigger_errors(old)
        self._start_trigger(deployment, ti, deferral, triggerer=1 - deferral.triggerer)
        self._note(f"{deployment.name}: trigger of {ti.key} moves to triggerer {deferral.triggerer}")

    @step
    def triggerer_restarts(self, which: int, number: int) -> None:
        """A triggerer restarts: its triggers are cancelled (no on_kill) and start again."""
        chosen = self._choose(self._busy_triggerers, which, number)
        if chosen is None:
            return
        deployment, triggerer = chosen
        keys = list(triggerer.running)
        for key in keys:
            triggerer.cancel(key, user_action=False)
        for key in keys:
            ti, record = deployment.tis.get(key), self._record(deployment, key)
            if ti is not None and record.deferral is not None and record.deferral.event is None:
                triggerer.start(key, record.deferral, ti.try_number)
        if keys:
            self._note(f"{deployment.name}: triggerer {triggerer.number} restarts ({len(keys)} triggers)")

    @step
    def deferral_times_out(self, which: int, pick: int) -> None:
        """Airflow's own deferral timeout (time passes until it is due): the trigger is cancelled
        without ``on_kill`` and the task resumes with ``__fail__``."""
        chosen = self._choose(self._deferred, which, pick)
        if chosen is None:
            return
        deployment, ti = chosen
        record = self._record(deployment, ti.key)
        if record.deferral is not None and record.deferral.timeout_at is not None:
            now = self.world.epoch + self.world.clock()
            self.world.clock.advance(max(0.0, record.deferral.timeout_at - now))
        deferral = record.deferral
        assert deferral is not None
        triggerer = self.world.triggerers[deployment.name][deferral.triggerer]
        triggerer.cancel(ti.key, user_action=False)
        deferral.event = {"__fail__": "Trigger/execution timeout"}
        ti.state = TaskInstanceState.SCHEDULED
        self._note(f"{deployment.name}: deferral of {ti.key} timed out")

    # -- the reaper, the API, time -------------------------------------------------------------

    @precondition(lambda self: bool(self._live_pods()))
    @rule(which=st.integers(0, 1), plan=KILLS)
    @step
    def reaper_runs(self, which: int, plan: KillPlan) -> None:
        deployment = self.world.deployments[which]
        self._reap(deployment, plan)

    def _reap(self, deployment: Deployment, plan: KillPlan) -> Outcome:
        with self._dag("maintenance"):
            operator = PrimeReapPodsOperator(task_id="reap", dag_ids=[DAG_ID], min_age=0, dry_run=False)
        key = TIKey("maintenance", "manual__reap", "reap")
        context = self._context(deployment, key, 1)
        outcome = self.world.worker.run(deployment, operator, lambda: operator.execute(context), plan)
        self._scan_outcome(f"reaper {deployment.name}", outcome)
        self._note(f"{deployment.name}: reaper ({plan}): {_describe(outcome)}")
        return outcome

    @precondition(
        lambda self: self._any(self._runs) or not any(self._can_start(d) for d in self.world.deployments)
    )
    @rule(
        change=st.sampled_from(["fault"] * 4 + ["pod breaks", "time passes"]),
        fault=st.sampled_from(sorted(FAULTS)),
        pick=st.integers(0, 999),
        seconds=st.sampled_from([1.0, 5.0, 30.0, 120.0, 700.0]),
    )
    @step
    def world_changes(self, change: str, fault: str, pick: int, seconds: float) -> None:
        """The API misbehaves (at most a few faults armed at once), a pod breaks, or time passes."""
        if change == "fault":
            if len(self.world.sim.faults) >= 3:
                self.world.sim.clear_faults()
            self.world.sim.inject(FAULTS[fault]())
            self._note(f"API: {fault}")
        elif change == "pod breaks":
            self._pod_breaks(pick)
        else:
            self.world.clock.advance(seconds)

    def _live_pods(self) -> list[str]:
        """The pods the API bills that tasks created (not the borrowed ones), by id."""
        return sorted(
            p
            for p, info in self.world.sim.billing()["pods"].items()
            if info["billing"] and not info["deleted"] and p not in self.world.borrowed
        )

    def _pod_breaks(self, pick: int) -> None:
        """A live pod goes to ERROR (its installation failed)."""
        pods = self._live_pods()
        if not pods:
            return
        pod_id = pods[pick % len(pods)]
        self.world.sim.set_pod_state(
            pod_id, "ERROR", installation_status="ERROR", installation_failure="CUDA broke"
        )
        self._note(f"pod {pod_id} breaks")

    # -- the rules: hypothesis picks one valid rule at a time, uniformly, and turns some rules off
    # for a whole example (swarm testing). So Airflow's work is one rule taking one to three moves,
    # present twice; mishaps are grouped into a few rules. Each move runs the kind drawn if it can,
    # else the next kind of its group that can.

    @precondition(lambda self: self._can_do(WORK))
    @rule(work=st.lists(moves(*WORK), min_size=1, max_size=3))
    def airflow_works(self, work: list[Move]) -> None:
        for move in work:
            self._do(move, WORK)

    @precondition(lambda self: self._can_do(WORK))
    @rule(work=st.lists(moves(*WORK), min_size=1, max_size=3))
    def airflow_works_on(self, work: list[Move]) -> None:
        """The same as :meth:`airflow_works` (an example that turned that rule off still has this)."""
        for move in work:
            self._do(move, WORK)

    @precondition(lambda self: self._can_do(USER_ACTS))
    @rule(move=moves(*USER_ACTS))
    def users_act(self, move: Move) -> None:
        self._do(move, USER_ACTS)

    @precondition(lambda self: self._can_do(TRIGGERER_TROUBLE))
    @rule(move=moves(*TRIGGERER_TROUBLE))
    def triggerers_trouble(self, move: Move) -> None:
        self._do(move, TRIGGERER_TROUBLE)

    def _eligible(self, kind: str) -> bool:
        eligible: dict[str, Callable[[Deployment], list[Any]]] = {
            "run_task": self._runnable,
            "resume_task": self._resumable,
            "triggerer_runs": self._deferred,
            "end_run": self._endable_runs,
            "worker_loss_noticed": self._zombies,
            "user_acts_on_task": self._actionable,
            "clear_run": self._clearable_runs,
            "delete_run": self._runs,
            "trigger_moves": self._deferred,
            "triggerer_restarts": self._deferred,
            "deferral_times_out": self._deferred,
        }
        return self._any(eligible[kind])

    def _can_do(self, kinds: tuple[str, ...]) -> bool:
        return any(self._eligible(kind) for kind in set(kinds))

    def _do(self, move: Move, group: tuple[str, ...]) -> None:
        """Run ``move`` (or the first kind of ``group`` after it that can run) with its choices."""
        kinds = list(dict.fromkeys(group))
        start = kinds.index(move.kind)
        for kind in kinds[start:] + kinds[:start]:
            if self._eligible(kind):
                break
        else:
            return
        which, pick, number = move.which, move.pick, move.pick % 2
        calls: dict[str, Callable[[], None]] = {
            "run_task": lambda: self.run_task(which=which, pick=pick, plan=move.plan),
            "resume_task": lambda: self.resume_task(which=which, pick=pick, plan=move.plan),
            "triggerer_runs": lambda: self.triggerer_runs(which=which, number=number, seconds=move.seconds),
            "end_run": lambda: self.end_run(which=which, pick=pick, plan=move.plan),
            "worker_loss_noticed": lambda: self.worker_loss_noticed(which=which, pick=pick),
            "user_acts_on_task": lambda: self.user_acts_on_task(which=which, pick=pick, clear=move.clear),
            "clear_run": lambda: self.clear_run(which=which, pick=pick),
            "delete_run": lambda: self.delete_run(which=which, pick=pick),
            "trigger_moves": lambda: self.trigger_moves(which=which, pick=pick),
            "triggerer_restarts": lambda: self.triggerer_restarts(which=which, number=number),
            "deferral_times_out": lambda: self.deferral_times_out(which=which, pick=pick),
        }
        calls[kind]()
        self._check_pods()  # after each move: a violation is named after the move that caused it

    # -- the invariants ------------------------------------------------------------------------

    @invariant()
    def check(self) -> None:
        self.steps += 1
        self._scan_logs()
        self._scan_airflow()
        self._check_pods()
        if self.violations:
            first = self.violations[0]
            raise InvariantBroken(
                f"[{first.signature}] {first.invariant}: {first.detail}\n\nhistory:\n  "
                + "\n  ".join(self.world.log)
            )

    def _check_pods(self) -> None:
        pods = self.world.sim.billing()["pods"]
        in_use = self._pods_in_use()
        for pod_id, info in pods.items():
            if info["deleted"] and pod_id not in self.world.deleted_seen:
                self.world.deleted_seen.add(pod_id)
                if pod_id in in_use:
                    self._violate(
                        "2: no pod in use is deleted",
                        f"pod {pod_id} ({info['name']}) deleted while {in_use[pod_id]}"
                        + self._verdict_lost(pod_id),
                    )
        live: dict[str, list[str]] = {}
        for pod_id, info in pods.items():
            if info["origin"] == "api" and info["billing"] and not info["deleted"]:
                live.setdefault(info["name"], []).append(pod_id)
        for name, pod_ids in live.items():
            claimants = self.world.worker.claims.get(name, set())
            if len(pod_ids) > max(1, len(claimants)):
                who = ", ".join(f"{d}:{k}" for d, k in sorted(claimants, key=str)) or "nobody"
                lagged = any(line.startswith("API: list lags") for line in self.world.log)
                self._violate(
                    "1: at most one live pod per task instance per deployment",
                    f"{len(pod_ids)} live pods named {name} ({', '.join(sorted(pod_ids))}) for {who}"
                    + (" (#list-lag: the pod list lagged in this history)" if lagged else ""),
                )

    def _pods_in_use(self) -> dict[str, str]:
        """Pod id -> who uses it: a live task instance's pod, a running training's, a borrowed one."""
        in_use = {pod_id: "it was borrowed (the user's own pod)" for pod_id in self.world.borrowed}
        for deployment in self.world.deployments:
            for key, ti in deployment.tis.items():
                pod_id = deployment.xcom.get((key, "pod_id"))
                if not isinstance(pod_id, str):
                    continue
                record = self._record(deployment, key)
                run = deployment.runs.get((key.dag_id, key.run_id))
                alive = ti.state == TaskInstanceState.DEFERRED or (
                    ti.state == TaskInstanceState.SCHEDULED and record.deferral is not None
                )
                if ti.state == TaskInstanceState.RUNNING and record.zombie:
                    # Its worker is gone, but Airflow says "running" until the heartbeat timeout
                    # fails it: to everyone else (the reaper) the pod is in use. Deleted by its own
                    # process before it died (on_kill, the failure path), it was not in use.
                    alive = (deployment.name, key) not in self.world.worker.deleted_by.get(pod_id, set())
                if alive:
                    in_use[pod_id] = f"{deployment.name}: {key} is {ti.state.value if ti.state else None}"
                elif ti.state == TaskInstanceState.SUCCESS and run is not None and run.training:
                    in_use[pod_id] = f"{deployment.name}: {key} succeeded and its run still trains on it"
        return in_use

    def _verdict_lost(self, pod_id: str) -> str:
        """`` #verdict-lost`` when a create published ``pod_id`` but not its ``pod_owned`` verdict."""
        for deployment in self.world.deployments:
            for (key, xcom_key), value in deployment.xcom.items():
                if xcom_key == "pod_id" and value == pod_id and (key, "pod_owned") not in deployment.xcom:
                    return f" (#verdict-lost: {deployment.name}: {key} pushed pod_id but no pod_owned)"
        return ""

    def _outlives_run(self, pod_id: str) -> str:
        """`` #outlives-run`` when the reaper spared ``pod_id`` as a user-named pod of a succeeded create."""
        for entry in self._logs:
            event = str(entry.get("event", ""))
            if event.startswith(f"Sparing pod {pod_id}") and "outlives its run" in event:
                return " (#outlives-run: the reaper spares a succeeded create's user-named pod)"
        return ""

    def _violate(self, invariant: str, detail: str, where: str | None = None) -> None:
        signature = f"{invariant.split(':')[0]}@{where or self.current_step}"
        if self.shared_names and SHARED_NAME.search(detail):
            signature += "#shared-name"
        signature += "".join(sorted(set(re.findall(r"#verdict-lost|#outlives-run|#list-lag", detail))))
        tolerated = [t for t in self.tolerate if signature.startswith(t) or (t[0] == "#" and t in signature)]
        if tolerated:
            if signature not in LifecycleModel.tolerated:
                LifecycleModel.examples[signature] = f"{invariant}: {detail}\n  " + "\n  ".join(
                    self.world.log
                )
            LifecycleModel.tolerated[signature] += 1
            return
        self.violations.append(Violation(invariant, detail, signature))

    def teardown(self) -> None:
        try:
            if not self.violations and self.specs:
                self.current_step = "the end"
                self._end_everything()
                self._check_pods()
                self._scan_logs()
                self._scan_airflow()
                billing = self.world.sim.billing()["pods"]
                left = sorted(
                    f"{pod_id} ({info['name']}, {info['status']}){self._outlives_run(pod_id)}"
                    for pod_id, info in billing.items()
                    if info["billing"] and pod_id not in self.world.borrowed
                )
                if left:
                    self._violate(
                        "4: every task ended and the reaper ran, yet pods bill", ", ".join(left), "the end"
                    )
                if self.violations:
                    first = self.violations[0]
                    raise InvariantBroken(
                        f"[{first.signature}] {first.invariant}: {first.detail}\n\nhistory:\n  "
                        + "\n  ".join(self.world.log)
                    )
        finally:
            LifecycleModel.total_steps += self.steps
            self._stack.close()

    total_steps = 0
    #: Violations recorded without failing, by signature prefix or ``#tag`` (set by the profile:
    #: :data:`TOLERATED`, and the tags of :data:`KNOWN_OPEN` in the bounded one); none by default.
    tolerate: tuple[str, ...] = ()
    shared_names = False
    #: Tolerated violations seen, by signature, and the first history of each.
    tolerated: ClassVar[Counter[str]] = Counter()
    examples: ClassVar[dict[str, str]] = {}
    #: Seconds spent in each rule, and how often it ran (``make test-model`` prints them).
    timings: ClassVar[Counter[str]] = Counter()
    counts: ClassVar[Counter[str]] = Counter()

    def _end_everything(self) -> None:
        """Every task ends (users mark what still runs failed), every run ends, the reaper runs."""
        self.world.sim.clear_faults()
        self._note("-- the end: every task ends, every run ends, the reaper runs --")
        for deployment in self.world.deployments:
            for ti in list(deployment.tis.values()):
                if ti.unfinished:
                    self._cancel_trigger(
                        deployment, ti.key, user_action=True, new_state=TaskInstanceState.FAILED
                    )
                    ti.state = TaskInstanceState.FAILED
                    self._record(deployment, ti.key).deferral = None
            self.current_step = "end_run (the end)"
            for run in list(deployment.runs.values()):
                if run.state == DagRunState.RUNNING:
                    run.training = False
                    self._teardown(deployment, run, KillPlan())
                    run.state = DagRunState.FAILED
            self._check_pods()
        self.current_step = "reaper_runs (the end)"
        for deployment in self.world.deployments:
            self._reap(deployment, KillPlan())
        self.world.clock.advance(10.0)

    # -- what is eligible for a rule (preconditions: hypothesis picks only rules that do something)

    def _any(self, eligible: Callable[[Deployment], list[Any]]) -> bool:
        return bool(self.specs) and any(eligible(d) for d in self.world.deployments)

    def _choose(
        self, eligible: Callable[[Deployment], list[T]], which: int, pick: int
    ) -> tuple[Deployment, T] | None:
        """One eligible item: of deployment ``which`` if it has any, else of the other one."""
        for deployment in (self.world.deployments[which], self.world.deployments[1 - which]):
            items = eligible(deployment)
            if items:
                return deployment, items[pick % len(items)]
        return None

    def _busy_triggerers(self, deployment: Deployment) -> list[Triggerer]:
        return [t for t in self.world.triggerers.get(deployment.name, []) if t.running]

    def _runs(self, deployment: Deployment) -> list[Run]:
        return list(deployment.runs.values())

    def _clearable_runs(self, deployment: Deployment) -> list[Run]:
        """Runs with a task that has started: clearing a run nothing happened in changes nothing."""
        return [
            r
            for r in deployment.runs.values()
            if any(ti.try_number > 0 for ti in deployment.tis_of(r.dag_id, r.run_id))
        ]

    def _endable_runs(self, deployment: Deployment) -> list[Run]:
        return [
            r
            for r in deployment.runs.values()
            if r.state == DagRunState.RUNNING
            and not any(ti.unfinished for ti in deployment.tis_of(r.dag_id, r.run_id))
        ]

    def _runnable(self, deployment: Deployment) -> list[AirflowTI]:
        return [
            ti
            for ti in deployment.tis.values()
            if ti.state in (None, TaskInstanceState.UP_FOR_RETRY)
            and deployment.runs[(ti.key.dag_id, ti.key.run_id)].state == DagRunState.RUNNING
        ]

    def _resumable(self, deployment: Deployment) -> list[AirflowTI]:
        return [
            ti
            for ti in deployment.tis.values()
            if ti.state == TaskInstanceState.SCHEDULED
            and self._record(deployment, ti.key).deferral is not None
        ]

    def _deferred(self, deployment: Deployment) -> list[AirflowTI]:
        return [
            ti
            for ti in deployment.tis.values()
            if ti.state == TaskInstanceState.DEFERRED
            and self._record(deployment, ti.key).deferral is not None
        ]

    def _zombies(self, deployment: Deployment) -> list[AirflowTI]:
        return [
            ti
            for ti in deployment.tis.values()
            if ti.state == TaskInstanceState.RUNNING and self._record(deployment, ti.key).zombie
        ]

    def _actionable(self, deployment: Deployment) -> list[AirflowTI]:
        live = (TaskInstanceState.DEFERRED, TaskInstanceState.RUNNING, TaskInstanceState.SCHEDULED)
        return [ti for ti in deployment.tis.values() if ti.state in live]

    # -- helpers -------------------------------------------------------------------------------

    def _record(self, deployment: Deployment, key: TIKey) -> TIRecord:
        return self.world.records.setdefault((deployment.name, key), TIRecord())

    def _note(self, line: str) -> None:
        self.world.log.append(line)

    @contextlib.contextmanager
    def _dag(self, dag_id: str = DAG_ID) -> Iterator[DAG]:
        with DAG(dag_id, schedule=None, start_date=datetime(2026, 1, 1, tzinfo=timezone.utc)) as dag:
            yield dag

    def _user_name(self, deployment: Deployment, run_id: str, task_id: str) -> str:
        return f"job-{self._name_part(deployment)}{run_id[11:21]}-{task_id}"

    def _name_part(self, deployment: Deployment) -> str:
        """What a user-chosen name says of its deployment: nothing when the names are shared."""
        return "" if self.shared_names else f"{deployment.name}-"

    def _create_operator(self, deployment: Deployment, key: TIKey) -> PrimeCreatePodOperator:
        spec = next(s for s in self.specs if s.task_id == key.task_id)
        name = None
        if spec.naming == "user":
            name = self._user_name(deployment, key.run_id, key.task_id)
        elif spec.naming == "static":
            name = f"static-{self._name_part(deployment)}{key.run_id[11:21]}"
        with self._dag():
            create = PrimeCreatePodOperator(
                task_id=spec.task_id,
                gpu_type="H100_80GB",
                gpu_count=1,
                name=name,
                env_vars=dict(ENV_SECRETS),
                poll_interval=POLL_INTERVAL,
                timeout=WAIT_TIMEOUT,
                deferrable=spec.deferrable,
                retries=RETRIES,
            )
            # As the DAG is written: the terminate teardown gives the pods back (its own run is
            # modelled by _teardown); a user-named pod's record then says it does not outlive its run.
            create >> PrimeTerminatePodOperator(task_id="terminate", pod_ids=[]).as_teardown(setups=create)
            return create

    def _context(
        self, deployment: Deployment, key: TIKey, try_number: int, run: Run | None = None
    ) -> dict[str, Any]:
        run = run or deployment.runs.get((key.dag_id, key.run_id))
        ti = ModelTI(deployment, key, try_number)
        start = run.start_date if run is not None else self.world.now()
        return {
            "ti": ti,
            "task_instance": ti,
            "dag_run": _DagRun(key.run_id, start),
            "run_id": key.run_id,
            "logical_date": start,
        }

    def _render(self, deployment: Deployment, key: TIKey, operator: Any, context: dict[str, Any]) -> None:
        """Render the templated fields and store them as the Task SDK does (the Rendered Template view)."""
        from airflow.sdk.execution_time.task_runner import _serialize_rendered_fields

        operator.render_template_fields(context)
        self._scan(f"rendered fields of {key}", json.dumps(_serialize_rendered_fields(operator), default=str))

    # -- secrets -------------------------------------------------------------------------------

    def _scan(self, where: str, text: str) -> None:
        """``where`` starts with the kind of thing scanned (``rendered fields of ...``)."""
        found = self.scanner.find(text)
        if found:
            kind = " ".join(w for w in where.split()[:2] if w not in ("of", "the"))
            self._violate("3: no secret in anything captured", f"{found} in {where}: {text[:300]!r}", kind)

    def _scan_outcome(self, where: str, outcome: Outcome) -> None:
        """A task's exception reaches the user through its log, which Airflow redacts first."""
        error = outcome.error
        seen = 0
        while error is not None and seen < 10:
            self._scan(f"exception of {where}", _redact(f"{error!s} {error!r}"))
            error = error.__cause__ or error.__context__
            seen += 1

    def _scan_trigger_errors(self, triggerer: Triggerer) -> None:
        for error in triggerer.on_kill_errors:
            self._scan("on_kill error of a trigger", f"{error!s} {error!r}")
        triggerer.on_kill_errors.clear()

    def _scan_logs(self) -> None:
        for entry in self._logs[self._scanned_logs :]:
            self._scan("log event", _redact(repr(entry)))
        self._scanned_logs = len(self._logs)
        for line in self._records.lines[self._scanned_records :]:
            self._scan("log line", _redact(line))
        self._scanned_records = len(self._records.lines)

    def _scan_airflow(self) -> None:
        for deployment in self.world.deployments:
            self._scan(
                f"{deployment.name} XCom",
                json.dumps({str(k): v for k, v in deployment.xcom.items()}, default=str),
            )
            self._scan(f"Variables of {deployment.name}", json.dumps(deployment.variables, default=str))
        sent = self.world.comms.requests
        for msg in sent:
            if type(msg).__name__ != "MaskSecret":  # how a secret gets masked: it must carry it
                self._scan("request to Airflow", msg.model_dump_json())
        sent.clear()


def _redact(text: str) -> str:
    """What Airflow's secrets masker leaves of a log line (the values registered with mask_secret)."""
    try:
        from airflow.sdk._shared.secrets_masker import redact
    except ImportError:  # Airflow 3.1
        from airflow.sdk.execution_time.secrets_masker import redact  # type: ignore[no-redef]
    return str(redact(text))


class _DagRun:
    def __init__(self, run_id: str, start_date: datetime) -> None:
        self.run_id, self.start_date = run_id, start_date
        self.logical_date = start_date


class _LogRecords(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        with contextlib.suppress(Exception):
            self.lines.append(record.getMessage())


@contextlib.contextmanager
def _environment(sim: PrimeSimulator) -> Iterator[None]:
    """The connection both deployments use: one key, fast transport."""
    connection = {"conn_type": "prime", "host": sim.base_url, "password": API_KEY, "extra": FAST_RETRY}
    previous = os.environ.get("AIRFLOW_CONN_PRIME_DEFAULT")
    os.environ["AIRFLOW_CONN_PRIME_DEFAULT"] = json.dumps(connection)
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("AIRFLOW_CONN_PRIME_DEFAULT", None)
        else:
            os.environ["AIRFLOW_CONN_PRIME_DEFAULT"] = previous


def _stop_all(triggerers: list[Triggerer]) -> None:
    for triggerer in triggerers:
        with contextlib.suppress(Exception):
            triggerer.stop()


def _describe(outcome: Outcome) -> str:
    if outcome.kind == "failed" and outcome.error is not None:
        return f"failed: {type(outcome.error).__name__}: {str(outcome.error)[:160]}"
    if outcome.kind == "killed":
        return f"killed after {outcome.points} points{' (on_kill ran)' if outcome.on_kill_called else ''}"
    if outcome.kind == "deferred":
        return "deferred"
    return outcome.kind


_ = timedelta
