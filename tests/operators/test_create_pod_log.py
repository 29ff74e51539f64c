"""The create operator's own wait in the worker quotes the failed pod's log tail (default 50 lines).

The deferred wait is the trigger's (``tests/sensors/test_pod_log_tail.py``, and on real Airflow
``tests/e2e/test_pod_log_e2e.py``); this is the worker's driver in ``PrimeCreatePodOperator``.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

import pytest

from airflow_provider_prime.exceptions import PrimeConfigError, PrimeError, PrimePodFailedError
from airflow_provider_prime.readiness import pods_worth_a_log_of_event
from airflow_provider_prime.testing import CreateLifecycle, Fault, PrimeSimulator
from tests.operators.conftest import (
    TaskDeferred,
    TaskInstance,
    account,
    billing_after_deletes,
    create,
    make_context,
)

FAILURE = "pip could not build flash-attn: CUDA toolkit not found (pod log)"


def test_a_failed_installation_in_the_worker_quotes_the_pods_log(lifecycle_sim) -> None:
    sim = lifecycle_sim(CreateLifecycle(active_after=1, installed_after=2, installation_failure=FAILURE))
    ti = TaskInstance()
    with pytest.raises(PrimePodFailedError) as caught:
        create().execute(make_context(ti))
    pod_id = ti.xcom["pod_id"]
    message = str(caught.value)
    assert f"installation ERROR: {FAILURE}" in message
    assert f"of pod {pod_id}'s log:\n" in message
    assert message.rstrip().endswith(f"ERROR: {FAILURE}")
    assert sim.api_key not in message
    assert sim.stats.by_path[f"/api/v1/pods/{pod_id}/log"] == 1
    assert account(sim)["deleted"]  # the failure still deletes the pod
    assert billing_after_deletes(sim) == []


# -- env secrets, pod_log_tail and the deferred wait (issue 22 F5, F8) ---------------------------------

SECRET = "hf_EnvSecretOfThePod0123456789"
LOG = "/api/v1/pods/*/log"


def install_fails(lifecycle_sim: Any) -> PrimeSimulator:
    sim: PrimeSimulator = lifecycle_sim(
        CreateLifecycle(active_after=1, installed_after=2, installation_failure=FAILURE, deleting_for=0.5)
    )
    return sim


def log_says(sim: PrimeSimulator, text: str) -> None:
    sim.inject(Fault.json_reply({"data": text}, method="GET", path=LOG, times=None))


def log_reads(sim: PrimeSimulator) -> int:
    return len([r for r in sim.stats.log if r.path.endswith("/log")])


def first_event(trigger: Any) -> dict[str, Any]:
    async def first() -> dict[str, Any]:
        async for event in trigger.run():
            return dict(event.payload)
        raise AssertionError("no event")

    return asyncio.run(first())


def test_an_env_secret_cut_by_the_line_limit_is_scrubbed_whole(lifecycle_sim) -> None:
    """The values are scrubbed before a long line is cut (500 characters): no prefix survives."""
    sim = install_fails(lifecycle_sim)
    log_says(sim, "x" * 490 + SECRET + " and more\nERROR: " + FAILURE)
    with pytest.raises(PrimePodFailedError) as caught:
        create(env_vars=[{"key": "HF_TOKEN", "value": SECRET}]).execute(make_context())
    assert SECRET[:8] not in str(caught.value)
    assert "***" in str(caught.value)
    assert billing_after_deletes(sim) == []


def test_the_deferred_wait_reads_the_log_once_in_the_worker_before_the_delete(lifecycle_sim) -> None:
    sim = install_fails(lifecycle_sim)
    log_says(sim, f"token {SECRET}\nERROR: {FAILURE}")
    ti = TaskInstance()
    with pytest.raises(TaskDeferred) as caught:
        create(deferrable=True, env_vars={"HF_TOKEN": SECRET}).execute(make_context(ti))
    trigger = caught.value.trigger
    assert trigger.serialize()[1]["pod_log_tail"] == 0  # the triggerer reads no log
    event = first_event(trigger)
    assert event["status"] == "failed"
    assert "'s log" not in event["message"]
    assert log_reads(sim) == 0
    resumed = create(deferrable=True, env_vars={"HF_TOKEN": SECRET})
    with pytest.raises(PrimePodFailedError) as failed:
        resumed.execute_complete(make_context(ti), event, **caught.value.kwargs)
    message = str(failed.value)
    assert message.rstrip().endswith(f"ERROR: {FAILURE}")
    assert "token ***" in message
    assert log_reads(sim) == 1
    (delete,) = [r for r in sim.stats.log if r.method == "DELETE"]
    (read,) = [r for r in sim.stats.log if r.path.endswith("/log")]
    assert sim.stats.log.index(read) < sim.stats.log.index(delete)  # read while the pod is there
    assert billing_after_deletes(sim) == []


def test_the_deferred_wait_with_pod_log_tail_zero_reads_nothing(lifecycle_sim) -> None:
    sim = install_fails(lifecycle_sim)
    ti = TaskInstance()
    with pytest.raises(TaskDeferred) as caught:
        create(deferrable=True, pod_log_tail=0).execute(make_context(ti))
    event = first_event(caught.value.trigger)
    resumed = create(deferrable=True, pod_log_tail=0)
    with pytest.raises(PrimePodFailedError, match=re.escape(FAILURE)):
        resumed.execute_complete(make_context(ti), event, **caught.value.kwargs)
    assert log_reads(sim) == 0
    assert billing_after_deletes(sim) == []


def test_a_quote_an_older_trigger_made_is_not_read_again(lifecycle_sim) -> None:
    """A wait deferred by an older release: its trigger quoted the log in the event already."""
    sim = install_fails(lifecycle_sim)
    ti = TaskInstance()
    with pytest.raises(TaskDeferred) as caught:
        create(deferrable=True).execute(make_context(ti))
    pod_id = ti.xcom["pod_id"]
    event = {
        "status": "failed",
        "error_type": "PrimePodFailedError",
        "message": f"Pod wait failed: {pod_id}: installation ERROR\nThe last line of pod {pod_id}'s log:\n x",
        "pods": {pod_id: {"status": "ACTIVE", "installation_status": "ERROR"}},
    }
    with pytest.raises(PrimePodFailedError):
        create(deferrable=True).execute_complete(make_context(ti), event, **caught.value.kwargs)
    assert log_reads(sim) == 0
    assert billing_after_deletes(sim) == []


@pytest.mark.parametrize("tail", [-1, True, "50", 2.5])
def test_a_bad_pod_log_tail_is_refused(tail: Any) -> None:
    with pytest.raises(PrimeConfigError, match="pod_log_tail must be a whole number"):
        create(pod_log_tail=tail)


def test_a_pod_that_is_gone_gets_no_log_read() -> None:
    """Only ERROR or a failed installation have a story in their log (as for the sensor)."""
    error = PrimePodFailedError("Pod wait failed")
    pods = {
        "a": {"status": "TERMINATED"},
        "b": {"status": "STOPPED"},
        "c": {"status": "ERROR"},
        "d": {"status": "ACTIVE", "installation_status": "ERROR"},
    }
    assert pods_worth_a_log_of_event(error, pods) == ["c", "d"]
    assert pods_worth_a_log_of_event(PrimeError("API refused"), pods) == []
