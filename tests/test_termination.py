"""The termination step, pure: a pod is done when TERMINATED or gone; errors are judged like readiness's."""

from __future__ import annotations

from typing import Any

import pytest

from airflow_provider_prime.exceptions import (
    PrimeAuthError,
    PrimeNotFoundError,
    PrimeTransientError,
)
from airflow_provider_prime.models import Pod
from airflow_provider_prime.termination import GONE, TerminationWait, ask


class Log:
    def __init__(self) -> None:
        self.lines: list[tuple[str, str]] = []

    def debug(self, msg: str, *args: Any) -> None:
        self.lines.append(("debug", msg % args))

    def info(self, msg: str, *args: Any) -> None:
        self.lines.append(("info", msg % args))

    def warning(self, msg: str, *args: Any) -> None:
        self.lines.append(("warning", msg % args))


def pod(pod_id: str, status: str, terminated_at: str | None = None) -> Pod:
    return Pod.model_validate(
        {"id": pod_id, "status": status, "terminatedAt": terminated_at, "providerType": "runpod"}
    )


def test_terminated_and_gone_pods_are_done_and_asked_no_more():
    wait = TerminationWait(["a", "b", "c"], Log(), deadline=100)
    step = wait.answer(
        {
            "a": pod("a", "TERMINATED", "2025-01-01T00:00:00Z"),
            "b": pod("b", "DELETING"),
            "c": PrimeNotFoundError("pod c not found"),
        },
        now=1,
    )
    assert not step.done
    assert wait.pending == ["b"]
    assert step.ends["c"] == {"status": GONE, "terminated_at": None, "final": True}
    assert step.ends["b"]["final"] is False
    step = wait.answer({"b": pod("b", "TERMINATED")}, now=2)
    assert step.done
    assert step.terminated
    assert step.error is None


def test_a_transient_error_is_logged_and_the_pod_asked_again():
    log = Log()
    wait = TerminationWait(["a"], log, deadline=100)
    step = wait.answer({"a": PrimeTransientError("503", http_status=503)}, now=1)
    assert not step.done
    assert wait.pending == ["a"]
    assert log.lines == [("warning", "Prime API unavailable, still waiting for termination: 503")]


@pytest.mark.parametrize("error", [PrimeAuthError("401", http_status=401), RuntimeError("a bug")])
def test_any_other_error_fails_the_wait_with_what_is_known(error):
    wait = TerminationWait(["a", "b"], Log(), deadline=100)
    step = wait.answer({"a": pod("a", "TERMINATED"), "b": error}, now=1)
    assert step.done
    assert step.error is error
    assert step.ends["a"]["final"] is True
    assert wait.trouble(error, now=2).error is error


def test_the_timeout_names_the_pods_not_gone():
    wait = TerminationWait(["a", "b"], Log(), deadline=100)
    wait.answer({"a": pod("a", "TERMINATED"), "b": pod("b", "DELETING")}, now=1)
    assert wait.timeout_message() == "pods not terminated in time: b"
    assert wait.due == wait.deadline == 100


def test_ask_keeps_each_pods_answer_or_error():
    def get_pod(pod_id: str) -> Pod:
        if pod_id == "gone":
            raise PrimeNotFoundError("no such pod")
        return pod(pod_id, "DELETING")

    answers = ask(["a", "gone"], get_pod)
    assert isinstance(answers["a"], Pod)
    assert isinstance(answers["gone"], PrimeNotFoundError)
