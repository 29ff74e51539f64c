"""PrimeCapacityTrigger: the deferred wait of ``PrimeCreatePodOperator(wait_for_capacity=...)``.

The create found no offer that fits (or its create was refused as sold out); this trigger watches the
availability list in the triggerer until an offer fits the wish, then fires ``success`` and the task
resumes in a worker, where the create goes through the same idempotent path as a retry (the name is
looked up first, offers are listed and chosen again: the trigger never creates anything). At the
``deadline`` (wall-clock epoch seconds, fixed when the task first started waiting and carried across
deferrals) it fires ``timeout`` with :class:`~airflow_provider_prime.exceptions.PrimeNoOfferError`'s
explanation; an error that waiting cannot fix (auth, a bad request) fires ``failed``. Transient errors
are logged and the wait goes on; a garbled answer
(:class:`~airflow_provider_prime.exceptions.PrimeResponseError`, a proxy's page served as 200) is
logged once and waited out for :func:`~airflow_provider_prime.readiness.trouble_grace` with no good
answer in between, as the status waits do, then fires ``failed``: one bad answer does not end a wait of hours.

The availability answers come from the shared poller (``watch_offers``: one request per interval per
distinct query per triggerer, however many tasks wait for the same thing). The log says what is
awaited and the nearest offers (GPU type, region, price, stock) at the start and whenever they change,
never at every poll.

``refused_cloud_ids`` (cloud id -> epoch seconds): offers a create of this try was refused for as sold
out, passed over (shown out of stock) until then: the list may go on showing them, and the trigger
would fire for them again and again instead of for the next choice. A refusal is remembered for
:func:`refusal_memory` (5 minutes, or 3 poll intervals if longer): long enough not to loop on a stale
list, short enough that a first choice that really comes back is taken again.

``not_before`` (epoch seconds): an offer that fits before then does not fire; the operator sets it one
poll interval on after a refusal.

The trigger is read-only and owns nothing: it can be cancelled, moved to another triggerer or run
twice. Its kwargs are plain values; the API key is looked up inside :meth:`run`, never serialized.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable, Mapping
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_provider_prime import events
from airflow_provider_prime.exceptions import PrimeNoOfferError, PrimeResponseError, is_transient
from airflow_provider_prime.models import GpuOffer
from airflow_provider_prime.offers import (
    OfferWish,
    choose_offer,
    describe_offer,
    nearest_offers,
)
from airflow_provider_prime.readiness import trouble_grace
from airflow_provider_prime.triggers.availability import watch_offers
from airflow_provider_prime.triggers.polling import connection_settings
from airflow_provider_prime.waiting import SYSTEM_CLOCK, Clock

#: The first words of the success event's message (the operator logs the whole line).
CAPACITY_LINE = "Capacity found"
#: Seconds, at least, an offer refused as sold out is passed over (see :func:`refusal_memory`).
REFUSAL_MEMORY = 300.0
#: Poll intervals, at least, an offer refused as sold out is passed over.
REFUSAL_MEMORY_POLLS = 3
#: The stock an offer refused as sold out shows while it is passed over (an out-of-stock word).
REFUSED_STOCK = "Sold out"


def refusal_memory(poll_interval: float) -> float:
    """Seconds an offer whose create was refused as sold out is passed over: the larger of
    :data:`REFUSAL_MEMORY` and :data:`REFUSAL_MEMORY_POLLS` poll intervals."""
    return max(REFUSAL_MEMORY, REFUSAL_MEMORY_POLLS * poll_interval)


def without_refused(offers: Iterable[GpuOffer], refused: Mapping[str, float], now: float) -> list[GpuOffer]:
    """``offers``, those in ``refused`` (cloud id -> epoch second until which it is passed over) shown
    sold out (:data:`REFUSED_STOCK`) until then: the choice rule skips them and the log says why."""
    return [
        offer.model_copy(update={"stock_status": REFUSED_STOCK})
        if offer.cloud_id in refused and refused[offer.cloud_id] > now
        else offer
        for offer in offers
    ]


class PrimeCapacityTrigger(BaseTrigger):
    """Wait in the triggerer until an offer fits ``wish``, or the deadline passes.

    :param wish: the :class:`~airflow_provider_prime.offers.OfferWish` as plain data (``to_dict``).
    :param deadline: wall-clock epoch seconds at which the wait gives up (``timeout`` event).
    :param poll_interval: seconds between two looks at the availability list.
    :param prime_conn_id: the connection whose availability list is watched.
    :param not_before: epoch seconds before which a fitting offer does not fire (see the module).
    :param refused_cloud_ids: cloud id -> epoch seconds until which that offer, refused as sold out,
        is passed over (see the module).
    """

    clock: Clock = SYSTEM_CLOCK

    def __init__(
        self,
        *,
        wish: Mapping[str, Any],
        deadline: float,
        poll_interval: float,
        prime_conn_id: str,
        not_before: float | None = None,
        refused_cloud_ids: Mapping[str, float] | None = None,
    ) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.wish = dict(wish)
        self.deadline = float(deadline)
        self.poll_interval = float(poll_interval)
        self.prime_conn_id = prime_conn_id
        self.not_before = None if not_before is None else float(not_before)
        self.refused_cloud_ids = {str(k): float(v) for k, v in (refused_cloud_ids or {}).items()}

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "wish": self.wish,
                "deadline": self.deadline,
                "poll_interval": self.poll_interval,
                "prime_conn_id": self.prime_conn_id,
                "not_before": self.not_before,
                # Left out when empty, as a trigger of an older release had it.
                **({"refused_cloud_ids": dict(self.refused_cloud_ids)} if self.refused_cloud_ids else {}),
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        """Yield exactly one event (see the module docstring), then return."""
        yield TriggerEvent(await self._wait())  # type: ignore[no-untyped-call]

    async def _wait(self) -> events.Event:
        try:
            wish = OfferWish.from_dict(self.wish)
            settings = await connection_settings(self.prime_conn_id)
        except Exception as exc:
            return events.build_failed(exc)
        no_offer = f"No GPU offer matches {wish.describe()}: nothing was looked at before the deadline."
        shown: list[str] | None = None
        failure: str | None = None
        garbled_since: float | None = None
        grace = trouble_grace(self.poll_interval)
        async with watch_offers(settings, wish.availability_query(), self.poll_interval) as offers:
            while True:
                left = self.deadline - self.clock.time()
                if left <= 0:
                    return events.build_timeout(no_offer + self._gave_up())
                try:
                    snapshot = await asyncio.wait_for(offers.next(), left)
                except asyncio.TimeoutError:
                    continue
                if snapshot.error is not None:
                    if isinstance(snapshot.error, PrimeResponseError):
                        now = self.clock.time()
                        if garbled_since is None:
                            garbled_since = now
                            self.log.warning(
                                "The offers could not be read (the wait goes on for up to %.0f s of such "
                                "answers): %s",
                                grace,
                                snapshot.error,
                            )
                        elif now - garbled_since >= grace:
                            return events.build_failed(snapshot.error)
                        continue
                    if not is_transient(snapshot.error):
                        return events.build_failed(snapshot.error)
                    if str(snapshot.error) != failure:
                        failure = str(snapshot.error)
                        self.log.warning("Could not list the offers (the wait goes on): %s", failure)
                    continue
                failure, garbled_since = None, None
                listed = without_refused(snapshot.offers, self.refused_cloud_ids, self.clock.time())
                lines = nearest_offers(listed, wish)
                if lines != shown:
                    self.log.info(awaited_line(wish, self.deadline, self.clock.time(), lines))
                    shown = lines
                try:
                    choice = choose_offer(listed, wish)
                except PrimeNoOfferError as exc:
                    no_offer = str(exc)
                    continue
                if self.not_before is not None and self.clock.time() < self.not_before:
                    continue
                message = f"{CAPACITY_LINE} for {wish.describe()}: {describe_offer(choice.offer)}"
                self.log.info(message)
                return events.build_success({}, message)

    def _gave_up(self) -> str:
        return "\nThe wait for capacity (wait_for_capacity) reached its deadline."


def awaited_line(wish: OfferWish, deadline: float, now: float, nearest: list[str]) -> str:
    """The log line of a capacity wait: what is awaited, until when, and the nearest offers."""
    head = f"Waiting for capacity ({max(deadline - now, 0.0):.0f} s left): {wish.describe()}."
    if not nearest:
        return head + " The availability list is empty."
    return "\n".join([head + " Nearest offers:", *(f"  - {line}" for line in nearest)])
