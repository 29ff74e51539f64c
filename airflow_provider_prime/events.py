"""The events a trigger sends back to its task: built and parsed here, and nowhere else.

A trigger fires exactly one event; the task that deferred turns it back into a result or an error
when it resumes, possibly on another machine and another version of this provider. So the shape
lives in one module, with a ``TypedDict`` per kind, a ``build_*`` function per kind and one
:func:`parse_event` that checks a payload before anything trusts it:

* ``success``: ``{"status": "success", "message": str, "pods": {pod_id: handover entry}}``;
* ``failed``: ``{"status": "failed", "error_type": str, "message": str, "pods": {...}}``, where
  ``error_type`` names a class of :mod:`airflow_provider_prime.exceptions` (looked up only through
  :data:`~airflow_provider_prime.exceptions.ERROR_CLASSES`; any other name gives ``PrimeError``);
* ``timeout``: ``{"status": "timeout", "message": str, "pods": {...}}``;
* ``done``: ``{"status": "done", "message": str, "pods": {}, "job": {...}}``, a phase of a job that
  ended well (``job`` is the task's return value for the command, ``{"phase": "setup"}`` for a setup).

``pods`` is the handover mapping (:meth:`~airflow_provider_prime.readiness.Verdict.handover`) as
far as it is known: complete on success, the last answer on failure or timeout. Any trigger of this
provider (the pod-status trigger today, the lifecycle operators' tomorrow) uses the same three
kinds, so one ``execute_complete`` pattern fits them all: ``return event_result(parse_event(e))``.
"""

from __future__ import annotations

import reprlib
from collections.abc import Mapping
from typing import Any, Literal, TypedDict

from airflow_provider_prime._compat import AirflowSensorTimeout
from airflow_provider_prime.exceptions import ERROR_CLASSES, PrimeError

#: The handover mapping an event carries: pod id -> what a downstream task needs about that pod.
Pods = dict[str, dict[str, Any]]


class SuccessEvent(TypedDict):
    """Every pod is ready; ``pods`` is the complete handover."""

    status: Literal["success"]
    message: str
    pods: Pods


class FailedEvent(TypedDict):
    """The wait failed; ``error_type`` is the exception class to raise again, by name."""

    status: Literal["failed"]
    error_type: str
    message: str
    pods: Pods


class TimeoutEvent(TypedDict):
    """The deadline passed; ``message`` says what each pod still lacked and the last API error."""

    status: Literal["timeout"]
    message: str
    pods: Pods


class DoneEvent(TypedDict):
    """A job's phase ended well on every node; ``job`` is what the task returns (or resumes with)."""

    status: Literal["done"]
    message: str
    pods: Pods
    job: dict[str, Any]


Event = SuccessEvent | FailedEvent | TimeoutEvent | DoneEvent


def build_success(pods: Mapping[str, Mapping[str, Any]], message: str) -> SuccessEvent:
    return {"status": "success", "message": message, "pods": _pods(pods)}


def build_failed(error: BaseException, pods: Mapping[str, Mapping[str, Any]] | None = None) -> FailedEvent:
    """The event for ``error``: the provider's own errors keep their class, anything else is named."""
    if isinstance(error, PrimeError):
        error_type, message = type(error).__name__, str(error)
    else:
        error_type = PrimeError.__name__
        message = f"Unexpected error while waiting for the pods: {type(error).__name__}: {error}"
    return {"status": "failed", "error_type": error_type, "message": message, "pods": _pods(pods)}


def build_timeout(message: str, pods: Mapping[str, Mapping[str, Any]] | None = None) -> TimeoutEvent:
    return {"status": "timeout", "message": message, "pods": _pods(pods)}


def build_done(job: Mapping[str, Any], message: str) -> DoneEvent:
    return {"status": "done", "message": message, "pods": {}, "job": dict(job)}


def parse_event(payload: object) -> Event:
    """The typed event in ``payload``, or a :class:`PrimeError` saying what is wrong with it."""
    if not isinstance(payload, Mapping):
        raise _not_understood(payload, "not a mapping")
    status, message, pods = payload.get("status"), payload.get("message", ""), payload.get("pods", {})
    if not isinstance(message, str):
        raise _not_understood(payload, "'message' is not a string")
    if not isinstance(pods, Mapping) or not all(
        isinstance(k, str) and isinstance(v, Mapping) for k, v in pods.items()
    ):
        raise _not_understood(payload, "'pods' is not a mapping of pod ids to mappings")
    if status == "success":
        return build_success(pods, message)
    if status == "timeout":
        return build_timeout(message, pods)
    if status == "done":
        job = payload.get("job")
        if not isinstance(job, Mapping):
            raise _not_understood(payload, "'job' is not a mapping")
        return build_done(job, message)
    if status == "failed":
        error_type = payload.get("error_type")
        if not isinstance(error_type, str):
            raise _not_understood(payload, "'error_type' is not a string")
        return {"status": "failed", "error_type": error_type, "message": message, "pods": _pods(pods)}
    raise _not_understood(payload, f"unknown status {status!r}")


def event_error(event: Event) -> Exception:
    """The exception a task raises for a failed or timed-out wait.

    A timeout is :class:`AirflowSensorTimeout` (so ``soft_fail`` skips, as Airflow's sensors do);
    a failure is the class the event names, if it is one of the provider's, else ``PrimeError``:
    a name in an event is never looked up anywhere but :data:`ERROR_CLASSES`.
    """
    if event["status"] == "timeout":
        return AirflowSensorTimeout(event["message"])
    if event["status"] != "failed":  # a wait's event where a job's was due, or the other way round
        status, message = event["status"], event["message"]
        return PrimeError(f"The trigger sent a {status!r} event this task cannot use: {message}")
    return ERROR_CLASSES.get(event["error_type"], PrimeError)(event["message"])


def _pods(pods: Mapping[str, Mapping[str, Any]] | None) -> Pods:
    return {pod_id: dict(entry) for pod_id, entry in (pods or {}).items()}


def _not_understood(payload: object, why: str) -> PrimeError:
    shown = reprlib.repr(payload)
    return PrimeError(f"The trigger sent an event this task does not understand ({why}): {shown}")


__all__ = [
    "DoneEvent",
    "Event",
    "FailedEvent",
    "SuccessEvent",
    "TimeoutEvent",
    "build_done",
    "build_failed",
    "build_success",
    "build_timeout",
    "event_error",
    "parse_event",
]
