"""PodTerminationTrigger's clock: its last check is made at the deadline, not one interval before."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from airflow_provider_prime.triggers import pod_lifecycle
from airflow_provider_prime.triggers.pod_lifecycle import PodTerminationTrigger


class ManualTime:
    """The trigger's ``_now`` and ``_sleep``: sleeping moves the clock, nothing waits for real."""

    def __init__(self, start: float = 1_000.0) -> None:
        self.now = start

    def time(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += max(0.0, seconds)


class DeletingPods:
    """A hook whose pods stay DELETING until ``gone_at`` (then TERMINATED); records each check."""

    def __init__(self, clock: ManualTime, gone_at: float = float("inf")) -> None:
        self.clock, self.gone_at = clock, gone_at
        self.checks: list[float] = []

    def __call__(self, conn_id: str) -> DeletingPods:
        return self

    async def aget_pod(self, pod_id: str) -> Any:
        self.checks.append(self.clock.now)
        status = "TERMINATED" if self.clock.now >= self.gone_at else "DELETING"
        return SimpleNamespace(status=status, terminated_at=None)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> ManualTime:
    manual = ManualTime()
    monkeypatch.setattr(pod_lifecycle, "_now", manual.time)
    monkeypatch.setattr(pod_lifecycle, "_sleep", manual.sleep)
    return manual


def termination(clock: ManualTime, hook: DeletingPods, monkeypatch, seconds: float) -> PodTerminationTrigger:
    monkeypatch.setattr(pod_lifecycle, "PrimeHook", hook)
    return PodTerminationTrigger(
        pod_ids=["p"], deadline=clock.now + seconds, prime_conn_id="prime_default", poll_interval=10
    )


async def test_the_last_check_is_made_at_the_deadline(clock, monkeypatch):
    hook = DeletingPods(clock)
    start = clock.now
    event = await termination(clock, hook, monkeypatch, seconds=25)._wait()
    assert event["status"] == "timeout"
    # Before: checks at 0, 10, 20 and a timeout at 20, five seconds before the deadline.
    assert [t - start for t in hook.checks] == [0, 10, 20, 25]
    assert clock.now - start == 25


async def test_a_pod_gone_by_the_deadline_is_success_not_timeout(clock, monkeypatch):
    hook = DeletingPods(clock, gone_at=clock.now + 24)
    event = await termination(clock, hook, monkeypatch, seconds=25)._wait()
    assert event["status"] == "success"
    assert event["pods"]["p"]["final"] is True
