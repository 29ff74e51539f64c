"""One shared poll loop per API connection for every pod-status trigger in a triggerer.

Why
---
A triggerer runs the deferred sensors of many DAGs in one event loop. Polling per trigger makes N
requests per interval for N sensors, which is how rate limits (429) get hit, and spends CPU and
memory on N HTTP clients. The status endpoint takes up to 100 ids per request, so the floor is one
request per interval per 100 *distinct* pods, whatever the number of waiting sensors. This module
reaches that floor while keeping each trigger a plain, self-contained coroutine.

Design
------
* **Registry.** One :class:`PodStatusPoller` per (running event loop, ``settings.fingerprint``).
  Keyed by loop because an HTTP client and futures belong to one loop (tests, and any host that
  runs several loops, must never share them); keyed by the settings fingerprint (base URL, key,
  transport options, never the key itself) so triggers on different connections or keys never
  share a client or see each other's pods. Several connections give several independent pollers.
* **Ownership.** A poller owns one client (from :meth:`PrimeHook.async_status_client`) and one
  background task. The first subscriber creates it; the last one leaving stops the task and
  closes the client, so nothing outlives the waits that needed it.
* **Ticks.** The poller ticks at the smallest interval among its subscribers; a subscriber with a
  longer interval is simply served by the faster loop (it never waits longer than its own interval
  because of sharing, only the request time on top). Each tick fetches every distinct pod id of
  every subscriber in one ``get_pods_status`` call (the client chunks by 100 and sends the chunks
  concurrently). A slow request delays the next tick; ticks never overlap or pile up.
* **Joining.** A subscriber whose pods are all polled already is served at once from the latest
  snapshot, with no request (unless that snapshot is older than one tick, after failed rounds).
  Ids nobody polled yet are collected for :data:`JOIN_DEBOUNCE` seconds and then fetched alone,
  in one call (unless the next full tick is that close anyway): thousands of triggers starting
  together cost a handful of requests, and a newcomer gets its first answer within the debounce
  plus one request, not one interval later.
* **Fan-out.** A round produces one immutable :class:`Snapshot` shared by every subscriber it
  concerns (no per-subscriber copy): a full tick concerns everyone, a join fetch only the
  subscribers of the ids it asked for (found through an id -> subscribers index). Delivery puts
  the snapshot in the subscriber's one-slot mailbox and wakes its waiting coroutine; a subscriber
  that has not looked yet simply finds the newest snapshot there. Cost per tick: O(distinct ids +
  subscribers); joining or leaving: O(own ids). There is no task per subscriber.
* **News.** Each round's snapshot names the ids whose status changed since the previous answer
  (or that it covers for the first time), and each subscriber it concerns is told whether any of
  its own pods is among them (:meth:`Subscription.take_news`, kept until taken, so a snapshot
  replaced unread or a failed round in between loses nothing). A trigger whose pods did not change
  does not judge the same answer again: the poller found that out once per round, for everyone.
* **Fan-out in batches.** Every woken trigger looks at the answer before it waits again (a few
  microseconds; tens when its pods changed; more when it logs or fires its event). Waking
  thousands at once would run all of them in one event-loop iteration and hold up everything
  else in the triggerer for that long, so
  delivery yields to the loop after every :data:`FAN_OUT_BATCH` subscribers. News goes first:
  subscribers whose pods changed since the previous answer are woken before the others, so a pod
  becoming ready (or failing) is not queued behind thousands of unchanged waits.
* **Errors.** A round that fails publishes a snapshot carrying the error (and the previous
  statuses) to every subscriber it concerned; the loop goes on at its normal pace (the client has
  already retried with backoff). Whether an error ends a wait is the trigger's decision.
  Consequence of sharing: an error the API gives a whole request (a 422, say) reaches every
  trigger whose pods were in it.
* **Leaving.** Leaving, including by cancellation, is synchronous bookkeeping (drop the ids and the
  interval, forget the mailbox) plus, for the last subscriber, awaiting the loop's shutdown; a
  request in flight for the others keeps going.

Airflow 3.3 has a shared-stream mechanism for ``BaseEventTrigger`` (event-driven scheduling);
deferred task triggers cannot use it and Airflow 3.1 does not have it, hence this module.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
import weakref
from collections import Counter
from collections.abc import AsyncIterator, Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Protocol

from airflow_provider_prime.hooks._settings import PrimeApiSettings
from airflow_provider_prime.hooks.prime import PrimeHook
from airflow_provider_prime.models import PodStatus
from airflow_provider_prime.pod_ids import unique_ids

#: Seconds new pod ids are collected before they are fetched together.
JOIN_DEBOUNCE = 0.1
#: Shortest tick period, so a zero or tiny poll interval cannot turn the loop into a busy spin.
MIN_INTERVAL = 0.05
#: Subscribers woken per event-loop iteration when a round's snapshot is delivered.
FAN_OUT_BATCH = 100


class StatusClient(Protocol):
    """What the poller needs from a client (:meth:`PrimeHook.async_status_client`'s, or a fake in tests)."""

    async def get_pods_status(self, pod_ids: Iterable[str]) -> list[PodStatus]: ...

    async def aclose(self) -> None: ...


ClientFactory = Callable[[PrimeApiSettings], StatusClient]


@dataclass(frozen=True, eq=False)
class Snapshot:
    """The result of one poll round, shared read-only by every subscriber it concerns.

    ``covered`` holds every id the statuses speak for: asked for in this round or an earlier one
    and still polled. An id that is covered but absent from ``statuses`` was missing from the API's
    answer. ``changed`` holds the covered ids whose status differs from the previous answer's, or
    that were not covered before. ``error`` is set when the round failed; ``statuses`` then still
    hold the last answer and nothing is ``changed``.
    """

    statuses: Mapping[str, PodStatus]
    covered: frozenset[str]
    fetched_at: float
    error: Exception | None = None
    changed: frozenset[str] = frozenset()

    def covers(self, pod_ids: Iterable[str]) -> bool:
        """Whether the snapshot says something (present or missing) about each of ``pod_ids``."""
        return self.covered.issuperset(pod_ids)

    def statuses_for(self, pod_ids: Iterable[str]) -> list[PodStatus]:
        """The statuses of ``pod_ids`` that the API returned, in the order asked."""
        statuses = self.statuses
        return [statuses[pid] for pid in pod_ids if pid in statuses]


_EMPTY = Snapshot(statuses={}, covered=frozenset(), fetched_at=0.0)


class Subscription:
    """One trigger's place in a poller: its pod ids, its interval and a one-snapshot mailbox."""

    __slots__ = ("_mailbox", "_news", "_poller", "_waiter", "interval", "pod_ids")

    def __init__(self, poller: PodStatusPoller, pod_ids: list[str], interval: float) -> None:
        self._poller = poller
        self.pod_ids = pod_ids
        self.interval = interval
        self._mailbox: Snapshot | None = None
        self._news = True  # nothing was read yet: the first answer is news
        self._waiter: asyncio.Future[None] | None = None

    async def next(self, timeout: float) -> Snapshot | None:
        """Wait for the next snapshot about these pods; ``None`` when ``timeout`` seconds pass first.

        A returned snapshot either carries an error or covers every one of :attr:`pod_ids`.
        """
        loop = asyncio.get_running_loop()
        end = loop.time() + max(timeout, 0.0)
        while True:
            snapshot, self._mailbox = self._mailbox, None
            if snapshot is not None and (snapshot.error is not None or snapshot.covers(self.pod_ids)):
                return snapshot
            remaining = end - loop.time()
            if remaining <= 0:
                return None
            waiter = self._waiter = loop.create_future()
            timer = loop.call_later(remaining, _wake, waiter)
            try:
                await waiter
            finally:
                timer.cancel()
                self._waiter = None

    def take_news(self) -> bool:
        """Whether a status of these pods changed since the last call (then forget it)."""
        news, self._news = self._news, False
        return news

    def _deliver(self, snapshot: Snapshot, news: bool = False) -> None:
        self._mailbox = snapshot
        if news:
            self._news = True
        if self._waiter is not None:
            _wake(self._waiter)


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


class PodStatusPoller:
    """The poll loop shared by every subscriber with the same settings on one event loop."""

    def __init__(self, settings: PrimeApiSettings, client_factory: ClientFactory | None = None) -> None:
        self.settings = settings
        self.rounds = 0  # poll rounds made (full ticks and join fetches), for tests and benchmarks
        self._client_factory: ClientFactory = client_factory or PrimeHook.async_status_client
        self._subscribers: dict[Subscription, None] = {}  # insertion-ordered set
        self._by_id: dict[str, set[Subscription]] = {}
        self._intervals: Counter[float] = Counter()
        self._pending: dict[str, None] = {}  # ids not fetched since they joined
        self._join_at = math.inf
        self._last_full_at: float | None = None
        self._latest = _EMPTY
        self._wakeup: asyncio.Future[None] | None = None
        self._loop = asyncio.get_running_loop()
        self._created_at = self._loop.time()
        self._task: asyncio.Task[None] | None = None

    # -- membership --------------------------------------------------------------------------

    @property
    def pod_ids(self) -> list[str]:
        """Every distinct pod id polled now."""
        return list(self._by_id)

    @property
    def latest(self) -> Snapshot:
        """The answer of the last round that did not fail (empty before the first one)."""
        return self._latest

    @property
    def idle(self) -> bool:
        """Whether the loop is asleep until its next round is due (no request in flight)."""
        return self._wakeup is not None

    @property
    def interval(self) -> float:
        """The tick period: the smallest interval among the subscribers."""
        return max(min(self._intervals, default=math.inf), MIN_INTERVAL)

    def subscribe(self, pod_ids: Iterable[str], interval: float) -> Subscription:
        """Add a subscriber; it is served from the latest snapshot at once if that covers its pods."""
        ids = unique_ids(pod_ids)
        sub = Subscription(self, ids, interval)
        faster = interval < self.interval
        self._subscribers[sub] = None
        self._intervals[interval] += 1
        for pid in ids:
            subs = self._by_id.get(pid)
            if subs is None:
                subs = self._by_id[pid] = set()
                if not self._pending:
                    self._join_at = self._loop.time() + JOIN_DEBOUNCE
                self._pending[pid] = None
            subs.add(sub)
        latest = self._latest
        # Served at once only with an answer the loop itself would still stand by: after failed
        # rounds (an outage) the last good answer may be long stale, and a pod it shows ready
        # may be gone since; the joiner then waits for the next round like everyone else.
        if latest is not _EMPTY and latest.covers(ids) and time.time() - latest.fetched_at <= self.interval:
            sub._deliver(latest)
        if self._task is None:
            self._task = self._loop.create_task(self._run(), name=f"prime-pod-status-poller-{id(self):x}")
        elif faster or self._pending:
            self._nudge()
        return sub

    def unsubscribe(self, sub: Subscription) -> bool:
        """Remove a subscriber (idempotent); return True when it was the last one."""
        if sub not in self._subscribers:
            return not self._subscribers
        del self._subscribers[sub]
        self._intervals[sub.interval] -= 1
        if not self._intervals[sub.interval]:
            del self._intervals[sub.interval]
        for pid in sub.pod_ids:
            subs = self._by_id[pid]
            subs.discard(sub)
            if not subs:
                del self._by_id[pid]
                self._pending.pop(pid, None)
        sub._mailbox = None
        return not self._subscribers

    async def stop(self) -> None:
        """Stop the loop and close the client; waits for both (a second cancel skips the wait)."""
        task, self._task = self._task, None
        if task is None:
            return
        task.cancel()
        self._nudge()  # should the cancel be swallowed, the loop sees it is stopped at once
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            if not task.done():  # the caller itself is being cancelled: let the loop finish alone
                raise

    # -- the loop ----------------------------------------------------------------------------

    def _nudge(self) -> None:
        if self._wakeup is not None:
            _wake(self._wakeup)

    async def _run(self) -> None:
        client: StatusClient | None = None
        try:
            while True:
                ids, full = await self._next_round()
                if self._stopped():
                    return
                if client is None:
                    try:
                        client = self._client_factory(self.settings)
                    except Exception as exc:
                        await self._publish(ids, full, None, exc)
                        continue
                await self._poll(client, ids, full)
                # Let the subscribers just served run first: one that got its final answer leaves
                # now and, if it was the last, stops this loop before it starts a request nobody
                # would read (a round that overran the interval is due again at once).
                await asyncio.sleep(0)
                if self._stopped():
                    return
        finally:
            if client is not None:
                with contextlib.suppress(Exception):  # nothing to act on; the loop is over anyway
                    await client.aclose()

    def _stopped(self) -> bool:
        """Whether :meth:`stop` has ended this loop. Checked besides the cancel, which code in
        between can swallow: a stopped loop then still ends at its next step, never polling for nobody."""
        return self._task is not asyncio.current_task()

    async def _next_round(self) -> tuple[list[str], bool]:
        """Sleep until the next full tick or join fetch is due; return the ids to fetch."""
        while True:
            if self._stopped():
                return [], False
            now = self._loop.time()
            due_full = (
                self._created_at + JOIN_DEBOUNCE
                if self._last_full_at is None
                else self._last_full_at + self.interval
            )
            if due_full <= now:
                self._last_full_at = now
                self._pending.clear()
                return list(self._by_id), True
            join_due = self._join_at if self._pending else math.inf
            if join_due < due_full - JOIN_DEBOUNCE:
                if join_due <= now:
                    ids = list(self._pending)
                    self._pending.clear()
                    return ids, False
                wake_at = join_due
            else:
                wake_at = due_full
            self._wakeup = waiter = self._loop.create_future()
            timer = self._loop.call_at(wake_at, _wake, waiter)
            try:
                await waiter
            finally:
                timer.cancel()
                self._wakeup = None

    async def _poll(self, client: StatusClient, ids: list[str], full: bool) -> None:
        self.rounds += 1
        try:
            statuses = await client.get_pods_status(ids) if ids else []
        except Exception as exc:  # every failure is news for the subscribers, never the loop's end
            await self._publish(ids, full, None, exc)
        else:
            await self._publish(ids, full, statuses, None)

    async def _publish(
        self, ids: list[str], full: bool, statuses: list[PodStatus] | None, error: Exception | None
    ) -> None:
        previous = self._latest
        still_polled = self._by_id
        if statuses is None:
            snapshot = Snapshot(previous.statuses, previous.covered, time.time(), error)
        elif full:
            fetched = {s.pod_id: s for s in statuses}
            covered = frozenset(i for i in ids if i in still_polled)
            snapshot = Snapshot(fetched, covered, time.time(), changed=_changed(previous, fetched, covered))
        else:
            merged = {pid: s for pid, s in previous.statuses.items() if pid in still_polled}
            merged.update((s.pod_id, s) for s in statuses)
            asked = [i for i in ids if i in still_polled]
            covered = previous.covered.union(asked)
            snapshot = Snapshot(merged, covered, time.time(), changed=_changed(previous, merged, asked))
        if error is None:
            self._latest = snapshot
        concerned = list(self._subscribers) if full else list(_subscribers_of(ids, still_polled))
        news = _subscribers_of(snapshot.changed, still_polled)
        if news and len(concerned) > FAN_OUT_BATCH:
            # News first: a pod becoming ready (or failing) is not queued behind unchanged waits.
            concerned = [sub for sub in concerned if sub in news] + [s for s in concerned if s not in news]
        for start in range(0, len(concerned), FAN_OUT_BATCH):
            if start:
                await asyncio.sleep(0)  # let the woken batch run (and anything else) before the next
            for sub in concerned[start : start + FAN_OUT_BATCH]:
                if sub in self._subscribers:  # it may have left while an earlier batch ran
                    sub._deliver(snapshot, sub in news)


def _changed(previous: Snapshot, statuses: Mapping[str, PodStatus], ids: Iterable[str]) -> frozenset[str]:
    """Which of ``ids`` are news against ``previous``: first covered now, or another status (or none).

    Once per round for all subscribers, O(ids), instead of every subscriber comparing its pods.
    """
    old, covered_before = previous.statuses, previous.covered
    return frozenset(pid for pid in ids if pid not in covered_before or old.get(pid) != statuses.get(pid))


def _subscribers_of(ids: Collection[str], by_id: Mapping[str, set[Subscription]]) -> set[Subscription]:
    concerned: set[Subscription] = set()
    for pid in ids:
        concerned.update(by_id.get(pid, ()))
    return concerned


#: Seconds a connection's looked-up settings serve triggers that start on the same event loop.
SETTINGS_TTL = 60.0

_settings_lookups: weakref.WeakKeyDictionary[
    asyncio.AbstractEventLoop, dict[str, tuple[float, asyncio.Task[PrimeApiSettings]]]
] = weakref.WeakKeyDictionary()


async def connection_settings(prime_conn_id: str) -> PrimeApiSettings:
    """The connection's settings, looked up at most once per :data:`SETTINGS_TTL` per event loop.

    In a triggerer every lookup is a round trip through the supervisor to the API server; when many
    sensors defer together (a backfill, a fan-out DAG) one lookup per trigger holds up the shared
    event loop at the worst moment. Triggers starting within the TTL share one lookup (in flight or
    done); a failed lookup is not kept, and a changed connection reaches new triggers within the TTL.
    """
    loop = asyncio.get_running_loop()
    lookups = _settings_lookups.setdefault(loop, {})
    entry = lookups.get(prime_conn_id)
    failed = entry is not None and entry[1].done() and entry[1].exception() is not None
    if entry is None or failed or loop.time() - entry[0] > SETTINGS_TTL:
        lookup = loop.create_task(PrimeHook(prime_conn_id).aget_settings())
        # Mark the error as seen even when every waiting trigger was cancelled before it came.
        lookup.add_done_callback(lambda task: task.cancelled() or task.exception())
        entry = lookups[prime_conn_id] = (loop.time(), lookup)
    # shield: a trigger cancelled while waiting must not cancel the lookup other triggers share.
    return await asyncio.shield(entry[1])


_pollers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, PodStatusPoller]] = (
    weakref.WeakKeyDictionary()
)


def active_pollers() -> list[PodStatusPoller]:
    """The pollers running on the current event loop, or on any loop when called outside one (for
    tests, benchmarks and diagnostics)."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return [poller for pollers in _pollers.values() for poller in pollers.values()]
    return list(_pollers.get(loop, {}).values())


@contextlib.asynccontextmanager
async def subscription(
    settings: PrimeApiSettings,
    pod_ids: Iterable[str],
    interval: float,
    *,
    client_factory: ClientFactory | None = None,
) -> AsyncIterator[Subscription]:
    """Subscribe to the shared poller for ``settings`` for the duration of the ``async with`` block.

    ``client_factory`` (default :meth:`PrimeHook.async_status_client`) is used only if a new poller
    is made.

    Leaving the block, by return, exception or cancellation, unsubscribes; the last subscriber of
    a poller also stops its loop and closes its client before the block is left.
    """
    loop = asyncio.get_running_loop()
    pollers = _pollers.setdefault(loop, {})
    key = settings.fingerprint
    poller = pollers.get(key)
    if poller is None:
        poller = pollers[key] = PodStatusPoller(settings, client_factory)
    sub = poller.subscribe(pod_ids, interval)
    try:
        yield sub
    finally:
        if poller.unsubscribe(sub):
            if pollers.get(key) is poller:
                del pollers[key]
            await poller.stop()
