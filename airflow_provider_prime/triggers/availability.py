"""One shared availability poll loop per API connection for every capacity wait in a triggerer.

Why
---
Waiting for GPUs means asking ``GET /availability/gpus`` again and again. A triggerer may hold many
such waits (deferred creates of a fan-out DAG, event triggers of several assets), and most of them
ask the very same question ("H100_80GB x8?"). Polling per wait makes N requests per interval for N
waits. This module makes **one request per interval per distinct query**, however many waits share
that query, and keeps each wait a plain coroutine. It follows :mod:`.polling` (the pod-status
poller); the unit here is an :class:`AvailabilityQuery` (exactly the request's filters), not a pod.

Design
------
* **Registry.** One :class:`AvailabilityPoller` per (running event loop, ``settings.fingerprint``),
  for the reasons of :mod:`.polling`: an HTTP client belongs to one loop, and waits on different
  connections or keys never share a client or an answer.
* **Ownership.** A poller owns one async client (``PrimeHook.async_status_client``, which runs
  the hook's paging plan for every page of the offers) and one background task. The first
  subscriber creates it; the last one leaving stops the task and closes the client.
* **Ticks, per query.** Each distinct query is fetched every ``interval`` seconds, the smallest
  interval among its subscribers (never below :data:`MIN_INTERVAL`); queries with different
  intervals keep their own pace, so a 10-minute wait does not poll every 30 s because another
  query does. Queries due together are fetched concurrently; a slow request delays the next
  round, rounds never overlap.
* **Joining.** A new query is fetched :data:`JOIN_DEBOUNCE` seconds after it first appears (waits
  deferring together share that one request). A subscriber to a query already polled is served at
  once from the last good answer if it is no older than one interval, with no request.
* **Fan-out.** A round makes one immutable :class:`OffersSnapshot` per query, shared by all of the
  query's subscribers; each has a one-slot mailbox and :meth:`OffersSubscription.next` returns the
  next snapshot newer than the last one it took (a snapshot replaced unread is simply skipped: a
  newer answer says more). Delivery yields to the loop every :data:`FAN_OUT_BATCH` subscribers.
* **Errors.** A failed round publishes a snapshot carrying the error and the previous offers; the
  loop goes on at its pace (the client has already retried with backoff). Whether an error ends
  a wait is the waiter's decision.
* **Leaving** (return, exception or cancellation) is synchronous bookkeeping; the last subscriber
  of the poller also awaits the loop's shutdown and the client's close.

Figures: with N subscribers on one query, one ``/availability/gpus`` request per interval
(``tests/triggers/test_availability_http.py`` checks N = 50 against the simulator's counters).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
import weakref
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from airflow_provider_prime.exceptions import PrimeConfigError
from airflow_provider_prime.hooks import _plans
from airflow_provider_prime.hooks._settings import PrimeApiSettings
from airflow_provider_prime.hooks.prime import PrimeHook
from airflow_provider_prime.models import GpuOffer

__all__ = [
    "AvailabilityPoller",
    "AvailabilityQuery",
    "OffersClient",
    "OffersSnapshot",
    "OffersSubscription",
    "active_availability_pollers",
    "watch_offers",
]

#: Seconds a new query waits before its first fetch, so waits starting together share it.
JOIN_DEBOUNCE = 0.1
#: Shortest period between two fetches of one query (a zero interval must not spin).
MIN_INTERVAL = 0.05
#: Subscribers woken per event-loop iteration when a snapshot is delivered.
FAN_OUT_BATCH = 100


@dataclass(frozen=True)
class AvailabilityQuery:
    """Exactly one availability request's filters: hashable (the poller's key) and JSON-able.

    ``regions`` are the API's ``regions`` filter (repeated query parameter), sent as given; a bare
    string is one region. ``multi_node`` asks ``/availability/multi-node`` instead of ``/gpus``.
    Filters the API does not apply (price, spot, stock) are the waiter's to judge on the offers.
    """

    gpu_type: str | None = None
    gpu_count: int | None = None
    regions: tuple[str, ...] = field(default=())
    multi_node: bool = False

    def __post_init__(self) -> None:
        regions: object = self.regions
        if isinstance(regions, str):
            regions = (regions,)
        if not isinstance(regions, Iterable) or not all(isinstance(r, str) and r.strip() for r in regions):
            raise PrimeConfigError(f"regions must be region names, got {self.regions!r}")
        object.__setattr__(self, "regions", tuple(r.strip() for r in regions))
        if self.gpu_type is not None and (not isinstance(self.gpu_type, str) or not self.gpu_type.strip()):
            raise PrimeConfigError(f"gpu_type must be a GPU type name or None, got {self.gpu_type!r}")
        count = self.gpu_count
        if count is not None and (isinstance(count, bool) or not isinstance(count, int) or count < 1):
            raise PrimeConfigError(f"gpu_count must be a positive whole number, got {count!r}")
        object.__setattr__(self, "multi_node", bool(self.multi_node))

    def serialize(self) -> dict[str, Any]:
        """Plain JSON data (for trigger kwargs); :meth:`from_dict` reads it back."""
        return {
            "gpu_type": self.gpu_type,
            "gpu_count": self.gpu_count,
            "regions": list(self.regions),
            "multi_node": self.multi_node,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AvailabilityQuery:
        """The query :meth:`serialize` gave (missing keys take their defaults; unknown ones are refused)."""
        unknown = set(data) - {"gpu_type", "gpu_count", "regions", "multi_node"}
        if unknown:
            raise PrimeConfigError(f"unknown availability query fields: {sorted(unknown)}")
        return cls(
            gpu_type=data.get("gpu_type"),
            gpu_count=data.get("gpu_count"),
            regions=tuple(data.get("regions") or ()),
            multi_node=bool(data.get("multi_node", False)),
        )

    def describe(self) -> str:
        """The query in words, for logs: ``"H100_80GB x8 in europe (multi-node)"``."""
        text = self.gpu_type or "any GPU"
        if self.gpu_count is not None:
            text += f" x{self.gpu_count}"
        if self.regions:
            text += " in " + " or ".join(self.regions)
        return text + (" (multi-node)" if self.multi_node else "")


@dataclass(frozen=True, eq=False)
class OffersSnapshot:
    """One round's answer for one query, shared read-only by every subscriber of that query.

    ``offers``: what the last successful round returned. ``at``: ``time.monotonic()`` when this
    snapshot was made (for a failed round, the time of the failure). ``error``: set when this
    round failed; ``offers`` then are the previous round's (empty if none succeeded yet).
    ``seq`` numbers the query's rounds from 1, so "newer" needs no clock.
    """

    offers: tuple[GpuOffer, ...]
    at: float
    error: BaseException | None = None
    seq: int = 0

    @property
    def ok(self) -> bool:
        return self.error is None


class OffersClient(Protocol):
    """What the poller needs from a client (the hook's async client, or a fake in tests)."""

    async def list_gpu_offers(self, query: AvailabilityQuery) -> list[GpuOffer]: ...

    async def aclose(self) -> None: ...


ClientFactory = Callable[[PrimeApiSettings], OffersClient]


class ApiOffersClient:
    """The default :class:`OffersClient`: one long-lived async client of the hook, every page read."""

    def __init__(self, settings: PrimeApiSettings) -> None:
        self._settings = settings
        self._client = PrimeHook.async_status_client(settings)

    async def list_gpu_offers(self, query: AvailabilityQuery) -> list[GpuOffer]:
        plan = _plans.list_gpu_offers(
            self._settings, query.gpu_type, query.gpu_count, list(query.regions), query.multi_node
        )
        return await self._client.run(plan)

    async def aclose(self) -> None:
        await self._client.aclose()


class OffersSubscription:
    """One wait's place in a poller: its query, its interval and a one-snapshot mailbox."""

    __slots__ = ("_mailbox", "_taken", "_waiter", "interval", "query")

    def __init__(self, query: AvailabilityQuery, interval: float) -> None:
        self.query = query
        self.interval = interval
        self._mailbox: OffersSnapshot | None = None
        self._taken = 0
        self._waiter: asyncio.Future[None] | None = None

    async def next(self) -> OffersSnapshot:
        """The next answer newer than the last one taken (waits for the poller's next round)."""
        loop = asyncio.get_running_loop()
        while True:
            snapshot = self._mailbox
            if snapshot is not None and snapshot.seq > self._taken:
                self._taken = snapshot.seq
                return snapshot
            waiter = self._waiter = loop.create_future()
            try:
                await waiter
            finally:
                self._waiter = None

    @property
    def latest(self) -> OffersSnapshot | None:
        """The newest snapshot delivered to this subscriber (taken or not)."""
        return self._mailbox

    def _deliver(self, snapshot: OffersSnapshot) -> None:
        self._mailbox = snapshot
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


class _Watched:
    """A query's subscribers and schedule inside a poller."""

    __slots__ = ("due", "good", "intervals", "last_start", "seq", "subscribers")

    def __init__(self, due: float) -> None:
        self.subscribers: dict[OffersSubscription, None] = {}  # insertion-ordered set
        self.intervals: Counter[float] = Counter()
        self.due = due
        self.last_start: float | None = None
        self.good: OffersSnapshot | None = None  # the last successful round's snapshot
        self.seq = 0

    @property
    def interval(self) -> float:
        return max(min(self.intervals, default=math.inf), MIN_INTERVAL)


class AvailabilityPoller:
    """The availability loop shared by every subscriber with the same settings on one event loop."""

    def __init__(self, settings: PrimeApiSettings, client_factory: ClientFactory | None = None) -> None:
        self.settings = settings
        #: Availability requests made (one per query per round), for tests and benchmarks.
        self.requests = 0
        self._client_factory: ClientFactory = client_factory or ApiOffersClient
        self._queries: dict[AvailabilityQuery, _Watched] = {}
        self._loop = asyncio.get_running_loop()
        self._wakeup: asyncio.Future[None] | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def queries(self) -> list[AvailabilityQuery]:
        """Every distinct query polled now."""
        return list(self._queries)

    @property
    def idle(self) -> bool:
        """Whether the loop is asleep until a query is due (no request in flight)."""
        return self._wakeup is not None

    def interval(self, query: AvailabilityQuery) -> float:
        """The period at which ``query`` is fetched now (inf if nobody asks it)."""
        watched = self._queries.get(query)
        return math.inf if watched is None else watched.interval

    def subscribe(self, query: AvailabilityQuery, interval: float) -> OffersSubscription:
        """Add a subscriber; served at once from the last good answer if it is fresh."""
        now = self._loop.time()
        watched = self._queries.get(query)
        nudge = False
        if watched is None:
            watched = self._queries[query] = _Watched(now + JOIN_DEBOUNCE)
            nudge = True
        sub = OffersSubscription(query, interval)
        before = watched.interval
        watched.subscribers[sub] = None
        watched.intervals[interval] += 1
        if watched.interval < before and watched.last_start is not None:
            watched.due = min(watched.due, watched.last_start + watched.interval)
            nudge = True
        good = watched.good
        if good is not None and time.monotonic() - good.at <= watched.interval:
            sub._deliver(good)
        if self._task is None:
            self._task = self._loop.create_task(self._run(), name=f"prime-availability-poller-{id(self):x}")
        elif nudge:
            self._nudge()
        return sub

    def unsubscribe(self, sub: OffersSubscription) -> bool:
        """Remove a subscriber (idempotent); return True when the poller has none left."""
        watched = self._queries.get(sub.query)
        if watched is not None and sub in watched.subscribers:
            del watched.subscribers[sub]
            watched.intervals[sub.interval] -= 1
            if not watched.intervals[sub.interval]:
                del watched.intervals[sub.interval]
            if not watched.subscribers:
                del self._queries[sub.query]
        sub._mailbox = None
        return not self._queries

    async def stop(self) -> None:
        """Stop the loop and close the client; waits for both (a second cancel skips the wait)."""
        task, self._task = self._task, None
        if task is None:
            return
        task.cancel()
        self._nudge()
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            if not task.done():
                raise

    # -- the loop ----------------------------------------------------------------------------

    def _nudge(self) -> None:
        waiter = self._wakeup
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _stopped(self) -> bool:
        return self._task is not asyncio.current_task()

    async def _run(self) -> None:
        client: OffersClient | None = None
        try:
            while True:
                due = await self._next_round()
                if self._stopped():
                    return
                if client is None:
                    try:
                        client = self._client_factory(self.settings)
                    except Exception as exc:
                        for query in due:
                            await self._publish(query, None, exc)
                        continue
                await asyncio.gather(*(self._poll(client, query) for query in due))
                await asyncio.sleep(0)  # let the served subscribers leave before anything else
                if self._stopped():
                    return
        finally:
            if client is not None:
                with contextlib.suppress(Exception):
                    await client.aclose()

    async def _next_round(self) -> list[AvailabilityQuery]:
        """Sleep until some query is due; return the due ones (their next round scheduled)."""
        while True:
            if self._stopped():
                return []
            now = self._loop.time()
            due = [query for query, watched in self._queries.items() if watched.due <= now]
            if due:
                for query in due:
                    watched = self._queries[query]
                    watched.last_start = now
                    watched.due = now + watched.interval
                return due
            wake_at = min((watched.due for watched in self._queries.values()), default=math.inf)
            self._wakeup = waiter = self._loop.create_future()
            timer = None if math.isinf(wake_at) else self._loop.call_at(wake_at, self._nudge)
            try:
                await waiter
            finally:
                if timer is not None:
                    timer.cancel()
                self._wakeup = None

    async def _poll(self, client: OffersClient, query: AvailabilityQuery) -> None:
        self.requests += 1
        try:
            offers = await client.list_gpu_offers(query)
        except Exception as exc:  # every failure is news for the subscribers, never the loop's end
            await self._publish(query, None, exc)
        else:
            await self._publish(query, offers, None)

    async def _publish(
        self, query: AvailabilityQuery, offers: list[GpuOffer] | None, error: Exception | None
    ) -> None:
        watched = self._queries.get(query)
        if watched is None:  # everyone left while the request was in flight
            return
        watched.seq += 1
        if offers is None:
            previous = watched.good.offers if watched.good is not None else ()
            snapshot = OffersSnapshot(previous, time.monotonic(), error, watched.seq)
        else:
            snapshot = watched.good = OffersSnapshot(tuple(offers), time.monotonic(), None, watched.seq)
        subscribers = list(watched.subscribers)
        for start in range(0, len(subscribers), FAN_OUT_BATCH):
            if start:
                await asyncio.sleep(0)
            for sub in subscribers[start : start + FAN_OUT_BATCH]:
                if sub in watched.subscribers:
                    sub._deliver(snapshot)


_pollers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, AvailabilityPoller]] = (
    weakref.WeakKeyDictionary()
)


def active_availability_pollers() -> list[AvailabilityPoller]:
    """The pollers on the current event loop, or on any loop when called outside one."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return [poller for pollers in _pollers.values() for poller in pollers.values()]
    return list(_pollers.get(loop, {}).values())


@contextlib.asynccontextmanager
async def watch_offers(
    settings: PrimeApiSettings,
    query: AvailabilityQuery,
    interval: float,
    *,
    client_factory: ClientFactory | None = None,
) -> AsyncIterator[OffersSubscription]:
    """Subscribe to the shared availability poller for ``settings`` while the block runs.

    ``await sub.next()`` gives each newer :class:`OffersSnapshot` for ``query`` (the first within
    about :data:`JOIN_DEBOUNCE` plus one request, or at once when a fresh answer exists).
    ``client_factory`` (default: the hook's async client) is used only if a new poller is made.
    Leaving the block unsubscribes; the last subscriber stops the loop and closes the client.
    """
    loop = asyncio.get_running_loop()
    pollers = _pollers.setdefault(loop, {})
    key = settings.fingerprint
    poller = pollers.get(key)
    if poller is None:
        poller = pollers[key] = AvailabilityPoller(settings, client_factory)
    sub = poller.subscribe(query, interval)
    try:
        yield sub
    finally:
        if poller.unsubscribe(sub):
            if pollers.get(key) is poller:
                del pollers[key]
            await poller.stop()
