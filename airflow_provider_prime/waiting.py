"""The drivers of every wait, their timing rules and defaults: one sync loop, one async loop, one clock.

A wait is a step object (:class:`.readiness.PodWait`, :class:`.termination.TerminationWait`, the
job's wait next): :meth:`Wait.answer` takes the facts one check fetched, :meth:`Wait.trouble` the
error fetching them raised, and each gives one step that says whether the wait is over
(:attr:`StepResult.done`). The step objects decide; a driver only fetches facts, feeds them in and
keeps time, by these rules:

* **rate**: checks start every ``interval`` (the time a check takes is part of it, not added to it),
  so what a check reads is never older than one interval plus one check;
* **deadline**: after a step that is not done, the wait has timed out once the clock reaches the
  wait's ``deadline``; a pause never runs past it, so the last check is made at the deadline, not
  an interval before or after it.
* **last check**: a check the driver paces gets ``max(deadline, now + LAST_CHECK_TIME)`` for its
  request (:func:`request_deadline`), so a check made at the deadline is not refused its request
  and the timeout it leads to reports a fresh answer.
* **settle**: a wait a task deferred makes its first check no earlier than ``not_before``
  (:func:`first_check_after_deferral`, at least :data:`SETTLE_AFTER_DEFERRAL` after the deferral).
* **errors**: any ``Exception`` raised fetching facts goes to :meth:`Wait.trouble`, in both drivers:
  whether waiting can help is the step object's decision.

:class:`SyncDriver` serves the sensor (a poke is one :meth:`SyncDriver.run` that hands back after one
check unless the sensor holds on) and the operators' waits in the worker; :class:`AsyncDriver`
serves the triggers. The clock is a constructor argument (:class:`Clock`, the real one by default).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

#: Seconds between two checks of a pod's status. The API's own clients poll every 5-10 s; pods take
#: minutes to boot, so 15 s adds at most a few percent to a typical wait while halving the request rate.
DEFAULT_POLL_INTERVAL = 15.0
#: Seconds before a readiness wait gives up. Clients report 5-20 minutes from creation to ready; 45
#: minutes leaves room for a slow provider yet stops a stuck pod long before Airflow's default sensor
#: timeout of 7 days would (the GPUs bill while it waits).
DEFAULT_TIMEOUT = 45 * 60.0
#: Seconds a wait may go without a single answer from the API before it fails. A host that does not
#: resolve, a port nothing listens on or a TLS mismatch never heals by itself; five minutes rides out a
#: brief network blip at the start yet stops a typo long before the timeout.
DEFAULT_UNREACHABLE_TIMEOUT = 5 * 60.0
#: Seconds a check made at (or just before) the deadline may take: one request.
LAST_CHECK_TIME = 15.0
#: Seconds Airflow's own deferral timeout is set beyond a trigger's deadline, so that the trigger's
#: timeout event (which says what was still missing) comes first; Airflow's is the backstop for a
#: triggerer that is down.
DEFERRAL_MARGIN = 60.0
#: Seconds after a deferral before the trigger's first check, at least. A trigger that fires within a
#: second or two of the deferral races the scheduler's bookkeeping of the worker that deferred, and
#: Airflow then fails the resumed task ("TI was not in the running state"). The deferring task has
#: just checked, so nothing is lost by waiting.
SETTLE_AFTER_DEFERRAL = 5.0
#: Default seconds the terminate operator waits for every pod to be TERMINATED or gone.
DEFAULT_TERMINATION_TIMEOUT = 10 * 60.0
#: Default seconds between two termination checks.
DEFAULT_TERMINATION_INTERVAL = 5.0

F_contra = TypeVar("F_contra", contravariant=True)
F = TypeVar("F")
S = TypeVar("S", bound="StepResult")
S_co = TypeVar("S_co", bound="StepResult", covariant=True)


class Clock(Protocol):
    """Where a driver reads the time (epoch seconds) and pauses."""

    def time(self) -> float: ...

    def sleep(self, seconds: float) -> None: ...

    async def asleep(self, seconds: float) -> None: ...


class SystemClock:
    """The real clock: :func:`time.time`, :func:`time.sleep` and :func:`asyncio.sleep`."""

    def time(self) -> float:
        return time.time()

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)

    async def asleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


#: The clock every driver uses unless given another.
SYSTEM_CLOCK: Clock = SystemClock()


class StepResult(Protocol):
    """What a driver reads of a step: whether the wait is over, and whether to check again at once."""

    @property
    def done(self) -> bool: ...

    @property
    def again(self) -> bool: ...


class Wait(Protocol[F_contra, S_co]):
    """A step object: takes facts (or the error fetching them raised) and a time, gives one step.

    ``due`` is the latest moment of the next check: the deadline, or an earlier moment at which the
    wait has something to decide (a readiness wait's bound on its first answer).
    """

    @property
    def deadline(self) -> float: ...

    @property
    def due(self) -> float: ...

    def answer(self, facts: F_contra, now: float, /) -> S_co: ...

    def trouble(self, error: Exception, now: float, /) -> S_co: ...


@dataclass(frozen=True)
class Ending(Generic[S]):
    """How a driver's run ended: the last step (``None`` before any), and whether the deadline passed.

    Neither done nor timed out: the sync driver handed the wait back (a poke that does not hold on).
    """

    step: S | None
    timed_out: bool = False


def request_deadline(deadline: float, now: float) -> float:
    """The deadline of a check's request: the wait's, or one request's time for a check made near it."""
    return max(deadline, now + LAST_CHECK_TIME)


def first_check_after_deferral(now: float, interval: float) -> float:
    """The ``not_before`` of a trigger deferred at ``now`` that would next check after ``interval``."""
    return now + max(interval, SETTLE_AFTER_DEFERRAL)


def _always() -> bool:
    return True


class SyncDriver(Generic[F, S]):
    """Check, judge, pause, until the wait is done or its deadline passes; in this thread.

    :param fetch: one check's facts, given its request's deadline (:func:`request_deadline`).
    :param interval: seconds between checks (the pause is cut at the wait's ``due``).
    :param on_step: called with every step (e.g. to log what a job's nodes printed).
    """

    def __init__(
        self,
        wait: Wait[F, S],
        fetch: Callable[[float], F],
        *,
        interval: float,
        clock: Clock = SYSTEM_CLOCK,
        on_step: Callable[[S], object] | None = None,
    ) -> None:
        self.wait = wait
        self.fetch = fetch
        self.interval = interval
        self.clock = clock
        self.on_step = on_step

    def check(self) -> S:
        """One check: fetch the facts and take one step."""
        clock, wait = self.clock, self.wait
        try:
            facts = self.fetch(request_deadline(wait.deadline, clock.time()))
        except Exception as exc:
            step = wait.trouble(exc, clock.time())
        else:
            step = wait.answer(facts, clock.time())
        if self.on_step is not None:
            self.on_step(step)
        return step

    def run(self, *, hold: Callable[[], bool] = _always) -> Ending[S]:
        """Check until done or timed out; ``hold()``, asked before each pause, may hand the wait back."""
        clock, wait = self.clock, self.wait
        while True:
            started = clock.time()
            step = self.check()
            if step.done:
                return Ending(step)
            now = clock.time()
            if now >= wait.deadline:
                return Ending(step, timed_out=True)
            if step.again:
                continue
            if not hold():
                return Ending(step)
            clock.sleep(max(0.0, min(started + self.interval, wait.due) - now))


#: One check's fetch on an event loop: the facts, or ``None`` when none came by the deadline given.
AsyncFetch = Callable[[float], Awaitable[F | None]]
#: An async source of facts: entered once the wait has settled, it gives the fetch of every check.
Source = Callable[[], AbstractAsyncContextManager[AsyncFetch[F]]]


def ready_source(fetch: AsyncFetch[F]) -> Source[F]:
    """A source that needs nothing opened or closed around its checks."""

    @contextlib.asynccontextmanager
    async def source() -> AsyncIterator[AsyncFetch[F]]:
        yield fetch

    return source


class AsyncDriver(Generic[F, S]):
    """The same loop on an event loop, for the triggers.

    :param source: opened after the settle (:attr:`not_before`), closed when the run ends.
    :param interval: seconds between checks, each fetch being one request (its deadline as in
        :class:`SyncDriver`); ``None`` for a source that paces itself (the shared status poller,
        whose fetch waits for its next answer until the wait's deadline).
    :param not_before: epoch second before which nothing is fetched (see the module docstring).
    """

    __slots__ = ("clock", "interval", "not_before", "on_step", "source", "wait")

    def __init__(
        self,
        wait: Wait[F, S],
        source: Source[F],
        *,
        interval: float | None = None,
        clock: Clock = SYSTEM_CLOCK,
        not_before: float | None = None,
        on_step: Callable[[S], object] | None = None,
    ) -> None:
        self.wait = wait
        self.source = source
        self.interval = interval
        self.clock = clock
        self.not_before = not_before
        self.on_step = on_step

    async def run(self) -> Ending[S]:
        clock, wait = self.clock, self.wait
        if self.not_before is not None:
            await clock.asleep(max(0.0, min(self.not_before, wait.deadline) - clock.time()))
        step: S | None = None
        async with self.source() as fetch:
            while True:
                now = clock.time()
                if self.interval is None and now >= wait.deadline:
                    break  # a self-paced source is not waited on past the deadline
                started = now
                until = wait.deadline if self.interval is None else request_deadline(wait.deadline, now)
                try:
                    facts = await fetch(until)
                except Exception as exc:
                    step = wait.trouble(exc, clock.time())
                else:
                    if facts is None:  # a self-paced source had nothing by the deadline
                        continue
                    step = wait.answer(facts, clock.time())
                if self.on_step is not None:
                    self.on_step(step)
                if step.done:
                    return Ending(step)
                now = clock.time()
                if now >= wait.deadline:
                    break
                if self.interval is not None and not step.again:
                    await clock.asleep(max(0.0, min(started + self.interval, wait.due) - now))
        return Ending(step, timed_out=True)
