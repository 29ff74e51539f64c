"""The baseline: a pod-status trigger written the way peer providers write their polling triggers.

Which pattern, precisely
------------------------
``DbtCloudRunJobTrigger.run`` (apache-airflow-providers-dbt-cloud) is the model, and most HTTP
providers' triggers look the same (Databricks, Azure Data Factory, Airflow's own ``HttpAsyncHook``
users):

* one hook per trigger, made in ``run()``;
* a ``while True`` loop: ``await hook.get_job_status(run_id)``, decide, else
  ``await asyncio.sleep(self.poll_interval)``;
* the hook call opens a fresh HTTP client session for every request and closes it afterwards
  (``DbtCloudHook.get_job_details``: ``async with aiohttp.ClientSession(headers=...) as session``),
  so nothing is shared between polls or between triggers: N waiting tasks make N requests per
  interval over N new connections.

Here the hook call makes a new ``httpx.AsyncClient`` per call the way ``httpx.AsyncClient()`` does
by default, and sends the request through the provider's own
:class:`~airflow_provider_prime.hooks._clients.AsyncPrimeClient` code. Everything else is the
provider's code too (request building, retries, response parsing,
:func:`~airflow_provider_prime.readiness.assess`, events, progress logging), so the benchmark
compares the polling architecture and nothing else.

Two variants:

* :class:`PeerStylePodStatusTrigger` (``baseline``): as a peer on httpx writes it. Every
  ``httpx.AsyncClient()`` builds a new ``ssl.SSLContext`` and loads the whole CA bundle into it
  (tens of milliseconds of CPU with OpenSSL 3), even for an ``http://`` URL.
* :class:`SharedTlsPeerStyleTrigger` (``baseline-shared-tls``): the provider's own
  :meth:`PrimeHook.aget_pods_status`, one client per call but one TLS context per process (as
  aiohttp, which the dbt hook uses, keeps one module-level default context). This is the peer
  pattern at its cheapest: what is left is one request and one connection per trigger per interval.

One deliberate kindness to both: no log line per poll (dbt's hook logs "Getting the status of job
run ..." on every call).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable

import httpx

from airflow_provider_prime import events
from airflow_provider_prime.hooks._clients import AsyncPrimeClient
from airflow_provider_prime.hooks.prime import PrimeHook
from airflow_provider_prime.models import PodStatus
from airflow_provider_prime.readiness import Outcome, describe_api
from airflow_provider_prime.triggers.pod_status import PodStatusTrigger


class PeerStylePodStatusTrigger(PodStatusTrigger):
    """Same arguments, readiness step and events as :class:`PodStatusTrigger`; polls on its own."""

    def _hook(self) -> PrimeHook:
        return _ClientPerPollHook(self.prime_conn_id)

    async def _wait(self) -> events.Event:
        if self.deadline <= time.time():
            return self._late_start()
        wait = self._pod_wait(describe_api("(per-trigger hook)", self.prime_conn_id))
        hook = self._hook()
        while time.time() < self.deadline:
            try:
                statuses = await hook.aget_pods_status(self.pod_ids)  # a new HTTP client per call
            except Exception as exc:
                step = wait.trouble(exc, time.time())
            else:
                step = wait.answer({s.pod_id: s for s in statuses}, time.time())
            if step.outcome is Outcome.READY:
                return events.build_success(step.handover, wait.summary)
            if step.error is not None:
                self.log.error("%s", step.error)
                return events.build_failed(step.error, step.handover)
            await asyncio.sleep(self.poll_interval)
        return events.build_timeout(wait.timeout_message(), wait.handover())


class _ClientPerPollHook(PrimeHook):
    """``aget_pods_status`` with a plain new ``httpx`` client per call, as a peer on httpx writes it.

    ``httpx.AsyncClient()`` builds its transport, and with it a new TLS context loaded with the
    CA bundle, on every construction; :class:`AsyncPrimeClient` otherwise reuses one per process.
    """

    async def aget_pods_status(self, pod_ids: Iterable[str]) -> list[PodStatus]:
        transport = httpx.AsyncHTTPTransport()  # what httpx.AsyncClient() makes by default
        async with AsyncPrimeClient(await self.aget_settings(), transport=transport) as client:
            return await client.get_pods_status(pod_ids)


class SharedTlsPeerStyleTrigger(PeerStylePodStatusTrigger):
    """The peer pattern on the provider's own hook call, whose per-call client reuses one TLS context.

    :meth:`PrimeHook.aget_pods_status` opens and closes one :class:`AsyncPrimeClient` per call,
    like the peers' hooks, but its TLS context is built once per process (as aiohttp does for the
    dbt hook). What remains is the cost of one request and one connection per trigger per interval.
    """

    def _hook(self) -> PrimeHook:
        return PrimeHook(self.prime_conn_id)
