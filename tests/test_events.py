"""The trigger events: what is built parses back to the same thing, and nothing else parses."""

from __future__ import annotations

import json

import pytest

from airflow_provider_prime._compat import AirflowSensorTimeout
from airflow_provider_prime.events import (
    build_failed,
    build_success,
    build_timeout,
    event_error,
    parse_event,
)
from airflow_provider_prime.exceptions import (
    ERROR_CLASSES,
    PrimeAuthError,
    PrimeError,
    PrimePodFailedError,
)

PODS = {"a": {"status": "ACTIVE", "ssh_connections": ["root@10.0.0.1 -p 22"]}}


@pytest.mark.parametrize(
    "event",
    [
        build_success(PODS, "1/1 pods ready"),
        build_failed(PrimePodFailedError("Pod wait failed: a: pod is ERROR"), PODS),
        build_failed(PrimeAuthError("401")),
        build_timeout("Pods not ready by the deadline", PODS),
    ],
)
def test_every_built_event_survives_json_and_parses_back_unchanged(event):
    assert parse_event(json.loads(json.dumps(event))) == event


def test_a_failed_event_raises_the_class_it_names():
    error = event_error(build_failed(PrimeAuthError("401: check the API key")))
    assert type(error) is PrimeAuthError
    assert str(error) == "401: check the API key"


@pytest.mark.parametrize("name", sorted(ERROR_CLASSES))
def test_every_class_of_the_tree_round_trips(name):
    error = event_error(parse_event(build_failed(ERROR_CLASSES[name]("why"))))
    assert type(error) is ERROR_CLASSES[name]


@pytest.mark.parametrize("name", ["SystemExit", "KeyboardInterrupt", "os.system", "PrimeErrorr"])
def test_a_name_outside_the_tree_gives_prime_error(name):
    event = parse_event({"status": "failed", "error_type": name, "message": "boom", "pods": {}})
    error = event_error(event)
    assert type(error) is PrimeError
    assert str(error) == "boom"


def test_an_unexpected_exception_becomes_a_named_prime_error():
    event = build_failed(RuntimeError("boom"))
    assert event["error_type"] == "PrimeError"
    assert event["message"] == "Unexpected error while waiting for the pods: RuntimeError: boom"


def test_a_timeout_raises_airflows_sensor_timeout():
    error = event_error(build_timeout("late: a: pod is PENDING"))
    assert isinstance(error, AirflowSensorTimeout)
    assert "a: pod is PENDING" in str(error)


def test_pods_are_copied_not_shared():
    pods = {"a": {"status": "ACTIVE"}}
    event = build_success(pods, "ok")
    pods["a"]["status"] = "changed"
    assert event["pods"] == {"a": {"status": "ACTIVE"}}


@pytest.mark.parametrize(
    ("payload", "why"),
    [
        (None, "not a mapping"),
        ("success", "not a mapping"),
        ({}, "unknown status None"),
        ({"status": "weird"}, "unknown status 'weird'"),
        ({"status": "success", "message": 3}, "'message' is not a string"),
        ({"status": "success", "pods": ["a"]}, "'pods' is not a mapping"),
        ({"status": "success", "pods": {"a": "ACTIVE"}}, "'pods' is not a mapping"),
        ({"status": "failed", "message": "x"}, "'error_type' is not a string"),
    ],
)
def test_an_event_it_does_not_understand_is_a_clear_error(payload, why):
    with pytest.raises(PrimeError, match="does not understand") as caught:
        parse_event(payload)
    assert why in str(caught.value)
