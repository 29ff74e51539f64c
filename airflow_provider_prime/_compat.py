"""Every difference between the Airflow versions this provider supports (3.1 to the newest), in one place.

The rest of the package imports these names from here and never sniffs versions itself, so the
day 3.1 support is dropped, this module shrinks and nothing else changes.
"""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

from airflow import __version__ as _airflow_version
from airflow.sdk.exceptions import AirflowException
from packaging.version import Version

try:  # Airflow >= 3.2 moved the task-control exceptions into the Task SDK
    from airflow.sdk.exceptions import (
        AirflowFailException,
        AirflowNotFoundException,
        AirflowSensorTimeout,
        AirflowSkipException,
        AirflowTaskTimeout,
    )
except ImportError:  # Airflow 3.1
    from airflow.exceptions import (  # type: ignore[no-redef, attr-defined, unused-ignore]
        AirflowFailException,
        AirflowNotFoundException,
        AirflowSensorTimeout,
        AirflowSkipException,
        AirflowTaskTimeout,
    )


#: Whether the triggerer can start a task itself (``start_from_trigger``) with its templated fields
#: rendered there: Airflow 3.3 renders them for the trigger; 3.1 and 3.2 would hand it the raw template.
START_FROM_TRIGGER = Version(Version(_airflow_version).base_version) >= Version("3.3.0")


class _ConnectionSource(Protocol):
    """What :func:`get_connection` needs: a hook's lookups (``BaseHook`` has both)."""

    def get_connection(self, conn_id: str) -> Any: ...
    async def aget_connection(self, conn_id: str) -> Any: ...


def _outside_supervisor(exc: ImportError) -> bool:
    """Airflow 3.1 raises this ImportError when no task/triggerer supervisor can answer a lookup."""
    return exc.name == "airflow.sdk.execution_time.task_runner" or "SUPERVISOR_COMMS" in str(exc)


def get_connection(hook: _ConnectionSource, conn_id: str) -> Any | None:
    """The connection ``conn_id``, or None when it does not exist.

    Airflow 3.1 outside a task or triggerer (a script, a unit test) reports a connection it cannot
    find through a supervisor as an ImportError: that also means "not defined".
    """
    try:
        return hook.get_connection(conn_id)
    except AirflowNotFoundException:
        return None
    except ImportError as exc:
        if _outside_supervisor(exc):
            return None
        raise


async def aget_connection(hook: _ConnectionSource, conn_id: str) -> Any | None:
    """Async :func:`get_connection` with Airflow's async API, nothing blocking the event loop.

    Airflow 3.1 outside a task or triggerer has no async lookup: the sync one runs off-loop.
    """
    try:
        return await hook.aget_connection(conn_id)
    except AirflowNotFoundException:
        return None
    except ImportError as exc:
        if not _outside_supervisor(exc):
            raise
    return await asyncio.to_thread(get_connection, hook, conn_id)


def mask_secret(secret: str) -> None:
    """Airflow's log masking for ``secret`` (sync)."""
    from airflow.sdk.log import mask_secret as sdk_mask_secret

    sdk_mask_secret(secret)


async def amask_secret(secret: str) -> None:
    """Airflow's log masking for ``secret`` from an event loop.

    ``amask_secret`` appeared after 3.1; there, ``mask_secret`` masks locally and its supervisor
    notification fails harmlessly inside an event loop.
    """
    import airflow.sdk.log as sdk_log

    amask: Any = getattr(sdk_log, "amask_secret", None)
    if amask is not None:
        await amask(secret)
    else:
        sdk_log.mask_secret(secret)


__all__ = [
    "START_FROM_TRIGGER",
    "AirflowException",
    "AirflowFailException",
    "AirflowNotFoundException",
    "AirflowSensorTimeout",
    "AirflowSkipException",
    "AirflowTaskTimeout",
    "aget_connection",
    "amask_secret",
    "get_connection",
    "mask_secret",
]
