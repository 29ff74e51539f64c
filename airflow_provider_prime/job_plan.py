"""What to launch, adopt or kill when a try of the job task arrives: decided for the whole job.

A try of the task (the first, a retry, a re-run of the same try) probes every node first
(:func:`.job_script.probe_script`), then takes the :class:`LaunchPlan` of :func:`plan_launch`:

* the command **exited 0 on every node**: the job succeeded before; return its result, launch
  nothing (whatever ``if_running`` says, which is about running jobs);
* the command **runs** (on every node, or has finished with 0 on some):
  ``if_running="adopt"`` (the default) waits for it without launching anything;
  ``"restart"`` kills it everywhere and starts over, setup included;
* it runs (or succeeded) on some nodes and **never started** on others (a try died while
  launching): launch the missing nodes only (their setup first); the rendezvous of the running
  ranks is waiting for them, and a node where it succeeded does not run it twice;
* it runs on some nodes and **failed** on another (non-zero, killed, lost): the job is broken;
  kill it everywhere and launch it again everywhere (a collective never recovers a lost rank);
* otherwise (never launched, or failed): launch it again on every node, after setup.

Setup, when there is one, must have succeeded on a node before the command starts there; a node
whose setup already succeeded does not run it again (unless restarting), one whose setup runs is
waited for (adopted), one whose setup failed runs it again. The barrier "setup succeeded on every
node before the command starts on any" is the operator's: it waits for the setup phase on every
node of :attr:`LaunchPlan.wait_setup` before launching the command.

Each launch passes the phase's launch count seen in the probe as ``expect_launches``, so two tries
racing (or a launch re-sent after a lost answer) launch once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum

from airflow_provider_prime.exceptions import PrimeConfigError
from airflow_provider_prime.job_script import PhaseState, Probe

#: What ``if_running`` may say.
IF_RUNNING = ("adopt", "restart")
_FAILED = frozenset({PhaseState.EXITED, PhaseState.KILLED, PhaseState.LOST})


class PlanKind(str, Enum):
    """The gist of a plan, for the log and for tests."""

    DONE = "done"  # succeeded before: read the result
    ADOPT = "adopt"  # running everywhere it should: wait
    COMPLETE = "complete"  # running on some nodes, never launched on others: launch those
    LAUNCH = "launch"  # (re)launch on every node


@dataclass(frozen=True)
class LaunchPlan:
    """What a try does before waiting: kill, launch setup, wait for setup, launch the command.

    ``setup`` and ``command`` map each rank to launch to the launch count its probe showed (the
    ``expect_launches`` of its launch script).
    """

    kind: PlanKind
    reason: str
    kill: tuple[int, ...] = ()
    setup: dict[int, int] = field(default_factory=dict)
    wait_setup: tuple[int, ...] = ()
    command: dict[int, int] = field(default_factory=dict)


def check_if_running(value: str) -> str:
    """``value`` if it is a valid ``if_running``, else a :class:`PrimeConfigError`."""
    if value not in IF_RUNNING:
        raise PrimeConfigError(f"if_running must be one of {', '.join(IF_RUNNING)}, not {value!r}")
    return value


def plan_launch(probes: Sequence[Probe], *, if_running: str = "adopt", has_setup: bool = False) -> LaunchPlan:
    """The plan for a try, from every node's probe (index = rank). See the module for the rules."""
    check_if_running(if_running)
    if not probes:
        raise PrimeConfigError("A job needs at least one node")
    ranks = range(len(probes))
    command = [probe.phase("command") for probe in probes]
    setup = [probe.phase("setup") for probe in probes]
    running = [r for r in ranks if command[r].state is PhaseState.RUNNING]
    setup_running = [r for r in ranks if has_setup and setup[r].state is PhaseState.RUNNING]
    succeeded = [r for r in ranks if command[r].succeeded]
    if len(succeeded) == len(probes):
        return LaunchPlan(PlanKind.DONE, f"the job already succeeded on all {len(probes)} nodes")
    if if_running == "restart" and (running or setup_running):
        alive = sorted({*running, *setup_running})
        return _launch_all(
            probes,
            has_setup,
            rerun_setup=True,
            kill=tuple(ranks),
            reason=(
                f"if_running='restart': killing the job running on node(s) {_ranks(alive)} and starting over"
            ),
        )
    if running:
        absent = [r for r in ranks if command[r].state is PhaseState.ABSENT]
        failed = [r for r in ranks if command[r].state in _FAILED and not command[r].succeeded]
        if failed:
            return _launch_all(
                probes,
                has_setup,
                rerun_setup=False,
                kill=tuple(ranks),
                reason=(
                    f"the job runs on node(s) {_ranks(running)} but failed on node(s) {_ranks(failed)}: "
                    "killing it everywhere and launching it again"
                ),
            )
        if not absent:
            return LaunchPlan(
                PlanKind.ADOPT,
                f"adopting the job running on node(s) {_ranks(running)} (launched "
                f"{max(c.launches for c in command)} time(s))",
            )
        needs_setup = [r for r in absent if has_setup and not setup[r].succeeded]
        return LaunchPlan(
            PlanKind.COMPLETE,
            f"the job runs on node(s) {_ranks(running)} and was never launched on node(s) {_ranks(absent)}: "
            "launching it there",
            setup={r: setup[r].launches for r in needs_setup if setup[r].state is not PhaseState.RUNNING},
            wait_setup=tuple(needs_setup),
            command={r: command[r].launches for r in absent},
        )
    absent = [r for r in ranks if command[r].state is PhaseState.ABSENT]
    if succeeded and len(succeeded) + len(absent) == len(probes):
        # A try died between the launches of a short command: it ended well where it ran, and runs
        # where it never started; not again where it succeeded.
        return LaunchPlan(
            PlanKind.COMPLETE,
            f"the job succeeded on node(s) {_ranks(succeeded)} and was never launched on node(s) "
            f"{_ranks(absent)}: launching it there",
            setup={r: setup[r].launches for r in absent if has_setup and not setup[r].succeeded},
            wait_setup=tuple(r for r in absent if has_setup and not setup[r].succeeded),
            command={r: command[r].launches for r in absent},
        )
    never = all(c.state is PhaseState.ABSENT for c in command)
    reason = "launching the job" if never else "the job did not succeed before: launching it again"
    return _launch_all(probes, has_setup, rerun_setup=False, kill=(), reason=reason)


def _launch_all(
    probes: Sequence[Probe], has_setup: bool, *, rerun_setup: bool, kill: tuple[int, ...], reason: str
) -> LaunchPlan:
    ranks = range(len(probes))
    setup: dict[int, int] = {}
    wait: tuple[int, ...] = ()
    if has_setup:
        phases = [probe.phase("setup") for probe in probes]
        if rerun_setup:
            setup = {r: phases[r].launches for r in ranks}
        else:
            # A setup that runs is adopted (waited for), one that succeeded is kept, the rest launched.
            setup = {
                r: phases[r].launches
                for r in ranks
                if not phases[r].succeeded and phases[r].state is not PhaseState.RUNNING
            }
        wait = tuple(r for r in ranks if rerun_setup or not phases[r].succeeded)
    command = {r: probes[r].phase("command").launches for r in ranks}
    return LaunchPlan(PlanKind.LAUNCH, reason, kill=kill, setup=setup, wait_setup=wait, command=command)


def _ranks(ranks: Sequence[int]) -> str:
    return ", ".join(str(r) for r in ranks)


__all__ = ["IF_RUNNING", "LaunchPlan", "PlanKind", "check_if_running", "plan_launch"]
