"""One real Airflow (api-server, dag-processor, scheduler, triggerer) and one simulator per session.

Starting Airflow costs half a minute, so every end-to-end test shares the same stack and simulator
and tells its runs apart by their own pod ids. The example DAGs run unchanged except for the
sensor's poke interval and timeout, shortened by a cluster policy (see ``AirflowStack``).
"""

from __future__ import annotations

import secrets
import signal
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import FrameType

import pytest

from airflow_provider_prime.testing.connection import airflow_connection_env
from airflow_provider_prime.testing.process import PrimeSimulatorProcess
from scripts.airflow_stack import AirflowStack

EXAMPLE_DAGS = Path(__file__).resolve().parents[2] / "example_dags"
DAG_IDS = ("example_prime_wait_and_train", "example_prime_pod_lifecycle")
#: The sensor polls every 2 s here instead of the DAGs' 10 s; a run that hangs fails in 3 minutes.
SENSOR_OVERRIDES = {"poke_interval": 2.0, "timeout": 180.0}


@pytest.fixture(scope="session")
def e2e_simulator() -> Iterator[PrimeSimulatorProcess]:
    """The simulator as its own process, with no pods (each test adds its own) and a unique key
    (that tests can look for where it must never appear)."""
    with PrimeSimulatorProcess(scenario="empty", api_keys=(f"e2e-key-{secrets.token_hex(8)}",)) as simulator:
        yield simulator


@pytest.fixture(scope="session")
def airflow_stack(
    tmp_path_factory: pytest.TempPathFactory, e2e_simulator: PrimeSimulatorProcess
) -> Iterator[AirflowStack]:
    """Airflow on loopback with SQLite, the example DAGs parsed, its ``prime_default`` the simulator.

    Every process is stopped when the session ends, and at once if starting fails.
    """
    stack = AirflowStack(
        home=tmp_path_factory.mktemp("airflow-home"),
        dags_folder=EXAMPLE_DAGS,
        env=airflow_connection_env(e2e_simulator.base_url, e2e_simulator.api_key),
        sensor_overrides=SENSOR_OVERRIDES,
    )
    # A SIGTERM (a CI timeout, say) unwinds pytest, so this fixture still stops every process.
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        with stack:
            stack.init()
            stack.start()
            stack.wait_for_dags(*DAG_IDS)
            yield stack
    finally:
        signal.signal(signal.SIGTERM, previous)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


@pytest.fixture
def pod_prefix() -> str:
    """A prefix no other test's pods share."""
    return f"e2e-{uuid.uuid4().hex[:8]}"
