from __future__ import annotations

from pathlib import Path

import pytest

from tests.sensors.dag_runs import migrate
from tests.simulated import prime_connection_extra, prime_simulator_defaults

__all__ = ["airflow_home", "prime_connection_extra", "prime_simulator_defaults"]


@pytest.fixture(scope="session")
def airflow_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A throw-away AIRFLOW_HOME with a migrated SQLite metadata database (``dag_runs``)."""
    home = tmp_path_factory.mktemp("airflow_home")
    migrate(home)
    return home
