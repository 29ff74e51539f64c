"""Helpers of the hook tests: the clients and the hook driven sync or async, their sleeps recorded."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable, Iterable
from typing import Any

from airflow_provider_prime.hooks._clients import AsyncPrimeClient, PrimeClient
from airflow_provider_prime.hooks._endpoints import whoami_request
from airflow_provider_prime.hooks._exchange import Exchange
from airflow_provider_prime.hooks._payloads import parse_identity
from airflow_provider_prime.hooks._settings import PrimeApiSettings
from airflow_provider_prime.hooks.prime import PrimeHook
from airflow_provider_prime.models import PodStatus
from airflow_provider_prime.testing import ManualClock
from tests.hooks.fakes import InMemoryAdapter, ScriptedApi, in_memory_transport


class Pauses(list[float]):
    """The sleeps a client or hook was given (its ``sleep=``/``asleep=``), recorded instead of slept.

    With a ``clock`` (a simulator's ManualClock), each sleep moves it on by as much.
    """

    def __init__(self, clock: ManualClock | None = None) -> None:
        super().__init__()
        self.clock = clock

    def sleep(self, seconds: float) -> None:
        self.append(seconds)
        if self.clock is not None:
            self.clock.advance(seconds)

    async def asleep(self, seconds: float) -> None:
        self.sleep(seconds)


class Caller:
    """Runs the sync or the async client against a fake API, in memory or over real HTTP."""

    def __init__(
        self,
        kind: str,
        api: ScriptedApi,
        settings: PrimeApiSettings,
        base_url: str | None = None,
        pauses: Pauses | None = None,
    ):
        self.kind = kind
        self.pauses = Pauses() if pauses is None else pauses
        self.api = api
        self.settings = settings
        self.over_http = base_url is not None
        if base_url is not None:
            self.settings = dataclasses.replace(settings, base_url=base_url)

    def pods(self, pod_ids: Iterable[str], **overrides: Any) -> list[PodStatus]:
        ids = list(dict.fromkeys(pod_ids))
        return self.run(lambda client: client.get_pods_status(ids), **overrides)  # type: ignore[no-any-return]

    def whoami(self, **overrides: Any) -> str | None:
        return self.run(  # type: ignore[no-any-return]
            lambda client: client.call(
                Exchange(client.settings, whoami_request(client.settings), parse_identity)
            ),
            **overrides,
        )

    def run(self, use: Callable[[Any], Any], **overrides: Any) -> Any:
        """``use(client)`` on a fresh client of this kind; awaited when the client is async."""
        settings = dataclasses.replace(self.settings, **overrides)
        if self.kind == "sync":
            adapter = None if self.over_http else InMemoryAdapter(self.api)
            with PrimeClient(settings, adapter=adapter, sleep=self.pauses.sleep) as client:
                return use(client)

        async def run() -> Any:
            transport = None if self.over_http else in_memory_transport(self.api)
            async with AsyncPrimeClient(settings, transport=transport, sleep=self.pauses.asleep) as client:
                return await use(client)

        return asyncio.run(run())


class Twin:
    """Calls a hook method, or its async twin (``a`` + name), by ``kind``: one test checks both."""

    @classmethod
    def on(cls, kind: str, pauses: Pauses, conn_id: str = "prime_default") -> Twin:
        """The hook on ``conn_id`` whose sleeps ``pauses`` records, called by ``kind``."""
        return cls(kind, PrimeHook(conn_id, sleep=pauses.sleep, asleep=pauses.asleep))

    def __init__(self, kind: str, hook: PrimeHook) -> None:
        self.kind, self.hook = kind, hook

    def __call__(self, method: str, *args: Any, **kwargs: Any) -> Any:
        if self.kind == "sync":
            return getattr(self.hook, method)(*args, **kwargs)
        return asyncio.run(getattr(self.hook, f"a{method}")(*args, **kwargs))
