"""The wait drivers on a hand-moved clock: the deadline, last-check and settle rules, errors, hand-backs."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import pytest

from airflow_provider_prime.waiting import (
    LAST_CHECK_TIME,
    SETTLE_AFTER_DEFERRAL,
    AsyncDriver,
    SyncDriver,
    first_check_after_deferral,
    ready_source,
    request_deadline,
)
from tests.clocks import FakeClock


@dataclass(frozen=True)
class Done:
    done: bool
    again: bool = False
    facts: object = None


@dataclass
class Script:
    """A step object that is done once ``done_after`` answers came; records what it was given."""

    deadline: float
    done_after: int = 10**9
    due_at: float | None = None
    answers: list[tuple[object, float]] = field(default_factory=list)
    troubles: list[tuple[Exception, float]] = field(default_factory=list)
    again_once: bool = False

    @property
    def due(self) -> float:
        return self.deadline if self.due_at is None else self.due_at

    def answer(self, facts: object, now: float) -> Done:
        self.answers.append((facts, now))
        again, self.again_once = self.again_once, False
        return Done(len(self.answers) >= self.done_after, again, facts)

    def trouble(self, error: Exception, now: float) -> Done:
        self.troubles.append((error, now))
        return Done(False)


def fetcher(clock: FakeClock, took: float = 0.0, errors: list[Exception] | None = None):
    asked: list[tuple[float, float]] = []  # (when, request deadline)

    def fetch(deadline: float) -> float:
        asked.append((clock.elapsed, deadline - clock.start))
        clock.advance(took)
        if errors:
            raise errors.pop(0)
        return clock.elapsed

    return fetch, asked


class TestSyncDriver:
    def test_checks_every_interval_and_the_last_at_the_deadline(self):
        clock = FakeClock()
        wait = Script(deadline=clock.now + 25)
        fetch, asked = fetcher(clock)
        ending = SyncDriver(wait, fetch, interval=10, clock=clock).run()
        assert ending.timed_out
        assert [when for when, _ in asked] == [0, 10, 20, 25]
        assert clock.pauses == [10, 10, 5]

    def test_a_check_near_the_deadline_gets_one_requests_time(self):
        clock = FakeClock()
        wait = Script(deadline=clock.now + 25)
        fetch, asked = fetcher(clock)
        SyncDriver(wait, fetch, interval=10, clock=clock).run()
        assert [deadline for _, deadline in asked] == [25, 25, 20 + LAST_CHECK_TIME, 25 + LAST_CHECK_TIME]
        assert request_deadline(100, 50) == 100
        assert request_deadline(100, 95) == 95 + LAST_CHECK_TIME

    def test_a_done_step_ends_the_run_at_once(self):
        clock = FakeClock()
        wait = Script(deadline=clock.now + 100, done_after=2)
        fetch, _ = fetcher(clock)
        ending = SyncDriver(wait, fetch, interval=10, clock=clock).run()
        assert ending.step == Done(True, facts=10)
        assert not ending.timed_out
        assert clock.pauses == [10]

    def test_hold_hands_the_wait_back_before_a_pause(self):
        clock = FakeClock()
        wait = Script(deadline=clock.now + 100)
        fetch, asked = fetcher(clock)
        ending = SyncDriver(wait, fetch, interval=10, clock=clock).run(hold=lambda: False)
        assert (ending.step, ending.timed_out) == (Done(False, facts=0), False)
        assert clock.pauses == []
        assert len(asked) == 1

    def test_the_pause_is_cut_at_the_waits_due_moment(self):
        clock = FakeClock()
        wait = Script(deadline=clock.now + 100, due_at=clock.now + 4)
        fetch, _ = fetcher(clock)
        SyncDriver(wait, fetch, interval=10, clock=clock).run(hold=lambda: len(wait.answers) < 2)
        assert clock.pauses == [4]

    def test_again_checks_at_once(self):
        clock = FakeClock()
        wait = Script(deadline=clock.now + 100, done_after=2, again_once=True)
        fetch, _ = fetcher(clock)
        SyncDriver(wait, fetch, interval=10, clock=clock).run()
        assert clock.pauses == []

    @pytest.mark.parametrize("error", [RuntimeError("a bug"), ValueError("garbled"), OSError("reset")])
    def test_any_exception_is_the_steps_to_judge(self, error):
        clock = FakeClock()
        wait = Script(deadline=clock.now + 10, done_after=1)
        fetch, _ = fetcher(clock, took=1, errors=[error])
        ending = SyncDriver(wait, fetch, interval=5, clock=clock).run()
        assert wait.troubles == [(error, clock.start + 1)]
        assert wait.answers == [(6, clock.start + 6)]  # checks start every 5 s; the time after the request
        assert ending.step is not None
        assert ending.step.done

    def test_checks_start_every_interval_whatever_they_take(self):
        clock = FakeClock()
        wait = Script(deadline=clock.now + 100, done_after=3)
        fetch, _ = fetcher(clock, took=2)
        SyncDriver(wait, fetch, interval=5, clock=clock).run()
        assert [at - clock.start for _, at in wait.answers] == [2, 7, 12]  # not 2, 9, 16

    def test_on_step_sees_every_step(self):
        clock = FakeClock()
        wait = Script(deadline=clock.now + 100, done_after=3)
        fetch, _ = fetcher(clock)
        seen: list[Done] = []
        SyncDriver(wait, fetch, interval=1, clock=clock, on_step=seen.append).run()
        assert [s.done for s in seen] == [False, False, True]


class TestAsyncDriver:
    async def test_paced_checks_the_same_as_the_sync_driver(self):
        clock = FakeClock()
        wait = Script(deadline=clock.now + 25)
        fetch, asked = fetcher(clock)

        async def afetch(deadline: float) -> float:
            return fetch(deadline)

        ending = await AsyncDriver(wait, ready_source(afetch), interval=10, clock=clock).run()
        assert ending.timed_out
        assert asked == [(0, 25), (10, 25), (20, 20 + LAST_CHECK_TIME), (25, 25 + LAST_CHECK_TIME)]

    async def test_settles_before_opening_its_source(self):
        clock = FakeClock()
        wait = Script(deadline=clock.now + 60, done_after=1)
        opened: list[float] = []

        async def afetch(deadline: float) -> float:
            return clock.elapsed

        def source():
            opened.append(clock.elapsed)
            return ready_source(afetch)()

        await AsyncDriver(wait, source, clock=clock, not_before=clock.now + 7).run()
        assert clock.pauses == [7]
        assert opened == [7]
        assert first_check_after_deferral(100, 1) == 100 + SETTLE_AFTER_DEFERRAL
        assert first_check_after_deferral(100, 30) == 130

    async def test_a_settle_never_runs_past_the_deadline(self):
        clock = FakeClock()
        wait = Script(deadline=clock.now + 30)

        async def nothing(deadline: float) -> None:
            return None

        ending = await AsyncDriver(wait, ready_source(nothing), clock=clock, not_before=clock.now + 60).run()
        assert ending.timed_out
        assert ending.step is None
        assert clock.pauses == [30]

    async def test_a_self_paced_source_is_waited_on_until_the_deadline(self):
        clock = FakeClock()
        wait = Script(deadline=clock.now + 30)
        given: list[float] = []

        async def next_answer(deadline: float) -> float | None:
            given.append(deadline - clock.start)
            clock.advance(20)  # as a poller's answer coming 20 s later
            await asyncio.sleep(0)
            return clock.elapsed

        ending = await AsyncDriver(wait, ready_source(next_answer), clock=clock).run()
        assert ending.timed_out
        assert given == [30, 30]  # the deadline itself, not a last check's time past it
        assert clock.pauses == []  # the source paces the wait

    async def test_any_exception_is_the_steps_to_judge(self):
        clock = FakeClock()
        wait = Script(deadline=clock.now + 30, done_after=1)
        errors: list[Exception] = [RuntimeError("boom")]

        async def afetch(deadline: float) -> float:
            if errors:
                raise errors.pop(0)
            return 1.0

        ending = await AsyncDriver(wait, ready_source(afetch), interval=5, clock=clock).run()
        assert [type(e) for e, _ in wait.troubles] == [RuntimeError]
        assert ending.step is not None
        assert ending.step.done
