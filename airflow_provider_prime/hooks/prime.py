"""PrimeHook: the provider's only door to the Prime Intellect API, from a worker or a triggerer.

The hook resolves its settings from its Airflow connection (or, when the connection does not
exist, from ``PRIME_API_KEY`` / ``PRIME_API_BASE_URL`` like the official CLI), masks the key in
Airflow's logs, and runs the plans of :mod:`._plans` on the sync and async clients of
:mod:`._clients`.

Connection (type ``prime``): host = API base URL (default ``https://api.primeintellect.ai``; a
trailing ``/api/v1`` is tolerated; a host without scheme means https), password = API key,
extra = the options of :mod:`._options` (timeouts, retries, ``verify``).

Public: :class:`PrimeHook` (and ``CHUNK_SIZE``, the ids per status request). The settings and the
clients are private (``hooks._settings``, ``hooks._clients``); the triggers' shared poller gets its
client from :meth:`PrimeHook.async_status_client`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from airflow.sdk import BaseHook

from airflow_provider_prime._compat import aget_connection, amask_secret, get_connection, mask_secret
from airflow_provider_prime.exceptions import PrimeConfigError, PrimeError
from airflow_provider_prime.hooks import _plans
from airflow_provider_prime.hooks._clients import AsyncPrimeClient, AsyncSleep, PrimeClient, Sleep
from airflow_provider_prime.hooks._endpoints import CHUNK_SIZE as CHUNK_SIZE
from airflow_provider_prime.hooks._endpoints import whoami_request
from airflow_provider_prime.hooks._exchange import Exchange
from airflow_provider_prime.hooks._form import UI_FIELD_BEHAVIOUR
from airflow_provider_prime.hooks._options import OPTIONS
from airflow_provider_prime.hooks._payloads import parse_identity
from airflow_provider_prime.hooks._plans import LIST_LAG_BOUND as LIST_LAG_BOUND
from airflow_provider_prime.hooks._settings import (
    ENV_API_KEY,
    ENV_BASE_URLS,
    ConnectionLike,
    PrimeApiSettings,
    missing_key_error,
    settings_from_connection,
    settings_from_environment,
    unparsable_connection_error,
)
from airflow_provider_prime.models import MIN_SECRET_LENGTH, GpuOffer, Pod, PodRequest, PodStatus
from airflow_provider_prime.pod_ids import validate_pod_ids

__all__ = ["PrimeHook"]

T = TypeVar("T")

#: Lines of a pod's log :meth:`PrimeHook.get_pod_log` returns unless told otherwise.
DEFAULT_LOG_TAIL = 50
#: Most lines of a pod's log ever asked for (a failure message quotes them all).
MAX_LOG_TAIL = 1000

#: Retries the connection test allows itself: a UI "Test" click should answer within seconds.
_TEST_CONNECTION_RETRIES = 1


class PrimeHook(BaseHook):
    """The Prime Intellect API: pod statuses, pods (get, list, find by name, create, delete, log), GPU offers.

    Every method has an async twin (``a`` + name) for triggers; docs/hook.md lists each one's errors.

    :param prime_conn_id: the Airflow connection (type ``prime``) holding the API key and base URL.
        The connection is looked up on first use, never in ``__init__``.
    :param sleep: how the sync methods wait between attempts (default ``time.sleep``); ``asleep``
        the same for the async twins (default ``asyncio.sleep``). Tests pass recorders.
    """

    conn_name_attr = "prime_conn_id"
    default_conn_name = "prime_default"
    conn_type = "prime"
    hook_name = "Prime Intellect"
    #: Create requests this hook has started to send (:meth:`create_pod`): a caller interrupted
    #: while the count had not moved knows its create provably never reached the server.
    creates_sent = 0

    def __init__(
        self,
        prime_conn_id: str = default_conn_name,
        *,
        logger_name: str | None = None,
        sleep: Sleep = time.sleep,
        asleep: AsyncSleep = asyncio.sleep,
    ) -> None:
        super().__init__(logger_name=logger_name)
        self.prime_conn_id = prime_conn_id
        self._sleep = sleep
        self._asleep = asleep
        self._settings: PrimeApiSettings | None = None

    def get_settings(self) -> PrimeApiSettings:
        """Resolve (once) the settings: the connection, else the CLI's environment variables."""
        if self._settings is None:
            settings = self._settings_from(get_connection(self, self.prime_conn_id))
            mask_secret(settings.api_key)
            self._settings = settings
        return self._settings

    async def aget_settings(self) -> PrimeApiSettings:
        """Async :meth:`get_settings`: Airflow's async connection API, nothing blocking the event loop."""
        if self._settings is None:
            settings = self._settings_from(await aget_connection(self, self.prime_conn_id))
            await amask_secret(settings.api_key)
            self._settings = settings
        return self._settings

    def get_pods_status(self, pod_ids: object, deadline: float | None = None) -> list[PodStatus]:
        """Statuses of the given pods (one id or a list; de-duplicated, 100 per request).

        Pods the API does not report (unknown, deleted, not visible to the key) are absent.
        ``deadline`` (epoch seconds): no retry sleeps past it and each attempt's timeouts are cut
        to the time left, so a wait calling this never outlives its own deadline by more than one
        request. Raises ``PrimeConfigError`` (bad ids, before any request) and the API errors of
        docs/hook.md.
        """
        ids = validate_pod_ids(pod_ids)
        with PrimeClient(self.get_settings(), sleep=self._sleep) as client:
            return client.get_pods_status(ids, deadline)

    async def aget_pods_status(self, pod_ids: object, deadline: float | None = None) -> list[PodStatus]:
        """Async :meth:`get_pods_status` on httpx; chunks are fetched concurrently."""
        ids = validate_pod_ids(pod_ids)
        async with AsyncPrimeClient(await self.aget_settings(), sleep=self._asleep) as client:
            return await client.get_pods_status(ids, deadline)

    @staticmethod
    def async_status_client(
        settings: PrimeApiSettings, *, sleep: AsyncSleep = asyncio.sleep
    ) -> AsyncPrimeClient:
        """An async client on ``settings`` for a caller that keeps one across many status reads.

        The triggers' shared poller keeps one per connection for as long as some wait needs it
        (``await client.get_pods_status(ids)``, then ``await client.aclose()``).
        """
        return AsyncPrimeClient(settings, sleep=sleep)

    def get_pod(self, pod_id: str) -> Pod:
        """The pod ``pod_id`` (``GET /pods/{id}``); ``PrimeNotFoundError`` naming it when there is none."""
        return self._run(_plans.get_pod, _one_pod_id(pod_id))

    async def aget_pod(self, pod_id: str) -> Pod:
        """Async :meth:`get_pod`."""
        return await self._arun(_plans.get_pod, _one_pod_id(pod_id))

    def get_pod_log(
        self,
        pod_id: str,
        tail: int = DEFAULT_LOG_TAIL,
        *,
        deadline: float | None = None,
        secrets: Sequence[str] = (),
    ) -> list[str]:
        """The last ``tail`` lines of the pod's own log (``GET /pods/{id}/log?tail=N``), oldest first.

        The answer's shape is not documented: plain text, a JSON string, a list of lines or an
        object holding one (``data``, ``logs``...) are all read (docs/lifecycle.md, "The pod's
        log"). The API key and ``secrets`` (the pod's env values: a pod may print them) are scrubbed
        from every line before it is cut at 500 characters; at most :data:`MAX_LOG_TAIL` lines are
        asked for. ``tail=0`` asks nothing and returns ``[]``.
        ``deadline`` (epoch seconds) as for :meth:`get_pods_status`. Errors: ``PrimeNotFoundError``
        naming the pod, ``PrimeConfigError`` (a bad id or tail, before any request), and the API
        errors of docs/hook.md.
        """
        pod_id, tail = _one_pod_id(pod_id), _log_tail(tail)
        return self._run(_plans.get_pod_log, pod_id, tail, deadline, _log_secrets(secrets)) if tail else []

    async def aget_pod_log(
        self,
        pod_id: str,
        tail: int = DEFAULT_LOG_TAIL,
        *,
        deadline: float | None = None,
        secrets: Sequence[str] = (),
    ) -> list[str]:
        """Async :meth:`get_pod_log`."""
        pod_id, tail = _one_pod_id(pod_id), _log_tail(tail)
        secret = _log_secrets(secrets)
        return await self._arun(_plans.get_pod_log, pod_id, tail, deadline, secret) if tail else []

    def list_pods(self) -> list[Pod]:
        """Every pod of the key (all pages of ``GET /pods/``, 100 a page); terminated pods are not listed."""
        return self._run(_plans.list_pods)

    async def alist_pods(self) -> list[Pod]:
        """Async :meth:`list_pods`."""
        return await self._arun(_plans.list_pods)

    def find_pods_by_name(self, name: str) -> list[Pod]:
        """The listed pods named exactly ``name`` (the API has no filter: this reads every page)."""
        return self._run(_plans.find_pods_by_name, _pod_name(name))

    async def afind_pods_by_name(self, name: str) -> list[Pod]:
        """Async :meth:`find_pods_by_name`."""
        return await self._arun(_plans.find_pods_by_name, _pod_name(name))

    def create_pod(self, request: PodRequest) -> Pod:
        """Create a pod (``POST /pods/``); it bills from now until it is deleted. Never sent twice.

        The answer is the new pod, still ``PROVISIONING``: wait for it with the sensor. A create
        that provably never left (connection refused, DNS failure, connect or TLS-handshake
        timeout) and a 429 are retried like any call. One that may have reached the server (a read
        timeout, a connection dropped after sending, a 5xx, 408, an unusable 2xx answer) is not
        resent: the hook looks the name up (:meth:`find_pods_by_name`) and adopts the one live pod
        of that name (logged); if there is none it raises ``PrimeTransientError`` saying the create
        may not have happened (retrying is safe: a retry looks the name up first); if several
        have the name, ``PrimeConfigError`` listing them (nothing is deleted). Give each pod a
        unique name. Other errors: ``PrimeBillingError`` (402), ``PrimeAuthError`` (the key needs
        "Instances → Read and write"), ``PrimeRequestError`` (422 naming the field, a sold-out
        offer).
        """
        pod_request = _pod_request(request)
        self.creates_sent += 1  # from here on the POST may reach the server
        return self._run(_plans.create_pod, pod_request)

    async def acreate_pod(self, request: PodRequest) -> Pod:
        """Async :meth:`create_pod` (the same rules: never sent twice, adoption by name)."""
        return await self._arun(_plans.create_pod, _pod_request(request))

    def delete_pod(self, pod_id: str, *, deadline: float | None = None) -> None:
        """Delete a pod (``DELETE /pods/{id}``); idempotent: a pod already gone or going is success.

        A 404 naming the pod, or a refusal for a pod that is then found ``TERMINATED``/``DELETING``
        (or not found), returns normally. ``deadline`` (epoch seconds), as for
        :meth:`get_pods_status`: no retry or Retry-After wait sleeps past it and each attempt's
        timeouts are cut to the time left, so ``on_kill`` can make one short bounded attempt
        (``delete_pod(pod_id, deadline=time.time() + 3)``); past it, ``PrimeTransientError``.
        Errors: ``PrimeAuthError`` (the key needs "Instances → Read and write"),
        ``PrimeRequestError`` (refused for a live pod), transient errors after the retries.
        """
        self._run(_plans.delete_pod, _one_pod_id(pod_id), deadline)

    async def adelete_pod(self, pod_id: str, *, deadline: float | None = None) -> None:
        """Async :meth:`delete_pod` (the same ``deadline``)."""
        await self._arun(_plans.delete_pod, _one_pod_id(pod_id), deadline)

    def list_gpu_offers(
        self,
        gpu_type: str | None = None,
        gpu_count: int | None = None,
        regions: list[str] | str | None = None,
        multi_node: bool = False,
    ) -> list[GpuOffer]:
        """GPU offers (all pages of ``/availability/gpus``, or ``/availability/multi-node``).

        Filters are the API's own; pick one with ``airflow_provider_prime.offers.choose_offer``.
        """
        return self._run(_plans.list_gpu_offers, gpu_type, gpu_count, _regions(regions), multi_node)

    async def alist_gpu_offers(
        self,
        gpu_type: str | None = None,
        gpu_count: int | None = None,
        regions: list[str] | str | None = None,
        multi_node: bool = False,
    ) -> list[GpuOffer]:
        """Async :meth:`list_gpu_offers`."""
        return await self._arun(_plans.list_gpu_offers, gpu_type, gpu_count, _regions(regions), multi_node)

    def test_connection(self) -> tuple[bool, str]:
        """Check the key with ``GET /api/v1/user/whoami`` (the UI's and CLI's connection test).

        The message names who the key belongs to and the scopes it grants, when whoami says.
        """
        try:
            settings = self.get_settings()
            quick = dataclasses.replace(
                settings, max_retries=min(settings.max_retries, _TEST_CONNECTION_RETRIES)
            )
            with PrimeClient(quick, sleep=self._sleep) as client:
                identity = client.call(Exchange(quick, whoami_request(quick), parse_identity))
        except PrimeError as exc:
            return False, str(exc)
        who = f" as {identity}" if identity else ""
        return True, f"Connected to Prime Intellect at {settings.base_url}{who}."

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        """Form layout for Airflow 3.1 (3.2+ reads the same data from the provider info)."""
        return {
            "hidden_fields": list(UI_FIELD_BEHAVIOUR["hidden-fields"]),
            "relabeling": dict(UI_FIELD_BEHAVIOUR["relabeling"]),
            "placeholders": dict(UI_FIELD_BEHAVIOUR["placeholders"]),
        }

    @classmethod
    def get_connection_form_widgets(cls) -> dict[str, Any]:
        """Extra form fields for Airflow 3.1 (only when wtforms is installed, as Airflow requires then)."""
        # wtforms is optional (Airflow only asks for widgets when it is installed) and untyped.
        from wtforms import IntegerField, StringField  # type: ignore[import-untyped, import-not-found, unused-ignore]
        from wtforms.validators import Optional  # type: ignore[import-untyped, import-not-found, unused-ignore]

        widgets: dict[str, Any] = {}
        for option in OPTIONS:
            if not option.in_form:
                continue
            # Airflow 3.1 forms have no float field: seconds go in a text field, parsed as a number.
            whole = option.kind == "count"
            widgets[option.name] = (IntegerField if whole else StringField)(
                option.label,
                validators=[Optional()],
                description=option.description,
                default=option.default if whole else f"{option.default:g}",
            )
        return widgets

    def _run(self, plan: Callable[..., _plans.Plan[T]], *args: Any) -> T:
        settings = self.get_settings()
        with PrimeClient(settings, sleep=self._sleep) as client:
            return client.run(plan(settings, *args))

    async def _arun(self, plan: Callable[..., _plans.Plan[T]], *args: Any) -> T:
        settings = await self.aget_settings()
        async with AsyncPrimeClient(settings, sleep=self._asleep) as client:
            return await client.run(plan(settings, *args))

    def _settings_from(self, conn: ConnectionLike | None) -> PrimeApiSettings:
        """The connection's settings; only when it is truly absent, the environment's (logged)."""
        if conn is not None:
            return settings_from_connection(conn)
        unparsable = unparsable_connection_error(self.prime_conn_id)
        if unparsable is not None:
            raise unparsable
        settings = settings_from_environment()
        if settings is None:
            raise missing_key_error(self.prime_conn_id)
        self.log.warning(
            "Connection %r is not defined; using %s and the base URL %s from the environment "
            "(%s, then %s), as the prime CLI does.",
            self.prime_conn_id,
            ENV_API_KEY,
            settings.base_url,
            *ENV_BASE_URLS,
        )
        return settings


def _one_pod_id(value: object) -> str:
    if not isinstance(value, str):
        raise PrimeConfigError(f"pod_id must be one pod id (a string), not {type(value).__name__}")
    return validate_pod_ids(value)[0]


def _log_secrets(secrets: Sequence[str]) -> tuple[str, ...]:
    """The values a pod log is scrubbed of besides the key: from :data:`MIN_SECRET_LENGTH` on, as a
    request's own secrets (``1`` or ``true`` would garble every line)."""
    return tuple(s for s in secrets if isinstance(s, str) and len(s) >= MIN_SECRET_LENGTH)


def _log_tail(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise PrimeConfigError(f"tail must be a whole number of lines, 0 or more, not {value!r}")
    return min(value, MAX_LOG_TAIL)


def _pod_name(value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise PrimeConfigError(f"a pod name must be a non-empty string, got {value!r}")
    return value


def _pod_request(value: object) -> PodRequest:
    if not isinstance(value, PodRequest):
        raise PrimeConfigError(
            "create_pod takes a PodRequest (e.g. PodRequest.from_offer(offer, name=...)), "
            f"not {type(value).__name__}"
        )
    try:
        # Before any request: a body the HTTP library cannot send (inf or nan in a built-around
        # model) would fail after the create "may have been sent", a misleading transient error.
        json.dumps(value.to_body(), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise PrimeConfigError(
            f"create_pod: the request for pod {value.name!r} cannot be sent as JSON ({exc}); check "
            "max_price and the sizes (finite numbers)."
        ) from None
    return value


def _regions(regions: list[str] | str | None) -> list[str]:
    return [regions] if isinstance(regions, str) else list(regions or [])
