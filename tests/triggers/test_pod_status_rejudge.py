"""PodStatusTrigger judges an answer again only when it differs: same answer, same verdict, no work.

At thousands of waits per poll, judging an unchanged answer (and building its progress line) was
most of a poll's CPU and filled the garbage collector with objects living a whole interval.
"""

from __future__ import annotations

import asyncio
import time
from unittest import mock

import pytest

from airflow_provider_prime.hooks.prime import PrimeApiSettings
from airflow_provider_prime.triggers import pod_status, polling
from airflow_provider_prime.triggers.pod_status import PodStatusTrigger
from tests.statuses import pod
from tests.triggers.fakes import FakeApi, until

SETTINGS = PrimeApiSettings(base_url="http://127.0.0.1:9", api_key="pk-rejudge-test")


@pytest.fixture
def api(monkeypatch: pytest.MonkeyPatch) -> FakeApi:
    fake = FakeApi()
    monkeypatch.setattr(polling, "AsyncPrimeClient", fake.client)
    monkeypatch.setattr(pod_status.PrimeHook, "aget_settings", mock.AsyncMock(return_value=SETTINGS))
    return fake


@pytest.fixture
def judgements(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """The statuses each call of ``_assess`` judged, as "pod_id:status:progress" strings."""
    seen: list[list[str]] = []
    original = PodStatusTrigger._assess

    def spy(self, statuses, now):
        seen.append([f"{s.pod_id}:{s.status}:{s.installation_progress}" for s in statuses])
        return original(self, statuses, now)

    monkeypatch.setattr(PodStatusTrigger, "_assess", spy)
    return seen


def installing(pod_id: str, progress: int):
    return pod(pod_id, installation="ACTIVE", installation_progress=progress)


async def wait_for_event(pod_ids, **kwargs):
    t = PodStatusTrigger(pod_ids=pod_ids, deadline=time.time() + 10, poll_interval=0.05, **kwargs)
    return [event.payload async for event in t.run()]


async def test_an_unchanged_answer_is_not_judged_again_a_changed_one_is(api, judgements):
    api.set(installing("a", 50))
    waiting = asyncio.create_task(wait_for_event(["a"]))
    await until(lambda: len(api.calls) >= 5)
    assert judgements == [["a:ACTIVE:50"]]  # five answers, all the same: judged once
    api.set(installing("a", 60))
    await until(lambda: len(judgements) == 2)
    api.set(pod("a"))
    (event,) = await waiting
    assert event["status"] == "success"
    assert judgements == [["a:ACTIVE:50"], ["a:ACTIVE:60"], ["a:ACTIVE:None"]]


async def test_a_missing_pod_is_judged_every_time_so_its_grace_period_runs_out(api, judgements):
    api.set(installing("a", 50))  # "ghost" never appears in the answer
    (event,) = await wait_for_event(["a", "ghost"], missing_grace=0.2)
    assert event["status"] == "failed"
    assert "ghost: not found or not visible to this API key" in event["message"]
    assert len(judgements) >= 3  # the same answer each time, judged again for the missing pod's clock
