"""PrimeHook: the provider's only door to the Prime Intellect API, from a worker or a triggerer.

The hook resolves :class:`PrimeApiSettings` from its Airflow connection (or, when the connection does
not exist, from ``PRIME_API_KEY`` / ``PRIME_API_BASE_URL`` like the official CLI), masks the key in
Airflow's logs, and delegates HTTP to :class:`PrimeClient` / :class:`AsyncPrimeClient`, which share
one request/response path (see :mod:`._transport`).

Connection (type ``prime``): host = API base URL (default ``https://api.primeintellect.ai``; a
trailing ``/api/v1`` is tolerated; a host without scheme means https), password = API key,
extra = transport options documented in :mod:`._settings` (timeouts, retries, ``verify``).
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Iterable
from typing import Any

from airflow.sdk import BaseHook

from airflow_provider_prime._compat import (
    AirflowNotFoundException,
    amask_secret,
    mask_secret,
    outside_supervisor,
)
from airflow_provider_prime.exceptions import PrimeError
from airflow_provider_prime.get_provider_info import CONNECTION_FIELDS, UI_FIELD_BEHAVIOUR
from airflow_provider_prime.hooks._clients import AsyncPrimeClient, PrimeClient
from airflow_provider_prime.hooks._settings import (
    DEFAULT_BASE_URL,
    ENV_API_KEY,
    ENV_BASE_URLS,
    ConnectionLike,
    PrimeApiSettings,
    missing_key_error,
    settings_from_connection,
    settings_from_environment,
)
from airflow_provider_prime.hooks._transport import CHUNK_SIZE, normalise_pod_ids
from airflow_provider_prime.models import PodStatus

__all__ = [
    "CHUNK_SIZE",
    "DEFAULT_BASE_URL",
    "AsyncPrimeClient",
    "PrimeApiSettings",
    "PrimeClient",
    "PrimeHook",
]

#: Retries the connection test allows itself: a UI "Test" click should answer within seconds.
_TEST_CONNECTION_RETRIES = 1


class PrimeHook(BaseHook):
    """Read pod statuses from the Prime Intellect API.

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
            conn = self._lookup_connection()
            settings = self._settings_from(conn)
            mask_secret(settings.api_key)
            self._settings = settings
        return self._settings

    async def aget_settings(self) -> PrimeApiSettings:
        """Async :meth:`get_settings`: Airflow's async connection API, nothing blocking the event loop."""
        if self._settings is None:
            try:
                conn: ConnectionLike | None = await self.aget_connection(self.prime_conn_id)
            except AirflowNotFoundException:
                conn = None
            except ImportError as exc:
                if not outside_supervisor(exc):
                    raise
                # Airflow 3.1 outside a task or triggerer has no async lookup: use the sync one, off-loop.
                conn = await asyncio.to_thread(self._lookup_connection)
            settings = self._settings_from(conn)
            await amask_secret(settings.api_key)
            self._settings = settings
        return self._settings

    def get_pods_status(self, pod_ids: Iterable[str]) -> list[PodStatus]:
        """Statuses of the given pods (ids de-duplicated, 100 per request); unknown ids are absent."""
        ids = normalise_pod_ids(pod_ids)
        with PrimeClient(self.get_settings()) as client:
            return client.get_pods_status(ids)

    async def aget_pods_status(self, pod_ids: Iterable[str]) -> list[PodStatus]:
        """Async :meth:`get_pods_status` on httpx; chunks are fetched concurrently."""
        ids = normalise_pod_ids(pod_ids)
        async with AsyncPrimeClient(await self.aget_settings()) as client:
            return await client.get_pods_status(ids)

    def test_connection(self) -> tuple[bool, str]:
        """Check the key with ``GET /api/v1/user/whoami`` (used by the UI's and CLI's connection test)."""
        try:
            settings = self.get_settings()
            quick = dataclasses.replace(
                settings, max_retries=min(settings.max_retries, _TEST_CONNECTION_RETRIES)
            )
            with PrimeClient(quick) as client:
                identity = client.whoami()
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
        for name, spec in CONNECTION_FIELDS.items():
            schema = spec["schema"]
            # Airflow 3.1 forms have no float field: seconds go in a text field, parsed as a number.
            field_class = IntegerField if "integer" in schema["type"] else StringField
            default = schema.get("default")
            widgets[name] = field_class(
                spec["label"],
                validators=[Optional()],
                description=spec.get("description", ""),
                default=default if field_class is IntegerField else str(default),
            )
        return widgets

    def _lookup_connection(self) -> ConnectionLike | None:
        try:
            return self.get_connection(self.prime_conn_id)
        except AirflowNotFoundException:
            return None
        except ImportError as exc:
            if outside_supervisor(exc):
                return None  # Airflow 3.1 outside a task reports a missing connection this way
            raise

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
