"""PodStatusTrigger: the deferred half of :class:`~airflow_provider_prime.sensors.pod_status.PodStatusSensor`.

It runs in the triggerer on the async driver of :mod:`airflow_provider_prime.waiting`: its checks are
the answers of the shared poller of its connection (:mod:`airflow_provider_prime.triggers.polling`),
judged by :class:`airflow_provider_prime.readiness.PodWait` (the very step the sensor's ``poke``
takes), and it fires exactly one event of :mod:`airflow_provider_prime.events`: ``success`` with the
handover, ``failed`` with the step's error, or ``timeout`` once the absolute ``deadline`` passes.

A wait can also start here without a worker (``start_from_trigger``, Airflow 3.3+): ``pod_ids`` are
then as the DAG wrote them (rendered by the triggerer, validated by :meth:`PodStatusTrigger.run`),
and the deadline is Airflow's own trigger timeout less
:data:`~airflow_provider_prime.waiting.DEFERRAL_MARGIN`, kept in the database with the trigger.

A successful wait ends the task right here when the operator allows it (``end_from_trigger``,
:mod:`airflow_provider_prime.triggers.task_end`): the return value goes to XCom and no worker
resumes the task. Every other ending, and a success that cannot end here, is the event above.

The trigger is read-only and owns nothing: it can be cancelled, moved to another triggerer or run
twice. Its kwargs are plain values; the API key is looked up inside :meth:`run`, never serialized.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterable, Mapping
from datetime import datetime, timezone
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_provider_prime import events
from airflow_provider_prime.exceptions import PrimeConfigError, PrimeError
from airflow_provider_prime.hooks._settings import PrimeApiSettings
from airflow_provider_prime.pod_ids import validate_pod_ids
from airflow_provider_prime.readiness import (
    DEFAULT_MISSING_GRACE,
    DEFAULT_POD_LOG_TAIL,
    READY_LINE,
    AsyncLogReader,
    Outcome,
    PodWait,
    Requirements,
    StatusAnswer,
    aadd_pod_logs,
    alog_reader,
    describe_api,
)
from airflow_provider_prime.triggers import polling
from airflow_provider_prime.triggers.polling import connection_settings
from airflow_provider_prime.triggers.task_end import end_task
from airflow_provider_prime.waiting import (
    DEFAULT_POLL_INTERVAL,
    DEFERRAL_MARGIN,
    SYSTEM_CLOCK,
    AsyncDriver,
    AsyncFetch,
    Clock,
)


class PodStatusTrigger(BaseTrigger):
    """Wait in the triggerer until every pod is ready, one fails, or the deadline passes.

    :param pod_ids: the pods to wait for (validated and de-duplicated like the sensor's).
    :param deadline: absolute wall-clock deadline, epoch seconds. Set once by the sensor, so a
        triggerer restart resumes with the original deadline instead of starting a new timeout.
        ``None`` for a wait started in the triggerer (see the module docstring): ``pod_ids`` is
        then unrendered, and ``timeout`` and ``unreachable_timeout`` (seconds) stand for the
        absolute ``deadline`` and ``first_answer_by``.
    :param prime_conn_id: the Airflow connection to read the API key and base URL from.
    :param poll_interval: seconds between status requests (shared with other triggers on the
        same connection; never longer than this because of sharing).
    :param wait_for_installation: require installation ``FINISHED``, not only ``ACTIVE``.
    :param require_ssh: require an SSH connection for every node.
    :param missing_grace: seconds a pod may be absent from the API's answer before the wait fails.
    :param missing_since: pod id -> epoch second it was first seen missing (carried over from the
        sensor's first check so the grace period is not restarted by deferring).
    :param first_answer_by: epoch second by which the API must have answered this wait once;
        ``None`` when it has already (or for no such bound). Set by the sensor from its
        ``unreachable_timeout``; past it, a wait that never got an answer fails.
    :param answered: the API has already given this wait a good answer (the sensor's first check,
        the create operator's create). A refusal or a garbled answer of the shared status request
        is then trouble to ride out for a grace period
        (:func:`~airflow_provider_prime.readiness.trouble_grace`), not a verdict on the pods: it
        would otherwise fail every wait of the poller at once.
    :param not_before: epoch second before which the trigger does not poll. The sensor sets it to
        one poke interval after its own check
        (:func:`~airflow_provider_prime.waiting.first_check_after_deferral`, at least
        :data:`~airflow_provider_prime.waiting.SETTLE_AFTER_DEFERRAL`): nothing new is due before
        then, and a trigger that fires within a second or two of the deferral can race the
        scheduler's bookkeeping of the worker that deferred (Airflow then marks the resumed task
        failed). Absolute, so a triggerer restart does not delay the wait again.
    :param end_from_trigger: on success, record the task's return value (what the operator's
        ``execute_complete`` returns, :meth:`return_value`) and end the task here, with no worker
        (see :mod:`~airflow_provider_prime.triggers.task_end`; the operator decides with
        :func:`~airflow_provider_prime.triggers.task_end.ends_in_triggerer`). Outside a triggerer
        (``airflow dags test``) or when the push fails, the success event is sent as without it.
    :param pod_log_tail: lines of a failed pod's own log (``ERROR``, or its installation failed)
        the failed event's message quotes (default 50; 0: none); bounded in size
        (:data:`~airflow_provider_prime.readiness.POD_LOG_CHARS` per pod, at most
        :data:`~airflow_provider_prime.readiness.POD_LOGS_QUOTED` pods) as the event is stored.
    """

    #: The clock of the wait (a test gives one that it moves by hand); never serialized.
    clock: Clock = SYSTEM_CLOCK

    def __init__(
        self,
        *,
        pod_ids: str | Iterable[str],
        deadline: float | None,
        prime_conn_id: str = "prime_default",
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        wait_for_installation: bool = True,
        require_ssh: bool = True,
        missing_grace: float = DEFAULT_MISSING_GRACE,
        missing_since: Mapping[str, float] | None = None,
        first_answer_by: float | None = None,
        not_before: float | None = None,
        timeout: float | None = None,
        unreachable_timeout: float | None = None,
        answered: bool = False,
        end_from_trigger: bool = False,
        pod_log_tail: int = DEFAULT_POD_LOG_TAIL,
    ) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.starts_here = deadline is None
        # Started in the triggerer: Airflow renders pod_ids after __init__; run() validates them.
        self.pod_ids: Any = pod_ids if self.starts_here else validate_pod_ids(pod_ids)
        self.deadline = 0.0 if deadline is None else float(deadline)
        self.timeout = None if timeout is None else float(timeout)
        self.unreachable_timeout = None if unreachable_timeout is None else float(unreachable_timeout)
        self.prime_conn_id = prime_conn_id
        self.poll_interval = float(poll_interval)
        self.requirements = Requirements(
            wait_for_installation=wait_for_installation,
            require_ssh=require_ssh,
            missing_grace=float(missing_grace),
        )
        self.missing_since = {str(k): float(v) for k, v in (missing_since or {}).items()}
        self.first_answer_by = None if first_answer_by is None else float(first_answer_by)
        self.not_before = None if not_before is None else float(not_before)
        self.answered = bool(answered)
        self.end_from_trigger = bool(end_from_trigger)
        self.pod_log_tail = max(0, int(pod_log_tail))

    def serialize(self) -> tuple[str, dict[str, Any]]:
        """Plain values only; the API key is looked up again by :meth:`run`."""
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "pod_ids": self.pod_ids,
                "deadline": None if self.starts_here else self.deadline,
                "prime_conn_id": self.prime_conn_id,
                "poll_interval": self.poll_interval,
                **self.requirements.to_kwargs(),
                "missing_since": dict(self.missing_since),
                "first_answer_by": self.first_answer_by,
                "not_before": self.not_before,
                "answered": self.answered,
                **self._start_kwargs(),
                **self._end_kwargs(),
                **self._log_kwargs(),
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        """Yield exactly one event (see the module docstring), then return."""
        event = await self._wait()
        if event["status"] == "success" and self.end_from_trigger:
            ended = await end_task(self, self.return_value(event["pods"]))
            if ended is not None:
                # The line the operator's execute_complete logs; this trigger's log is the task's.
                self.log.info(READY_LINE, event["message"])
                yield ended
                return
        yield TriggerEvent(event)  # type: ignore[no-untyped-call]

    def return_value(self, pods: events.Pods) -> Any:
        """The task's XCom for a successful wait: the handover, as the sensor's ``execute_complete``."""
        return pods

    def _end_kwargs(self) -> dict[str, Any]:
        """``end_from_trigger`` when set (left out otherwise, as a trigger of an older release had it)."""
        return {"end_from_trigger": True} if self.end_from_trigger else {}

    def _log_kwargs(self) -> dict[str, Any]:
        """``pod_log_tail`` unless the default (left out then, as an older release's trigger had it)."""
        return {} if self.pod_log_tail == DEFAULT_POD_LOG_TAIL else {"pod_log_tail": self.pod_log_tail}

    def _log_reader(self) -> AsyncLogReader | None:
        """How a failed wait reads a pod's log tail (None: ``pod_log_tail=0``)."""
        from airflow_provider_prime.hooks.prime import PrimeHook  # only a failed wait needs it

        return alog_reader(PrimeHook(self.prime_conn_id), self.pod_log_tail)

    def _start_kwargs(self) -> dict[str, Any]:
        """The kwargs only a wait started in the triggerer has (none for one a worker deferred)."""
        if self.timeout is None:
            return {}
        return {"timeout": self.timeout, "unreachable_timeout": self.unreachable_timeout}

    def _start_here(self) -> None:
        """A wait started in the triggerer: its rendered ids, and its deadlines from Airflow's
        trigger timeout (``timeout_after``, which the triggerer sets before running it)."""
        timeout_after: datetime | None = getattr(self, "timeout_after", None)
        if timeout_after is None or self.timeout is None:
            raise PrimeConfigError("PodStatusTrigger started with neither a deadline nor a timeout")
        if timeout_after.tzinfo is None:
            timeout_after = timeout_after.replace(tzinfo=timezone.utc)
        self.pod_ids = validate_pod_ids(self.pod_ids)
        self.deadline = timeout_after.timestamp() - DEFERRAL_MARGIN
        if self.unreachable_timeout is not None:
            self.first_answer_by = self.deadline - self.timeout + self.unreachable_timeout
        self.starts_here = False

    async def _wait(self) -> events.Event:
        if self.starts_here:
            try:
                self._start_here()
            except PrimeError as exc:
                return events.build_failed(exc)
        if self.deadline <= self.clock.time():  # e.g. the triggerer was down past the deadline
            return self._late_start()
        try:
            settings = await connection_settings(self.prime_conn_id)
        except Exception as exc:
            return events.build_failed(exc)
        wait = self._pod_wait(describe_api(settings.base_url, self.prime_conn_id))
        driver = AsyncDriver(wait, self._source(settings), clock=self.clock, not_before=self.not_before)
        ending = await driver.run()
        step = ending.step
        if ending.timed_out or step is None:
            return events.build_timeout(wait.timeout_message(), wait.handover())
        if step.outcome is Outcome.READY:
            return events.build_success(step.handover, wait.summary)
        step = await aadd_pod_logs(step, self._log_reader())
        self.log.error("%s", step.error)
        return events.build_failed(step.error or PrimeError("the wait failed"), step.handover)

    def _source(self, settings: PrimeApiSettings) -> PollerSource:
        """The shared poller of the connection: each check is its next answer about these pods."""
        return PollerSource(settings, self.pod_ids, self.poll_interval, self.clock)

    def _late_start(self) -> events.TimeoutEvent:
        """The timeout for a trigger started past its deadline: nothing asked, nothing judged."""
        wait = self._pod_wait(self.prime_conn_id)
        return events.build_timeout(wait.timeout_message("the deadline passed before the trigger started"))

    def _pod_wait(self, api: str) -> PodWait:
        return PodWait(
            self.pod_ids,
            self.requirements,
            self.log,
            deadline=self.deadline,
            api=api,
            missing_since=self.missing_since,
            first_answer_by=self.first_answer_by,
            answered=self.answered,
            poll_interval=self.poll_interval,
            log_ready=False,  # the sensor logs it when it resumes, Airflow logs the event
        )


class PollerSource:
    """A trigger's source of facts (see :class:`~airflow_provider_prime.waiting.AsyncDriver`): its
    subscription to the connection's shared poller, each check being the next answer about its pods.

    A small class rather than nested closures: thousands of waiting triggers each keep one, so
    every object it holds alive is multiplied by them (``make bench`` measures the memory per trigger).
    """

    __slots__ = ("_clock", "_opened", "_subscription", "interval", "pod_ids", "settings")

    def __init__(self, settings: PrimeApiSettings, pod_ids: list[str], interval: float, clock: Clock) -> None:
        self.settings, self.pod_ids, self.interval, self._clock = settings, pod_ids, interval, clock
        self._opened: contextlib.AbstractAsyncContextManager[polling.Subscription] | None = None
        self._subscription: polling.Subscription | None = None

    def __call__(self) -> PollerSource:
        return self

    async def __aenter__(self) -> AsyncFetch[StatusAnswer]:
        self._opened = polling.subscription(self.settings, self.pod_ids, self.interval)
        self._subscription = await self._opened.__aenter__()
        return self.fetch

    async def __aexit__(self, *exc_info: Any) -> None:
        opened, self._opened, self._subscription = self._opened, None, None
        if opened is not None:
            await opened.__aexit__(*exc_info)

    async def fetch(self, until: float) -> StatusAnswer | None:
        sub = self._subscription
        assert sub is not None, "fetch outside the source's block"
        snapshot = await sub.next(until - self._clock.time())
        if snapshot is None:
            return None
        if snapshot.error is not None:
            raise snapshot.error  # a failed request: one answer for every wait on it
        # Whether any of these pods changed since the last answer: an unchanged answer is not
        # judged again (with thousands of waits per poll, that was most of its CPU).
        return StatusAnswer(snapshot.statuses, news=sub.take_news())
