"""PrimeCapacityTrigger: the deferred wait of ``PrimeCreatePodOperator(wait_for_capacity=...)``.

The create found no offer that fits (or its create was refused as sold out); this trigger watches the
availability list in the triggerer until an offer fits the wish, then fires ``success`` and the task
resumes in a worker, where the create goes through the same idempotent path as a retry (the name is
looked up first, offers are listed and chosen again: the trigger never creates anything). At the
``deadline`` (wall-clock epoch seconds, fixed when the task first started waiting and carried across
deferrals) it fires ``timeout`` with :class:`~airflow_provider_prime.exceptions.PrimeNoOfferError`'s
explanation; an error that waiting cannot fix (auth, a bad request) fires ``failed``. Transient errors
are logged and the wait goes on.

The availability answers come from the shared poller (``watch_offers``: one request per interval per
distinct query per triggerer, however many tasks wait for the same thing). The log says what is
awaited and the nearest offers (GPU type, region, price, stock) at the start and whenever they change,
never at every poll.

``not_before`` (epoch seconds): an offer that fits before then does not fire. A create refused as sold
out while the list still shows the offer in stock would otherwise resume the task at once, be refused
again, and loop; the operator sets it one poll interval on after such a refusal.

The trigger is read-only and owns nothing: it can be cancelled, moved to another triggerer or run
twice. Its kwargs are plain values; the API key is looked up inside :meth:`run`, never serialized.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_provider_prime import events
from airflow_provider_prime.exceptions import PrimeNoOfferError, is_transient
from airflow_provider_prime.offers import (
    OfferWish,
    choose_offer,
    describe_offer,
    nearest_offers,
)
from airflow_provider_prime.triggers.availability import watch_offers
from airflow_provider_prime.triggers.polling import connection_settings
from airflow_provider_prime.waiting import SYSTEM_CLOCK, Clock

#: The first words of the success event's message (the operator logs the whole line).
CAPACITY_LINE = "Capacity found"


class PrimeCapacityTrigger(BaseTrigger):
    """Wait in the triggerer until an offer fits ``wish``, or the deadline passes.

    :param wish: the :class:`~airflow_provider_prime.offers.OfferWish` as plain data (``to_dict``).
    :param deadline: wall-clock epoch seconds at which the wait gives up (``timeout`` event).
    :param poll_interval: seconds between two looks at the availability list.
    :param prime_conn_id: the connection whose availability list is watched.
    :param not_before: epoch seconds before which a fitting offer does not fire (see the module).
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
    ) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.wish = dict(wish)
        self.deadline = float(deadline)
        self.poll_interval = float(poll_interval)
        self.prime_conn_id = prime_conn_id
        self.not_before = None if not_before is None else float(not_before)

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "wish": self.wish,
                "deadline": self.deadline,
                "poll_interval": self.poll_interval,
                "prime_conn_id": self.prime_conn_id,
                "not_before": self.not_before,
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
                    if not is_transient(snapshot.error):
                        return events.build_failed(snapshot.error)
                    if str(snapshot.error) != failure:
                        failure = str(snapshot.error)
                        self.log.warning("Could not list the offers (the wait goes on): %s", failure)
                    continue
                failure = None
                lines = nearest_offers(snapshot.offers, wish)
                if lines != shown:
                    self.log.info(awaited_line(wish, self.deadline, self.clock.time(), lines))
                    shown = lines
                try:
                    choice = choose_offer(snapshot.offers, wish)
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
