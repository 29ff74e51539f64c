"""Triggers of the pod lifecycle operators: the readiness wait of a pod the task owns, and the end.

:class:`OwnedPodTrigger` is :class:`~airflow_provider_prime.triggers.pod_status.PodStatusTrigger`
(the same shared poller, readiness rules and events) plus one thing: when a user marks the
deferred task failed, clears it or marks it successful, Airflow 3.3 calls the trigger's
``on_kill`` and the pod is deleted there. Airflow 3.1 and 3.2 have no such hook and delete nothing
(the teardown and the reaper cover that path; see ``docs/lifecycle.md``). ``cleanup`` is not
touched: it also runs when a triggerer restarts or hands the trigger to another one, and the pod
must live on then.

:class:`PodTerminationTrigger` waits until deleted pods are ``TERMINATED`` or gone, for
:class:`~airflow_provider_prime.operators.pod.PrimeTerminatePodOperator` in deferrable mode.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterable
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_provider_prime import events
from airflow_provider_prime.exceptions import PrimeNotFoundError, is_transient
from airflow_provider_prime.hooks.prime import PrimeHook
from airflow_provider_prime.models import PodState
from airflow_provider_prime.pod_ids import validate_pod_ids
from airflow_provider_prime.triggers.pod_status import PodStatusTrigger

#: Seconds an ``on_kill`` deletion may take; Airflow 3.3 gives ``on_kill`` 30 s by default.
ON_KILL_TIMEOUT = 20.0


class OwnedPodTrigger(PodStatusTrigger):
    """Wait for pods this task owns; delete them when a user kills the deferred task (Airflow 3.3).

    :param terminate_on_kill: delete the pods in ``on_kill``; the operator sets it only for pods it
        owns and when ``terminate_on_failure`` is on. Every other argument is the status trigger's.
    """

    def __init__(self, *, terminate_on_kill: bool = True, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.terminate_on_kill = bool(terminate_on_kill)

    def serialize(self) -> tuple[str, dict[str, Any]]:
        classpath, kwargs = super().serialize()
        return classpath, {**kwargs, "terminate_on_kill": self.terminate_on_kill}

    async def on_kill(self) -> None:
        """Delete the pods: the user stopped the task that owns them (never called on a restart)."""
        if not self.terminate_on_kill:
            return
        hook = PrimeHook(self.prime_conn_id)
        for pod_id in self.pod_ids:
            self.log.warning("Task killed by a user while waiting: deleting its pod %s", pod_id)
            try:
                await asyncio.wait_for(hook.adelete_pod(pod_id), ON_KILL_TIMEOUT)
            except Exception as exc:  # logged, never raised: Airflow would only log it less clearly
                self.log.error("Could not delete pod %s (the reaper will): %s", pod_id, exc)


class PodTerminationTrigger(BaseTrigger):
    """Poll deleted pods until each is ``TERMINATED`` or gone (404), or the deadline passes.

    One event of :mod:`airflow_provider_prime.events`: ``success`` with ``pods`` =
    ``{id: {"status", "terminated_at", "final"}}``, ``timeout`` with the same ``pods`` (the last
    known state), or ``failed`` when the API refuses.

    ``not_before`` (epoch seconds) holds the first check back: a deleted pod is often gone at once,
    and a trigger firing moments after its deferral races the scheduler (see
    :data:`~airflow_provider_prime.triggers.pod_status.SETTLE_AFTER_DEFERRAL`).
    """

    def __init__(
        self,
        *,
        pod_ids: str | Iterable[str],
        deadline: float,
        prime_conn_id: str,
        poll_interval: float,
        not_before: float | None = None,
    ) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.pod_ids = validate_pod_ids(pod_ids)
        self.deadline = float(deadline)
        self.prime_conn_id = prime_conn_id
        self.poll_interval = float(poll_interval)
        self.not_before = None if not_before is None else float(not_before)

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "pod_ids": list(self.pod_ids),
                "deadline": self.deadline,
                "prime_conn_id": self.prime_conn_id,
                "poll_interval": self.poll_interval,
                "not_before": self.not_before,
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        yield TriggerEvent(await self._wait())  # type: ignore[no-untyped-call]

    async def _wait(self) -> dict[str, Any]:
        hook = PrimeHook(self.prime_conn_id)
        ends: dict[str, dict[str, Any]] = {}
        if self.not_before is not None:
            await asyncio.sleep(max(0.0, min(self.not_before, self.deadline) - time.time()))
        while True:
            for pod_id in [p for p in self.pod_ids if p not in ends or not ends[p]["final"]]:
                try:
                    ends[pod_id] = termination_state(await hook.aget_pod(pod_id))
                except PrimeNotFoundError:
                    ends[pod_id] = {"status": "GONE", "terminated_at": None, "final": True}
                except Exception as exc:
                    if not is_transient(exc):
                        return dict(events.build_failed(exc, ends))
                    self.log.warning("Prime API unavailable, still waiting for termination: %s", exc)
            if all(ends.get(p, {}).get("final") for p in self.pod_ids):
                return dict(events.build_success(ends, "every pod terminated"))
            if time.time() + self.poll_interval > self.deadline:
                waiting = ", ".join(p for p in self.pod_ids if not ends.get(p, {}).get("final"))
                return dict(events.build_timeout(f"pods not terminated in time: {waiting}", ends))
            await asyncio.sleep(self.poll_interval)


def termination_state(pod: Any) -> dict[str, Any]:
    """Where a deleted pod stands: its status, when it terminated, and whether that is the end."""
    return {
        "status": pod.status,
        "terminated_at": pod.terminated_at,
        "final": pod.status == PodState.TERMINATED.value,
    }
