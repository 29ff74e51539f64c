"""Shared by the capacity event trigger's tests: a sold-out-first scenario, a trigger's run
collected in a task, and the triggerer's Variable channel as the Task SDK speaks it."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from airflow.sdk.exceptions import ErrorType
from airflow.sdk.execution_time.comms import ErrorResponse, GetVariable, PutVariable, VariableResult

from airflow_provider_prime.testing import Scenario
from airflow_provider_prime.testing.offers import Offer
from airflow_provider_prime.triggers.capacity_event import PrimeCapacityEventTrigger

POLL = 0.05
EU_8X = "sim-h100-8x-eu"
US_8X = "sim-h100-8x-us"
A100_8X = "sim-a100-8x"


def capacity_scenario() -> Scenario:
    """8x H100 in the EU (sold out at first) at $2.40/h per GPU... and pricier elsewhere."""

    def offer(cloud_id: str, gpu_type: str, region: str, country: str, price: float) -> Offer:
        return Offer(
            cloud_id=cloud_id,
            gpu_type=gpu_type,
            gpu_count=8,
            socket="SXM5",
            region=region,
            country=country,
            on_demand=price,
            stock_status="Unavailable",
        )

    return Scenario(
        name="capacity",
        offers=(
            offer(EU_8X, "H100_80GB", "europe", "DE", 19.2),
            offer(US_8X, "H100_80GB", "united_states", "US", 30.0),
            offer(A100_8X, "A100_80GB", "europe", "FR", 12.0),
        ),
    )


def h100s(**wish: Any) -> PrimeCapacityEventTrigger:
    options: dict[str, Any] = {"gpu_type": "H100_80GB", "gpu_count": 8, "regions": ["europe"]}
    return PrimeCapacityEventTrigger(poll_interval=POLL, **{**options, "max_price": 20, **wish})


class Running:
    """A trigger's ``run()`` in a task, its events' payloads collected."""

    def __init__(self, trigger: PrimeCapacityEventTrigger) -> None:
        self.trigger = trigger
        self.events: list[dict[str, Any]] = []
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        async for event in self.trigger.run():
            self.events.append(event.payload)

    async def stop(self) -> None:
        # Cancel until it ends: on Python 3.10 ``asyncio.wait_for`` swallows a cancellation that
        # arrives as its inner call completes (fixed in 3.12), and a trigger that never ends on its
        # own would then run on and this stop wait forever (seen in CI on 3.10).
        while not self.task.done():
            self.task.cancel()
            await asyncio.wait([self.task], timeout=1.0)
        with contextlib.suppress(asyncio.CancelledError):
            await self.task


@contextlib.asynccontextmanager
async def running(*triggers: PrimeCapacityEventTrigger) -> AsyncIterator[list[Running]]:
    runs = [Running(t) for t in triggers]
    try:
        yield runs
    finally:
        for run in runs:
            await run.stop()


class FakeComms:
    """The triggerer's supervisor channel as far as Variables go (the Task SDK's own messages)."""

    def __init__(self) -> None:
        self.variables: dict[str, str] = {}
        self.sent: list[Any] = []

    async def asend(self, msg: Any) -> Any:
        self.sent.append(msg)
        if isinstance(msg, GetVariable):
            if msg.key not in self.variables:
                return ErrorResponse(error=ErrorType.VARIABLE_NOT_FOUND, detail={"key": msg.key})
            return VariableResult(key=msg.key, value=self.variables[msg.key])
        if isinstance(msg, PutVariable):
            assert msg.value is not None
            self.variables[msg.key] = msg.value
            return None
        raise AssertionError(f"unexpected message {msg!r}")
