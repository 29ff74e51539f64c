"""Ending a task from its trigger: a successful wait recorded as a worker would, with no worker.

A deferred wait whose pods are ready used to end with an event that made Airflow start a worker
process only to run ``execute_complete``, which logged a line and returned the XCom. Where
:data:`~airflow_provider_prime._compat.TRIGGER_ENDS_TASK` holds, the trigger does that itself:

1. the operator, when it defers, decides with :func:`ends_in_triggerer` whether its success may
   end there (nothing of the task's own code is due after the wait) and passes the answer to the
   trigger as ``end_from_trigger``, the name ``DateTimeTrigger`` uses;
2. the trigger, once the pods are ready, logs the success line (its log is the task's log) and
   calls :func:`end_task`: the return value goes to XCom exactly as a worker pushes it (``SetXCom``
   through the triggerer's supervisor, the value serialized by the Task SDK's XCom), and the event
   is a bare ``TaskSuccessEvent``: Airflow marks the task successful without resuming it.

Whatever keeps :func:`end_task` from pushing (no triggerer, as under ``airflow dags test``; a
configured XCom backend; a refused push) gives ``None``, and the trigger sends the event of
:mod:`airflow_provider_prime.events` as before: a worker resumes the task. Failures always go that
way, since their task code (a create deleting its pod, ``soft_fail``) must run.
"""

from __future__ import annotations

from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_provider_prime._compat import TRIGGER_ENDS_TASK, success_listeners

#: The XCom key of a task's return value (Airflow's ``XCOM_RETURN_KEY``).
RETURN_KEY = "return_value"


def ends_in_triggerer(task: Any) -> bool:
    """Whether ``task``'s successful wait may end in the triggerer, with no worker.

    Only when nothing but the return value is due after the wait: the XCom is pushed
    (``do_xcom_push``) as one value (no ``multiple_outputs``), and the task has no
    ``on_success_callback``, ``post_execute`` or ``outlets`` (Airflow runs none of these for a task a
    trigger ends; see :data:`~airflow_provider_prime._compat.TRIGGER_ENDS_TASK`). A custom XCom
    backend keeps the worker too: its ``serialize_value`` may do blocking I/O, out of place in the
    triggerer's event loop. A registered success listener (OpenLineage) keeps the worker as well:
    Airflow would not call it for a task a trigger ends.
    """
    return (
        TRIGGER_ENDS_TASK
        and bool(getattr(task, "do_xcom_push", True))
        and not getattr(task, "multiple_outputs", False)
        and not getattr(task, "on_success_callback", None)
        and getattr(task, "_post_execute_hook", None) is None
        and not getattr(task, "outlets", None)
        and default_xcom_backend()
        and not success_listeners()
    )


def default_xcom_backend() -> bool:
    """Whether this process stores XComs with the Task SDK's own ``BaseXCom`` (no custom backend)."""
    from airflow.sdk.bases.xcom import BaseXCom
    from airflow.sdk.execution_time.xcom import XCom

    return XCom is BaseXCom


async def end_task(trigger: BaseTrigger, return_value: Any) -> TriggerEvent | None:
    """Push ``return_value`` as the task's XCom; the event that then ends the task, or ``None``.

    ``None`` means "resume on a worker instead" (the caller sends its ordinary event): the trigger
    runs outside a triggerer (no ``task_instance``, no supervisor channel: ``airflow dags test``, a
    unit test), the XCom backend is not the default one, or the push was refused (logged).
    """
    ti = getattr(trigger, "task_instance", None)
    if ti is None or not TRIGGER_ENDS_TASK or not default_xcom_backend():
        return None
    from airflow.sdk.execution_time import task_runner
    from airflow.sdk.execution_time.comms import SetXCom
    from airflow.sdk.execution_time.xcom import XCom
    from airflow.triggers.base import TaskSuccessEvent

    comms = getattr(task_runner, "SUPERVISOR_COMMS", None)
    if comms is None:
        return None
    map_index = -1 if ti.map_index is None else int(ti.map_index)
    try:
        value = XCom.serialize_value(
            value=return_value, key=RETURN_KEY, task_id=ti.task_id, dag_id=ti.dag_id, run_id=ti.run_id
        )
        await comms.asend(
            SetXCom(
                key=RETURN_KEY,
                value=value,
                dag_id=ti.dag_id,
                run_id=ti.run_id,
                task_id=ti.task_id,
                map_index=map_index,
                # What a worker sends for a task with mapped downstream tasks (a TaskMap row, inert
                # without them): the trigger cannot see the DAG, and a length costs nothing.
                mapped_length=len(return_value) if map_index < 0 and _mappable(return_value) else None,
            )
        )
    except Exception as exc:  # the worker path still works: say so and take it
        trigger.log.warning(
            "Could not record the task's XCom from the triggerer (%s: %s); a worker resumes the task "
            "to record it instead",
            type(exc).__name__,
            exc,
        )
        return None
    return TaskSuccessEvent()


def _mappable(value: Any) -> bool:
    return isinstance(value, (dict, list))


__all__ = ["RETURN_KEY", "default_xcom_backend", "end_task", "ends_in_triggerer"]
