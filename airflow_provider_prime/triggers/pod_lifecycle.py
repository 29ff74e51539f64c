"""Triggers of the pod lifecycle operators: the readiness wait of a pod the task owns, and the end.

:class:`OwnedPodTrigger` is :class:`~airflow_provider_prime.triggers.pod_status.PodStatusTrigger`
(the same shared poller, readiness rules and events) plus one thing: Airflow 3.3 calls a trigger's
``on_kill`` when the triggerer drops it with its "user action" cancel, and the pod may be deleted
there. That cancel comes after a user marks the deferred task failed or successful or clears it,
but also when a live triggerer whose heartbeat went stale loses its triggers to another one, which
goes on waiting. So ``on_kill`` first asks Airflow about its own task instance
(:mod:`airflow_provider_prime.triggers.task_state`) and deletes only when Airflow says the wait was
stopped (failed, cleared, up for retry...); while the task instance is still deferred, resumed,
successful, or when no answer can be had, the pod is kept and the reaper is the backstop. The
delete itself is one short attempt per pod, all at once, well within Airflow's
``[triggerer] on_kill_timeout``. Airflow 3.1 and 3.2 never call ``on_kill`` (the teardown and the
reaper cover that path; see ``docs/lifecycle.md``). ``cleanup`` is not touched: it also runs when a
triggerer restarts or hands the trigger to another one, and the pod must live on then.

:class:`PodTerminationTrigger` waits until deleted pods are ``TERMINATED`` or gone, for
:class:`~airflow_provider_prime.operators.pod.PrimeTerminatePodOperator` in deferrable mode: the
step of :mod:`airflow_provider_prime.termination` on the async driver of
:mod:`airflow_provider_prime.waiting`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterable, Mapping
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_provider_prime import events
from airflow_provider_prime.hooks.prime import PrimeHook
from airflow_provider_prime.pod_ids import validate_pod_ids
from airflow_provider_prime.termination import TerminationWait, aask
from airflow_provider_prime.triggers.pod_status import PodStatusTrigger
from airflow_provider_prime.triggers.task_state import ask_own_state, on_kill_budget, through_cancels
from airflow_provider_prime.waiting import SYSTEM_CLOCK, AsyncDriver, Clock, ready_source


class OwnedPodTrigger(PodStatusTrigger):
    """Wait for pods this task owns; delete them when a user stops the deferred task (Airflow 3.3).

    :param terminate_on_kill: delete the pods in ``on_kill`` (when Airflow confirms the task was
        stopped); the operator sets it only for pods it owns and when ``terminate_on_failure`` is
        on. Every other argument is the status trigger's; ``answered`` defaults to True, since the
        API has just created (or shown) the pod with this connection.
    :param price_hr: the pod's price per hour, for the return value when the wait ends here
        (``end_from_trigger``): the create operator's, :func:`with_price`. The pod is the first id.
    :param offer: the offer the create chose and why, added to that return value (key ``offer``).
    """

    def __init__(
        self,
        *,
        terminate_on_kill: bool = True,
        answered: bool = True,
        price_hr: float | None = None,
        offer: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(answered=answered, **kwargs)
        self.terminate_on_kill = bool(terminate_on_kill)
        self.price_hr = None if price_hr is None else float(price_hr)
        self.offer = None if offer is None else dict(offer)

    def serialize(self) -> tuple[str, dict[str, Any]]:
        classpath, kwargs = super().serialize()
        kwargs = {**kwargs, "terminate_on_kill": self.terminate_on_kill}
        if self.end_from_trigger:
            kwargs["price_hr"] = self.price_hr
            if self.offer is not None:
                kwargs["offer"] = self.offer
        return classpath, kwargs

    def return_value(self, pods: events.Pods) -> Any:
        """The create operator's return value: the handover plus ``price_hr`` in its pod's entry."""
        value = with_price(pods, self.pod_ids[0], self.price_hr)
        if self.offer is not None and self.pod_ids[0] in value:
            value[self.pod_ids[0]] = {**value[self.pod_ids[0]], "offer": self.offer}
        return value

    async def on_kill(self) -> None:
        """Delete the pods if Airflow says the task was stopped; keep them if it is still waiting.

        Airflow 3.3 repeats its cancel at every sync of the triggerer with its supervisor (about
        once a second) until the trigger has ended, and a cancel that reaches ``on_kill`` ends it
        silently. So the work runs in a task of its own, bounded by :func:`on_kill_budget`, and
        ``on_kill`` waits for it through those repeated cancels. Never raises: whatever goes wrong
        is logged with what the backstop must do.
        """
        if not self.terminate_on_kill:
            return
        await through_cancels(self._stop_pods())

    async def _stop_pods(self) -> None:
        ask_for, delete_for = on_kill_budget()
        task_instance = getattr(self, "task_instance", None)
        state = await ask_own_state(task_instance, timeout=ask_for)
        pods = ", ".join(self.pod_ids)
        if not state.stopped:
            spare = self.log.info if state.known else self.log.warning
            spare(
                "Trigger cancelled while its task is not stopped (Airflow: %s): keeping pod(s) %s. "
                "A trigger that moved to another triggerer is cancelled here and goes on waiting there; "
                "a resumed or new try uses the pod. Should nothing use it again, the teardown or the "
                "reaper (the backstop) must delete it.",
                state.said,
                pods,
            )
            return
        self.log.warning("Task stopped while waiting (Airflow: %s): deleting pod(s) %s", state.said, pods)
        hook = PrimeHook(self.prime_conn_id)
        await asyncio.gather(*(self._delete(hook, pod_id, delete_for) for pod_id in self.pod_ids))

    async def _delete(self, hook: PrimeHook, pod_id: str, seconds: float) -> None:
        """One bounded delete attempt; its failure is logged for the reaper, never raised."""
        try:
            # The hook's deadline bounds retries and timeouts; wait_for also bounds the connection
            # lookup before the request, and a hook that overran its deadline.
            await asyncio.wait_for(hook.adelete_pod(pod_id, deadline=time.time() + seconds), seconds + 1.0)
        except Exception as exc:  # logged, never raised: Airflow would only log it less clearly
            self.log.error(
                "Could not delete pod %s within %.0f s: %s. It bills until the reaper (the backstop) "
                "deletes it; run the maintenance DAG or delete it by hand.",
                pod_id,
                seconds,
                describe_error(exc),
            )
        else:
            self.log.info("Deleted pod %s", pod_id)


def with_price(
    handover: Mapping[str, Mapping[str, Any]], pod_id: str, price_hr: float | None
) -> dict[str, Any]:
    """The create operator's return value: the sensor's handover of the pod, plus its price."""
    return {
        pid: {**entry, "price_hr": price_hr} if pid == pod_id else dict(entry)
        for pid, entry in handover.items()
    }


def describe_error(exc: BaseException) -> str:
    """``str(exc)``, or the class name for errors that say nothing (a bare ``TimeoutError``)."""
    return str(exc) or type(exc).__name__


class PodTerminationTrigger(BaseTrigger):
    """Poll deleted pods until each is ``TERMINATED`` or gone (404), or the deadline passes.

    One event of :mod:`airflow_provider_prime.events`: ``success`` with ``pods`` =
    ``{id: {"status", "terminated_at", "final"}}``, ``timeout`` with the same ``pods`` (the last
    known state), or ``failed`` when the API refuses.

    ``not_before`` (epoch seconds) holds the first check back: a deleted pod is often gone at once,
    and a trigger firing moments after its deferral races the scheduler (see
    :data:`~airflow_provider_prime.waiting.SETTLE_AFTER_DEFERRAL`).
    """

    #: The clock of the wait (a test gives one that it moves by hand); never serialized.
    clock: Clock = SYSTEM_CLOCK

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
        wait = TerminationWait(self.pod_ids, self.log, deadline=self.deadline)

        async def fetch(_: float) -> dict[str, Any]:
            return await aask(wait.pending, hook.aget_pod)

        driver = AsyncDriver(
            wait,
            ready_source(fetch),
            interval=self.poll_interval,
            clock=self.clock,
            not_before=self.not_before,
        )
        ending = await driver.run()
        if ending.timed_out or ending.step is None:
            return dict(events.build_timeout(wait.timeout_message(), wait.ends))
        if ending.step.error is not None:
            return dict(events.build_failed(ending.step.error, wait.ends))
        return dict(events.build_success(wait.ends, "every pod terminated"))
