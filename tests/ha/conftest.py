"""The production-shaped stack of the tier: Postgres, LocalExecutor, two triggerers, a simulator process.

One stack serves the whole tier (starting it costs about a minute on two cores); tests tell their
runs apart by their own pod ids. Triggerers heartbeat every second and count as dead after
:data:`HEALTH_THRESHOLD` seconds, so a killed triggerer's triggers move within seconds; each one
runs at most :data:`CAPACITY` triggers, so a fan-out larger than that is always spread over both.
"""

from __future__ import annotations

import secrets
import signal
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from airflow import __version__ as airflow_version

from airflow_provider_prime.testing.connection import airflow_connection_env
from airflow_provider_prime.testing.process import PrimeSimulatorProcess
from scripts.airflow_stack import AirflowStack
from scripts.postgres import PostgresNotFound, PostgresServer
from tests.e2e.conftest import _interrupt
from tests.ha.wait_options import FAN_OUTS, START_MODES, fan_out_dag_id

DAGS = Path(__file__).resolve().parent / "dags"
AIRFLOW_VERSION = tuple(int(part) for part in airflow_version.split(".")[:2])
DAG_IDS = (
    *map(fan_out_dag_id, FAN_OUTS),
    *(f"ha_{name}_{start}" for name in ("wait", "timeout") for start in START_MODES),
)
TRIGGERERS = 2
#: Triggers one triggerer may run: a 200-wait fan-out cannot fit in one, a 40-wait one can.
CAPACITY = 150
HEARTBEAT = 1.0
HEALTH_THRESHOLD = 6.0
#: Seconds the stack may take to come up: two shared cores, six processes importing Airflow.
STARTUP_TIMEOUT = 300.0


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """A throw-away PostgreSQL cluster (skips the tier where the server binaries are missing)."""
    try:
        server = PostgresServer()
    except PostgresNotFound as missing:
        pytest.skip(str(missing))
    with server:
        yield server


@pytest.fixture(scope="session")
def ha_simulator() -> Iterator[PrimeSimulatorProcess]:
    with PrimeSimulatorProcess(scenario="empty", api_keys=(f"ha-key-{secrets.token_hex(8)}",)) as simulator:
        yield simulator


@pytest.fixture(scope="session")
def ha_stack(
    tmp_path_factory: pytest.TempPathFactory, postgres: PostgresServer, ha_simulator: PrimeSimulatorProcess
) -> Iterator[AirflowStack]:
    """Airflow on Postgres with two triggerers, this tier's DAGs parsed, ``prime_default`` the simulator."""
    if AIRFLOW_VERSION < (3, 3):
        pytest.skip("the production tier runs on the newest Airflow (CI: 3.3.2); not exercised on 3.1/3.2")
    stack = AirflowStack(
        home=tmp_path_factory.mktemp("airflow-ha-home"),
        dags_folder=DAGS,
        env=airflow_connection_env(ha_simulator.base_url, ha_simulator.api_key),
        database_url=postgres.url,
        database_async_url=postgres.url,
        parallelism=8,
        triggerers=TRIGGERERS,
        triggerer_heartbeat=HEARTBEAT,
        triggerer_health_threshold=HEALTH_THRESHOLD,
        triggerer_capacity=CAPACITY,
        api_timeout=120.0,
        # One page holds a whole fan-out's mapped task instances.
        config={"api": {"maximum_page_limit": "1000"}},
    )
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        with stack:
            stack.init()
            stack.start(timeout=STARTUP_TIMEOUT)
            stack.wait_for_dags(*DAG_IDS)
            yield stack
    finally:
        signal.signal(signal.SIGTERM, previous)


@pytest.fixture
def pod_prefix() -> str:
    return f"ha-{uuid.uuid4().hex[:8]}"
