"""The termination decision: are deleted pods gone yet? Pure, the same shape as :mod:`.readiness`.

:class:`TerminationWait` is the step the terminate operator's wait (in the worker) and
:class:`~airflow_provider_prime.triggers.pod_lifecycle.PodTerminationTrigger` both take, on the
drivers of :mod:`.waiting`. Its facts are, for each pod not yet seen gone, what asking the API for
it gave: the pod, or the error the request raised (:func:`ask`, :func:`aask`).

* a pod is done when it is ``TERMINATED`` or the API no longer knows it (a 404 on the pod:
  reported with the status :data:`GONE`);
* an error waiting can cure (429, 5xx, no answer) is logged and the pod asked again at the next check;
  any other fails the wait at once (a wrong key or request does not heal);
* the deadline is the driver's; :meth:`TerminationWait.timeout_message` names the pods not gone.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from airflow_provider_prime.exceptions import PrimeNotFoundError, is_transient
from airflow_provider_prime.models import Pod, PodState
from airflow_provider_prime.readiness import WaitLog

#: The status reported for a pod the API no longer knows (it answered 404 for it).
GONE = "GONE"

#: What asking the API for one pod gave: the pod, or the error the request raised.
Answer = Pod | Exception


def termination_state(pod: Pod) -> dict[str, Any]:
    """Where a deleted pod stands: its status, when it terminated, and whether that is the end."""
    return {
        "status": pod.status,
        "terminated_at": pod.terminated_at,
        "final": pod.status == PodState.TERMINATED.value,
    }


def gone_state() -> dict[str, Any]:
    """The end of a pod the API no longer knows."""
    return {"status": GONE, "terminated_at": None, "final": True}


@dataclass(frozen=True)
class TerminationStep:
    """What one check means: each pod's last known end, and the error that failed the wait, if one did."""

    ends: Mapping[str, Mapping[str, Any]]
    error: Exception | None = None
    terminated: bool = False
    again: bool = False

    @property
    def done(self) -> bool:
        return self.terminated or self.error is not None


class TerminationWait:
    """One wait for deleted pods, from check to check: the ends seen so far, and the deadline."""

    def __init__(self, pod_ids: Sequence[str], log: WaitLog, *, deadline: float) -> None:
        self.pod_ids = list(pod_ids)
        self.deadline = deadline
        self.ends: dict[str, dict[str, Any]] = {}
        self._log = log

    @property
    def due(self) -> float:
        return self.deadline

    @property
    def pending(self) -> list[str]:
        """The pods not yet seen terminated or gone, in the order given: what the next check asks for."""
        return [p for p in self.pod_ids if not self.ends.get(p, {}).get("final")]

    def answer(self, facts: Mapping[str, Answer], now: float) -> TerminationStep:
        """Take what asking for each pending pod gave; the first error waiting cannot help fails the wait."""
        errors: list[Exception] = []
        for pod_id, answer in facts.items():
            if isinstance(answer, PrimeNotFoundError):
                self.ends[pod_id] = gone_state()
            elif isinstance(answer, Exception):
                errors.append(answer)
            else:
                self.ends[pod_id] = termination_state(answer)
        for error in errors:
            step = self.trouble(error, now)
            if step.done:
                return step
        return TerminationStep(dict(self.ends), terminated=not self.pending)

    def trouble(self, error: Exception, now: float) -> TerminationStep:
        """A failed request: logged and asked again if waiting can help, else the wait fails."""
        if not is_transient(error):
            return TerminationStep(dict(self.ends), error)
        self._log.warning("Prime API unavailable, still waiting for termination: %s", error)
        return TerminationStep(dict(self.ends))

    def timeout_message(self) -> str:
        return f"pods not terminated in time: {', '.join(self.pending)}"


def ask(pod_ids: Sequence[str], get_pod: Callable[[str], Pod]) -> dict[str, Answer]:
    """Ask for each pod in turn; what each request gave (the error too: it is the step's to judge)."""
    answers: dict[str, Answer] = {}
    for pod_id in pod_ids:
        try:
            answers[pod_id] = get_pod(pod_id)
        except Exception as exc:
            answers[pod_id] = exc
    return answers


async def aask(pod_ids: Sequence[str], aget_pod: Callable[[str], Awaitable[Pod]]) -> dict[str, Answer]:
    """:func:`ask` on an event loop."""
    answers: dict[str, Answer] = {}
    for pod_id in pod_ids:
        try:
            answers[pod_id] = await aget_pod(pod_id)
        except Exception as exc:
            answers[pod_id] = exc
    return answers
