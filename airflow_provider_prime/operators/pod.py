"""Rent a pod, wait until it is really ready, give it back: the create and terminate operators.

The create operator owns the pod it makes and deletes it on every way its task can end without
success; the terminate operator is the natural teardown. The exit paths and which mechanism covers
each on which Airflow version are in ``docs/lifecycle.md``; in short:

* the wait fails or times out (any mode), an error after the pod exists: ``execute`` /
  ``execute_complete`` delete it before raising;
* the worker is told to stop (SIGTERM, ``execution_timeout``): ``on_kill``;
* the deferral times out, or the trigger crashes: ``resume_execution`` (Airflow calls it with
  ``__fail__`` instead of ``execute_complete``);
* a user marks the deferred task failed or clears it: the trigger's ``on_kill`` on Airflow 3.3;
  on 3.1/3.2 nothing runs in the task, the reaper (:mod:`.reaper`) deletes the pod;
* a triggerer restart or a trigger moving to another triggerer: nothing is deleted.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime, timedelta, timezone
from functools import cached_property
from typing import TYPE_CHECKING, Any, ClassVar, Literal, NoReturn

from airflow.configuration import conf
from airflow.sdk import BaseOperator
from airflow.sdk.bases.operator import TRIGGER_FAIL_REPR

from airflow_provider_prime import events
from airflow_provider_prime._compat import AirflowSensorTimeout
from airflow_provider_prime.deployment import deployment_id
from airflow_provider_prime.exceptions import (
    PrimeConfigError,
    PrimeError,
    PrimeNotFoundError,
    PrimeRejectedError,
    is_transient,
)
from airflow_provider_prime.hooks.prime import PrimeHook
from airflow_provider_prime.models import Pod, PodRequest, PodState
from airflow_provider_prime.offers import OfferWish, choose_offer
from airflow_provider_prime.operators._values import seconds, timestamp
from airflow_provider_prime.operators.pod_names import derived_pod_name
from airflow_provider_prime.pod_ids import validate_pod_ids
from airflow_provider_prime.readiness import (
    DEFAULT_MISSING_GRACE,
    READY_LINE,
    Outcome,
    PodWait,
    Requirements,
    handover_entry,
)
from airflow_provider_prime.sensors.pod_status import DEFAULT_POKE_INTERVAL, DEFAULT_TIMEOUT
from airflow_provider_prime.triggers.pod_lifecycle import (
    OwnedPodTrigger,
    PodTerminationTrigger,
    termination_state,
)
from airflow_provider_prime.triggers.pod_status import first_poll_after_deferral

if TYPE_CHECKING:
    from airflow.sdk import Context

#: XCom key of the pod id, pushed before any wait.
POD_ID_KEY = "pod_id"
#: Seconds Airflow's deferral timeout is set past the trigger's own deadline, so the trigger's
#: timeout event (handled by ``execute_complete``, which deletes the pod) normally comes first.
DEFERRAL_GRACE = 60.0
#: Pod statuses after which a pod with our name is history, not something to adopt.
GONE_STATES = frozenset({PodState.TERMINATED.value, PodState.DELETING.value})
#: Default seconds the terminate operator waits for every pod to be TERMINATED or gone.
DEFAULT_TERMINATION_TIMEOUT = 10 * 60.0
#: Default seconds between two termination checks.
DEFAULT_TERMINATION_INTERVAL = 5.0


def _default_deferrable() -> bool:
    return conf.getboolean("operators", "default_deferrable", fallback=False)


class PrimeCreatePodOperator(BaseOperator):
    """Create (or adopt) a pod, wait until it is ready, and delete it if the task does not succeed.

    **Which pod.** Either ``request`` (a :class:`~airflow_provider_prime.models.PodRequest` or its
    fields as a dict, e.g. from a template), or an offer chosen from the availability list: by
    ``cloud_id``, or by ``gpu_type`` and ``gpu_count`` plus ``regions``, ``socket``, ``security`` and
    ``max_price``; the cheapest match wins (``multi_node=True`` looks at multi-node offers and gives
    one pod with several nodes). ``image``, ``disk_size``, ``vcpus``, ``memory``, ``env_vars`` and
    ``team_id`` complete it (the offer's defaults otherwise). Many pods: dynamic task mapping.

    **Idempotent.** The pod is named after the task instance (``(dag_id, run_id, task_id,
    map_index)``, see :mod:`.pod_names`) unless ``name`` is given. Before creating, a live pod of
    that name is adopted (``if_exists="adopt"``) or the task fails (``"fail"``), so a retry or a
    re-run of the same try never rents a second pod.

    **Handover.** The pod id goes to XCom (key ``pod_id``) and to the log before any wait. The
    return value is the sensor's (``{pod_id: {"status", "installation_status", "provider_type",
    "ssh_connections", "ips"}}``) plus ``"price_hr"`` in the pod's entry.

    **Waiting** (``wait_for_ready=True``): the readiness rules, requirements and fail-fast of
    :class:`~airflow_provider_prime.sensors.pod_status.PodStatusSensor`, in the worker or deferred
    to the triggerer (``deferrable``, default ``[operators] default_deferrable``) on the shared poller.

    **Never left billing** (``terminate_on_failure=True``): the pod is deleted on every exit but
    success. Owned are: a pod this task created; a pod adopted under the derived name (an earlier
    try's); a pod adopted under ``name`` that was created after this DAG run started. A pod named
    by the user that existed before the run is left alone unless ``terminate_preexisting=True``.

    :param timeout: seconds the wait may take (default 45 minutes), counted from when this try created
        or adopted the pod (per try, like a sensor's ``timeout`` in poke mode).
    :param poll_interval: seconds between two status checks (default 15).
    """

    template_fields: Sequence[str] = (
        "name",
        "request",
        "gpu_type",
        "gpu_count",
        "cloud_id",
        "regions",
        "socket",
        "security",
        "max_price",
        "image",
        "disk_size",
        "vcpus",
        "memory",
        "env_vars",
        "team_id",
    )
    template_fields_renderers: ClassVar[dict[str, str]] = {"request": "json", "env_vars": "json"}
    ui_color = "#c9e7f5"

    def __init__(
        self,
        *,
        gpu_type: str | None = None,
        gpu_count: int | str = 1,
        cloud_id: str | None = None,
        regions: str | Sequence[str] | None = None,
        socket: str | None = None,
        security: str | None = None,
        max_price: float | str | None = None,
        multi_node: bool = False,
        request: PodRequest | Mapping[str, Any] | None = None,
        name: str | None = None,
        image: str | None = None,
        disk_size: int | str | None = None,
        vcpus: int | str | None = None,
        memory: int | str | None = None,
        env_vars: Mapping[str, str] | None = None,
        team_id: str | None = None,
        if_exists: Literal["adopt", "fail"] = "adopt",
        wait_for_ready: bool = True,
        terminate_on_failure: bool = True,
        terminate_preexisting: bool = False,
        prime_conn_id: str = PrimeHook.default_conn_name,
        wait_for_installation: bool = True,
        require_ssh: bool = True,
        missing_grace: float = DEFAULT_MISSING_GRACE,
        poll_interval: timedelta | float = DEFAULT_POKE_INTERVAL,
        timeout: timedelta | float = DEFAULT_TIMEOUT,
        deferrable: bool | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if if_exists not in ("adopt", "fail"):
            raise PrimeConfigError(f"if_exists must be 'adopt' or 'fail', not {if_exists!r}")
        self.gpu_type, self.gpu_count, self.cloud_id = gpu_type, gpu_count, cloud_id
        self.regions, self.socket, self.security, self.max_price = regions, socket, security, max_price
        self.multi_node = multi_node
        self.request = request
        self.name = name
        self.image, self.disk_size, self.vcpus, self.memory = image, disk_size, vcpus, memory
        self.env_vars, self.team_id = env_vars, team_id
        self.if_exists = if_exists
        self.wait_for_ready = wait_for_ready
        self.terminate_on_failure = terminate_on_failure
        self.terminate_preexisting = terminate_preexisting
        self.prime_conn_id = prime_conn_id
        self.requirements = Requirements(
            wait_for_installation=wait_for_installation,
            require_ssh=require_ssh,
            missing_grace=float(missing_grace),
        )
        self.poll_interval = seconds(poll_interval)
        self.timeout = seconds(timeout)
        self.deferrable = _default_deferrable() if deferrable is None else deferrable
        # The pod this process is responsible for (set once it exists), for on_kill and failures.
        self._pod_id: str | None = None
        self._owned = False
        self._deleted = False

    @cached_property
    def hook(self) -> PrimeHook:
        return PrimeHook(prime_conn_id=self.prime_conn_id)

    # -- execute -----------------------------------------------------------------------------

    def execute(self, context: Context) -> Any:
        name = self._pod_name(context)
        pod, action = self._adopt(name, context), "adopted"
        if pod is None:
            pod, action = self._create(name), "created"
            self._pod_id, self._owned = pod.id, True
        deadline = time.time() + self.timeout
        with self._delete_on_failure():
            context["ti"].xcom_push(key=POD_ID_KEY, value=pod.id)
            self.log.info(
                "Pod %s (name %s, %s x%s, %s/h) %s; it is deleted if this task does not succeed%s.",
                pod.id,
                pod.name,
                pod.gpu_name,
                pod.gpu_count,
                pod.price_hr,
                action,
                "" if self._owned and self.terminate_on_failure else " — no: " + self._why_kept(),
            )
            if not self.wait_for_ready:
                status = pod.to_status()
                return with_price({pod.id: handover_entry(status)}, pod.id, pod.price_hr)
            if not self.deferrable:
                return self._wait_here(pod, deadline)
            trigger = OwnedPodTrigger(
                pod_ids=[pod.id],
                deadline=deadline,
                prime_conn_id=self.prime_conn_id,
                poll_interval=self.poll_interval,
                not_before=first_poll_after_deferral(self.poll_interval),
                terminate_on_kill=self._owned and self.terminate_on_failure,
                **self.requirements.to_kwargs(),
            )
        self._defer(trigger, pod, deadline)

    def _defer(self, trigger: OwnedPodTrigger, pod: Pod, deadline: float) -> NoReturn:
        self.defer(
            trigger=trigger,
            method_name="execute_complete",
            kwargs={"pod_id": pod.id, "price_hr": pod.price_hr, "owned": self._owned},
            timeout=timedelta(seconds=max(deadline - time.time(), 0.0) + DEFERRAL_GRACE),
        )

    def execute_complete(
        self,
        context: Context,
        event: dict[str, Any] | None = None,
        pod_id: str = "",
        price_hr: float | None = None,
        owned: bool = False,
    ) -> Any:
        """The trigger's event: the pod's handover, or its deletion and the wait's error."""
        self._pod_id, self._owned = pod_id, owned
        with self._delete_on_failure():
            parsed = events.parse_event(event)
            if parsed["status"] != "success":
                raise events.event_error(parsed)
            self.log.info(READY_LINE, parsed["message"])
            return with_price(parsed["pods"], pod_id, price_hr)

    def resume_execution(self, next_method: str, next_kwargs: dict[str, Any] | None, context: Context) -> Any:
        """Also delete the pod when Airflow fails the deferred task itself (deferral timeout, trigger crash).

        Airflow then resumes the task with ``__fail__`` and never calls ``execute_complete``.
        """
        if next_method != TRIGGER_FAIL_REPR:
            return super().resume_execution(next_method, next_kwargs, context)
        self._recall_pod(context)
        with self._delete_on_failure():
            return super().resume_execution(next_method, next_kwargs, context)

    def on_kill(self) -> None:
        """The worker is told to stop (SIGTERM, ``execution_timeout``): delete the pod this task owns."""
        self._delete_owned("the task was killed")

    # -- the pod -----------------------------------------------------------------------------

    def _pod_name(self, context: Context) -> str:
        if self.name is not None:
            if not isinstance(self.name, str) or not self.name.strip():
                raise PrimeConfigError(f"name must be a non-empty string, not {self.name!r}")
            return self.name.strip()
        if self._request_name():
            return self._request_name() or ""
        ti = context["ti"]
        return derived_pod_name(ti.dag_id, ti.run_id, ti.task_id, ti.map_index, deployment=deployment_id())

    def _request_name(self) -> str | None:
        if isinstance(self.request, PodRequest):
            return self.request.name
        if isinstance(self.request, Mapping) and isinstance(self.request.get("name"), str):
            return str(self.request["name"])
        return None

    def _adopt(self, name: str, context: Context) -> Pod | None:
        """The live pod of that name (the oldest if several), owned or not; None if there is none."""
        live = [p for p in self.hook.find_pods_by_name(name) if p.status not in GONE_STATES]
        if not live:
            return None
        live.sort(key=lambda p: p.created_at or "")
        pod = live[0]
        if self.if_exists == "fail":
            raise PrimeConfigError(
                f"A pod named {name!r} exists already ({pod.id}, {pod.status}) and if_exists='fail'"
            )
        self._pod_id, self._owned = pod.id, self._owns(pod, name, context)
        for extra in live[1:]:
            self.log.warning("Another live pod is named %s: %s (%s)", name, extra.id, extra.status)
        self.log.info("Adopting the existing pod %s named %s (%s)", pod.id, name, pod.status)
        return pod

    def _owns(self, pod: Pod, name: str, context: Context) -> bool:
        """Whether a pod found by name is this task's: see the class docstring."""
        if self.terminate_preexisting or (self.name is None and self._request_name() is None):
            return True
        created, started = timestamp(pod.created_at), context["dag_run"].start_date
        return created is not None and started is not None and created >= started

    def _why_kept(self) -> str:
        if not self.terminate_on_failure:
            return "terminate_on_failure=False"
        return "it existed before this DAG run (terminate_preexisting=True would delete it)"

    def _create(self, name: str) -> Pod:
        request = self._build_request(name)
        self.log.info(
            "Creating pod %s: %s x%s on %s", name, request.gpu_type, request.gpu_count, request.cloud_id
        )
        try:
            pod = self.hook.create_pod(request)
        except PrimeRejectedError:
            raise  # refused: nothing was created
        except Exception:
            self._delete_by_name(name)  # the answer was lost and the hook could not find the pod either
            raise
        return pod

    def _build_request(self, name: str) -> PodRequest:
        if self.request is not None:
            fields = self.request.model_dump() if isinstance(self.request, PodRequest) else dict(self.request)
            return PodRequest.model_validate({**fields, "name": name})
        if not self.gpu_type and not self.cloud_id:
            raise PrimeConfigError("Give gpu_type (and gpu_count), a cloud_id, or a full request")
        regions = (self.regions,) if isinstance(self.regions, str) else tuple(self.regions or ())
        wish = OfferWish(
            gpu_type=self.gpu_type,
            gpu_count=int(self.gpu_count),
            cloud_id=self.cloud_id,
            regions=regions,
            socket=self.socket,
            security=self.security,
            max_price=None if self.max_price in (None, "") else float(self.max_price),
            multi_node=self.multi_node,
        )
        offers = self.hook.list_gpu_offers(
            gpu_type=self.gpu_type,
            gpu_count=int(self.gpu_count),
            regions=list(regions) or None,
            multi_node=self.multi_node,
        )
        offer = choose_offer(offers, wish)
        return PodRequest.from_offer(
            offer,
            name=name,
            image=self.image,
            disk_size=None if self.disk_size in (None, "") else int(self.disk_size),
            vcpus=None if self.vcpus in (None, "") else int(self.vcpus),
            memory=None if self.memory in (None, "") else int(self.memory),
            env_vars=dict(self.env_vars) if self.env_vars else None,
            team_id=self.team_id or None,
            max_price=wish.max_price,
        )

    # -- waiting in the worker ---------------------------------------------------------------

    def _wait_here(self, pod: Pod, deadline: float) -> dict[str, Any]:
        """The sensor's wait in this worker: one :class:`PodWait` step per answer or error."""
        wait = PodWait([pod.id], self.requirements, self.log, deadline=deadline)
        while True:
            try:
                statuses = self.hook.get_pods_status(wait.pod_ids, deadline=deadline)
            except PrimeError as exc:
                step = wait.trouble(exc, time.time())
            else:
                step = wait.answer({s.pod_id: s for s in statuses}, time.time())
            if step.outcome is Outcome.READY:
                return with_price(step.handover, pod.id, pod.price_hr)
            if step.error is not None:
                raise step.error
            if time.time() >= deadline:
                raise AirflowSensorTimeout(f"Pod {pod.id}: {wait.timeout_message()}")
            time.sleep(min(self.poll_interval, max(deadline - time.time(), 0.0)))

    # -- clean-up ----------------------------------------------------------------------------

    @contextlib.contextmanager
    def _delete_on_failure(self) -> Iterator[None]:
        try:
            yield
        except BaseException as exc:
            self._delete_owned(f"{type(exc).__name__}: {exc}")
            raise

    def _delete_owned(self, why: str) -> None:
        """Delete the pod if this task owns it and is to clean up; never raises (the cause matters more)."""
        pod_id = self._pod_id
        if pod_id is None or self._deleted:
            return
        if not (self._owned and self.terminate_on_failure):
            self.log.warning("Leaving pod %s running (%s): %s", pod_id, self._why_kept(), why)
            return
        self._deleted = True
        self.log.warning("Deleting pod %s: the task did not succeed (%s)", pod_id, why)
        try:
            self.hook.delete_pod(pod_id)
        except Exception as exc:
            self.log.error("Could not delete pod %s (a teardown or the reaper must): %s", pod_id, exc)

    def _delete_by_name(self, name: str) -> None:
        if not self.terminate_on_failure:
            return
        with contextlib.suppress(Exception):
            for pod in self.hook.find_pods_by_name(name):
                if pod.status not in GONE_STATES:
                    self._pod_id, self._owned = pod.id, True
                    self._delete_owned("its create call failed")

    def _recall_pod(self, context: Context) -> None:
        """After ``__fail__``: the pod id from this try's XCom, its ownership from the pod itself."""
        ti = context["ti"]
        pod_id = ti.xcom_pull(task_ids=ti.task_id, key=POD_ID_KEY, map_indexes=ti.map_index)
        if not isinstance(pod_id, str):
            return
        self._pod_id = pod_id
        try:
            pod = self.hook.get_pod(pod_id)
        except PrimeNotFoundError:
            self._deleted = True  # gone already
            return
        except Exception:  # cannot look: decide from the name alone
            self._owned = self.name is None and self._request_name() is None
            return
        self._owned = self._owns(pod, pod.name or "", context)


def with_price(
    handover: Mapping[str, Mapping[str, Any]], pod_id: str, price_hr: float | None
) -> dict[str, Any]:
    """The create operator's return value: the sensor's handover of the pod, plus its price."""
    return {
        pid: {**entry, "price_hr": price_hr} if pid == pod_id else dict(entry)
        for pid, entry in handover.items()
    }


def collect_pod_ids(value: Any) -> list[str]:
    """Pod ids from what a template gives: an id, a list, the create operator's return value
    (a dict keyed by pod id) or a mapped create's list of them; ``None`` entries are skipped."""
    if value is None:
        return []
    if isinstance(value, str):
        return validate_pod_ids(value)
    if isinstance(value, Mapping):
        return validate_pod_ids(list(value))
    if isinstance(value, (list, tuple)) or hasattr(value, "__iter__"):
        ids = [pod_id for item in value for pod_id in collect_pod_ids(item)]
        return validate_pod_ids(ids) if ids else []
    return validate_pod_ids(value)


class PrimeTerminatePodOperator(BaseOperator):
    """Delete pods, wait until they are gone, and report what each one cost.

    ``pod_ids`` (templated): one id, a list, the create operator's ``output`` or
    ``output["pod_id"]``, or those of a mapped create. Idempotent: a pod that is gone or terminated
    already counts as done. Works as a teardown::

        create >> train >> terminate.as_teardown(setups=create)

    Returns and logs, per pod: ``{"name", "status", "created_at", "terminated_at", "hours",
    "price_hr", "cost"}`` (cost = ``priceHr`` times hours from creation to termination, ``None`` when
    the API did not say). Fails, after trying every pod, if one could not be deleted.

    :param wait_for_termination: wait until each pod is ``TERMINATED`` or gone (default).
    :param deferrable: wait in the triggerer (default ``[operators] default_deferrable``).
    """

    template_fields: Sequence[str] = ("pod_ids",)
    ui_color = "#f5d9c9"

    def __init__(
        self,
        *,
        pod_ids: Any,
        prime_conn_id: str = PrimeHook.default_conn_name,
        wait_for_termination: bool = True,
        poll_interval: timedelta | float = DEFAULT_TERMINATION_INTERVAL,
        timeout: timedelta | float = DEFAULT_TERMINATION_TIMEOUT,
        deferrable: bool | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.pod_ids = pod_ids
        self.prime_conn_id = prime_conn_id
        self.wait_for_termination = wait_for_termination
        self.poll_interval = seconds(poll_interval)
        self.timeout = seconds(timeout)
        self.deferrable = _default_deferrable() if deferrable is None else deferrable

    @cached_property
    def hook(self) -> PrimeHook:
        return PrimeHook(prime_conn_id=self.prime_conn_id)

    def execute(self, context: Context) -> Any:
        pod_ids = collect_pod_ids(self.pod_ids)
        if not pod_ids:
            self.log.info("No pods to terminate")
            return {}
        before: dict[str, dict[str, Any]] = {}
        failures: list[str] = []
        for pod_id in pod_ids:
            try:
                before[pod_id] = self._delete(pod_id)
            except PrimeError as exc:
                failures.append(f"{pod_id}: {exc}")
        deleted = [p for p in pod_ids if p in before]
        if self.wait_for_termination and deleted and self.deferrable:
            self.defer(
                trigger=PodTerminationTrigger(
                    pod_ids=deleted,
                    deadline=time.time() + self.timeout,
                    prime_conn_id=self.prime_conn_id,
                    poll_interval=self.poll_interval,
                    not_before=first_poll_after_deferral(0.0),
                ),
                method_name="execute_complete",
                kwargs={"before": before, "failures": failures},
                timeout=timedelta(seconds=self.timeout + DEFERRAL_GRACE),
            )
        ends = self._wait_here(deleted) if self.wait_for_termination else {}
        return self._report(before, ends, failures)

    def execute_complete(
        self,
        context: Context,
        event: dict[str, Any] | None = None,
        before: dict[str, dict[str, Any]] | None = None,
        failures: list[str] | None = None,
    ) -> Any:
        parsed = events.parse_event(event)
        failures = list(failures or [])
        if parsed["status"] != "success":
            failures.append(parsed["message"])
        return self._report(dict(before or {}), parsed["pods"], failures)

    def _delete(self, pod_id: str) -> dict[str, Any]:
        """Delete one pod (gone already is fine); what is known of it beforehand."""
        try:
            pod = self.hook.get_pod(pod_id)
        except PrimeNotFoundError:
            self.log.info("Pod %s is gone already", pod_id)
            return {"name": None, "status": "GONE", "created_at": None, "price_hr": None}
        if pod.status != PodState.TERMINATED.value:
            self.hook.delete_pod(pod_id)
            self.log.info("Deleted pod %s (%s, was %s)", pod_id, pod.name, pod.status)
        return {
            "name": pod.name,
            "status": pod.status,
            "created_at": pod.created_at,
            "terminated_at": pod.terminated_at,
            "price_hr": pod.price_hr,
        }

    def _wait_here(self, pod_ids: list[str]) -> dict[str, dict[str, Any]]:
        deadline = time.time() + self.timeout
        ends: dict[str, dict[str, Any]] = {}
        while True:
            for pod_id in [p for p in pod_ids if not ends.get(p, {}).get("final")]:
                try:
                    ends[pod_id] = termination_state(self.hook.get_pod(pod_id))
                except PrimeNotFoundError:
                    ends[pod_id] = {"status": "GONE", "terminated_at": None, "final": True}
                except PrimeError as exc:
                    if not is_transient(exc):
                        raise
                    self.log.warning("Prime API unavailable, still waiting for termination: %s", exc)
            if all(ends.get(p, {}).get("final") for p in pod_ids) or time.time() >= deadline:
                return ends
            time.sleep(self.poll_interval)

    def _report(
        self, before: dict[str, dict[str, Any]], ends: dict[str, dict[str, Any]], failures: list[str]
    ) -> dict[str, dict[str, Any]]:
        now = datetime.now(timezone.utc)
        report: dict[str, dict[str, Any]] = {}
        for pod_id, known in before.items():
            end = ends.get(pod_id, {})
            terminated_at = end.get("terminated_at") or known.get("terminated_at")
            created, finished = timestamp(known.get("created_at")), timestamp(terminated_at) or now
            hours = None if created is None else max((finished - created).total_seconds(), 0.0) / 3600
            price = known.get("price_hr")
            cost = None if hours is None or price is None else round(price * hours, 6)
            report[pod_id] = {
                "name": known.get("name"),
                "status": end.get("status") or known.get("status"),
                "created_at": known.get("created_at"),
                "terminated_at": terminated_at,
                "hours": None if hours is None else round(hours, 6),
                "price_hr": price,
                "cost": cost,
            }
            self.log.info(
                "Pod %s (%s): %s, lived %s h at %s/h, cost %s",
                pod_id,
                known.get("name"),
                report[pod_id]["status"],
                report[pod_id]["hours"],
                price,
                cost,
            )
        unfinished = [p for p in before if ends and not ends.get(p, {}).get("final")]
        if unfinished:
            failures.append(f"not terminated within {self.timeout:.0f}s: {', '.join(unfinished)}")
        if failures:
            raise PrimeError("Could not terminate every pod: " + "; ".join(failures))
        return report
