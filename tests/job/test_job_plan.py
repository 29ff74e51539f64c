"""What a try launches, adopts or kills, decided for the whole job from every node's probe."""

from __future__ import annotations

import pytest

from airflow_provider_prime.exceptions import PrimeConfigError
from airflow_provider_prime.job_plan import PlanKind, check_if_running, plan_launch
from airflow_provider_prime.job_script import Phase, PhaseState, Probe

A, R, X, K, L = PhaseState.ABSENT, PhaseState.RUNNING, PhaseState.EXITED, PhaseState.KILLED, PhaseState.LOST


def node(
    command: PhaseState = A, rc: int | None = None, setup: PhaseState = A, setup_rc: int | None = None
) -> Probe:
    launches = 0 if command is A else 1
    return Probe(
        phases={
            "setup": Phase("setup", setup, setup_rc, launches=0 if setup is A else 1),
            "command": Phase("command", command, rc, launches=launches),
        },
        directory="/j",
    )


def test_a_job_that_succeeded_everywhere_is_not_launched_again_even_to_restart():
    for if_running in ("adopt", "restart"):
        plan = plan_launch([node(X, 0), node(X, 0)], if_running=if_running)
        assert (plan.kind, plan.kill, plan.setup, plan.command) == (PlanKind.DONE, (), {}, {})


def test_a_fresh_job_launches_setup_then_the_command_everywhere():
    plan = plan_launch([node(), node()], has_setup=True)
    assert plan.kind is PlanKind.LAUNCH
    assert plan.reason == "launching the job"
    assert (plan.kill, plan.setup, plan.wait_setup, plan.command) == ((), {0: 0, 1: 0}, (0, 1), {0: 0, 1: 0})


def test_without_setup_only_the_command_is_launched():
    plan = plan_launch([node(), node()])
    assert (plan.setup, plan.wait_setup, plan.command) == ({}, (), {0: 0, 1: 0})


def test_a_running_job_is_adopted_including_nodes_that_already_finished():
    plan = plan_launch([node(R), node(X, 0)], has_setup=True)
    assert (plan.kind, plan.kill, plan.setup, plan.command) == (PlanKind.ADOPT, (), {}, {})
    assert "adopting the job running on node(s) 0" in plan.reason


def test_restart_kills_a_running_job_and_starts_over_setup_included():
    plan = plan_launch(
        [node(R, setup=X, setup_rc=0), node(R, setup=X, setup_rc=0)], if_running="restart", has_setup=True
    )
    assert plan.kind is PlanKind.LAUNCH
    assert plan.kill == (0, 1)
    assert (plan.setup, plan.wait_setup, plan.command) == ({0: 1, 1: 1}, (0, 1), {0: 1, 1: 1})


def test_restart_also_applies_to_a_running_setup():
    plan = plan_launch([node(setup=R), node(setup=X, setup_rc=0)], if_running="restart", has_setup=True)
    assert plan.kill == (0, 1)
    assert plan.setup == {0: 1, 1: 1}


@pytest.mark.parametrize("broken", [(X, 1), (K, None), (L, None)])
def test_a_job_running_on_some_nodes_and_failed_on_another_is_killed_and_relaunched_everywhere(broken):
    plan = plan_launch([node(R, setup=X, setup_rc=0), node(*broken, setup=X, setup_rc=0)], has_setup=True)
    assert plan.kind is PlanKind.LAUNCH
    assert plan.kill == (0, 1)
    assert (plan.setup, plan.wait_setup, plan.command) == ({}, (), {0: 1, 1: 1})
    assert "failed on node(s) 1" in plan.reason


def test_a_launch_cut_short_is_completed_on_the_missing_nodes_only():
    plan = plan_launch(
        [node(R, setup=X, setup_rc=0), node(setup=X, setup_rc=1), node(setup=R)], has_setup=True
    )
    assert plan.kind is PlanKind.COMPLETE
    assert plan.kill == ()
    # node 1's setup failed: run it again; node 2's runs: wait for it; then launch the command on both.
    assert (plan.setup, plan.wait_setup, plan.command) == ({1: 1}, (1, 2), {1: 0, 2: 0})


def test_a_failed_job_is_launched_again_reusing_setups_that_succeeded_and_adopting_running_ones():
    plan = plan_launch(
        [
            node(X, 0, setup=X, setup_rc=0),
            node(X, 3, setup=X, setup_rc=0),
            node(setup=R),
            node(setup=X, setup_rc=2),
        ],
        has_setup=True,
    )
    assert plan.kind is PlanKind.LAUNCH
    assert plan.kill == ()
    assert plan.reason == "the job did not succeed before: launching it again"
    assert (plan.setup, plan.wait_setup) == ({3: 1}, (2, 3))
    assert plan.command == {0: 1, 1: 1, 2: 0, 3: 0}


def test_bad_arguments_are_refused():
    with pytest.raises(PrimeConfigError, match="if_running must be one of adopt, restart"):
        check_if_running("kill")
    with pytest.raises(PrimeConfigError, match="at least one node"):
        plan_launch([])
