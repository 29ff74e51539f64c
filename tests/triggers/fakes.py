"""An in-memory stand-in for AsyncPrimeClient: scripted pods, recorded calls, errors and stalls on demand."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from airflow_provider_prime.exceptions import PrimeTransientError
from airflow_provider_prime.hooks._settings import PrimeApiSettings
from airflow_provider_prime.models import PodStatus
from tests.clocks import FakeClock


class FakeApi:
    """The pods every fake client sees, plus the clients made and what they were asked."""

    def __init__(self, *pods: PodStatus) -> None:
        self.pods: dict[str, PodStatus] = {p.pod_id: p for p in pods}
        self.clients: list[FakeClient] = []
        self.errors: list[BaseException] = []  # raised by the next calls, one per call
        self.stall: asyncio.Event | None = None  # when set, calls wait for it
        self.swallow_cancel = False  # a cancelled call raises a transient error instead
        self.clock: FakeClock | None = None  # when set, each call takes ``took`` seconds of it
        self.took = 0.0

    def set(self, *pods: PodStatus) -> None:
        self.pods.update((p.pod_id, p) for p in pods)

    def client(self, settings: PrimeApiSettings) -> FakeClient:
        client = FakeClient(self, settings)
        self.clients.append(client)
        return client

    @property
    def calls(self) -> list[list[str]]:
        return [call for client in self.clients for call in client.calls]


class FakeClient:
    def __init__(self, api: FakeApi, settings: PrimeApiSettings) -> None:
        self.api = api
        self.settings = settings
        self.calls: list[list[str]] = []
        self.closed = False
        self.cancelled = 0

    async def get_pods_status(self, pod_ids: Iterable[str]) -> list[PodStatus]:
        ids = list(pod_ids)
        self.calls.append(ids)
        try:
            if self.api.stall is not None:
                await self.api.stall.wait()
            else:
                await asyncio.sleep(0)
        except asyncio.CancelledError:
            self.cancelled += 1
            if self.api.swallow_cancel:  # as code that turns a cancel into its own timeout would
                raise PrimeTransientError("timed out (the cancel was swallowed)") from None
            raise
        if self.api.clock is not None:
            self.api.clock.advance(self.api.took)
        if self.api.errors:
            raise self.api.errors.pop(0)
        return [self.api.pods[i] for i in ids if i in self.api.pods]

    async def aclose(self) -> None:
        self.closed = True
