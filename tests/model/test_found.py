"""Minimal histories of the violations the model found on main, replayed step by step.

Each is a strict xfail until its fix lands (then it passes and the mark goes): the lead routes
them. The model's bounded profile tolerates them by their tag (``KNOWN_OPEN`` in the machine).
"""

from __future__ import annotations

from tests.model.machine import LifecycleModel
from tests.model.processes import KillPlan

NAMED = 3  # the index of the ``named`` task instance among a new run's runnable ones


def _model(deferrable: bool = False) -> LifecycleModel:
    model = LifecycleModel()
    model.setup(
        mapped_naming="derived",
        deferrable=(deferrable, deferrable, deferrable),
        airflow_33=True,
        user_names="per deployment",
    )
    model.check()
    return model


def test_a_kill_between_the_two_xcom_pushes_does_not_make_the_teardown_delete_a_borrowed_pod() -> None:
    """#verdict-lost, fixed on main (the verdict is pushed before the pod id): a SIGKILL between the
    two pushes left a borrowed pod's id without its verdict, and the teardown deleted the user's pod."""
    model = _model()
    try:
        model.start_run(which=0, borrowed=True)  # the user's own pod of the named task's name exists
        model.check()
        # Points 1-4: the two list reads that agree on the name; 5 and 6: the two XCom pushes.
        model.run_task(which=0, pick=NAMED, plan=KillPlan("sigkill", at=6))
        model.check()
    finally:
        model.teardown()  # every task ends, the teardown runs: it deleted the borrowed pod


def test_a_user_named_pod_whose_teardown_failed_does_not_bill_forever() -> None:
    model = _model()
    try:
        model.start_run(which=0, borrowed=False)
        model.check()
        model.run_task(which=0, pick=NAMED, plan=KillPlan())  # the named create succeeds
        model.check()
        for _ in range(3):  # the other creates succeed too
            model.run_task(which=0, pick=0, plan=KillPlan())
            model.check()
        model.end_run(which=0, pick=0, plan=KillPlan("timeout", at=1))  # the teardown times out
        model.check()
    finally:
        model.teardown()  # the reaper runs: the named pod still bills


def test_a_retry_does_not_create_a_second_pod_when_the_list_lags() -> None:
    """#list-lag, fixed on main: a retry's lookup trusted a lagging pod list (two empty reads that
    agree), missed the pod its previous try had created a moment ago and created a second one."""
    model = _model()
    try:
        model.start_run(which=0, borrowed=False)
        model.check()
        # create_1 (a derived name): SIGKILL when the create's answer comes back: the pod exists.
        model.run_task(which=0, pick=2, plan=KillPlan("sigkill", at=8))
        model.check()
        assert model.world.sim.billing()["created"], model.world.log
        model.world_changes(change="fault", fault="list lags three times", pick=0, seconds=1.0)
        model.check()
        model.run_task(which=0, pick=2, plan=KillPlan())  # the retry: its lookup sees no pod
        model.check()
    finally:
        model.teardown()
