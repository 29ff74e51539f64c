"""Every fault of the table (``cases.py``), through both paths, over real HTTP against the simulator.

For each fault and path: the outcome (recovers, waits on, or fails with a message naming the
cause), the number of requests the simulator saw (exact where timing does not matter, else
bounded: no retry storm), and for the async path the event loop never blocked (heartbeat) and
nothing left running afterwards. Against the blackhole (connects time out, nothing reaches a
server) the attempts are read from the errors ("after 3 attempts").
"""

from __future__ import annotations

import itertools
import logging
import math
import time
from collections.abc import Callable, MutableMapping
from typing import Any

import pytest
import structlog

from airflow_provider_prime.exceptions import PrimeError
from airflow_provider_prime.sensors.pod_status import PodStatusSensor
from airflow_provider_prime.testing import STATUS_PATH, PrimeSimulator
from airflow_provider_prime.triggers.pod_status import PodStatusTrigger
from airflow_provider_prime.triggers.polling import active_pollers
from bench.soak import Heartbeat
from tests.reliability.cases import CASES, POD, POLL_INTERVAL, FaultCase, Outcome
from tests.reliability.conftest import LAG_BOUND, Observations, leftover_tasks

pytestmark = pytest.mark.parametrize("case", CASES, ids=lambda case: case.id)


class Stage:
    """The server a case runs against, and how to count what reached it."""

    def __init__(self, case: FaultCase, request: pytest.FixtureRequest) -> None:
        connect: Callable[..., str] = request.getfixturevalue("prime_connect")
        self.case = case
        self.sim: PrimeSimulator | None = None
        if case.server == "blackhole":
            connect(request.getfixturevalue("blackhole"), api_key="pk-blackhole", extra=case.connection_extra)
            return
        self.sim = request.getfixturevalue("prime_simulator_factory")(case.pods())
        connect(self.sim, api_key=case.api_key, extra=case.connection_extra)
        self.sim.inject(*case.faults())

    def requests(self, logged: str = "") -> int:
        """Status requests so far, as the server recorded them (the blackhole: as the hook's retry lines say).

        Against the blackhole every call makes ``attempts`` attempts and logs a debug line for each
        but the last, so the lines give the attempts exactly (the waits throttle their own lines).
        """
        if self.sim is None:
            retries_per_call = self.case.attempts - 1
            assert retries_per_call > 0, "a blackhole case must allow retries to be countable"
            return logged.count("Prime API call failed (") // retries_per_call * self.case.attempts
        return self.sim.stats.by_path[STATUS_PATH]

    def request_times(self) -> list[float]:
        if self.sim is None:
            return []
        return [record.time for record in self.sim.stats.log if record.path == STATUS_PATH]


def check_gaps(case: FaultCase, stage: Stage) -> None:
    """Within the first poll's retries, each wait honoured the server's Retry-After (capped)."""
    if case.min_gap is None:
        return
    first_poll = stage.request_times()[: case.attempts]
    gaps = [later - earlier for earlier, later in itertools.pairwise(first_poll)]
    assert len(gaps) == case.attempts - 1
    assert min(gaps) >= case.min_gap


def check_text(case: FaultCase, text: str) -> None:
    for expected in case.says:
        assert expected in text
    for unwanted in case.never_says:
        assert unwanted not in text


def log_text(structured: list[MutableMapping[str, Any]], caplog: pytest.LogCaptureFixture) -> str:
    """The sensor's own lines (structlog) first, then the hook's (stdlib logging)."""
    return "\n".join(
        [str(entry.get("event")) for entry in structured] + [r.getMessage() for r in caplog.records]
    )


def test_sync_path(
    case: FaultCase,
    request: pytest.FixtureRequest,
    observations: Observations,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    caplog.set_level(logging.DEBUG, logger="airflow_provider_prime.hooks._exchange")
    stage = Stage(case, request)
    sensor = PodStatusSensor(
        task_id="wait_for_pods",
        pod_ids=list(case.pod_ids),
        missing_grace=case.missing_grace,
        poke_interval=POLL_INTERVAL,
        deferrable=False,
    )
    per_poke: list[int] = []
    result: Any = False
    error: PrimeError | None = None
    with structlog.testing.capture_logs() as structured:
        for _ in range(case.pokes):
            before = stage.requests(log_text(structured, caplog))
            try:
                result = sensor.poke({})
            except PrimeError as exc:
                error = exc
            per_poke.append(stage.requests(log_text(structured, caplog)) - before)
            if result or error is not None:
                break
            time.sleep(POLL_INTERVAL)  # pacing between pokes, as the sensor's poke_interval does
    logged = log_text(structured, caplog)

    if case.outcome is Outcome.RECOVERS:
        assert error is None, error
        assert result
        assert result.is_done
        assert result.xcom_value[POD].items() >= case.handover.items()
        observed, message = "ready", f"poke {len(per_poke)} returned the handover"
    elif case.outcome is Outcome.WAITS:
        assert error is None, error
        assert not result
        assert per_poke == [case.attempts] * case.pokes  # retried, and only as many times as allowed
        check_text(case, logged)
        observed, message = "waiting", _cause_line(logged, case)
    else:
        assert error is not None, f"no error after {len(per_poke)} pokes"
        assert type(error).__name__ == case.error_type
        check_text(case, str(error))
        observed, message = f"raised {type(error).__name__}", str(error)
    assert max(per_poke) <= case.attempts
    if case.requests is not None:
        assert sum(per_poke) == case.requests
    check_gaps(case, stage)
    observations.add(
        request,
        case=case.id,
        fault=case.fault,
        path="sync",
        expected=case.outcome.value,
        observed=observed,
        requests=sum(per_poke),
        per_poke=per_poke,
        message=message,
    )


async def test_async_path(
    case: FaultCase,
    request: pytest.FixtureRequest,
    observations: Observations,
    warmed_up: None,
) -> None:
    stage = Stage(case, request)
    started = time.time()
    trigger = PodStatusTrigger(
        pod_ids=list(case.pod_ids),
        deadline=started + case.deadline,
        poll_interval=POLL_INTERVAL,
        missing_grace=case.missing_grace,
    )
    async with Heartbeat() as heartbeat:
        events = [event.payload async for event in trigger.run()]
    elapsed = time.time() - started

    assert len(events) == 1  # exactly one event, then run() returned
    (event,) = events
    if case.outcome is Outcome.RECOVERS:
        assert event["status"] == "success", event
        assert event["pods"][POD].items() >= case.handover.items()
    elif case.outcome is Outcome.WAITS:
        assert event["status"] == "timeout", event
        assert elapsed >= case.deadline  # it kept waiting, to the deadline
        check_text(case, event["message"])
    else:
        assert event["status"] == "failed", event
        assert event["error_type"] == case.error_type
        check_text(case, event["message"])
    requests = stage.requests(event.get("message", ""))
    polls_possible = math.ceil(case.deadline / POLL_INTERVAL) + 1
    assert requests <= case.attempts * polls_possible
    if case.requests is not None:
        assert requests == case.requests
    check_gaps(case, stage)
    assert heartbeat.beats > 0
    assert heartbeat.max_lag < LAG_BOUND
    assert active_pollers() == []
    assert leftover_tasks() == []
    observations.add(
        request,
        case=case.id,
        fault=case.fault,
        path="async",
        expected=case.outcome.value,
        observed=event["status"],
        requests=requests,
        bound=case.attempts * polls_possible,
        elapsed=round(elapsed, 3),
        max_lag=round(heartbeat.max_lag, 4),
        message=event.get("message", ""),
    )


def _cause_line(logged: str, case: FaultCase) -> str:
    """For the report: the first line naming the cause, the sensor's own if it wrote one."""
    lines = [line for line in logged.splitlines() if case.says and case.says[0] in line]
    return lines[0] if lines else ""
