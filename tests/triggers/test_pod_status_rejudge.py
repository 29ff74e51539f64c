"""PodStatusTrigger skips judging answers in which none of its pods changed, and misses nothing by it.

The poller names the pods that changed in a round; a trigger whose pods are not among them keeps
its verdict (at thousands of waits per poll, judging the same answer again was most of a poll's
CPU: see docs/benchmarks.md). What must still hold, observed from outside: every change is seen,
even one that comes after a run of identical answers or a failed round, and a pod missing from
every answer still runs out of grace although the answer never changes.
"""

from __future__ import annotations

import asyncio
import time
from unittest import mock

import pytest

from airflow_provider_prime.exceptions import PrimeTransientError
from airflow_provider_prime.hooks._settings import PrimeApiSettings
from airflow_provider_prime.hooks.prime import PrimeHook
from airflow_provider_prime.triggers.pod_status import PodStatusTrigger
from tests.simulated import until
from tests.statuses import pod
from tests.triggers.fakes import FakeApi

SETTINGS = PrimeApiSettings(base_url="http://127.0.0.1:9", api_key="pk-rejudge-test")


@pytest.fixture
def api(monkeypatch: pytest.MonkeyPatch) -> FakeApi:
    fake = FakeApi()
    monkeypatch.setattr(PrimeHook, "async_status_client", fake.client)
    monkeypatch.setattr(PrimeHook, "aget_settings", mock.AsyncMock(return_value=SETTINGS))
    return fake


def installing(pod_id: str, progress: int):
    return pod(pod_id, installation="ACTIVE", installation_progress=progress)


async def wait_for_event(pod_ids, **kwargs):
    t = PodStatusTrigger(pod_ids=pod_ids, deadline=time.time() + 10, poll_interval=0.05, **kwargs)
    return [event.payload async for event in t.run()]


def progress_lines(logs) -> list[str]:
    return [e["event"] for e in logs if e["event"].startswith("Waiting for pods")]


async def test_a_change_after_identical_answers_is_seen_at_once(api, logs):
    api.set(installing("a", 50))
    waiting = asyncio.create_task(wait_for_event(["a"]))
    await until(lambda: len(api.calls) >= 5)  # five identical answers
    api.set(installing("a", 60))
    await until(lambda: len(progress_lines(logs)) == 2)
    api.set(pod("a"))
    (event,) = await waiting
    assert event["status"] == "success"
    assert progress_lines(logs) == [
        "Waiting for pods: 0/1 pods ready; a: ACTIVE, installation ACTIVE 50%",
        "Waiting for pods: 0/1 pods ready; a: ACTIVE, installation ACTIVE 60%",
    ]


async def test_a_change_followed_by_a_failed_round_is_not_lost(api):
    api.set(installing("a", 50))
    waiting = asyncio.create_task(wait_for_event(["a"]))
    await until(lambda: len(api.calls) >= 2)
    # The pod becomes ready and every round after the next one fails for a while: whichever
    # round the trigger reads first after the change, the change must reach its verdict.
    api.set(pod("a"))
    api.errors += [PrimeTransientError("503", http_status=503)] * 3
    (event,) = await waiting
    assert event["status"] == "success"


async def test_a_missing_pod_runs_out_of_grace_though_the_answer_never_changes(api):
    api.set(installing("a", 50))  # "ghost" never appears in the answer
    (event,) = await wait_for_event(["a", "ghost"], missing_grace=0.2)
    assert event["status"] == "failed"
    assert "ghost: not found or not visible to this API key" in event["message"]
