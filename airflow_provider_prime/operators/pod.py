"""Rent a pod, wait until it is really ready, give it back: the create and terminate operators.

The create operator deletes the pod it owns on every way its task can end without success; the
terminate operator is the natural teardown. The exit paths, which mechanism covers each on which
Airflow version and the test that shows it are in ``docs/lifecycle.md``; in short:

* the wait fails or times out (any mode), an error after the pod exists: ``execute`` /
  ``execute_complete`` delete it before raising;
* the worker is told to stop (SIGTERM, ``execution_timeout``): ``on_kill`` makes one short bounded
  attempt, also while the create request is in flight (it looks the name up), and the task never
  creates after a kill; a create that returns after the kill is deleted at once;
* the deferral times out, or the trigger crashes: ``resume_execution`` (Airflow calls it with
  ``__fail__`` instead of ``execute_complete``), with the ownership the task published in XCom;
* a user marks the deferred task failed or clears it: the trigger's ``on_kill`` on Airflow 3.3;
  on 3.1/3.2 nothing runs in the task, the reaper (:mod:`.reaper`) deletes the pod;
* a triggerer restart or a trigger moving to another triggerer: nothing is deleted.

**Ownership.** A pod is this task instance's own when it carries the derived name (deployment,
DAG, run, task and map index are in it, :mod:`.pod_names`) or, for a name the user chose, when the
ownership record the operator wrote before creating it names this task instance
(:mod:`.ownership`). Only own pods are deleted (or a borrowed one with
``terminate_preexisting=True``); the create publishes the verdict in XCom (key ``pod_owned``,
``{pod_id: bool}``) and the terminate operator skips borrowed pods by it.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from functools import cached_property
from typing import TYPE_CHECKING, Any, ClassVar, Literal, NoReturn, TypeVar

from airflow.configuration import conf
from airflow.sdk import BaseOperator
from airflow.sdk.bases.operator import TRIGGER_FAIL_REPR

from airflow_provider_prime import events
from airflow_provider_prime._compat import AirflowException, AirflowSensorTimeout
from airflow_provider_prime.deployment import deployment_id, deployment_source
from airflow_provider_prime.exceptions import (
    PrimeCapacityTimeoutError,
    PrimeConfigError,
    PrimeError,
    PrimeNoOfferError,
    PrimeNotFoundError,
    PrimeRejectedError,
    PrimeResponseError,
    PrimeSoldOutError,
    is_transient,
)
from airflow_provider_prime.hooks.prime import LIST_LAG_BOUND, PrimeHook
from airflow_provider_prime.models import (
    BROKEN_STATES,
    GONE_STATES,
    GpuOffer,
    InstallationState,
    Pod,
    PodRequest,
    PodState,
)
from airflow_provider_prime.offers import (
    Choice,
    OfferWish,
    SpotPreference,
    choose_offer,
    describe_offer,
    names_in_order,
    nearest_offers,
)
from airflow_provider_prime.operators._arguments import (
    env_values,
    flag,
    price,
    request_secrets,
    seconds,
    timestamp,
    whole_number,
)
from airflow_provider_prime.operators._masking import MasksRenderedSecrets
from airflow_provider_prime.operators.ownership import (
    OwnerRecords,
    PodOwner,
    VariableOwnerRecords,
    claim,
    create_window,
)
from airflow_provider_prime.operators.pod_names import derived_pod_name, parse_derived_name
from airflow_provider_prime.pod_ids import pod_ids_from
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
    error_with_pod_logs,
    handover_entry,
    log_reader,
    pods_worth_a_log_of_event,
    trouble_grace,
)
from airflow_provider_prime.termination import GONE, TerminationWait, ask
from airflow_provider_prime.triggers.capacity import (
    PrimeCapacityTrigger,
    awaited_line,
    refusal_memory,
    without_refused,
)
from airflow_provider_prime.triggers.pod_lifecycle import OwnedPodTrigger, PodTerminationTrigger, with_price
from airflow_provider_prime.triggers.task_end import ends_in_triggerer
from airflow_provider_prime.waiting import (
    DEFAULT_POLL_INTERVAL,
    DEFAULT_TERMINATION_INTERVAL,
    DEFAULT_TERMINATION_TIMEOUT,
    DEFAULT_TIMEOUT,
    DEFERRAL_MARGIN,
    SYSTEM_CLOCK,
    Clock,
    SyncDriver,
    first_check_after_deferral,
)

if TYPE_CHECKING:
    from airflow.sdk import Context

T = TypeVar("T")

#: XCom key of the pod id, pushed before any wait.
POD_ID_KEY = "pod_id"
#: XCom key of the ownership verdict, ``{pod_id: True}`` for this task instance's own pod and
#: ``{pod_id: False}`` for a borrowed one (a user-named pod it only adopted); pushed with the id.
POD_OWNED_KEY = "pod_owned"
#: XCom key of the chosen offer and why it won (:meth:`~airflow_provider_prime.offers.Choice.summary`),
#: pushed with the pod id when the operator chose an offer (not for an adopted pod or a full request).
OFFER_KEY = "offer"
#: The last line of the PrimeNoOfferError of a capacity wait that reached its deadline.
GAVE_UP = "\nThe wait for capacity (wait_for_capacity) reached its deadline."
#: Seconds between a retry's looks at a pod list that may still lag an earlier try's create.
LIST_LAG_STEP = 5.0
#: Seconds ``on_kill`` spends on its one attempt: Airflow sends SIGKILL about 5 s after SIGTERM.
ON_KILL_BUDGET = 3.0


def _default_deferrable() -> bool:
    return conf.getboolean("operators", "default_deferrable", fallback=False)


def broken(pod: Pod) -> bool:
    """Whether ``pod`` can never become ready: ERROR or STOPPED, or its installation failed."""
    return pod.status in BROKEN_STATES or pod.installation_status == InstallationState.ERROR.value


def within(deadline: float, call: Callable[[], T]) -> T:
    """``call()``, given up at ``deadline`` (epoch seconds): ``TimeoutError`` then.

    For ``on_kill``'s name lookup, which has no deadline of its own: SIGKILL follows SIGTERM within
    seconds, and a lookup that outlives it helps nobody. The call goes on in a daemon thread.
    """
    result: list[T] = []
    failure: list[BaseException] = []

    def run() -> None:
        try:
            result.append(call())
        except BaseException as exc:
            failure.append(exc)

    worker = threading.Thread(target=run, name="prime-on-kill", daemon=True)
    worker.start()
    worker.join(max(deadline - time.time(), 0.0))
    if failure:
        raise failure[0]
    if not result:
        raise TimeoutError("no answer in time")
    return result[0]


class PrimeCreatePodOperator(MasksRenderedSecrets):
    """Create (or adopt) a pod, wait until it is ready, and delete it if the task does not succeed.

    **Which pod.** Either ``request`` (a :class:`~airflow_provider_prime.models.PodRequest` or its
    fields as a dict, e.g. from a template), or an offer chosen from the availability list: by
    ``cloud_id``, or by ``gpu_type`` and ``gpu_count`` plus ``regions``, ``socket``, ``security`` and
    ``max_price``; the cheapest match wins (``multi_node=True`` looks at multi-node offers and gives
    one pod with several nodes; templated, like the offer filters). ``image``, ``disk_size``,
    ``vcpus``, ``memory``, ``env_vars`` and ``team_id`` complete it (the offer's defaults otherwise).
    Many pods: dynamic task mapping. The environment's values are masked in Airflow's logs and in
    its Rendered Template view.

    **Idempotent.** The pod is named after the task instance and this deployment (``(deployment,
    dag_id, run_id, task_id, map_index)``, see :mod:`.pod_names`) unless ``name`` is given. Before
    creating, the live pods of that name are looked up. This task instance's own (any pod of the
    derived name, or a user-named pod whose ownership record names this task instance) is adopted
    whatever ``if_exists`` says, so a retry never rents a second pod; own pods beyond the first are
    deleted and own pods that can never become ready (ERROR, STOPPED, failed installation) are
    deleted and replaced by a fresh one. A live pod of the name that is not this task instance's is
    adopted as borrowed (``if_exists="adopt"``) or the task fails (``"fail"``). A static ``name`` on a
    mapped task is refused (every map index would share one pod): map over ``name``, template it
    with ``{{ ti.map_index }}``, or leave it unset.

    **Handover.** The pod id goes to XCom (key ``pod_id``) and to the log before any wait, with the
    ownership verdict (key ``pod_owned``, ``{pod_id: bool}``). The return value is the sensor's
    (``{pod_id: {"status", "installation_status", "provider_type", "ssh_connections", "ips"}}``)
    plus ``"price_hr"`` in the pod's entry.

    **Waiting** (``wait_for_ready=True``): the readiness rules, requirements and fail-fast of
    :class:`~airflow_provider_prime.sensors.pod_status.PodStatusSensor`, in the worker or deferred
    to the triggerer (``deferrable``, default ``[operators] default_deferrable``) on the shared poller.

    **Never left billing** (``terminate_on_failure=True``): the own pod is deleted on every exit but
    success, with its ownership record. A borrowed pod is left alone unless
    ``terminate_preexisting=True``. For a user-named pod it creates, the operator writes an
    ownership record (before the create request, then with the pod id) that the reaper reads as
    its backstop; ``terminate_on_failure=False`` writes none (nothing deletes that pod but you).

    **Fallbacks.** ``gpu_type`` and ``regions`` may be lists in order of preference; ``spot`` is
    ``"never"`` (default: a preempted training is lost work), ``"prefer"`` or ``"only"``. The rule:
    the earliest GPU type, then the earliest region, then the spot preference, then the price
    (:mod:`airflow_provider_prime.offers`). A templated list that renders to text (JSON, or Jinja's
    rendering of a Python list) is read back as the list. The chosen offer and why it won are logged,
    pushed to XCom (key ``offer``) and returned in the pod's entry (key ``offer``).

    **Waiting for capacity** (``wait_for_capacity``, off by default): when no offer fits, or the
    create is refused as sold out (:class:`~airflow_provider_prime.exceptions.PrimeSoldOutError`),
    the task waits until an offer fits, then creates through the same idempotent path as a retry
    (the name is looked up first, so nothing is created twice). Deferrable: in the triggerer
    (:class:`~airflow_provider_prime.triggers.capacity.PrimeCapacityTrigger`); otherwise in the worker,
    polling every ``poll_interval``. The log says what is awaited and the nearest offers when they
    change. At its deadline: :class:`~airflow_provider_prime.exceptions.PrimeNoOfferError` with the
    explanation. The deadline counts from the first time this try started waiting (a resumed task that
    finds the capacity gone again keeps it); the pod wait's ``timeout`` counts from the create, so the
    capacity wait does not eat it. Airflow's ``execution_timeout`` covers both.

    :param timeout: seconds the wait may take (default 45 minutes), counted from when this try created
        or adopted the pod (per try, like a sensor's ``timeout`` in poke mode).
    :param wait_for_capacity: how long to wait for an offer (a timedelta or seconds; None: fail at once).
        At its deadline: :class:`~airflow_provider_prime.exceptions.PrimeCapacityTimeoutError` (a
        ``PrimeNoOfferError`` that ``PRIME_RETRY_POLICY`` does not retry into another full wait).
    :param poll_interval: seconds between two status checks (default 15).
    :param pod_log_tail: lines of the pod's own log (``ERROR``, or its installation failed) the
        failure message quotes (default 50; 0: none). The API key and every ``env_vars`` value are
        scrubbed from them; deferred, the log is read when the task resumes in a worker (never in
        the triggerer, whose event Airflow stores), before the pod is deleted.

    **A create refused as sold out** while the list still shows the offer: that offer (its
    ``cloud_id``) is passed over for :func:`~airflow_provider_prime.triggers.capacity.refusal_memory`
    (5 minutes, or 3 poll intervals if longer) and the next choice is taken at once (a refusal made
    nothing, so the name rules hold); with ``wait_for_capacity`` the wait, in the worker or the
    triggerer, does not fire for it again until then. Without another choice and without
    ``wait_for_capacity`` the refusal (:class:`~airflow_provider_prime.exceptions.PrimeSoldOutError`)
    fails the task.
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
        "multi_node",
        "spot",
        "image",
        "disk_size",
        "vcpus",
        "memory",
        "env_vars",
        "team_id",
    )
    template_fields_renderers: ClassVar[dict[str, str]] = {"request": "json", "env_vars": "json"}
    ui_color = "#c9e7f5"
    #: The clock of the wait in the worker (a test gives one that it moves by hand).
    clock: Clock = SYSTEM_CLOCK

    def __init__(
        self,
        *,
        gpu_type: str | Sequence[str] | None = None,
        gpu_count: int | str = 1,
        cloud_id: str | None = None,
        regions: str | Sequence[str] | None = None,
        socket: str | None = None,
        security: str | None = None,
        max_price: float | str | None = None,
        multi_node: bool = False,
        spot: SpotPreference | str = "never",
        wait_for_capacity: timedelta | float | None = None,
        request: PodRequest | Mapping[str, Any] | None = None,
        name: str | None = None,
        image: str | None = None,
        disk_size: int | str | None = None,
        vcpus: int | str | None = None,
        memory: int | str | None = None,
        env_vars: Mapping[str, str] | Sequence[Mapping[str, str]] | None = None,
        team_id: str | None = None,
        if_exists: Literal["adopt", "fail"] = "adopt",
        wait_for_ready: bool = True,
        terminate_on_failure: bool = True,
        terminate_preexisting: bool = False,
        prime_conn_id: str = PrimeHook.default_conn_name,
        wait_for_installation: bool = True,
        require_ssh: bool = True,
        missing_grace: float = DEFAULT_MISSING_GRACE,
        poll_interval: timedelta | float = DEFAULT_POLL_INTERVAL,
        timeout: timedelta | float = DEFAULT_TIMEOUT,
        deferrable: bool | None = None,
        pod_log_tail: int = DEFAULT_POD_LOG_TAIL,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if isinstance(pod_log_tail, bool) or not isinstance(pod_log_tail, int) or pod_log_tail < 0:
            raise PrimeConfigError(
                f"pod_log_tail must be a whole number of lines, 0 or more, not {pod_log_tail!r}"
            )
        self.pod_log_tail = pod_log_tail
        if if_exists not in ("adopt", "fail"):
            raise PrimeConfigError(f"if_exists must be 'adopt' or 'fail', not {if_exists!r}")
        self.gpu_type, self.gpu_count, self.cloud_id = gpu_type, gpu_count, cloud_id
        self.regions, self.socket, self.security, self.max_price = regions, socket, security, max_price
        self.multi_node = multi_node
        self.spot = spot
        self.wait_for_capacity = None if wait_for_capacity is None else seconds(wait_for_capacity)
        if self.wait_for_capacity is not None and self.wait_for_capacity < 0:
            raise PrimeConfigError(f"wait_for_capacity must not be negative, got {wait_for_capacity!r}")
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
        # What this process knows, for on_kill and the failure paths.
        self._pod_id: str | None = None  # the pod it is responsible for, once known
        self._owned = False  # whether that pod is this task instance's own
        self._deleted: set[str] = set()  # pods it deleted (or is deleting)
        self._killed: str | None = None  # why on_kill was called, once it was
        self._creating: str | None = None  # the name of a create that may be in flight
        self._name: str | None = None  # the pod's name and whether it is the derived one
        self._derived = False
        self._me: PodOwner | None = None  # this task instance, as an ownership record would name it
        self._seen: set[str] = set()  # pods of the name listed before this try's create request
        self._written: PodOwner | None = None  # this try's record as written before its create request
        self._sent_before: int | None = None  # the hook's count of sent creates before this try's
        self._in_on_kill = False  # inside the SIGTERM handler: no Task SDK calls (see on_kill)
        self._records_left: set[str] = set()  # pods deleted in on_kill whose record is still to delete
        self._choice: Choice | None = None  # the offer this try chose, and why
        self._offers_seen: list[GpuOffer] = []  # what the last choice looked at
        self._refused: dict[str, float] = {}  # cloud_id -> epoch second until which it is passed over
        self._refusal: PrimeSoldOutError | None = None  # this try's last sold-out refusal

    @cached_property
    def hook(self) -> PrimeHook:
        return PrimeHook(prime_conn_id=self.prime_conn_id)

    @cached_property
    def owner_records(self) -> OwnerRecords:
        """Where the ownership records of user-named pods are kept (Airflow Variables)."""
        return VariableOwnerRecords()

    # -- rendering ---------------------------------------------------------------------------

    def secrets(self) -> Iterable[str]:
        """Every env value of ``env_vars`` and ``request`` (dict or list form), and the Jupyter password."""
        return (*env_values(self.env_vars), *request_secrets(self.request))

    # -- execute -----------------------------------------------------------------------------

    def execute(self, context: Context) -> Any:
        return self._run(context, capacity_deadline=None)

    def execute_after_capacity(
        self,
        context: Context,
        event: dict[str, Any] | None = None,
        capacity_deadline: float | None = None,
        refused_cloud_ids: Mapping[str, float] | None = None,
    ) -> Any:
        """The capacity trigger's event: create now (the same path as a first try), or give up.

        ``refused_cloud_ids``: the offers this try's creates were refused as sold out, each with the
        epoch second until which it is passed over (the trigger passed over them too)."""
        parsed = events.parse_event(event)
        if parsed["status"] == "timeout":
            raise PrimeCapacityTimeoutError(parsed["message"])
        if parsed["status"] != "success":
            raise events.event_error(parsed)
        self.log.info("%s; creating the pod now", parsed["message"])
        return self._run(context, capacity_deadline=capacity_deadline, refused=refused_cloud_ids)

    def _run(
        self, context: Context, capacity_deadline: float | None, refused: Mapping[str, float] | None = None
    ) -> Any:
        self._started_at = self.clock.time()
        self._refused = {str(k): float(v) for k, v in (refused or {}).items()}
        self.mask_secrets()  # also when a caller runs execute without Airflow's rendering
        self._know_task_instance(context)
        self._retry = int(getattr(context["ti"], "try_number", 1) or 1) > 1
        name = self._pod_name(context)
        self._check_arguments()
        self._raise_if_killed(name)
        pod, action = self._adopt(name), "adopted"
        if pod is None:
            pod, action = self._create_when_capacity(name, capacity_deadline)
        deadline = self.clock.time() + self.timeout
        with self._delete_on_failure():
            self._raise_if_killed(name)  # killed while the create was in flight: delete, never wait
            # The verdict first: a pod id pushed without it would read as a plain id, and a
            # teardown would delete a borrowed pod (a kill between the two pushes).
            context["ti"].xcom_push(key=POD_OWNED_KEY, value={pod.id: self._owned})
            context["ti"].xcom_push(key=POD_ID_KEY, value=pod.id)
            if self._choice is not None and action == "created":
                context["ti"].xcom_push(key=OFFER_KEY, value=self._choice.summary())
            else:
                self._choice = None  # an adopted pod is not the offer this try chose
            self.log.info(
                "Pod %s (name %s, %s x%s, %s/h) %s, %s; %s.",
                pod.id,
                pod.name,
                pod.gpu_name,
                pod.gpu_count,
                pod.price_hr,
                action,
                "this task instance's own" if self._owned else "borrowed",
                self._fate(),
            )
            self._raise_if_killed(pod.id)  # never hand over, or defer, a pod on_kill deleted
            if not self.wait_for_ready:
                status = pod.to_status()
                return self._handover({pod.id: handover_entry(status)}, pod.id, pod.price_hr)
            if not self.deferrable:
                return self._wait_here(pod, deadline)
            trigger = OwnedPodTrigger(
                pod_ids=[pod.id],
                deadline=deadline,
                prime_conn_id=self.prime_conn_id,
                poll_interval=self.poll_interval,
                not_before=first_check_after_deferral(self.clock.time(), self.poll_interval),
                terminate_on_kill=self._deletes(),
                # A successful wait ends in the triggerer when nothing else is due (no worker).
                end_from_trigger=ends_in_triggerer(self),
                price_hr=pod.price_hr,
                offer=self._offer_summary(),
                # Never in the triggerer: its event is stored by Airflow, and the env values to
                # scrub are not in the trigger's kwargs. execute_complete reads it (F5).
                pod_log_tail=0,
                **self.requirements.to_kwargs(),
            )
        self._defer(trigger, pod, deadline)

    def _defer(self, trigger: OwnedPodTrigger, pod: Pod, deadline: float) -> NoReturn:
        self.defer(
            trigger=trigger,
            method_name="execute_complete",
            kwargs={
                "pod_id": pod.id,
                "price_hr": pod.price_hr,
                "owned": self._owned,
                **({"offer": self._offer_summary()} if self._choice is not None else {}),
            },
            timeout=timedelta(seconds=max(deadline - self.clock.time(), 0.0) + DEFERRAL_MARGIN),
        )

    def execute_complete(
        self,
        context: Context,
        event: dict[str, Any] | None = None,
        pod_id: str = "",
        price_hr: float | None = None,
        owned: bool = False,
        offer: dict[str, Any] | None = None,
    ) -> Any:
        """The trigger's event: the pod's handover, or its deletion and the wait's error."""
        self._pod_id, self._owned = pod_id, owned
        with self._delete_on_failure():
            self._know_task_instance(context)
            self._pod_name(context)
            parsed = events.parse_event(event)
            if parsed["status"] != "success":
                raise self._with_log(events.event_error(parsed), parsed["pods"])  # read before the delete
            self.log.info(READY_LINE, parsed["message"])
            return with_offer(with_price(parsed["pods"], pod_id, price_hr), pod_id, offer)

    def _with_log(self, error: Exception, pods: Mapping[str, Mapping[str, Any]]) -> Exception:
        """A deferred wait's failure with the failed pod's log tail, read here in the worker and
        scrubbed of the key and the env values (:meth:`secrets`); unchanged when ``pod_log_tail=0``,
        the failure is not the pod's, or the message quotes a log already (a trigger of an older
        release read it)."""
        pod_ids = [p for p in pods_worth_a_log_of_event(error, pods) if f"of pod {p}" not in str(error)]
        return error_with_pod_logs(error, pod_ids, log_reader(self.hook, self.pod_log_tail, self.secrets()))

    def resume_execution(self, next_method: str, next_kwargs: dict[str, Any] | None, context: Context) -> Any:
        """Also delete the pod when Airflow fails the deferred task itself (deferral timeout, trigger crash).

        Airflow then resumes the task with ``__fail__`` (and its own ``next_kwargs``: the
        deferral's are gone) and never calls ``execute_complete``. The pod and its ownership come
        from this task instance's XCom, so no failed read can disown the pod.
        """
        if next_method != TRIGGER_FAIL_REPR:
            return super().resume_execution(next_method, next_kwargs, context)
        self._recall_pod(context)
        with self._delete_on_failure():
            return super().resume_execution(next_method, next_kwargs, context)

    def on_kill(self) -> None:
        """The worker is told to stop (SIGTERM, ``execution_timeout``): one short attempt at the pod.

        Records the kill first, so the task never creates afterwards and deletes a pod whose create
        returns after it. Then, within :data:`ON_KILL_BUDGET` seconds (SIGKILL follows SIGTERM
        within about 5): deletes the pod it owns, or, while a create is in flight that may have
        reached the server, looks the name up and deletes the pod that create provably made (never
        one that may be someone else's: with several candidates it deletes none and names them).
        What it cannot do in time is logged with who must.
        """
        self._killed = self._killed or "the task was killed (SIGTERM or execution_timeout)"
        deadline = time.time() + ON_KILL_BUDGET
        # The handler may interrupt the task inside a call to the supervisor, whose channel lock is
        # not reentrant: ownership records (Variables) wait for the task's own failure path.
        self._in_on_kill = True
        try:
            if self._pod_id is not None:
                self._delete_owned(self._killed, deadline=deadline)
            elif self._creating is not None and self._never_sent():
                self.log.info("Killed before the create of %s was sent: nothing to delete", self._creating)
            elif self._creating is not None:
                why = self._killed + " while its create was in flight"
                self._delete_by_name(self._creating, why, deadline)
        finally:
            self._in_on_kill = False

    # -- the pod -----------------------------------------------------------------------------

    def _know_task_instance(self, context: Context) -> None:
        ti = context["ti"]
        index = -1 if ti.map_index is None else int(ti.map_index)
        self._me = PodOwner(deployment_id(), ti.dag_id, ti.run_id, ti.task_id, index, name="-")
        self.log.info(
            "Deployment identity %s (%s): it is in this task's pod names and ownership records; every "
            "worker and triggerer of this deployment must show the same one",
            self._me.deployment,
            deployment_source(),
        )

    def _pod_name(self, context: Context) -> str:
        """The pod's name (derived unless given), after refusing one that map indexes would share."""
        given = self.name if self.name is not None else self._request_name()
        if given is None:
            ti = context["ti"]
            deployment = self._deployment
            name = derived_pod_name(ti.dag_id, ti.run_id, ti.task_id, ti.map_index, deployment=deployment)
            self._name, self._derived = name, True
            return name
        if not isinstance(given, str) or not given.strip():
            raise PrimeConfigError(f"name must be a non-empty string, not {given!r}")
        self._name, self._derived = given.strip(), False
        self._refuse_a_shared_name(self._name)
        return self._name

    @property
    def _deployment(self) -> str:
        if self._me is None:
            raise RuntimeError("the task instance is not known yet")
        return self._me.deployment

    def _request_name(self) -> str | None:
        if isinstance(self.request, PodRequest):
            return self.request.name
        if isinstance(self.request, Mapping) and isinstance(self.request.get("name"), str):
            return str(self.request["name"])
        return None

    def _refuse_a_shared_name(self, name: str) -> None:
        """A mapped task whose ``name`` (or request name) is the same for every map index is refused.

        One pod shared by map indexes is deleted by one index's failure under another's training.
        Static means given to ``partial()`` without a template; a template that renders the same
        for two indexes is caught by the ownership record of the other index.
        """
        if self._me is None or self._me.map_index < 0:
            return
        dag = getattr(self, "_dag", None)  # the DAG this task belongs to, if any
        mapped = dag.task_dict.get(self.task_id) if dag is not None else None
        partial = getattr(mapped, "partial_kwargs", None)
        if not isinstance(partial, Mapping):
            return
        given = partial.get("name")
        if given is None and isinstance(partial.get("request"), Mapping):
            given = partial["request"].get("name")
        elif given is None and isinstance(partial.get("request"), PodRequest):
            given = partial["request"].name
        if isinstance(given, str) and "{{" not in given and "{%" not in given:
            raise PrimeConfigError(
                f"{self.task_id} is mapped but its pod name {name!r} is the same for every map index: "
                "they would share one pod, and one index's failure would delete it under another's "
                "training. Map over name (expand(name=[...])), template it with {{ ti.map_index }}, "
                "or leave it unset for a derived name per map index."
            )

    def _own_pods(self, name: str, live: list[Pod], record: PodOwner | None) -> list[Pod]:
        """The live pods of this task's name that are provably this task instance's own.

        A derived name: all (the deployment and the task instance are in the name). A user-given
        name: the one pod this task instance's record proves (:func:`.ownership.claim`: it names
        the pod's id, or names none yet and exactly one pod was created in its create's window),
        whose id then goes into the record. Several pods that an earlier try's create may have
        made: a person must choose, the task fails naming them.
        """
        if self._derived:
            return list(live)
        if record is None or self._me is None or not record.same_task_instance(self._me):
            return []
        verdict = claim(record, live)
        if verdict.pod is None and verdict.candidates:
            raise PrimeConfigError(
                f"Pod name {name!r}: an earlier try of this task instance sent a create whose answer was "
                f"lost, and {verdict.why} ({', '.join(p.id for p in verdict.candidates)}); none was "
                "adopted or deleted. Delete the ones that are not this task's (prime pods list / prime "
                "pods terminate), then clear the task; it adopts the one left."
            )
        if verdict.pod is None:
            self.log.info("No pod of %s is provably this task instance's: %s", name, verdict.why)
            if record.pod_id is None and record.window_over(time.time()):
                with self._logged("could not delete the stale ownership record of " + name):
                    self.owner_records.delete(self._deployment, name)  # it can claim nothing any more
            return []
        if record.pod_id is None:
            with self._logged("could not write the ownership record of pod " + verdict.pod.id):
                self.owner_records.put(record.with_pod_id(verdict.pod.id))
        self.log.info("Pod %s is this task instance's own: %s", verdict.pod.id, verdict.why)
        return [verdict.pod]

    def _record(self) -> PodOwner | None:
        """The ownership record of the user-given name, if any (derived names have none)."""
        if self._derived or self._name is None:
            return None
        return self.owner_records.get(self._deployment, self._name)

    def _find(self, name: str) -> list[Pod]:
        """The pods of the name. A retry does not conclude "no live pod" before the list can show
        what an earlier try created: the list may lag a create by up to :data:`LIST_LAG_BOUND`
        seconds, and that try's create was sent before this try started. So a retry that finds
        nothing looks again until that long after its start (a pod takes minutes to boot anyway;
        with Airflow's default retry delay of five minutes it never waits)."""
        found = self.hook.find_pods_by_name(name)
        if not self._retry:
            return found
        settled_at = self._started_at + LIST_LAG_BOUND
        while not [p for p in found if p.status not in GONE_STATES]:
            now = self.clock.time()
            if now >= settled_at:
                break
            self._raise_if_killed(name)
            self.clock.sleep(min(LIST_LAG_STEP, settled_at - now))
            found = self.hook.find_pods_by_name(name)
        return found

    def _adopt(self, name: str) -> Pod | None:
        """The live pod of that name to use, or None when one is to be created.

        This task instance's own pods come first: the oldest healthy one is adopted whatever
        ``if_exists`` says, the others of a derived name are deleted (they can only be this task
        instance's, from a create whose answer was lost), and broken ones are deleted so that a
        fresh pod replaces them. Otherwise the oldest pod of the name is borrowed, or refused.
        """
        found = self._find(name)
        self._seen = {p.id for p in found}
        live = sorted((p for p in found if p.status not in GONE_STATES), key=lambda p: p.created_at or "")
        record = self._record()
        if record is not None and self._sibling(record):
            raise PrimeConfigError(
                f"Pod name {name!r} belongs to map index {record.map_index} of {record.task_id} in this "
                "run already: give each map index its own name (or leave name unset)"
            )
        own = self._own_pods(name, live, record)
        foreign_ids = {p.id for p in live if p not in own}
        for pod in [p for p in own if broken(p)]:
            state = f"{pod.status}, installation {pod.installation_status}"
            self._delete_pod(pod.id, f"it is broken ({state}): a fresh pod replaces it")
            own.remove(pod)
        if own:
            pod = own[0]
            if self.if_exists == "fail":
                self.log.info("if_exists='fail' refuses only pods that are not this task instance's own")
            for extra in own[1:]:
                if self._derived:
                    why = f"another live pod of {name}, this task instance's; {pod.id} is kept"
                    self._delete_pod(extra.id, why)
                else:
                    self.log.warning("Another live pod is named %s: %s (%s)", name, extra.id, extra.status)
            self._pod_id, self._owned = pod.id, True
            self.log.info("Adopting pod %s named %s (%s), this task instance's own", pod.id, name, pod.status)
            return pod
        foreign = [p for p in live if p.id in foreign_ids]
        if not foreign:
            return None
        pod = foreign[0]
        if self.if_exists == "fail":
            raise PrimeConfigError(
                f"A pod named {name!r} exists already ({pod.id}, {pod.status}) and is not this task "
                f"instance's; if_exists='fail' refuses it: choose another name, or if_exists='adopt'"
            )
        for extra in foreign[1:]:
            self.log.warning("Another live pod is named %s: %s (%s)", name, extra.id, extra.status)
        self._pod_id, self._owned = pod.id, False
        self.log.info("Borrowing the existing pod %s named %s (%s)", pod.id, name, pod.status)
        return pod

    def _sibling(self, record: PodOwner) -> bool:
        """Whether ``record`` names another map index of this very task in this run."""
        me = self._me
        if me is None or record.same_task_instance(me):
            return False
        return (record.dag_id, record.run_id, record.task_id) == (me.dag_id, me.run_id, me.task_id)

    def _fate(self) -> str:
        """What happens to the pod if this task does not succeed, as the log says it."""
        if self._deletes():
            return "it is deleted if this task does not succeed"
        if not self.terminate_on_failure:
            return "it is kept if this task fails (terminate_on_failure=False)"
        return "it is kept if this task fails (borrowed: terminate_preexisting=True would delete it)"

    def _deletes(self) -> bool:
        """Whether this task deletes its pod when it does not succeed."""
        return self.terminate_on_failure and (self._owned or self.terminate_preexisting)

    def _create(self, name: str) -> Pod:
        """Create the pod; for a user-given name, under an ownership record written just before.

        The record (pod id unknown yet, the time it was written and the create's window) is what
        proves the pod this task instance's if the create's answer is lost; a name another task
        instance of this deployment is using is refused first (see :meth:`_refuse_a_name_in_use`).
        """
        request = self._build_request(name)
        self._raise_if_killed(name)
        recording = not self._derived and self.terminate_on_failure
        if not self._derived and self._me is not None:
            if recording:
                self._refuse_a_name_in_use(name)
            window = create_window(self.hook.get_settings())
            outlives = self._outlives_run() if recording else True
            self._written = replace(
                self._me, name=name, written_at=time.time(), window=window, outlives_run=outlives
            )
            if recording:
                self.owner_records.put(self._written)  # before the POST
        self.log.info(
            "Creating pod %s: %s x%s on %s", name, request.gpu_type, request.gpu_count, request.cloud_id
        )
        self._raise_if_killed(name)
        self._sent_before = getattr(self.hook, "creates_sent", None)
        self._creating = name
        try:
            pod = self.hook.create_pod(request)
        except PrimeRejectedError:
            self._forget_record(None)  # refused: nothing was created
            raise
        except BaseException as exc:
            self._after_a_failed_create(name, exc)
            raise
        finally:
            self._creating = None
        self._pod_id, self._owned = pod.id, self._created_own(pod)
        if self._owned and recording and self._written is not None:
            with self._logged("could not write the ownership record of pod " + pod.id):
                self.owner_records.put(self._written.with_pod_id(pod.id))
        return pod

    def _outlives_run(self) -> bool:
        """Whether this task's user-named pod may outlive its DAG run (its ownership record says so).

        False when a :class:`PrimeTerminatePodOperator` that is a teardown (``as_teardown``) is
        downstream of this task in its DAG: the DAG gives the pod back, so a pod still billing after
        the run is one whose teardown failed or never ran, and the reaper deletes it. True otherwise,
        and when the DAG's structure cannot be read (the reaper then spares the pod after its run).
        """
        try:
            if getattr(self, "_dag", None) is None:
                raise LookupError("the task has no DAG")
            downstream = list(self.get_flat_relatives(upstream=False))
        except Exception as exc:
            self.log.warning(
                "Could not read the tasks downstream of %s (%s): its pod is recorded as outliving its run, "
                "so the reaper will not delete it after the run; a teardown must",
                self.task_id,
                exc,
            )
            return True
        for task in downstream:
            kind = getattr(task, "operator_class", type(task))  # a mapped task names its class
            if isinstance(kind, type) and issubclass(kind, PrimeTerminatePodOperator) and task.is_teardown:
                self.log.info(
                    "Teardown %s is downstream of %s: its pod does not outlive the run (the reaper "
                    "deletes it after the run if the teardown did not)",
                    task.task_id,
                    self.task_id,
                )
                return False
        return True

    def _never_sent(self) -> bool:
        """Whether this try's create request provably never left (the hook counts those it sends)."""
        sent = getattr(self.hook, "creates_sent", None)
        return isinstance(sent, int) and sent == self._sent_before

    def _after_a_failed_create(self, name: str, exc: BaseException) -> None:
        """After the create raised: delete what it provably made; never a pod that may be another's.

        Sent or not is the first question: a request that provably never left made nothing, and
        its record goes. Otherwise the answer was lost (and the hook could not settle it) or the
        task was interrupted mid-request: the pod the create made is deleted when it is provable
        (:meth:`_delete_by_name`); with several candidates none is, and an ``Exception`` becomes a
        :class:`PrimeConfigError` naming them (an interruption is logged, its own error stays).
        """
        if self._never_sent():
            self.log.info("The create of %s was never sent (%s): nothing made", name, type(exc).__name__)
            self._forget_record(None)
            return
        budget = None if isinstance(exc, Exception) else time.time() + ON_KILL_BUDGET
        candidates = self._delete_by_name(name, f"its create failed ({type(exc).__name__})", budget)
        if candidates and isinstance(exc, Exception):
            raise PrimeConfigError(
                f"Creating pod {name!r} failed ({exc}) and {len(candidates)} live pods of that name were "
                f"created while it was under way ({', '.join(p.id for p in candidates)}): one may be this "
                "task's, the others someone else's (another deployment on the same key, a person, another "
                "task). None was deleted: a person must choose, delete the ones nobody uses (prime pods "
                "terminate). Give user-chosen names that nobody else creates at the same time."
            ) from exc

    def _created_own(self, pod: Pod) -> bool:
        """Whether the pod the create returned is provably this task instance's own.

        Its create answer names it, unless the answer was lost and the hook found it by name: then
        it may be someone else's pod of the name. A pod listed before the create request, or created
        outside this create's window, is not this create's: it is borrowed. (One created in the
        window by someone else while this create's request was dropped cannot be told apart: the
        documented limit, docs/lifecycle.md.)
        """
        if self._derived:
            return True
        why = ""
        if pod.id in self._seen:
            why = "it was listed before the create request"
        elif self._written is not None and not self._written.created_in_window(pod):
            why = f"it was created at {pod.created_at}, outside this create's window"
        if why:
            self.log.warning(
                "The create of %s returned pod %s, which it may only have found by name: %s. It is "
                "treated as borrowed (not deleted by this task).",
                pod.name,
                pod.id,
                why,
            )
        return not why

    def _refuse_a_name_in_use(self, name: str) -> None:
        """Refuse a name whose record names another task instance of this deployment still using it.

        One record per (deployment, name): writing ours would erase the other task's backstop. Its
        pod is live, or its create may still make one (within its window): refused. A stale record
        (its pod gone, or no pod and its window over) is replaced.
        """
        existing = self._record()
        if existing is None or self._me is None or existing.same_task_instance(self._me):
            return
        if existing.pod_id is not None:
            try:
                pod = self.hook.get_pod(existing.pod_id)
            except PrimeNotFoundError:
                return
            if pod.status in GONE_STATES:
                return
            in_use = f"its pod {pod.id} is live ({pod.status})"
        elif not existing.window_over(time.time()):
            in_use = "its create is under way"
        else:
            return
        raise PrimeConfigError(
            f"Pod name {name!r} is in use by another task instance of this deployment, "
            f"{existing.describe()}: {in_use}. Two tasks creating one user-chosen name would erase each "
            "other's ownership record (what lets the reaper delete an orphaned pod). Give this task "
            "another name (or leave name unset), or end that task's pod first."
        )

    def _check_arguments(self) -> None:
        """Refuse a bad number before any request, naming the argument (templates give text)."""
        if self.request is None:
            for argument in ("gpu_count", "disk_size", "vcpus", "memory"):
                whole_number(getattr(self, argument), argument)
            price(self.max_price, "max_price")
            flag(self.multi_node, "multi_node")
            if names_in_order(self.gpu_type, "gpu_type") or self.cloud_id:
                self._wish()  # GPU types, regions and spot: refused before any request
            else:
                names_in_order(self.regions, "regions")  # no wish: only needed if nothing is adopted
        elif self.wait_for_capacity is not None:
            raise PrimeConfigError(
                "wait_for_capacity waits for an offer that fits gpu_type/cloud_id and the other offer "
                "arguments; a full request names its offer itself. Give the offer arguments instead of "
                "request, or leave wait_for_capacity unset."
            )

    def _wish(self) -> OfferWish:
        """The offer wish of the arguments (after templating: lists may arrive as their text)."""
        gpu_types = names_in_order(self.gpu_type, "gpu_type")
        if not gpu_types and not self.cloud_id:
            raise PrimeConfigError("Give gpu_type (and gpu_count), a cloud_id, or a full request")
        return OfferWish(
            gpu_type=gpu_types,
            gpu_count=whole_number(self.gpu_count, "gpu_count") or 1,
            cloud_id=self.cloud_id,
            regions=names_in_order(self.regions, "regions"),
            socket=self.socket,
            security=self.security,
            max_price=price(self.max_price, "max_price"),
            multi_node=flag(self.multi_node, "multi_node"),
            spot=str(self.spot).strip().lower(),  # type: ignore[arg-type]  # OfferWish refuses the others
        )

    def _list_offers(self, wish: OfferWish) -> list[GpuOffer]:
        """The offers of the wish's one availability request (all pages)."""
        query = wish.availability_query()
        return self.hook.list_gpu_offers(
            gpu_type=query.gpu_type,
            gpu_count=query.gpu_count,
            regions=list(query.regions) or None,
            multi_node=query.multi_node,
        )

    def _build_request(self, name: str) -> PodRequest:
        self._choice = None
        if self.request is not None:
            fields = self.request.model_dump() if isinstance(self.request, PodRequest) else dict(self.request)
            return PodRequest.model_validate({**fields, "name": name})
        wish = self._wish()
        disk_size = whole_number(self.disk_size, "disk_size")
        vcpus, memory = whole_number(self.vcpus, "vcpus"), whole_number(self.memory, "memory")
        self._offers_seen = self._without_refused(self._list_offers(wish))
        choice = choose_offer(self._offers_seen, wish)
        self.log.info("Chose offer %s: %s", describe_offer(choice.offer), choice.why)
        self._choice = choice
        return PodRequest.from_offer(
            choice.offer,
            name=name,
            image=self.image,
            disk_size=disk_size,
            vcpus=vcpus,
            memory=memory,
            env_vars=self.env_vars or None,  # type: ignore[arg-type]
            team_id=self.team_id or None,
            max_price=wish.max_price,
        )

    def _offer_summary(self) -> dict[str, Any] | None:
        return None if self._choice is None else self._choice.summary()

    def _handover(
        self, handover: Mapping[str, Mapping[str, Any]], pod_id: str, price_hr: float | None
    ) -> dict[str, Any]:
        """The return value: the handover, ``price_hr`` and (when this try chose one) ``offer``."""
        return with_offer(with_price(handover, pod_id, price_hr), pod_id, self._offer_summary())

    # -- waiting for capacity ----------------------------------------------------------------

    def _create_when_capacity(self, name: str, capacity_deadline: float | None) -> tuple[Pod, str]:
        """Create the pod; on a sold-out refusal choose again; with ``wait_for_capacity``, wait for an
        offer when none fits.

        A refusal made nothing: its offer is passed over (:meth:`_remember_refusal`) and the next
        choice is created at once, under the same name rules. Deferrable: defer to
        :class:`PrimeCapacityTrigger` (the task resumes in :meth:`execute_after_capacity`, which
        starts over: name lookup, then create). In the worker: poll until an offer fits, then look
        the name up and create, as a resumed task would.
        """
        deadline = capacity_deadline
        while True:
            try:
                return self._create(name), "created"
            except PrimeSoldOutError as exc:
                if self._remember_refusal(name, exc):
                    continue  # choose again at once without it
                if self.wait_for_capacity is None:
                    raise
                failure = str(exc)
            except PrimeNoOfferError as exc:
                if self.wait_for_capacity is None and self._refusal is not None:
                    raise self._refusal from exc  # every choice was refused: the refusal says most
                if self.wait_for_capacity is None:
                    raise
                failure = str(exc)
            wish = self._wish()
            now = self.clock.time()
            if deadline is None:
                deadline = now + self.wait_for_capacity
            if now >= deadline:
                raise PrimeCapacityTimeoutError(failure + GAVE_UP)
            if self.deferrable:
                self._defer_for_capacity(wish, deadline, self._refusal is not None)
            self._await_capacity_here(name, wish, deadline, failure)
            self._raise_if_killed(name)
            pod = self._adopt(name)
            if pod is not None:
                return pod, "adopted"

    def _remember_refusal(self, name: str, exc: PrimeSoldOutError) -> bool:
        """Pass the refused offer over for :func:`refusal_memory`; whether another choice may fit.

        The availability list may go on showing an offer the create was refused for: without this
        the next choice (or the capacity wait) would pick it again and never fall back.
        """
        self._refusal = exc
        choice = self._choice
        if choice is None or not choice.offer.cloud_id:  # a full request: nothing to choose again
            self.log.warning("The create of %s was refused as sold out: %s", name, exc)
            return False
        until = self.clock.time() + refusal_memory(self.poll_interval)
        self._refused[choice.offer.cloud_id] = until
        self.log.warning(
            "The create of %s was refused as sold out: %s. Offer %s is passed over until %s; choosing "
            "again without it.",
            name,
            exc,
            choice.offer.cloud_id,
            datetime.fromtimestamp(until, tz=timezone.utc).isoformat(timespec="seconds"),
        )
        return True

    def _without_refused(self, offers: list[GpuOffer]) -> list[GpuOffer]:
        """``offers`` with those refused as sold out (and still remembered) shown out of stock."""
        now = self.clock.time()
        self._refused = {cloud_id: until for cloud_id, until in self._refused.items() if until > now}
        return without_refused(offers, self._refused, now)

    def _defer_for_capacity(self, wish: OfferWish, deadline: float, refused: bool) -> NoReturn:
        """Defer to :class:`PrimeCapacityTrigger`; the nearest offers go to this (the worker's) log.

        The trigger logs them again when they change, but Airflow writes one trigger log file per
        triggerer and try, and the ready-wait's trigger that follows in the same try replaces it.
        The offers refused as sold out go with it (the trigger passes them over, and so does the
        resumed task).
        """
        now = self.clock.time()
        awaited = awaited_line(wish, deadline, now, nearest_offers(self._offers_seen, wish))
        self.log.info("Deferring the wait for capacity to the triggerer. %s", awaited)
        passed_over = dict(self._refused)
        self.defer(
            trigger=PrimeCapacityTrigger(
                wish=wish.to_dict(),
                deadline=deadline,
                poll_interval=self.poll_interval,
                prime_conn_id=self.prime_conn_id,
                not_before=now + self.poll_interval if refused else None,
                refused_cloud_ids=passed_over or None,
            ),
            method_name="execute_after_capacity",
            kwargs={
                "capacity_deadline": deadline,
                **({"refused_cloud_ids": passed_over} if passed_over else {}),
            },
            timeout=timedelta(seconds=max(deadline - now, 0.0) + DEFERRAL_MARGIN),
        )

    def _await_capacity_here(self, name: str, wish: OfferWish, deadline: float, failure: str) -> None:
        """Poll the offers in this worker until one fits ``wish`` (return) or the deadline passes.

        The create has just looked (its offers are logged now), so the next look is one poll interval
        on (after a sold-out refusal the list may still show the offer, too). Offers refused as sold
        out are passed over while remembered. Transient errors are waited out; a garbled answer
        (:class:`PrimeResponseError`, a proxy's page served as 200) for :func:`trouble_grace` with no
        good answer in between, as the status waits do. Stops when the task is killed (nothing is
        created after a kill).
        """
        shown = nearest_offers(self._offers_seen, wish)
        self.log.info(awaited_line(wish, deadline, self.clock.time(), shown))
        not_before = self.clock.time() + self.poll_interval
        garbled_since: float | None = None
        while True:
            self._raise_if_killed(name)
            if self.clock.time() >= not_before:
                try:
                    offers = self._without_refused(self._list_offers(wish))
                except PrimeError as exc:
                    if isinstance(exc, PrimeResponseError):
                        now = self.clock.time()
                        if garbled_since is None:
                            garbled_since = now
                            self.log.warning(
                                "The offers could not be read (the wait goes on for up to %.0f s of such "
                                "answers): %s",
                                trouble_grace(self.poll_interval),
                                exc,
                            )
                        elif now - garbled_since >= trouble_grace(self.poll_interval):
                            raise
                    elif not is_transient(exc):
                        raise
                    else:
                        self.log.warning("Could not list the offers (the wait goes on): %s", exc)
                else:
                    garbled_since = None
                    lines = nearest_offers(offers, wish)
                    if lines != shown:
                        self.log.info(awaited_line(wish, deadline, self.clock.time(), lines))
                        shown = lines
                    try:
                        choice = choose_offer(offers, wish)
                    except PrimeNoOfferError as exc:
                        failure = str(exc)
                    else:
                        self.log.info(
                            "Capacity found for %s: %s", wish.describe(), describe_offer(choice.offer)
                        )
                        return
            now = self.clock.time()
            if now >= deadline:
                raise PrimeCapacityTimeoutError(failure + GAVE_UP)
            self.clock.sleep(
                min(self.poll_interval, deadline - now, max(not_before - now, 0.0) or self.poll_interval)
            )

    # -- waiting in the worker ---------------------------------------------------------------

    def _wait_here(self, pod: Pod, deadline: float) -> dict[str, Any]:
        """The sensor's wait in this worker: :class:`PodWait` on the sync driver."""
        # answered: the create or the lookup just got a good answer from the API, so a lone bad
        # status answer is trouble for a grace, not a verdict that deletes the pod.
        wait = PodWait(
            [pod.id],
            self.requirements,
            self.log,
            deadline=deadline,
            api=describe_api(self.hook.get_settings().base_url, self.prime_conn_id),
            answered=True,
            poll_interval=self.poll_interval,
        )

        def fetch(request_deadline: float) -> dict[str, Any]:
            return by_id(self.hook.get_pods_status(wait.pod_ids, deadline=request_deadline))

        def still_here() -> bool:
            self._raise_if_killed(pod.id)
            return True

        driver: SyncDriver[Any, Step] = SyncDriver(wait, fetch, interval=self.poll_interval, clock=self.clock)
        ending = driver.run(hold=still_here)
        self._raise_if_killed(pod.id)  # never hand over a pod on_kill deleted
        step = ending.step
        if step is not None and step.outcome is Outcome.READY:
            return self._handover(step.handover, pod.id, pod.price_hr)
        if step is not None and step.error is not None:
            read = log_reader(self.hook, self.pod_log_tail, self.secrets())
            raise add_pod_logs(step, read).error or step.error  # the pod's log tail, env values scrubbed
        raise AirflowSensorTimeout(f"Pod {pod.id}: {wait.timeout_message()}")

    # -- clean-up ----------------------------------------------------------------------------

    def _raise_if_killed(self, what: str) -> None:
        """After ``on_kill`` the task goes on where the signal interrupted it: stop it here."""
        if self._killed is not None:
            self._forget_records_left()
            raise AirflowException(f"Pod {what}: stopped, {self._killed}; nothing more is created")

    def _forget_records_left(self) -> None:
        """Delete the ownership records of the pods ``on_kill`` deleted (outside the handler)."""
        for pod_id in sorted(self._records_left):
            self._forget_record(pod_id)
        self._records_left.clear()

    @contextlib.contextmanager
    def _delete_on_failure(self) -> Iterator[None]:
        try:
            yield
        except BaseException as exc:
            self._forget_records_left()
            bounded = self._killed is not None or not isinstance(exc, Exception)
            self._delete_owned(
                f"{type(exc).__name__}: {exc}", deadline=time.time() + ON_KILL_BUDGET if bounded else None
            )
            raise

    def _delete_owned(self, why: str, deadline: float | None = None) -> None:
        """Delete the pod if this task is to clean it up; never raises (the cause matters more)."""
        pod_id = self._pod_id
        if pod_id is None or pod_id in self._deleted:
            return
        if not self._deletes():
            self.log.warning("Leaving pod %s running (%s): %s", pod_id, self._fate(), why)
            return
        self._delete_pod(pod_id, f"the task did not succeed ({why})", deadline)

    def _delete_pod(self, pod_id: str, why: str, deadline: float | None = None) -> bool:
        """Delete one pod of this task's name, and its ownership record; never raises."""
        if pod_id in self._deleted:
            return True
        self._deleted.add(pod_id)
        self.log.warning("Deleting pod %s (name %s): %s", pod_id, self._name, why)
        try:
            self.hook.delete_pod(pod_id, deadline=deadline)
        except Exception as exc:
            self._deleted.discard(pod_id)  # a later path (the failure after on_kill) may try again
            self.log.error("Could not delete pod %s: %s. %s", pod_id, exc, self._backstop("pod " + pod_id))
            return False
        if self._in_on_kill:
            self._records_left.add(pod_id)
        else:
            self._forget_record(pod_id)
        return True

    def _forget_record(self, pod_id: str | None) -> None:
        """Delete the ownership record of this task's user-given name if it names ``pod_id`` (or none)."""
        if self._derived or self._name is None or self._me is None:
            return
        with self._logged("could not delete the ownership record of " + self._name):
            record = self.owner_records.get(self._deployment, self._name)
            if record is not None and record.same_task_instance(self._me) and record.pod_id in (None, pod_id):
                self.owner_records.delete(self._deployment, self._name)

    def _backstop(self, what: str) -> str:
        """Who can still delete ``what`` now that this task could not; it promises nothing unsure."""
        dag_id = self._me.dag_id if self._me is not None else "this DAG"
        yourself = f"delete it yourself (prime pods list / prime pods terminate): {what}"
        if self._derived or (self._owned and self.terminate_on_failure):
            return (
                f"It bills until the reaper (PrimeReapPodsOperator, if it runs with {dag_id!r} in its "
                f"dag_ids) deletes it once this task instance has ended, or until you {yourself}"
            )
        return f"Nothing else will delete it: {yourself}"

    def _delete_by_name(self, name: str, why: str, deadline: float | None = None) -> tuple[Pod, ...]:
        """After a create that may have reached the server: delete the pods of ``name`` it provably made.

        A derived name: every live pod of it (they can only be this task instance's). A user-given
        name: the one pod this try's record proves (:func:`.ownership.claim`: not listed before the
        request, created in its window); several candidates are not told apart, none is deleted,
        each is named and returned. Never raises.
        """
        if not self.terminate_on_failure:
            return ()

        def lookup() -> list[Pod]:
            return self.hook.find_pods_by_name(name)

        try:
            pods = lookup() if deadline is None else within(deadline, lookup)
        except Exception as exc:
            backstop = self._backstop("the pods named " + name)
            self.log.error("Could not look up the pods named %s (%s): %s. %s", name, why, exc, backstop)
            return ()
        if self._derived:
            doomed = [p for p in pods if p.status not in GONE_STATES]
        elif self._written is None:
            return ()
        else:
            verdict = claim(self._written, pods, self._seen)
            if verdict.pod is None and verdict.candidates:
                self.log.error(
                    "Deleting no pod named %s (%s): %s. %s",
                    name,
                    why,
                    verdict.why,
                    self._backstop(", ".join(p.id for p in verdict.candidates) + " (the one nobody uses)"),
                )
                return verdict.candidates
            if verdict.pod is None:
                self.log.info("No pod named %s to delete (%s): %s", name, why, verdict.why)
                return ()
            doomed = [verdict.pod]
        for pod in doomed:
            self._delete_pod(pod.id, why, deadline)
        return ()

    def _recall_pod(self, context: Context) -> None:
        """After ``__fail__``: this try's pod id and ownership from XCom (the name's rules without it)."""
        ti = context["ti"]
        pod_id = ti.xcom_pull(task_ids=ti.task_id, key=POD_ID_KEY, map_indexes=ti.map_index)
        if not isinstance(pod_id, str):
            return
        self._pod_id = pod_id
        verdict = ti.xcom_pull(task_ids=ti.task_id, key=POD_OWNED_KEY, map_indexes=ti.map_index)
        if isinstance(verdict, Mapping) and isinstance(verdict.get(pod_id), bool):
            self._owned = bool(verdict[pod_id])
        with self._logged("could not tell the name and ownership record of pod " + pod_id):
            self._know_task_instance(context)
            self._pod_name(context)
            if isinstance(verdict, Mapping) and isinstance(verdict.get(pod_id), bool):
                return
            record = self._record()  # an XCom written before this version: the name's rules
            self._owned = self._derived or (
                record is not None
                and self._me is not None
                and record.same_task_instance(self._me)
                and record.pod_id in (None, pod_id)
            )

    @contextlib.contextmanager
    def _logged(self, what: str) -> Iterator[None]:
        """Log, not raise, an error of the bookkeeping around the pod (the pod matters more)."""
        try:
            yield
        except Exception as exc:
            self.log.error("%s: %s", what, exc)


def with_offer(handover: dict[str, Any], pod_id: str, offer: Mapping[str, Any] | None) -> dict[str, Any]:
    """``handover`` with the chosen offer in ``pod_id``'s entry (key ``offer``), when one was chosen."""
    if offer is None or pod_id not in handover:
        return handover
    entry: dict[str, Any] = {**handover[pod_id], "offer": dict(offer)}
    return {**handover, pod_id: entry}


def borrowed_pods(ti: Any, task_ids: list[str]) -> set[str]:
    """The pods that the creates among ``task_ids`` reported as borrowed (and none as its own).

    Reads their ``pod_owned`` XComs, every map index of each (Airflow's ``xcom_pull`` with a list
    of task ids and no ``map_indexes``); tasks that pushed none count for nothing.
    """
    if not task_ids:
        return set()
    verdicts = ti.xcom_pull(task_ids=task_ids, key=POD_OWNED_KEY)
    owned: dict[str, bool] = {}
    for verdict in verdicts if isinstance(verdicts, list) else [verdicts]:
        if isinstance(verdict, Mapping):
            for pod_id, own in verdict.items():
                if isinstance(pod_id, str) and isinstance(own, bool):
                    owned[pod_id] = owned.get(pod_id, False) or own
    return {pod_id for pod_id, own in owned.items() if not own}


class PrimeTerminatePodOperator(BaseOperator):
    """Delete pods, wait until they are gone, and report what each one cost.

    ``pod_ids`` (templated): one id, a list, the create operator's ``output`` or
    ``output["pod_id"]``, or those of a mapped create. Idempotent: a pod that is gone or terminated
    already counts as done. Works as a teardown::

        create >> train >> terminate.as_teardown(setups=create)

    **Borrowed pods are kept.** A create that only adopted a user-named pod it does not own
    publishes ``{pod_id: False}`` in XCom (key ``pod_owned``); this operator reads that key from its
    upstream tasks (a create it takes ``pod_ids`` from, or a setup, is upstream) and keeps those pods
    unless ``terminate_borrowed=True``. A plain id with no such verdict upstream is deleted: you
    handed it over.

    **Nothing to do must be said.** ``pod_ids`` that renders to ``None``, or to entries without any
    id, fails the task (an upstream create that pushed no pod id is a bug to see, not a success);
    an explicit empty list terminates nothing and succeeds.

    Returns and logs, per pod: ``{"name", "status", "created_at", "terminated_at", "hours",
    "price_hr", "cost"}`` (cost = ``priceHr`` times hours from creation to termination, ``None`` when
    the API did not say). Fails, after trying every pod, if one could not be deleted.

    :param terminate_borrowed: also delete pods an upstream create reported as borrowed.
    :param wait_for_termination: wait until each pod is ``TERMINATED`` or gone (default).
    :param deferrable: wait in the triggerer (default ``[operators] default_deferrable``).
    """

    template_fields: Sequence[str] = ("pod_ids",)
    ui_color = "#f5d9c9"
    #: The clock of the wait in the worker (a test gives one that it moves by hand).
    clock: Clock = SYSTEM_CLOCK

    def __init__(
        self,
        *,
        pod_ids: Any,
        prime_conn_id: str = PrimeHook.default_conn_name,
        terminate_borrowed: bool = False,
        wait_for_termination: bool = True,
        poll_interval: timedelta | float = DEFAULT_TERMINATION_INTERVAL,
        timeout: timedelta | float = DEFAULT_TERMINATION_TIMEOUT,
        deferrable: bool | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.pod_ids = pod_ids
        self.prime_conn_id = prime_conn_id
        self.terminate_borrowed = terminate_borrowed
        self.wait_for_termination = wait_for_termination
        self.poll_interval = seconds(poll_interval)
        self.timeout = seconds(timeout)
        self.deferrable = _default_deferrable() if deferrable is None else deferrable

    @cached_property
    def hook(self) -> PrimeHook:
        return PrimeHook(prime_conn_id=self.prime_conn_id)

    @cached_property
    def owner_records(self) -> OwnerRecords:
        """Where the ownership records of user-named pods are kept (deleted with their pods)."""
        return VariableOwnerRecords()

    def execute(self, context: Context) -> Any:
        pod_ids: list[str] = pod_ids_from(self.pod_ids)
        if not pod_ids:
            if isinstance(self.pod_ids, (list, tuple)) and not self.pod_ids:
                self.log.info("No pods to terminate: pod_ids is an empty list")
                return {}
            raise PrimeConfigError(
                f"pod_ids is {self.pod_ids!r}: no pod id to terminate. An upstream create that pushed no "
                "pod id, or a template that renders to nothing, would leave its pod billing; check what "
                "pod_ids refers to (pass pod_ids=[] to terminate nothing on purpose)"
            )
        pod_ids = self._without_borrowed(pod_ids, context)
        if not pod_ids:
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
                    deadline=self.clock.time() + self.timeout,
                    prime_conn_id=self.prime_conn_id,
                    poll_interval=self.poll_interval,
                    not_before=first_check_after_deferral(self.clock.time(), 0.0),
                ),
                method_name="execute_complete",
                kwargs={"before": before, "failures": failures},
                timeout=timedelta(seconds=self.timeout + DEFERRAL_MARGIN),
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

    def _without_borrowed(self, pod_ids: list[str], context: Context) -> list[str]:
        """``pod_ids`` less the pods an upstream create reported as borrowed (each one logged)."""
        if self.terminate_borrowed:
            return pod_ids
        borrowed = borrowed_pods(context["ti"], sorted(self.upstream_task_ids))
        for pod_id in [p for p in pod_ids if p in borrowed]:
            self.log.info(
                "Keeping pod %s: the create that used it only borrowed it (a user-named pod that is not "
                "its own); terminate_borrowed=True would delete it",
                pod_id,
            )
        return [p for p in pod_ids if p not in borrowed]

    def _delete(self, pod_id: str) -> dict[str, Any]:
        """Delete one pod (gone already is fine); what is known of it beforehand."""
        try:
            pod = self.hook.get_pod(pod_id)
        except PrimeNotFoundError:
            self.log.info("Pod %s is gone already", pod_id)
            return {"name": None, "status": GONE, "created_at": None, "price_hr": None}
        if pod.status != PodState.TERMINATED.value:
            self.hook.delete_pod(pod_id)
            self.log.info("Deleted pod %s (%s, was %s)", pod_id, pod.name, pod.status)
        self._forget_record(pod)
        return {
            "name": pod.name,
            "status": pod.status,
            "created_at": pod.created_at,
            "terminated_at": pod.terminated_at,
            "price_hr": pod.price_hr,
        }

    def _forget_record(self, pod: Pod) -> None:
        """Delete the ownership record of a deleted user-named pod when it is that pod's.

        It names that pod, or none yet and the pod was created in its window: a record of another
        create under way (its pod not made yet) stays.
        """
        if not pod.name or parse_derived_name(pod.name) is not None:
            return
        try:
            deployment = deployment_id()
            record = self.owner_records.get(deployment, pod.name)
            mine = record is not None and (
                record.pod_id == pod.id or (record.pod_id is None and record.created_in_window(pod))
            )
            if record is not None and mine:
                self.owner_records.delete(deployment, pod.name)
        except Exception as exc:
            self.log.error("Could not delete the ownership record of pod %s (%s): %s", pod.id, pod.name, exc)

    def _wait_here(self, pod_ids: list[str]) -> dict[str, dict[str, Any]]:
        """Wait in this worker until every pod is gone or the timeout passes: each pod's last known end."""
        wait = TerminationWait(pod_ids, self.log, deadline=self.clock.time() + self.timeout)
        driver = SyncDriver(
            wait,
            lambda _: ask(wait.pending, self.hook.get_pod),
            interval=self.poll_interval,
            clock=self.clock,
        )
        step = driver.run().step
        if step is not None and step.error is not None:
            raise step.error
        return wait.ends

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
