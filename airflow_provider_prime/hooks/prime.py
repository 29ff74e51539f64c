"""PrimeHook: the provider's only door to the Prime Intellect API, from a worker or a triggerer.

The hook resolves its settings from its Airflow connection (or, when the connection does not
exist, from ``PRIME_API_KEY`` / ``PRIME_API_BASE_URL`` like the official CLI), masks the key in
Airflow's logs, and delegates HTTP to the sync and async clients of :mod:`._clients`, which share
one request/response path (:mod:`._exchange`).

Connection (type ``prime``): host = API base URL (default ``https://api.primeintellect.ai``; a
trailing ``/api/v1`` is tolerated; a host without scheme means https), password = API key,
extra = the options of :mod:`._options` (timeouts, retries, ``verify``).

Public: :class:`PrimeHook`. ``PrimeApiSettings`` and ``AsyncPrimeClient`` are importable from here
for the provider's own trigger (its shared poller keeps one client per connection); they are not
part of the documented API.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from airflow.sdk import BaseHook

from airflow_provider_prime._compat import aget_connection, amask_secret, get_connection, mask_secret
from airflow_provider_prime.exceptions import PrimeError
from airflow_provider_prime.get_provider_info import UI_FIELD_BEHAVIOUR
from airflow_provider_prime.hooks._clients import AsyncPrimeClient as AsyncPrimeClient
from airflow_provider_prime.hooks._clients import PrimeClient
from airflow_provider_prime.hooks._exchange import Exchange, parse_identity, whoami_request
from airflow_provider_prime.hooks._options import OPTIONS
from airflow_provider_prime.hooks._settings import (
    ENV_API_KEY,
    ENV_BASE_URLS,
    ConnectionLike,
    missing_key_error,
    settings_from_connection,
    settings_from_environment,
)
from airflow_provider_prime.hooks._settings import PrimeApiSettings as PrimeApiSettings
from airflow_provider_prime.models import PodStatus
from airflow_provider_prime.pod_ids import validate_pod_ids

__all__ = ["PrimeHook"]

#: Retries the connection test allows itself: a UI "Test" click should answer within seconds.
_TEST_CONNECTION_RETRIES = 1


class PrimeHook(BaseHook):
    """Talk to the Prime Intellect API: pod statuses (and, see docs/hook.md, the whole pods API).

    :param prime_conn_id: the Airflow connection (type ``prime``) holding the API key and base URL.
        The connection is looked up on first use, never in ``__init__``.
    """

    conn_name_attr = "prime_conn_id"
    default_conn_name = "prime_default"
    conn_type = "prime"
    hook_name = "Prime Intellect"

    def __init__(self, prime_conn_id: str = default_conn_name, *, logger_name: str | None = None) -> None:
        super().__init__(logger_name=logger_name)
        self.prime_conn_id = prime_conn_id
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
        with PrimeClient(self.get_settings()) as client:
            return client.get_pods_status(ids, deadline)

    async def aget_pods_status(self, pod_ids: object, deadline: float | None = None) -> list[PodStatus]:
        """Async :meth:`get_pods_status` on httpx; chunks are fetched concurrently."""
        ids = validate_pod_ids(pod_ids)
        async with AsyncPrimeClient(await self.aget_settings()) as client:
            return await client.get_pods_status(ids, deadline)

    def test_connection(self) -> tuple[bool, str]:
        """Check the key with ``GET /api/v1/user/whoami`` (the UI's and CLI's connection test).

        The message names who the key belongs to and the scopes it grants, when whoami says.
        """
        try:
            settings = self.get_settings()
            quick = dataclasses.replace(
                settings, max_retries=min(settings.max_retries, _TEST_CONNECTION_RETRIES)
            )
            with PrimeClient(quick) as client:
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

    def _settings_from(self, conn: ConnectionLike | None) -> PrimeApiSettings:
        if conn is not None:
            return settings_from_connection(conn)
        settings = settings_from_environment()
        if settings is None:
            raise missing_key_error(self.prime_conn_id)
        self.log.info(
            "Connection %r is not defined; using %s and the base URL %s from the environment "
            "(%s, then %s), as the prime CLI does.",
            self.prime_conn_id,
            ENV_API_KEY,
            settings.base_url,
            *ENV_BASE_URLS,
        )
        return settings
