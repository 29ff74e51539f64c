"""The exception tree of ``exceptions.py``: what callers catch, and what waiting can fix."""

from __future__ import annotations

import inspect
import re

import pytest

from airflow_provider_prime import exceptions
from airflow_provider_prime._compat import AirflowException, AirflowFailException
from airflow_provider_prime.exceptions import ERROR_CLASSES, PrimeError, PrimeRequestError, is_transient

TRANSIENT = {"PrimeTransientError", "PrimeConnectionError"}


def drawn_tree() -> dict[str, str | None]:
    """Each class named in the module docstring's drawing, with the class drawn above it (its parent)."""
    parents: dict[str, str | None] = {}
    stack: list[tuple[int, str]] = []
    for line in (exceptions.__doc__ or "").splitlines():
        match = re.match(r"^[ │├└─]*(Prime\w*Error)", line)  # a node of the drawing, not prose
        if match is None:
            continue
        depth = match.start(1)
        while stack and stack[-1][0] >= depth:
            stack.pop()
        parents[match.group(1)] = stack[-1][1] if stack else None
        stack.append((depth, match.group(1)))
    return parents


def test_every_error_class_is_in_error_classes() -> None:
    defined = {
        name
        for name, value in vars(exceptions).items()
        if inspect.isclass(value)
        and issubclass(value, PrimeError)
        and value.__module__ == exceptions.__name__
    }
    assert set(ERROR_CLASSES) == defined


def test_the_docstring_draws_the_tree_as_the_code_defines_it() -> None:
    parents = drawn_tree()
    assert set(parents) == set(ERROR_CLASSES)
    for name, parent in parents.items():
        bases = {base.__name__ for base in ERROR_CLASSES[name].__bases__}
        if parent is None:
            assert PrimeError is ERROR_CLASSES[name]
        else:
            assert parent in bases, f"{name} is drawn under {parent}, but its bases are {bases}"


@pytest.mark.parametrize("name", sorted(ERROR_CLASSES))
def test_waiting_helps_only_for_the_transient_subtree(name: str) -> None:
    cls = ERROR_CLASSES[name]
    error = cls("message")
    assert is_transient(error) is (name in TRANSIENT)
    assert isinstance(error, AirflowException)


def test_a_failed_pod_fails_the_task_without_airflow_retries() -> None:
    assert issubclass(ERROR_CLASSES["PrimePodFailedError"], AirflowFailException)
    assert not is_transient(ValueError("not ours"))


def test_api_errors_carry_status_and_details() -> None:
    error = PrimeRequestError("refused", http_status=422, details=["pod.name: required"])
    assert (str(error), error.http_status, error.details) == ("refused", 422, ["pod.name: required"])


def test_a_capacity_wait_at_its_deadline_is_still_a_no_offer_error_and_survives_a_trigger_event() -> None:
    """Code catching PrimeNoOfferError still catches it; a trigger's failure event keeps its class
    (the retry policy fails this one where it retries a plain PrimeNoOfferError)."""
    from airflow_provider_prime import events
    from airflow_provider_prime.exceptions import PrimeCapacityTimeoutError, PrimeNoOfferError

    assert issubclass(PrimeCapacityTimeoutError, PrimeNoOfferError)
    event = events.build_failed(PrimeCapacityTimeoutError("waited 2h"))
    error = events.event_error(events.parse_event(event))
    assert type(error) is PrimeCapacityTimeoutError
    assert "waited 2h" in str(error)
