"""What Airflow says about a trigger's own task instance, asked from the triggerer's event loop.

Why
---
Airflow 3.3 calls a trigger's ``on_kill`` when the triggerer drops the trigger with its "user
action" cancel. That is a user marking the deferred task failed or successful, or clearing it;
and it is also a live triggerer whose heartbeat went stale (a slow database, a stalled loop):
another triggerer has taken its triggers and goes on waiting, and the stale one cancels its own
copies the same way. A trigger cannot tell the two apart from the cancel. Airflow can: only
after a user's action is the task instance no longer ``deferred``.

So before :class:`~airflow_provider_prime.triggers.pod_lifecycle.OwnedPodTrigger` deletes
anything, it asks Airflow (:func:`ask_own_state`) for the state of its own task instance
(``self.task_instance``, set by the triggerer) and acts on :func:`judge`:

================================================  ==========================================
Airflow says                                      the pod
================================================  ==========================================
``failed``, ``up_for_retry``, ``upstream_failed``  deleted: the user stopped this try (or it
``skipped``, ``removed``, no state (cleared)      failed), no try is using the pod now
the task instance no longer exists (run deleted)  deleted
``deferred``                                      kept: still waiting, maybe on another
                                                  triggerer, or a new try waits on it
``scheduled``, ``queued``, ``running``            kept: the wait resumed on a worker (its
                                                  event came from another triggerer) or a
                                                  new try is starting, and it adopts the pod
``success``                                       kept: handed over to the tasks downstream
                                                  (the teardown gives it back, the reaper
                                                  when the run has ended)
any other or unknown state, no answer in time,    kept, and logged: the reaper is the
an ``ErrorResponse``, no supervisor to ask        backstop
================================================  ==========================================

Deleting is for certain ends only: an unneeded pod costs money until the teardown or the reaper
deletes it, a deleted pod that a resumed or new try is using costs the training.

How
---
The triggerer's supervisor answers ``GetTaskStates`` (and ``GetTICount``) from its triggers;
the Task SDK's ``SUPERVISOR_COMMS`` is the channel. Its ``asend`` is a coroutine on the
triggerer's own event loop (a request frame written, a future resolved by the reader task), so
it is awaited directly, bounded by :func:`asyncio.wait_for`: it never blocks the loop, and
the synchronous ``send`` (a greenback portal on the loop's thread, or a
``run_coroutine_threadsafe`` from another thread) is not needed. Airflow 3.1 and 3.2 never call
``on_kill`` on a trigger.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from airflow.sdk.api.datamodels._generated import TaskInstanceState
from airflow.sdk.execution_time.comms import ErrorResponse, GetTaskStates, TaskStatesResult

#: Seconds ``on_kill`` waits for Airflow's answer about the task instance, at most. The triggerer's
#: supervisor starts its in-process API server on the first request that needs it: 5 s and more
#: on a loaded machine (seen in the end-to-end test, where the answer came after 5.2 s).
STATE_QUESTION_TIMEOUT = 12.0
#: Seconds the one delete attempt of each pod in ``on_kill`` may take, at most (all pods at once).
ON_KILL_DELETE_TIMEOUT = 8.0
#: Airflow 3.3's default ``[triggerer] on_kill_timeout``: the whole ``on_kill`` must end within it.
DEFAULT_ON_KILL_TIMEOUT = 30.0


def on_kill_budget() -> tuple[float, float]:
    """Seconds for the question to Airflow and for the deletes: together two thirds of
    ``[triggerer] on_kill_timeout`` at most (12 s + 8 s of the default 30 s).

    A deployment that lowers ``on_kill_timeout`` below 30 s gets proportionally shorter bounds, so
    Airflow never cancels ``on_kill`` midway.
    """
    from airflow.configuration import conf

    limit = conf.getfloat("triggerer", "on_kill_timeout", fallback=DEFAULT_ON_KILL_TIMEOUT)
    return min(STATE_QUESTION_TIMEOUT, limit * 0.4), min(ON_KILL_DELETE_TIMEOUT, limit * 0.25)


T = TypeVar("T")


async def through_cancels(work: Awaitable[T]) -> T:
    """Await ``work`` (an ``on_kill``'s) to its end through Airflow's repeated cancels.

    Airflow 3.3 repeats its cancel at every sync of the triggerer with its supervisor (about once a
    second) until the trigger has ended, and a cancel that reaches ``on_kill`` ends it silently. So
    the work runs in a task of its own, which the cancels do not reach; the work bounds itself.
    """
    task = asyncio.ensure_future(work)
    while True:
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            if task.done():
                raise
            uncancel = getattr(asyncio.current_task(), "uncancel", None)  # Python 3.11+
            if uncancel is not None:
                uncancel()


#: States in which no try of the task instance uses the pod or is about to: the user stopped the
#: wait (failed, cleared) or Airflow ended it. ``None`` is a cleared task instance.
STOPPED_STATES: frozenset[TaskInstanceState | None] = frozenset(
    {
        None,
        TaskInstanceState.FAILED,
        TaskInstanceState.UP_FOR_RETRY,
        TaskInstanceState.UPSTREAM_FAILED,
        TaskInstanceState.SKIPPED,
        TaskInstanceState.REMOVED,
    }
)


class SupervisorComms(Protocol):
    """The part of the Task SDK's ``SUPERVISOR_COMMS`` used here (a ``TriggerCommsDecoder`` in 3.3)."""

    async def asend(self, msg: Any, /) -> Any: ...


class OwnTaskInstance(Protocol):
    """What identifies the trigger's task instance (``RuntimeTaskInstance`` or the triggerer's DTO)."""

    dag_id: str
    run_id: str
    task_id: str
    map_index: int


@dataclass(frozen=True)
class OwnState:
    """Airflow's word on the task instance: whether its wait was stopped, and what was said.

    ``stopped`` is True only on a definite answer from :data:`STOPPED_STATES` or "no such task
    instance"; everything else (still deferred, resumed, unknown, no answer) is False. ``known``
    is False when there was no usable answer (``said`` then says why).
    """

    stopped: bool
    said: str
    known: bool = True


def unknown(why: str) -> OwnState:
    """No usable answer: not stopped, as far as anyone can tell."""
    return OwnState(False, why, known=False)


def supervisor_comms() -> SupervisorComms | None:
    """The Task SDK's channel to the supervisor, when this process has one that can ``asend``."""
    from airflow.sdk.execution_time import task_runner

    comms = getattr(task_runner, "SUPERVISOR_COMMS", None)
    return comms if callable(getattr(comms, "asend", None)) else None


def state_key(task_id: str, map_index: int) -> str:
    """The key of one task instance in Airflow's ``task_states`` answer (``task``, ``task_3``)."""
    return task_id if map_index < 0 else f"{task_id}_{map_index}"


async def ask_own_state(
    task_instance: OwnTaskInstance | None, *, timeout: float, comms: SupervisorComms | None = None
) -> OwnState:
    """Ask Airflow (at most ``timeout`` seconds) where the trigger's own task instance stands.

    The question names the one task instance exactly (DAG, run, task and map index), so its
    answer holds at most that task instance: the ``task_1`` key of a mapped ``task`` and of an
    unmapped ``task_1`` cannot meet in it. Never raises: an unanswerable question is a state
    that is not "stopped".
    """
    if task_instance is None:
        return unknown("the triggerer gave this trigger no task instance")
    comms = comms if comms is not None else supervisor_comms()
    if comms is None:
        return unknown("no Airflow supervisor to ask (not in a triggerer)")
    map_index = int(task_instance.map_index if task_instance.map_index is not None else -1)
    question = GetTaskStates(
        dag_id=task_instance.dag_id,
        task_ids=[task_instance.task_id],
        run_ids=[task_instance.run_id],
        map_index=map_index if map_index >= 0 else None,
    )
    try:
        answer = await asyncio.wait_for(comms.asend(question), timeout)
    except asyncio.TimeoutError:
        return unknown(f"Airflow did not answer within {timeout:g} s")
    except Exception as exc:  # AirflowRuntimeError (an error frame), a closed channel...
        return unknown(f"asking Airflow failed: {type(exc).__name__}: {exc}")
    return judge(answer, task_instance.run_id, state_key(task_instance.task_id, map_index))


def judge(answer: Any, run_id: str, key: str) -> OwnState:
    """What Airflow's ``answer`` to the question of :func:`ask_own_state` means for the pod."""
    if isinstance(answer, ErrorResponse):
        error = getattr(answer.error, "value", answer.error)
        return unknown(f"Airflow answered with an error ({error}: {answer.detail})")
    if not isinstance(answer, TaskStatesResult):
        return unknown(f"Airflow answered with a {type(answer).__name__}")
    run = answer.task_states.get(run_id)
    if run is None:
        return OwnState(True, "the task instance no longer exists (its run was deleted)")
    if key not in run:
        return unknown(f"the answer has no {key!r} in run {run_id!r}")
    raw = run[key]
    if raw is None:
        return OwnState(True, "no state (cleared)")
    try:
        state = TaskInstanceState(raw)
    except ValueError:
        return unknown(f"a state this provider does not know ({raw!r})")
    return OwnState(state in STOPPED_STATES, state.value)
