"""PodStatusSensor: wait until Prime Intellect pods are ACTIVE, installed and reachable over SSH.

Put it in front of the task that trains on the pods. It succeeds with the pods' SSH targets as its
XCom ``return_value``, fails at once with the platform's reason when a pod breaks, and otherwise
waits, in any of Airflow's sensor modes (``poke``, ``reschedule``, or deferred to the triggerer).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any, NoReturn

from airflow.configuration import conf
from airflow.sdk import BaseSensorOperator, PokeReturnValue

from airflow_provider_prime._compat import AirflowSensorTimeout
from airflow_provider_prime.exceptions import ERROR_CLASSES, PrimeError, PrimePodFailedError
from airflow_provider_prime.hooks.prime import PrimeHook
from airflow_provider_prime.pod_ids import validate_pod_ids
from airflow_provider_prime.progress import ProgressThrottle
from airflow_provider_prime.readiness import (
    DEFAULT_MISSING_GRACE,
    Requirements,
    Verdict,
    assess,
    track_missing,
)
from airflow_provider_prime.triggers.pod_status import PodStatusTrigger, is_retryable

if TYPE_CHECKING:
    from airflow.sdk import Context

#: Seconds between two status checks. The API's own clients poll every 5-10 s; pods take minutes
#: to boot, so 15 s adds at most a few percent to a typical wait while halving the request rate.
DEFAULT_POKE_INTERVAL = 15.0
#: Seconds before the wait gives up. Clients report 5-20 minutes from creation to ready and allow
#: 15-20; 45 minutes leaves room for a slow provider yet stops a stuck pod long before Airflow's
#: default sensor timeout of 7 days would (the GPUs bill while it waits).
DEFAULT_TIMEOUT = 45 * 60.0


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

    :param pod_ids: one pod id or a list of them (templated). Validated at execute time: empty,
        blank or non-string ids are an error; duplicates are dropped.
    :param prime_conn_id: connection of type ``prime`` (API key in the password); without it the
        hook falls back to ``PRIME_API_KEY`` / ``PRIME_API_BASE_URL``.
    :param wait_for_installation: also wait for the image installation to finish (default).
    :param require_ssh: also wait for an SSH connection on every node (default).
    :param missing_grace: seconds a pod may be missing from the API's answer before failing.
    :param poke_interval: seconds between checks (default 15; also the trigger's poll interval).
    :param timeout: seconds before the wait times out (default 45 minutes).
    :param deferrable: wait in the triggerer instead of a worker slot; defaults to Airflow's
        ``[operators] default_deferrable``.
    """

    template_fields: Sequence[str] = ("pod_ids",)
    ui_color = "#d9f0e3"

    def __init__(
        self,
        *,
        pod_ids: str | Sequence[str],
        prime_conn_id: str = PrimeHook.default_conn_name,
        wait_for_installation: bool = True,
        require_ssh: bool = True,
        missing_grace: float = DEFAULT_MISSING_GRACE,
        poke_interval: timedelta | float = DEFAULT_POKE_INTERVAL,
        timeout: timedelta | float = DEFAULT_TIMEOUT,
        deferrable: bool | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(poke_interval=poke_interval, timeout=timeout, **kwargs)
        self.pod_ids = pod_ids
        self.prime_conn_id = prime_conn_id
        self.requirements = Requirements(
            wait_for_installation=wait_for_installation,
            require_ssh=require_ssh,
            missing_grace=float(missing_grace),
        )
        if deferrable is None:
            deferrable = conf.getboolean("operators", "default_deferrable", fallback=False)
        self.deferrable = deferrable
        self._missing_since: dict[str, float] | None = None
        self._deadline: float | None = None
        self._progress = ProgressThrottle()

    @cached_property
    def hook(self) -> PrimeHook:
        return PrimeHook(prime_conn_id=self.prime_conn_id)

    def execute(self, context: Context) -> Any:
        validate_pod_ids(self.pod_ids)  # fail on a bad template before any request
        self._deadline = time.time() + self.timeout
        # Deferrable or not, the first check runs through BaseSensorOperator.execute so soft_fail,
        # never_fail and silent_fail treat it exactly as any poke; poke() then defers (TaskDeferred
        # is a BaseException, which the sensor loop lets through).
        return super().execute(context)

    def poke(self, context: Context) -> bool | PokeReturnValue:
        """One status request for all pods, judged by :func:`~airflow_provider_prime.readiness.assess`."""
        pod_ids = validate_pod_ids(self.pod_ids)
        if self._missing_since is None:
            self._missing_since = self._missing_clock_start(context, pod_ids)
        done = self._check(pod_ids)
        if not done and self.deferrable:
            self._defer(pod_ids)
        return done

    def _check(self, pod_ids: list[str]) -> bool | PokeReturnValue:
        try:
            statuses = self.hook.get_pods_status(pod_ids)
        except PrimeError as exc:
            if not is_retryable(exc):
                raise
            self.log.warning("Prime API unavailable, will check again: %s", exc)
            return False
        now = time.time()
        self._missing_since = track_missing(self._missing_since or {}, pod_ids, statuses, now)
        verdict = assess(pod_ids, statuses, self.requirements, missing_since=self._missing_since, now=now)
        return self._decide(verdict, now)

    def _defer(self, pod_ids: list[str]) -> NoReturn:
        deadline = self._deadline if self._deadline is not None else time.time() + self.timeout
        self.defer(
            trigger=PodStatusTrigger(
                pod_ids=pod_ids,
                deadline=deadline,
                prime_conn_id=self.prime_conn_id,
                poll_interval=self.poke_interval,
                missing_since=self._missing_since,
                not_before=time.time() + self.poke_interval,
                **self.requirements.to_kwargs(),
            ),
            method_name="execute_complete",
            timeout=timedelta(seconds=self.timeout),
        )

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> Any:
        """Turn the trigger's one event into the task's result (or its failure)."""
        if not isinstance(event, dict) or event.get("status") not in ("success", "timeout", "failed"):
            raise PrimeError(f"PodStatusTrigger sent an event this sensor does not understand: {event!r}")
        message = str(event.get("message", ""))
        if event["status"] == "timeout":
            raise AirflowSensorTimeout(message)
        if event["status"] == "failed":
            raise _error_class(event.get("error_type"))(message)
        self.log.info("All pods ready: %s", message)
        return event["pods"]

    def _decide(self, verdict: Verdict, now: float) -> bool | PokeReturnValue:
        if verdict.ready:
            self.log.info("All pods ready: %s", verdict.summary())
            return PokeReturnValue(is_done=True, xcom_value=verdict.handover())
        if verdict.failed:
            raise PrimePodFailedError(f"Pod wait failed: {verdict.reason}")
        line = verdict.summary()
        if self._progress.due(line, now):
            self.log.info("Waiting for pods: %s", line)
        return False

    def _missing_clock_start(self, context: Context, pod_ids: list[str]) -> dict[str, float]:
        """Where the "missing since" clock starts for this process.

        In poke and deferrable mode one process sees the whole wait, so the clock starts empty.
        In reschedule mode every poke is a new process: pods missing now are taken as missing since
        the wait began, so a pod that never shows up fails once the grace period has passed since
        the first poke rather than never.
        """
        if not self.reschedule or self.deferrable:
            return {}
        first = context["ti"].get_first_reschedule_date(context)
        if first is None:
            return {}
        return dict.fromkeys(pod_ids, first.timestamp())


def _error_class(name: object) -> type[PrimeError]:
    """The provider exception class named by a trigger event (PrimeError for anything else)."""
    return ERROR_CLASSES.get(name, PrimeError) if isinstance(name, str) else PrimeError
