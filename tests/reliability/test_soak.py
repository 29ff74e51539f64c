"""A short soak in the test suite: hundreds of poll cycles through a fault mix, memory flat.

The long version is ``python -m bench.soak`` (60 s by default, configurable); both run the same
code (:func:`bench.soak.run_soak`). Here the simulator runs in-process with a tiny request log, so
its own bookkeeping stays bounded and out of the measurement.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import pytest
from _pytest.logging import LogCaptureHandler

from airflow_provider_prime.testing import STATUS_PATH, PrimeSimulator
from bench.soak import SoakConfig, connection_env, fault_mix, run_soak, scenario
from tests.reliability.conftest import Observations

SHORT = SoakConfig(
    seconds=5.0,
    connections=2,
    waits_per_connection=10,
    pods_per_connection=10,
    churners_per_connection=1,
    interval=0.05,
    warm_up=0.4,
    sample_every=0.5,
)
#: Python heap growth tolerated over the steady part of the short soak. Generous: a leak of even a
#: few hundred bytes per poll cycle or per finished wait would exceed it over this run.
GROWTH_BOUND = 256 * 1024
#: Poll cycles (status requests) the short soak runs for, at least; at most TIME_CAP seconds.
POLLS = 300
TIME_CAP = 30.0


async def test_memory_stays_flat_over_hundreds_of_poll_cycles(
    prime_simulator_factory: Callable[..., PrimeSimulator],
    monkeypatch: pytest.MonkeyPatch,
    observations: Observations,
    request: pytest.FixtureRequest,
) -> None:
    keys = [f"soak-key-{index}" for index in range(SHORT.connections + 1)]
    sim = prime_simulator_factory(list(scenario(SHORT).pods), api_keys=keys, log_size=10)
    sim.inject(*fault_mix())
    for name, value in connection_env(sim.base_url, keys).items():
        monkeypatch.setenv(name, value)

    def polls() -> int:
        return sim.stats.by_path[STATUS_PATH]

    # pytest keeps every log record of a test in memory for its report: the harness's memory, not
    # the provider's, and it would grow with every retry the fault mix causes.
    for handler in logging.getLogger().handlers:
        if isinstance(handler, LogCaptureHandler):
            monkeypatch.setattr(handler, "level", logging.CRITICAL + 1)

    result = await run_soak(SHORT, until=lambda: polls() >= POLLS, time_cap=TIME_CAP)

    assert polls() >= POLLS, f"only {polls()} poll cycles in {TIME_CAP} s: the reading means little"
    assert result.waits_started > SHORT.connections * SHORT.waits_per_connection  # churn happened
    assert set(result.events) == {"timeout"}  # only the churn waits ended, each on its deadline
    assert result.traced_growth < GROWTH_BOUND, (result.summary(), [s.traced_bytes for s in result.samples])
    assert result.leftover_tasks == 0, result.leftover_names
    assert result.leftover_pollers == 0
    observations.add(request, kind="soak", polls=polls(), bound_kib=GROWTH_BOUND // 1024, **result.summary())
