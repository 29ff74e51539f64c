"""PrimeCapacityEventTrigger: start a DAG when GPU capacity appears ("8x H100 at <= $2.50/h in the EU").

For Airflow's event-driven scheduling: an :class:`~airflow.sdk.Asset` with
``watchers=[AssetWatcher(name=..., trigger=PrimeCapacityEventTrigger(...))]``, and a DAG scheduled
on that asset. The trigger runs in the triggerer for as long as the DAG is active and fires one
event **per appearance**: when no offer fitted the wish at the previous answer and one fits now.
While capacity stays, nothing fires; when it goes and comes back, it fires again. Each event
becomes an asset event whose ``extra["payload"]`` says what appeared (see :func:`appearance`).

How it judges
-------------
The wish is today's :class:`~airflow_provider_prime.offers.OfferWish` fields (``gpu_type``,
``gpu_count``, ``regions``, ``max_price``, ``socket``, ``security``, ``cloud_id``,
``multi_node``...), kept as a plain dict and handed to ``OfferWish`` as is, so a field
``OfferWish`` learns later (``spot``) flows through without a change here. ``gpu_type`` may be a
list in order of preference, or the text of one (a templated ``'["H100_80GB", "A100_80GB"]'``):
one availability query per type, and the first type with a fitting offer wins (then the cheapest,
:func:`~airflow_provider_prime.offers.choose_offer`'s rule).
Offers come from the shared availability poller (:mod:`.availability`): every trigger and
deferred capacity wait asking the same query in one triggerer shares one request per interval.
Regions are judged here (region, country or data center, as ``OfferWish`` does), not sent to the
API as a filter. A failed poll changes nothing: an outage is not "capacity gone" (which would
make the next answer a new appearance); it is logged once per outage.

Restarts: what it remembers
---------------------------
Without memory, a triggerer restart (or the trigger moving to another triggerer) would see the
capacity as new and fire again. So the trigger writes "present, these offers, since" (or
"absent") each time that changes, **before** it fires, and reads it when it starts. Where:

* **Airflow 3.3+**: the asset's state store (``self.asset_state_store``, which the triggerer gives
  every watcher; kept in the metadata database per asset), key ``prime_capacity:<digest>``.
* **Airflow 3.1 and 3.2** have no store for event triggers; their triggerer does answer Variable
  reads and writes (``GetVariable``/``PutVariable``), so the memory is the Variable
  ``prime_capacity_seen_<digest>`` (JSON). Also used on 3.3 when a trigger watches several assets
  (the store is per asset). Which one is chosen depends on the configuration only, never on
  whether a read succeeded: a store read that fails or times out leaves the store the memory, as
  switching to the Variable would make the next start read the store, find nothing and fire again.
* Outside a triggerer (a unit test, ``airflow dags test``): no memory.

``<digest>`` is a hash of the trigger's class path and all its serialized kwargs (the wish, the
connection, ``poll_interval``): Airflow's own identity of an event trigger, under which watchers
with equal kwargs are one trigger serving every asset they watch. So each running trigger has its
own memory, and a second watcher of the same wish that differs in anything (another
``poll_interval``) never reads the first one's "present" and fires on its first start. The
consequences: changing any kwarg starts a fresh memory (the next start fires once for capacity
already there), and an asset given a watcher with exactly the kwargs of an existing one joins that
running trigger (Airflow's sharing), so it gets the next appearance, not the current one. The
asset is not part of the digest: 3.1/3.2 do not tell a trigger its assets, and on 3.3 the state
store is already per asset.

Limits, said plainly: the memory is written before the event is handed to Airflow, so a crash in
between loses that appearance (at most once, never twice: creating GPU pods twice costs money,
the next appearance fires as usual). On the very first start (nothing remembered) capacity that
is already there counts as an appearance and fires. If the memory cannot be read or written
(logged), the trigger still fires once per appearance while it runs; only the restart rule is
lost. On 3.1/3.2 the Variable is visible (and editable) in the UI; deleting it makes the next
start fire for capacity already there.

Airflow 3.3 also has a shared-stream mechanism for event triggers (``shared_stream_key``); it is
not used, so that 3.1 works the same and deferred capacity waits share the same poller.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
from collections.abc import AsyncIterator, Awaitable, Mapping, Sequence
from datetime import datetime, timezone
from typing import Any, Protocol, TypeVar

from airflow.triggers.base import BaseEventTrigger, TriggerEvent

from airflow_provider_prime._compat import ASSET_STATE_STORE
from airflow_provider_prime.exceptions import PrimeConfigError, PrimeNoOfferError
from airflow_provider_prime.models import GpuOffer
from airflow_provider_prime.offers import OfferWish, choose_offer, describe_offer, names_in_order
from airflow_provider_prime.triggers.availability import AvailabilityQuery, OffersSnapshot, watch_offers
from airflow_provider_prime.triggers.polling import connection_settings
from airflow_provider_prime.triggers.task_state import SupervisorComms, supervisor_comms

__all__ = ["DEFAULT_CAPACITY_POLL_INTERVAL", "PrimeCapacityEventTrigger", "appearance"]

#: Seconds between two availability answers unless ``poll_interval`` says otherwise.
DEFAULT_CAPACITY_POLL_INTERVAL = 60.0
#: Fitting offers listed in an event's payload (the chosen one first).
PAYLOAD_OFFERS = 5
#: Seconds a read or write of the memory may take before the trigger goes on without it (a busy
#: triggerer's supervisor can take over 10 s to answer while it starts).
MEMORY_TIMEOUT = 30.0


class PrimeCapacityEventTrigger(BaseEventTrigger):
    """Fire once each time an offer fitting the wish appears (absent -> present); see the module doc.

    :param gpu_type: a GPU type, or a list of them in order of preference (or the text of such a list).
    :param prime_conn_id: the Prime connection.
    :param poll_interval: seconds between two availability answers (shared with every wait on the
        same query in the triggerer: the fastest one sets the pace).
    :param wish: every other :class:`~airflow_provider_prime.offers.OfferWish` field
        (``gpu_count``, ``regions``, ``max_price``, ``multi_node``, ``socket``, ``security``,
        ``cloud_id``...), passed through as given.
    """

    def __init__(
        self,
        *,
        gpu_type: str | Sequence[str] | None = None,
        prime_conn_id: str = "prime_default",
        poll_interval: float = DEFAULT_CAPACITY_POLL_INTERVAL,
        **wish: Any,
    ) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.gpu_type = gpu_type
        self.wish: dict[str, Any] = {key: _plain(value) for key, value in wish.items()}
        self.prime_conn_id = prime_conn_id
        if (
            isinstance(poll_interval, bool)
            or not isinstance(poll_interval, (int, float))
            or poll_interval <= 0
        ):
            raise PrimeConfigError(
                f"poll_interval must be a positive number of seconds, got {poll_interval!r}"
            )
        self.poll_interval = float(poll_interval)
        self.wishes = _wishes(gpu_type, self.wish)  # validated here: a bad wish fails the DAG's parse

    def serialize(self) -> tuple[str, dict[str, Any]]:
        """Plain values only; the API key is looked up again by :meth:`run`."""
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "gpu_type": _plain(self.gpu_type),
                "prime_conn_id": self.prime_conn_id,
                "poll_interval": self.poll_interval,
                **self.wish,
            },
        )

    @property
    def memory_digest(self) -> str:
        """What identifies this watcher's memory: its class path and every serialized kwarg.

        That is Airflow's own identity of an event trigger (``BaseEventTrigger.hash``: two watchers
        with the same class path and kwargs are one trigger, whatever assets they watch), so one
        running trigger is one memory. A watcher differing in anything, ``poll_interval`` or the
        connection included, has its own memory: it never reads another's "present" and stays silent
        for capacity it never reported. Changing any kwarg therefore starts a fresh memory (the
        first start fires for capacity already there).
        """
        classpath, kwargs = self.serialize()
        material = json.dumps({"classpath": classpath, "kwargs": kwargs}, sort_keys=True, default=str)
        return hashlib.sha256(material.encode()).hexdigest()[:16]

    def describe(self) -> str:
        """The wish in words (the types in order of preference)."""
        return " or else ".join(wish.describe() for wish in self.wishes)

    def queries(self) -> list[AvailabilityQuery]:
        """One availability query per wished GPU type (regions and price are judged here)."""
        return [
            AvailabilityQuery(
                gpu_type=wish.gpu_types[0] if wish.gpu_types else None,
                gpu_count=wish.gpu_count,
                multi_node=wish.multi_node,
            )
            for wish in self.wishes
        ]

    def judge(self, answers: Sequence[Sequence[GpuOffer]]) -> list[GpuOffer]:
        """The offers fitting the wish in ``answers`` (one list per query), best first; empty: none."""
        for wish, offers in zip(self.wishes, answers, strict=True):
            fitting = _fitting(offers, wish)
            if fitting:
                return fitting
        return []

    async def run(self) -> AsyncIterator[TriggerEvent]:
        settings = await connection_settings(self.prime_conn_id)
        memory = await self._memory()
        remembered = await memory.recall()
        present = bool(remembered and remembered.get("present"))
        self.log.info(
            "Watching for %s every %gs; remembered: %s (%s)",
            self.describe(),
            self.poll_interval,
            "capacity present" if present else "no capacity" if remembered else "nothing",
            memory.where,
        )
        failing = False
        async with contextlib.AsyncExitStack() as stack:
            subs = [
                await stack.enter_async_context(watch_offers(settings, query, self.poll_interval))
                for query in self.queries()
            ]
            while True:
                snapshots: list[OffersSnapshot] = await asyncio.gather(*(sub.next() for sub in subs))
                errors = [snap.error for snap in snapshots if snap.error is not None]
                if errors:
                    if not failing:
                        self.log.warning(
                            "Could not read the GPU offers for %s (%s); nothing fires until they can be "
                            "read again (an outage is not capacity gone)",
                            self.describe(),
                            errors[0],
                        )
                    failing = True
                    continue
                if failing:
                    self.log.info("The GPU offers can be read again")
                    failing = False
                found = self.judge([snap.offers for snap in snapshots])
                if found and not present:
                    event = appearance(self, found)
                    await memory.remember(
                        {
                            "present": True,
                            "offers": [o.cloud_id for o in found],
                            "since": event["appeared_at"],
                        }
                    )
                    self.log.info("Capacity appeared for %s: %s", self.describe(), describe_offer(found[0]))
                    present = True
                    yield TriggerEvent(event)  # type: ignore[no-untyped-call]
                elif not found and present:
                    self.log.info("Capacity gone for %s; the next appearance fires again", self.describe())
                    await memory.remember({"present": False, "since": _now()})
                    present = False

    async def _memory(self) -> _Memory:
        comms = supervisor_comms()
        store = getattr(self, "asset_state_store", None)
        if ASSET_STATE_STORE and store is not None and comms is not None:
            key = f"prime_capacity:{self.memory_digest}"
            try:
                await _bounded(store.aget(key), MEMORY_TIMEOUT)
            except ValueError:  # several watched assets: the store needs one named; the Variable serves
                pass
            except Exception as exc:
                # A slow or failing read does not move the memory: a Variable now and the store at
                # the next start would be two memories, and that start would fire again.
                self.log.warning(
                    "The asset state store could not be read (%s); it stays this trigger's memory",
                    str(exc) or type(exc).__name__,
                )
                return _AssetStoreMemory(store, key, self)
            else:
                return _AssetStoreMemory(store, key, self)
        if comms is not None:
            return _VariableMemory(comms, f"prime_capacity_seen_{self.memory_digest}", self)
        return _NoMemory()


def appearance(trigger: PrimeCapacityEventTrigger, found: Sequence[GpuOffer]) -> dict[str, Any]:
    """The event's payload: what appeared, for the DAG (``triggering_asset_events``' ``extra["payload"]``).

    ``offer`` is the chosen offer in the API's shape (``GpuOffer.model_validate`` reads it back),
    the flat keys repeat its essentials, ``offers`` lists up to :data:`PAYLOAD_OFFERS` fitting ones.
    """
    best = found[0]
    return {
        "status": "available",
        "wish": {"gpu_type": _plain(trigger.gpu_type), **trigger.wish},
        "description": trigger.describe(),
        "cloud_id": best.cloud_id,
        "gpu_type": best.gpu_type,
        "gpu_count": best.gpu_count,
        "price": best.prices.price,
        "region": best.region,
        "country": best.country,
        "data_center": best.data_center,
        "stock_status": best.stock_status,
        "is_spot": best.is_spot,
        "provider": best.provider,
        "offer": best.model_dump(mode="json", by_alias=True),
        "offers": [describe_offer(offer) for offer in found[:PAYLOAD_OFFERS]],
        "appeared_at": _now(),
    }


# -- the memory -------------------------------------------------------------------------------------


class _Memory(Protocol):
    where: str

    async def recall(self) -> dict[str, Any] | None: ...

    async def remember(self, value: dict[str, Any]) -> None: ...


class _Logs(Protocol):
    @property
    def log(self) -> Any: ...


class _NoMemory:
    where = "no memory outside a triggerer"

    async def recall(self) -> dict[str, Any] | None:
        return None

    async def remember(self, value: dict[str, Any]) -> None:
        return None


class _AssetStoreMemory:
    """Airflow 3.3+: the watched asset's state store."""

    def __init__(self, store: Any, key: str, owner: _Logs) -> None:
        self._store, self._key, self._owner = store, key, owner
        self.where = f"asset state store, key {key}"

    async def recall(self) -> dict[str, Any] | None:
        try:
            value = await _bounded(self._store.aget(self._key), MEMORY_TIMEOUT)
        except Exception as exc:
            self._owner.log.warning("Could not read %s (%s); starting without memory", self.where, exc)
            return None
        return value if isinstance(value, dict) else None

    async def remember(self, value: dict[str, Any]) -> None:
        try:
            await _bounded(self._store.aset(self._key, value), MEMORY_TIMEOUT)
        except Exception as exc:
            self._owner.log.warning("Could not write %s (%s); a restart may fire again", self.where, exc)


class _VariableMemory:
    """Airflow 3.1/3.2 (or several assets): an Airflow Variable, through the triggerer's supervisor."""

    def __init__(self, comms: SupervisorComms, key: str, owner: _Logs) -> None:
        self._comms, self._key, self._owner = comms, key, owner
        self.where = f"Variable {key}"

    async def recall(self) -> dict[str, Any] | None:
        from airflow.sdk.execution_time.comms import ErrorResponse, GetVariable

        try:
            answer = await _bounded(self._comms.asend(GetVariable(key=self._key)), MEMORY_TIMEOUT)
        except Exception as exc:
            self._owner.log.warning("Could not read %s (%s); starting without memory", self.where, exc)
            return None
        if isinstance(answer, ErrorResponse) or answer is None:
            return None  # never written (VARIABLE_NOT_FOUND)
        try:
            value = json.loads(getattr(answer, "value", None) or "null")
        except ValueError:
            self._owner.log.warning("%s is not JSON; starting without memory", self.where)
            return None
        return value if isinstance(value, dict) else None

    async def remember(self, value: dict[str, Any]) -> None:
        from airflow.sdk.execution_time.comms import PutVariable

        message = PutVariable(
            key=self._key,
            value=json.dumps(value),
            description="PrimeCapacityEventTrigger's memory of capacity seen (deleting it makes the next "
            "start fire for capacity already there)",
        )
        try:
            await _bounded(self._comms.asend(message), MEMORY_TIMEOUT)
        except Exception as exc:
            self._owner.log.warning("Could not write %s (%s); a restart may fire again", self.where, exc)


# -- helpers ----------------------------------------------------------------------------------------


T = TypeVar("T")


async def _bounded(call: Awaitable[T], timeout: float) -> T:
    """``call``'s result within ``timeout`` seconds (``asyncio.TimeoutError`` past it).

    Not ``asyncio.wait_for``: on Python 3.10 and 3.11 it can swallow a cancellation that arrives as
    the inner call completes, and this trigger never ends on its own, so a triggerer that cancels it
    once (a shutdown, a move) would leave it running. ``asyncio.wait`` passes the cancellation on.
    """
    task = asyncio.ensure_future(call)
    try:
        done, _ = await asyncio.wait({task}, timeout=timeout)
    except BaseException:
        task.cancel()
        raise
    if not done:
        task.cancel()
        raise asyncio.TimeoutError(f"no answer within {timeout:g} s")
    return task.result()


def _wishes(gpu_type: object, wish: Mapping[str, Any]) -> list[OfferWish]:
    """One OfferWish per wished GPU type, in order of preference (one wish when no type is given).

    ``gpu_type`` is read as :func:`~airflow_provider_prime.offers.names_in_order` reads it, so the
    text of a list (a templated ``'["H100_80GB", "A100_80GB"]'``) is that list: one wish, and one
    availability query, per type, never one query filtered on the first type only.
    """
    try:
        types = names_in_order(gpu_type, "gpu_type")
    except PrimeConfigError as exc:
        raise PrimeConfigError(
            f"PrimeCapacityEventTrigger: gpu_type must be a GPU type or a non-empty list of them ({exc})"
        ) from None
    blank = gpu_type is None or (isinstance(gpu_type, str) and not gpu_type.strip())
    if not types and not blank:  # [] or "[]": a list that names nothing
        raise PrimeConfigError(
            "PrimeCapacityEventTrigger: gpu_type must be a GPU type or a non-empty list of them, "
            f"got {gpu_type!r}"
        )
    try:
        return [OfferWish(gpu_type=each, **wish) for each in types or (None,)]
    except TypeError as exc:  # a field OfferWish does not know
        raise PrimeConfigError(
            f"PrimeCapacityEventTrigger: {exc} (the wish takes OfferWish's fields)"
        ) from None


def _fitting(offers: Sequence[GpuOffer], wish: OfferWish) -> list[GpuOffer]:
    """Every offer fitting ``wish``, in :func:`choose_offer`'s order (at most :data:`PAYLOAD_OFFERS`)."""
    left, found = list(offers), list[GpuOffer]()
    while left and len(found) < PAYLOAD_OFFERS:
        try:
            best = choose_offer(left, wish).offer
        except PrimeNoOfferError:
            break
        found.append(best)
        left = [offer for offer in left if offer is not best]
    return found


def _plain(value: Any) -> Any:
    """JSON-friendly trigger kwargs: tuples become lists (Airflow stores kwargs as JSON)."""
    if isinstance(value, tuple):
        return [_plain(item) for item in value]
    if isinstance(value, list):
        return [_plain(item) for item in value]
    return value


def _now() -> str:
    return datetime.now(timezone.utc).isoformat()
