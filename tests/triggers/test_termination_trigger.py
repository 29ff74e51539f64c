"""PodTerminationTrigger on a hand-moved clock: the last check at the deadline, errors judged by the step."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from airflow_provider_prime.exceptions import PrimeAuthError, PrimeNotFoundError, PrimeTransientError
from airflow_provider_prime.triggers import pod_lifecycle
from airflow_provider_prime.triggers.pod_lifecycle import PodTerminationTrigger
from tests.clocks import FakeClock


class DeletingPods:
    """A hook whose pods stay DELETING until ``gone_at`` (then TERMINATED); records each check.

    ``errors`` are raised by the next checks, one per check.
    """

    def __init__(self, clock: FakeClock, gone_at: float = float("inf")) -> None:
        self.clock, self.gone_at = clock, gone_at
        self.checks: list[float] = []
        self.errors: list[Exception] = []

    def __call__(self, conn_id: str) -> DeletingPods:
        return self

    async def aget_pod(self, pod_id: str) -> Any:
        self.checks.append(self.clock.now)
        if self.errors:
            raise self.errors.pop(0)
        status = "TERMINATED" if self.clock.now >= self.gone_at else "DELETING"
        return SimpleNamespace(status=status, terminated_at=None)


def termination(
    clock: FakeClock, hook: DeletingPods, monkeypatch, seconds: float, **kwargs: Any
) -> PodTerminationTrigger:
    monkeypatch.setattr(pod_lifecycle, "PrimeHook", hook)
    trigger = PodTerminationTrigger(
        pod_ids=["p"], deadline=clock.now + seconds, prime_conn_id="prime_default", poll_interval=10, **kwargs
    )
    trigger.clock = clock
    return trigger


async def test_the_last_check_is_made_at_the_deadline(monkeypatch):
    clock = FakeClock()
    hook = DeletingPods(clock)
    event = await termination(clock, hook, monkeypatch, seconds=25)._wait()
    assert event["status"] == "timeout"
    # Before: checks at 0, 10, 20 and a timeout at 20, five seconds before the deadline.
    assert [t - clock.start for t in hook.checks] == [0, 10, 20, 25]
    assert clock.elapsed == 25


async def test_a_pod_gone_by_the_deadline_is_success_not_timeout(monkeypatch):
    clock = FakeClock()
    hook = DeletingPods(clock, gone_at=clock.now + 24)
    event = await termination(clock, hook, monkeypatch, seconds=25)._wait()
    assert event["status"] == "success"
    assert event["pods"]["p"]["final"] is True


async def test_the_first_check_waits_for_not_before_and_a_404_is_gone(monkeypatch):
    clock = FakeClock()
    hook = DeletingPods(clock)
    hook.errors.append(PrimeNotFoundError("pod p not found"))
    event = await termination(clock, hook, monkeypatch, seconds=60, not_before=clock.now + 5)._wait()
    assert event["status"] == "success"
    assert event["pods"]["p"] == {"status": "GONE", "terminated_at": None, "final": True}
    assert [t - clock.start for t in hook.checks] == [5]


async def test_transient_errors_are_waited_out_and_others_fail_at_once(monkeypatch):
    clock = FakeClock()
    hook = DeletingPods(clock, gone_at=clock.now + 15)
    hook.errors.append(PrimeTransientError("503", http_status=503))
    assert (await termination(clock, hook, monkeypatch, seconds=60)._wait())["status"] == "success"
    assert len(hook.checks) == 3  # 503 at 0, DELETING at 10, TERMINATED at 20

    clock = FakeClock()
    hook = DeletingPods(clock)
    hook.errors.append(PrimeAuthError("401: the API key was rejected", http_status=401))
    event = await termination(clock, hook, monkeypatch, seconds=60)._wait()
    assert (event["status"], event["error_type"]) == ("failed", "PrimeAuthError")
    assert len(hook.checks) == 1


@pytest.mark.parametrize("error", [RuntimeError("boom"), PrimeAuthError("401", http_status=401)])
async def test_any_error_is_the_steps_to_judge(monkeypatch, error):
    """Before, the trigger caught every Exception and the worker's wait only PrimeError."""
    clock = FakeClock()
    hook = DeletingPods(clock)
    hook.errors.append(error)
    event = await termination(clock, hook, monkeypatch, seconds=60)._wait()
    assert event["status"] == "failed"
