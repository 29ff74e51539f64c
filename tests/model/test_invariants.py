"""The model's invariants are exact: replays of short histories, checked step by step.

These pin what the model counts as a pod in use, so a change to the harness cannot make it
report a false violation (or miss a true one) without a test saying so.
"""

from __future__ import annotations

import pytest
from airflow.sdk.api.datamodels._generated import TaskInstanceState

from airflow_provider_prime.hooks.prime import PrimeHook
from tests.model.fake_airflow import TIKey
from tests.model.machine import InvariantBroken, LifecycleModel
from tests.model.processes import KillPlan, acting_for

RUN_ID = "scheduled__2026-01-01T00:00:00+00:00"


def _model() -> LifecycleModel:
    model = LifecycleModel()
    model.setup(
        mapped_naming="derived",
        deferrable=(False, False, False),
        airflow_33=True,
        user_names="per deployment",
    )
    model.check()
    model.start_run(which=0, borrowed=False)
    model.check()
    return model


def test_a_lost_workers_pod_deleted_by_its_own_on_kill_is_not_a_pod_in_use() -> None:
    """SIGTERM, on_kill deletes the pod, then the whole worker dies (SIGKILL on the DELETE's answer,
    no supervisor left): Airflow still says "running" until the heartbeat timeout fails the try.
    No process uses the pod, and the one that deleted it was its own: no violation (the model
    used to report one)."""
    model = _model()
    try:
        prod = model.world.deployments[0]
        key = TIKey("train", RUN_ID, "create_1")
        # Points: the offers, the lookups and the create (each sent and answered), the XCom pushes,
        # then the wait's status requests: SIGTERM at point 14 lands in the wait, with the pod known.
        model.run_task(which=0, pick=2, plan=KillPlan("sigterm", at=14, grace=1, zombie=True))
        pod_id = prod.xcom.get((key, "pod_id"))
        assert isinstance(pod_id, str), model.world.log
        assert model.world.sim.billing()["pods"][pod_id]["deleted"], model.world.log
        assert prod.tis[key].state == TaskInstanceState.RUNNING  # a zombie: its worker is gone
        model.check()  # no violation
        assert model.violations == []
        model.worker_loss_noticed(which=0, pick=0)
        assert prod.tis[key].state == TaskInstanceState.UP_FOR_RETRY
        model.check()
    finally:
        model.teardown()  # ends everything, runs the reaper, and checks that no pod bills (invariant 4)


def test_a_lost_workers_pod_deleted_by_anyone_else_is_a_violation() -> None:
    """The whole worker dies (SIGKILL) with its pod up: to everyone but its dead process the task
    is running, so anyone else deleting its pod (here: a DELETE from outside any task) is reported."""
    model = _model()
    try:
        prod = model.world.deployments[0]
        key = TIKey("train", RUN_ID, "create_1")
        model.run_task(which=0, pick=2, plan=KillPlan("sigkill", at=14, zombie=True))
        pod_id = prod.xcom.get((key, "pod_id"))
        assert isinstance(pod_id, str), model.world.log
        assert prod.tis[key].state == TaskInstanceState.RUNNING
        model.check()
        with acting_for(prod, model.world.comms):
            PrimeHook().delete_pod(pod_id)
        with pytest.raises(InvariantBroken, match=r"\[2@run_task\].*while prod: .*create_1 is running"):
            model.check()
        model.violations.clear()
    finally:
        model.teardown()


def test_the_triggers_on_kill_asks_the_fake_airflow_through_the_supervisor_channel() -> None:
    """A trigger that moves (cancelled as by a user while Airflow still says "deferred") keeps its
    pod; a user marking the task failed has its on_kill delete it. Both answers come from the fake
    Airflow's ``GetTaskStates`` through ``SUPERVISOR_COMMS.asend``, in the Task SDK's types."""
    model = LifecycleModel()
    try:
        model.setup(
            mapped_naming="derived", deferrable=(True, True, True), airflow_33=True, user_names="shared"
        )
        model.start_run(which=0, borrowed=False)
        prod = model.world.deployments[0]
        key = TIKey("train", RUN_ID, "create_1")
        model.run_task(which=0, pick=2, plan=KillPlan())
        assert prod.tis[key].state == TaskInstanceState.DEFERRED, model.world.log
        pod_id = prod.xcom[(key, "pod_id")]
        model.world.comms.requests.clear()
        model.trigger_moves(which=0, pick=0)
        asked = [m for m in model.world.comms.requests if type(m).__name__ == "GetTaskStates"]
        assert [(m.dag_id, m.task_ids, m.run_ids) for m in asked] == [("train", ["create_1"], [RUN_ID])]
        model.check()
        assert not model.world.sim.billing()["pods"][pod_id]["deleted"]
        model.user_acts_on_task(which=0, pick=0, clear=False)
        model.check()
        assert prod.tis[key].state == TaskInstanceState.FAILED
        assert model.world.sim.billing()["pods"][pod_id]["deleted"], model.world.log
    finally:
        model.teardown()
