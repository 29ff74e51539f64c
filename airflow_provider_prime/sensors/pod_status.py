"""PodStatusSensor: wait until Prime Intellect pods are ACTIVE, installed and reachable over SSH.

Put it in front of the task that trains on the pods. It succeeds with the pods' SSH targets as its
XCom ``return_value``, fails at once with the platform's reason when a pod breaks, and otherwise
waits, in any of Airflow's sensor modes (``poke``, ``reschedule``, or deferred to the triggerer).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any, NoReturn

from airflow.configuration import conf
from airflow.sdk import BaseSensorOperator, PokeReturnValue
from airflow.triggers.base import StartTriggerArgs

from airflow_provider_prime import events
from airflow_provider_prime._compat import START_FROM_TRIGGER, AirflowFailException, AirflowSensorTimeout
from airflow_provider_prime.exceptions import PrimeConfigError, PrimeError
from airflow_provider_prime.hooks.prime import PrimeHook
from airflow_provider_prime.models import PodStatus
from airflow_provider_prime.pod_ids import validate_pod_ids
from airflow_provider_prime.readiness import (
    DEFAULT_MISSING_GRACE,
    DEFAULT_POD_LOG_TAIL,
    READY_LINE,
    Outcome,
    PodWait,
    Requirements,
    Step,
    add_pod_logs,
    by_id,
    describe_api,
    log_reader,
)
from airflow_provider_prime.triggers.pod_status import PodStatusTrigger
from airflow_provider_prime.triggers.task_end import ends_in_triggerer
from airflow_provider_prime.waiting import (
    DEFAULT_POLL_INTERVAL,
    DEFAULT_TIMEOUT,
    DEFAULT_UNREACHABLE_TIMEOUT,
    DEFERRAL_MARGIN,
    SYSTEM_CLOCK,
    Clock,
    SyncDriver,
    first_check_after_deferral,
)

if TYPE_CHECKING:
    from airflow.sdk import Context

#: The errors Airflow's sensor loop turns into a skip under ``soft_fail`` (after deferral: any error).
_SOFT_FAIL_SKIPS = (AirflowSensorTimeout, AirflowFailException)


class PodStatusSensor(BaseSensorOperator):
    """Wait until every pod is ready; return how to reach them.

    Ready means, for every pod: status ``ACTIVE``; installation ``FINISHED`` (unless
    ``wait_for_installation=False``); an SSH connection for every node (unless
    ``require_ssh=False``). The rules live in :mod:`airflow_provider_prime.readiness` and are the
    same in every mode.

    The wait fails at once, without retries, when a pod is ``ERROR``, ``TERMINATED``, ``DELETING``
    or ``STOPPED``, when its installation fails (the message quotes the platform's
    ``installationFailure``), or when a pod stays missing from the API's answer for
    ``missing_grace`` seconds (not found, or not visible to this API key). ``UNKNOWN`` and statuses
    this version does not know keep the sensor waiting. Transient API trouble (429, 5xx, timeouts)
    is logged and waited out; a rejected key or request fails the task (Airflow's ``retries`` apply,
    so fixing the connection and letting it retry is enough).

    ``soft_fail=True`` turns a timeout and a failed pod into a skip, as Airflow's own sensors do.
    In deferrable mode Airflow also skips on any other error when ``soft_fail`` is set.

    XCom ``return_value``: ``{pod_id: {"status", "installation_status", "provider_type",
    "ssh_connections": [...], "ips": [...]}}``, one entry per node in the two lists.

    Deferred, a wait whose pods become ready ends in the triggerer: the trigger records that XCom
    and Airflow marks the task successful with no worker process (unless the task has an
    ``on_success_callback``, ``post_execute``, ``outlets`` or a custom XCom backend, which only a
    worker honours; see :mod:`airflow_provider_prime.triggers.task_end`). Failures, timeouts and
    ``soft_fail`` resume on a worker, as does ``airflow dags test``.

    :param pod_ids: one pod id or a list of them (templated). Validated at execute time: empty,
        blank or non-string ids are an error; duplicates are dropped.
    :param prime_conn_id: connection of type ``prime`` (API key in the password); without it the
        hook falls back to ``PRIME_API_KEY`` / ``PRIME_API_BASE_URL``.
    :param wait_for_installation: also wait for the image installation to finish (default).
    :param require_ssh: also wait for an SSH connection on every node (default).
    :param missing_grace: seconds a pod may be missing from the API's answer before failing.
    :param pod_log_tail: lines of a failed pod's own log (``ERROR``, or its installation failed)
        the failure message and the task log quote (default 50; 0: none). The API key is scrubbed
        from them; a log that cannot be read is said so in one clause, never hiding the failure.
    :param poke_interval: seconds between checks (default 15; also the trigger's poll interval).
    :param timeout: seconds before the wait times out (default 45 minutes).
    :param deferrable: wait in the triggerer instead of a worker slot; defaults to Airflow's
        ``[operators] default_deferrable``.
    :param start_from_trigger: start the wait in the triggerer, with no first check on a worker
        (implies ``deferrable``): a fan-out of a thousand waits then starts no worker process until
        the waits end. ``pod_ids`` is rendered in the triggerer (without the DAG's user macros).
        Airflow 3.3+ only, and not for mapped tasks (Airflow cannot start those in the triggerer
        yet); elsewhere the wait starts as with ``deferrable=True``. Arguments changed after the
        sensor is built (by a cluster policy, say) do not reach a wait started this way.
    """

    template_fields: Sequence[str] = ("pod_ids",)
    ui_color = "#d9f0e3"
    # What Airflow reads to start a task in the triggerer; set per instance by __init__. A mapped
    # task sees these class values, so it always starts on a worker.
    start_trigger_args: StartTriggerArgs | None = None
    start_from_trigger: bool = False
    #: The clock of the wait (a test gives one that it moves by hand).
    clock: Clock = SYSTEM_CLOCK

    def __init__(
        self,
        *,
        pod_ids: str | Sequence[str],
        prime_conn_id: str = PrimeHook.default_conn_name,
        wait_for_installation: bool = True,
        require_ssh: bool = True,
        missing_grace: float = DEFAULT_MISSING_GRACE,
        unreachable_timeout: timedelta | float | None = DEFAULT_UNREACHABLE_TIMEOUT,
        poke_interval: timedelta | float = DEFAULT_POLL_INTERVAL,
        timeout: timedelta | float = DEFAULT_TIMEOUT,
        deferrable: bool | None = None,
        start_from_trigger: bool = False,
        pod_log_tail: int = DEFAULT_POD_LOG_TAIL,
        **kwargs: Any,
    ) -> None:
        super().__init__(poke_interval=poke_interval, timeout=timeout, **kwargs)
        if isinstance(pod_log_tail, bool) or not isinstance(pod_log_tail, int) or pod_log_tail < 0:
            raise PrimeConfigError(
                f"pod_log_tail must be a whole number of lines, 0 or more, not {pod_log_tail!r}"
            )
        self.pod_log_tail = pod_log_tail
        self.pod_ids = pod_ids
        self.prime_conn_id = prime_conn_id
        self.requirements = Requirements(
            wait_for_installation=wait_for_installation,
            require_ssh=require_ssh,
            missing_grace=float(missing_grace),
        )
        if isinstance(unreachable_timeout, timedelta):
            unreachable_timeout = unreachable_timeout.total_seconds()
        self.unreachable_timeout = None if unreachable_timeout is None else float(unreachable_timeout)
        if deferrable is None:
            deferrable = conf.getboolean("operators", "default_deferrable", fallback=False)
        self.deferrable = deferrable or start_from_trigger
        if start_from_trigger and START_FROM_TRIGGER:
            self.start_from_trigger = True
            self.start_trigger_args = StartTriggerArgs(
                trigger_cls=f"{PodStatusTrigger.__module__}.{PodStatusTrigger.__qualname__}",
                trigger_kwargs={
                    "pod_ids": pod_ids,  # as written: the triggerer renders it
                    "deadline": None,  # the trigger's: Airflow's timeout less DEFERRAL_MARGIN
                    "timeout": self.timeout,
                    "unreachable_timeout": self.unreachable_timeout,
                    "prime_conn_id": prime_conn_id,
                    "poll_interval": self.poke_interval,
                    "end_from_trigger": ends_in_triggerer(self),
                    "pod_log_tail": pod_log_tail,
                    **self.requirements.to_kwargs(),
                },
                next_method="execute_complete",
                next_kwargs=None,
                timeout=timedelta(seconds=self.timeout + DEFERRAL_MARGIN),
            )
        self._wait: PodWait | None = None

    @cached_property
    def hook(self) -> PrimeHook:
        return PrimeHook(prime_conn_id=self.prime_conn_id)

    def execute(self, context: Context) -> Any:
        self._wait = self._begin(context)  # a bad template fails here, before any request
        # Deferrable or not, the first check runs through BaseSensorOperator.execute so soft_fail,
        # never_fail and silent_fail treat it exactly as any poke; poke() then defers (TaskDeferred
        # is a BaseException, which the sensor loop lets through).
        return super().execute(context)

    def poke(self, context: Context) -> bool | PokeReturnValue:
        """One status request for all pods, judged by :class:`~airflow_provider_prime.readiness.PodWait`.

        A step of the wait's :class:`~airflow_provider_prime.waiting.SyncDriver`, which hands the
        wait back to Airflow after one check unless the sensor holds on (see :meth:`_holding`).
        """
        if self._wait is None:  # poke() called on its own, not from execute()
            self._wait = self._begin(context)
        wait = self._wait
        ending = self._driver(wait).run(hold=lambda: self._holding(wait))
        step = ending.step
        assert step is not None  # the sync driver always checks once
        if step.outcome is Outcome.READY:
            return PokeReturnValue(is_done=True, xcom_value=step.handover)
        if step.error is not None:
            self._fail(add_pod_logs(step, log_reader(self.hook, self.pod_log_tail)).error or step.error)
        if ending.timed_out:  # our own timeout, so that it says what each pod still lacked
            self._fail(AirflowSensorTimeout(wait.timeout_message()))
        if self.deferrable:
            self._defer(wait)
        return False

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> Any:
        """Turn the trigger's one event into the task's result (or its failure)."""
        try:
            parsed = events.parse_event(event)
        except PrimeError as exc:
            self._fail(exc, resumed=True)
        if parsed["status"] == "success":
            self.log.info(READY_LINE, parsed["message"])
            return parsed["pods"]
        self._fail(events.event_error(parsed), resumed=True)

    def _begin(self, context: Context) -> PodWait:
        """The wait this task runs: ids validated, deadline and first-answer bound set.

        In poke and deferrable mode one process sees the whole wait from its start. In reschedule
        mode every poke is a new process, so the wait's start is Airflow's first reschedule date:
        the deadline does not move, and pods missing now are taken as missing since then (a pod that
        never shows up fails once the grace period has passed since the first poke, not never).
        """
        pod_ids = validate_pod_ids(self.pod_ids)
        first_poke_at: datetime | None = None
        if self.reschedule and not self.deferrable:
            first_poke_at = context["ti"].get_first_reschedule_date(context)
        started = first_poke_at.timestamp() if first_poke_at else self.clock.time()
        # A rescheduled poke exists only because an earlier one had an answer (see poke), so only
        # the first poke of a wait is bound to get one in time, and the others count as answered.
        bound = self.unreachable_timeout if first_poke_at is None else None
        return PodWait(
            pod_ids,
            self.requirements,
            self.log,
            deadline=started + self.timeout,
            api=describe_api(self.hook.get_settings().base_url, self.prime_conn_id),
            missing_since=dict.fromkeys(pod_ids, started) if first_poke_at else None,
            first_answer_by=None if bound is None else started + bound,
            answered=first_poke_at is not None,
            poll_interval=self.poke_interval,
        )

    def _driver(self, wait: PodWait) -> SyncDriver[Any, Step]:
        def fetch(deadline: float) -> dict[str, PodStatus]:
            return by_id(self.hook.get_pods_status(wait.pod_ids, deadline=deadline))

        return SyncDriver(wait, fetch, interval=self.poke_interval, clock=self.clock)

    def _holding(self, wait: PodWait) -> bool:
        """Reschedule mode keeps its poke (and the worker slot) until the API has answered once, and
        through a stretch of refusals or garbled answers after good ones.

        Each rescheduled poke is a new process and Airflow clears a task's XComs at every one, so
        nothing would tell a later poke whether the wait ever had an answer, or since when the API
        has refused it. Holding the poke makes both facts: every rescheduled poke follows an
        answer, only the first poke can fail for never reaching the API (after
        ``unreachable_timeout``), and refusals fail the wait once they outlast the grace of
        :meth:`~airflow_provider_prime.readiness.PodWait.trouble` (not never).
        """
        if not self.reschedule or self.deferrable:
            return False
        return wait.first_answer_by is not None or wait.refusing

    def _defer(self, wait: PodWait) -> NoReturn:
        now = self.clock.time()
        self.defer(
            trigger=PodStatusTrigger(
                pod_ids=wait.pod_ids,
                deadline=wait.deadline,
                prime_conn_id=self.prime_conn_id,
                poll_interval=self.poke_interval,
                missing_since=wait.missing_since,
                first_answer_by=wait.first_answer_by,
                answered=wait.answered,
                not_before=first_check_after_deferral(now, self.poke_interval),
                end_from_trigger=ends_in_triggerer(self),
                pod_log_tail=self.pod_log_tail,
                **self.requirements.to_kwargs(),
            ),
            method_name="execute_complete",
            timeout=timedelta(seconds=max(0.0, wait.deadline - now) + DEFERRAL_MARGIN),
        )

    def _fail(self, error: Exception, *, resumed: bool = False) -> NoReturn:
        """Raise ``error``; first, if Airflow will skip the task for it, log what the failure was.

        Airflow's own skip line ("Skipping due to soft_fail is set to True.") names no pod and no
        reason, so without this line a skipped wait would not say why.
        """
        skipped = self.never_fail or (self.soft_fail and (resumed or isinstance(error, _SOFT_FAIL_SKIPS)))
        if skipped:
            option = "soft_fail" if self.soft_fail else "never_fail"
            self.log.warning("Skipping the task (%s is set) instead of failing it: %s", option, error)
        raise error

    def _get_next_poke_interval(
        self, started_at: datetime | float, run_duration: Callable[[], float], poke_count: int
    ) -> float:
        """Airflow's next poke interval, cut at the deadline: the wait ends at its deadline, not after."""
        interval: float = super()._get_next_poke_interval(started_at, run_duration, poke_count)
        if self._wait is None:
            return interval
        return max(0.0, min(interval, self._wait.deadline - self.clock.time()))
