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


def _tasks_take_retry_policy() -> bool:
    """Whether tasks take ``retry_policy=`` (AIP-105): the module and the operator argument, both."""
    try:
        from airflow.sdk import BaseOperator
        from airflow.sdk.definitions.retry_policy import RetryPolicy  # noqa: F401
    except ImportError:
        return False
    import inspect

    return "retry_policy" in inspect.signature(BaseOperator.__init__).parameters


#: Whether tasks take a ``retry_policy`` (Airflow 3.3+). Below, the provider's retry policy is
#: ``None``, which changes nothing (:mod:`airflow_provider_prime.retry`).
RETRY_POLICY = _tasks_take_retry_policy()


def _trigger_can_end_task() -> bool:
    """Whether this Airflow has both halves of ending a task from its trigger (see below)."""
    try:
        from airflow.sdk.execution_time.comms import SetXCom  # noqa: F401
        from airflow.triggers.base import TaskSuccessEvent  # noqa: F401
    except ImportError:  # pragma: no cover - every supported Airflow has both
        return False
    return True


#: Whether a trigger can end its task with success and the task's XCom, with no worker process.
#:
#: What Airflow's code does, the same on 3.1.0 and 3.3.2 (``airflow/models/trigger.py``,
#: ``handle_event_submit`` for a ``BaseTaskEndEvent``): the triggerer's supervisor sets the task
#: instance's state from the event and clears its trigger, so no worker resumes it, and it files
#: a task callback request. Three things differ from a worker's success, and decide how this
#: provider uses it (:mod:`airflow_provider_prime.triggers.task_end`):
#:
#: * The event's own ``xcoms`` are stored with ``TaskInstance.xcom_push`` -> ``XComModel.set``,
#:   which ``json.dumps`` the value into the JSON column: a dict arrives in a downstream task's
#:   ``xcom_pull`` as its JSON *string* (the execution API hands the stored value over as it is),
#:   where a worker's push (through the execution API, value already a JSON document) gives the
#:   dict. So the provider's trigger pushes the XCom itself the way a worker does, with
#:   ``SetXCom`` through the triggerer's supervisor channel (answered on 3.1.0 and 3.3.2 alike,
#:   ``TriggerRunnerSupervisor._handle_request``), then yields a bare ``TaskSuccessEvent``.
#: * The task's ``on_success_callback`` never runs: the callback request goes to the DAG
#:   processor, which runs failure callbacks only (``_execute_task_callbacks``: "Task callback
#:   requested but is not a failure callback"). Nor do ``post_execute``, asset events for
#:   ``outlets`` or listeners' ``on_task_instance_success``. Tasks with any of the first three end
#:   on a worker as before.
#: * ``airflow dags test`` (``_run_task`` in ``airflow/sdk/definitions/dag.py``, 3.1.0 and 3.3.2)
#:   runs the trigger in line and resumes the task with the event's ``payload``, which for a
#:   ``TaskSuccessEvent`` is the string ``"success"``; it ignores ``xcoms`` and the state. There the
#:   trigger has no ``task_instance`` (the triggerer sets it), and the trigger sends today's event.
TRIGGER_ENDS_TASK = _trigger_can_end_task()


def _asset_state_store() -> bool:
    try:
        from airflow.sdk.execution_time.comms import GetAssetStateStoreByName  # noqa: F401
    except ImportError:  # Airflow 3.1 and 3.2
        return False
    return True


#: Whether the triggerer gives event triggers a per-asset state store (``asset_state_store``,
#: Airflow 3.3+), where :class:`~airflow_provider_prime.triggers.capacity_event.PrimeCapacityEventTrigger`
#: remembers the capacity it saw; below, it uses a Variable. (``BaseEventTrigger`` itself is in
#: ``airflow.triggers.base`` from 3.1 on: no switch needed for it.)
ASSET_STATE_STORE = _asset_state_store()


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
    "ASSET_STATE_STORE",
    "RETRY_POLICY",
    "START_FROM_TRIGGER",
    "TRIGGER_ENDS_TASK",
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


def success_listeners() -> bool:
    """Whether a listener (OpenLineage's, a plugin's) waits for task successes in this process.

    Airflow calls ``on_task_instance_success`` only when a worker ends the task, never for one a
    trigger ends: where one is registered, a wait keeps ending on a worker, so the listener sees
    what it saw before. Unknown counts as yes.
    """
    try:
        try:  # Airflow 3.2+: the Task SDK's own manager (the worker's)
            from airflow.sdk.listener import get_listener_manager
        except ImportError:  # Airflow 3.1
            from airflow.listeners.listener import get_listener_manager  # type: ignore[no-redef, assignment, unused-ignore]
        return bool(get_listener_manager().hook.on_task_instance_success.get_hookimpls())
    except Exception:
        return True
