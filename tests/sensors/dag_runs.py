"""Running a DAG file of ``dags/`` with ``dag.test()`` in a child process: its environment and home.

``dag.test()`` needs a metadata database, so each run happens in a child process whose
``AIRFLOW_HOME`` is a temporary directory migrated once per session (the ``airflow_home`` fixture
of ``conftest.py``), its DAGs folder this directory's ``dags/``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DAGS = Path(__file__).resolve().parent / "dags"
MIGRATE_TIMEOUT = 300


def airflow_env(home: Path) -> dict[str, str]:
    """The environment of a child Airflow process using ``home``, nothing inherited from ours."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW_", "AIRFLOW__", "PRIME_"))}
    env.update(
        AIRFLOW_HOME=str(home),
        AIRFLOW_CONFIG=str(home / "airflow.cfg"),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__CORE__DAGS_FOLDER=str(DAGS),
        PYTHONPATH=str(REPO),
    )
    return env


def migrate(home: Path) -> None:
    """Migrate a SQLite metadata database into ``home``; fail the test with Airflow's output if it fails."""
    done = subprocess.run(
        [sys.executable, "-m", "airflow", "db", "migrate"],
        env=airflow_env(home),
        cwd=home,
        capture_output=True,
        text=True,
        timeout=MIGRATE_TIMEOUT,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
