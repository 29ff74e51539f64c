"""PodStatusTrigger: the deferred half of :class:`~airflow_provider_prime.sensors.pod_status.PodStatusSensor`.

It runs in the triggerer, waits on the shared poller of its connection (one request per interval
for all the pods of all waiting triggers, see :mod:`airflow_provider_prime.triggers.polling`),
judges every answer with :func:`airflow_provider_prime.readiness.assess` (the very function the
sensor's ``poke`` uses) and fires exactly one event:

* ``{"status": "success", "pods": {pod_id: handover entry}, "message": ...}``
* ``{"status": "failed", "error_type": <exception class name>, "message": ..., "pods": {...}}``
  (a pod failed, or the API refused the key or the request: no waiting can fix either)
* ``{"status": "timeout", "message": ..., "pods": {...}}`` once the absolute ``deadline`` passes.

The trigger is read-only and owns nothing: it can be cancelled at any point, moved to another
triggerer, or run twice, and it never touches the pods. Its kwargs are plain values (ids, conn id,
numbers, an epoch deadline); the API key is fetched by the hook inside :meth:`run` and never
serialized.
"""

from __future__ import annotations

import asyncio
import time
import weakref
from collections.abc import AsyncIterator, Iterable, Mapping
from datetime import datetime, timezone
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_provider_prime.exceptions import PrimeAPIError, PrimeError, PrimePodFailedError
from airflow_provider_prime.hooks.prime import PrimeApiSettings, PrimeHook
from airflow_provider_prime.models import PodStatus
from airflow_provider_prime.pod_ids import validate_pod_ids
from airflow_provider_prime.progress import ProgressThrottle
from airflow_provider_prime.readiness import (
    DEFAULT_MISSING_GRACE,
    Requirements,
    Verdict,
    assess,
    track_missing,
)
from airflow_provider_prime.triggers import polling

#: Poll interval (seconds) when none is given; the sensor passes its ``poke_interval``.
DEFAULT_POLL_INTERVAL = 15.0
#: Seconds a connection's looked-up settings serve triggers that start on the same event loop.
SETTINGS_TTL = 60.0

_settings_lookups: weakref.WeakKeyDictionary[
    asyncio.AbstractEventLoop, dict[str, tuple[float, asyncio.Task[PrimeApiSettings]]]
] = weakref.WeakKeyDictionary()


async def connection_settings(prime_conn_id: str) -> PrimeApiSettings:
    """The connection's settings, looked up at most once per :data:`SETTINGS_TTL` per event loop.

    In a triggerer every lookup is a round trip through the supervisor to the API server; when many
    sensors defer together (a backfill, a fan-out DAG) one lookup per trigger holds up the shared
    event loop at the worst moment. Triggers starting within the TTL share one lookup (in flight or
    done); a failed lookup is not kept, and a changed connection reaches new triggers within the TTL.
    """
    loop = asyncio.get_running_loop()
    lookups = _settings_lookups.setdefault(loop, {})
    entry = lookups.get(prime_conn_id)
    failed = entry is not None and entry[1].done() and entry[1].exception() is not None
    if entry is None or failed or loop.time() - entry[0] > SETTINGS_TTL:
        lookup = loop.create_task(PrimeHook(prime_conn_id).aget_settings())
        # Mark the error as seen even when every waiting trigger was cancelled before it came.
        lookup.add_done_callback(lambda task: task.cancelled() or task.exception())
        entry = lookups[prime_conn_id] = (loop.time(), lookup)
    # shield: a trigger cancelled while waiting must not cancel the lookup other triggers share.
    return await asyncio.shield(entry[1])


def is_retryable(error: BaseException) -> bool:
    """Whether waiting longer may get past ``error`` (429, 5xx, timeouts, dropped connections).

    The hook decides per error (``PrimeAPIError.retryable``); auth, request, not-found and
    configuration errors, and anything unexpected, are not worth waiting on.
    """
    return isinstance(error, PrimeAPIError) and error.retryable


def failure_event(error: BaseException, pods: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The ``failed`` event for an error; ``error_type`` lets the sensor raise the same class again."""
    if isinstance(error, PrimeError):
        error_type, message = type(error).__name__, str(error)
    else:
        error_type = PrimeError.__name__
        message = f"Unexpected error while waiting for the pods: {type(error).__name__}: {error}"
    return {"status": "failed", "error_type": error_type, "message": message, "pods": dict(pods or {})}


class PodStatusTrigger(BaseTrigger):
    """Wait in the triggerer until every pod is ready, one fails, or the deadline passes.

    :param pod_ids: the pods to wait for (validated and de-duplicated like the sensor's).
    :param deadline: absolute wall-clock deadline, epoch seconds. Set once by the sensor, so a
        triggerer restart resumes with the original deadline instead of starting a new timeout.
    :param prime_conn_id: the Airflow connection to read the API key and base URL from.
    :param poll_interval: seconds between status requests (shared with other triggers on the
        same connection; never longer than this because of sharing).
    :param wait_for_installation: require installation ``FINISHED``, not only ``ACTIVE``.
    :param require_ssh: require an SSH connection for every node.
    :param missing_grace: seconds a pod may be absent from the API's answer before the wait fails.
    :param missing_since: pod id -> epoch second it was first seen missing (carried over from the
        sensor's first check so the grace period is not restarted by deferring).
    :param not_before: epoch second before which the trigger does not poll. The sensor sets it to
        one poke interval after its own check: nothing new is due before then, and a trigger that
        fires within a second or two of the deferral can race the scheduler's bookkeeping of the
        worker that deferred (Airflow then marks the resumed task failed). Absolute, so a
        triggerer restart does not delay the wait again.
    """

    def __init__(
        self,
        *,
        pod_ids: str | Iterable[str],
        deadline: float,
        prime_conn_id: str = "prime_default",
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        wait_for_installation: bool = True,
        require_ssh: bool = True,
        missing_grace: float = DEFAULT_MISSING_GRACE,
        missing_since: Mapping[str, float] | None = None,
        not_before: float | None = None,
    ) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.pod_ids = validate_pod_ids(pod_ids)
        self.deadline = float(deadline)
        self.prime_conn_id = prime_conn_id
        self.poll_interval = float(poll_interval)
        self.requirements = Requirements(
            wait_for_installation=wait_for_installation,
            require_ssh=require_ssh,
            missing_grace=float(missing_grace),
        )
        self.missing_since = {str(k): float(v) for k, v in (missing_since or {}).items()}
        self.not_before = None if not_before is None else float(not_before)

    def serialize(self) -> tuple[str, dict[str, Any]]:
        """Plain values only; the API key is looked up again by :meth:`run`."""
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "pod_ids": list(self.pod_ids),
                "deadline": self.deadline,
                "prime_conn_id": self.prime_conn_id,
                "poll_interval": self.poll_interval,
                **self.requirements.to_kwargs(),
                "missing_since": dict(self.missing_since),
                "not_before": self.not_before,
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        """Yield exactly one event (see the module docstring), then return."""
        yield TriggerEvent(await self._wait())  # type: ignore[no-untyped-call]

    async def _wait(self) -> dict[str, Any]:
        if self.deadline <= time.time():  # e.g. the triggerer was down past the deadline
            return self._timeout_event(None, "the deadline passed before the trigger started")
        try:
            settings = await connection_settings(self.prime_conn_id)
        except Exception as exc:
            return failure_event(exc)
        if self.not_before is not None:
            await asyncio.sleep(max(0.0, min(self.not_before, self.deadline) - time.time()))
        progress = ProgressThrottle()
        verdict: Verdict | None = None
        judged: list[PodStatus] = []  # the answer ``verdict`` and ``line`` were made from
        line = ""
        api_error: BaseException | None = None  # the API's trouble since the last good answer
        async with polling.subscription(settings, self.pod_ids, self.poll_interval) as sub:
            while (remaining := self.deadline - time.time()) > 0:
                snapshot = await sub.next(remaining)
                if snapshot is None:
                    continue
                if snapshot.error is not None:
                    if not is_retryable(snapshot.error):
                        return failure_event(snapshot.error, verdict.handover() if verdict else None)
                    api_error = snapshot.error
                    if progress.due(f"API error: {snapshot.error}", time.time()):
                        self.log.warning("Prime API unavailable, still waiting: %s", snapshot.error)
                    continue
                api_error = None
                statuses = snapshot.statuses_for(self.pod_ids)
                if verdict is None or len(statuses) < len(self.pod_ids) or statuses != judged:
                    verdict = self._assess(statuses, snapshot.fetched_at)
                    judged, line = statuses, verdict.summary()
                # Otherwise the same answer with every pod in it: the same verdict (it depends on
                # nothing else), so it is not judged, nor its line built, again. With thousands of
                # waits per poll that is most of a poll's CPU, and of the objects that would live a
                # whole interval and then have to be swept by the garbage collector.
                if verdict.ready:
                    # Debug, not info: the sensor logs this line when it resumes and the triggerer
                    # logs the event, while a line per trigger at the moment thousands fire together
                    # is most of the cost of that burst (see docs/benchmarks.md).
                    self.log.debug("All pods ready: %s", line)
                    return {"status": "success", "pods": verdict.handover(), "message": line}
                if verdict.failed:
                    error = PrimePodFailedError(f"Pod wait failed: {verdict.reason}")
                    self.log.error("%s", error)
                    return failure_event(error, verdict.handover())
                if progress.due(line, time.time()):
                    self.log.info("Waiting for pods: %s", line)
        last_known = verdict.summary() if verdict else "no answer from the API yet"
        if api_error is not None:  # a timeout caused by the API must say so, not only "not ready"
            last_known += f"; the last API call failed: {api_error}"
        return self._timeout_event(verdict, last_known)

    def _assess(self, statuses: list[PodStatus], now: float) -> Verdict:
        self.missing_since = track_missing(self.missing_since, self.pod_ids, statuses, now)
        return assess(self.pod_ids, statuses, self.requirements, missing_since=self.missing_since, now=now)

    def _timeout_event(self, verdict: Verdict | None, last_known: str) -> dict[str, Any]:
        when = datetime.fromtimestamp(self.deadline, tz=timezone.utc).isoformat(timespec="seconds")
        return {
            "status": "timeout",
            "message": f"Pods not ready by the deadline {when}; last known: {last_known}",
            "pods": verdict.handover() if verdict else {},
        }
