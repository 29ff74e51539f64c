"""The production options of the harness (scripts/airflow_stack.py, scripts/postgres.py).

The tier's real runs depend on these: a wrong section name or a component that gets the wrong
command would show up as a stack that never becomes healthy, far from its cause.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from scripts.airflow_stack import AirflowStack, command_of
from scripts.postgres import PostgresNotFound, PostgresServer


def test_one_triggerer_keeps_its_plain_name_and_several_are_numbered(tmp_path: Path) -> None:
    one = AirflowStack(home=tmp_path, dags_folder=tmp_path)
    two = AirflowStack(home=tmp_path, dags_folder=tmp_path, triggerers=2)

    assert one.component_names == ("api-server", "dag-processor", "scheduler", "triggerer")
    assert two.component_names[-2:] == ("triggerer-1", "triggerer-2")
    assert {command_of(name) for name in two.component_names[-2:]} == {"triggerer"}
    with pytest.raises(ValueError, match="at least one triggerer"):
        _ = AirflowStack(home=tmp_path, dags_folder=tmp_path, triggerers=0).component_names


def test_production_options_reach_airflow_cfg(tmp_path: Path) -> None:
    url = "postgresql+psycopg://airflow@127.0.0.1:5999/airflow"
    stack = AirflowStack(
        home=tmp_path,
        dags_folder=tmp_path,
        database_url=url,
        database_async_url=url,
        executor="LocalExecutor",
        parallelism=16,
        triggerer_heartbeat=0.5,
        triggerer_health_threshold=4,
        triggerer_capacity=150,
    )
    settings = stack.settings()

    assert settings["database"] == {"sql_alchemy_conn": url, "sql_alchemy_conn_async": url}
    assert settings["core"]["parallelism"] == "16"
    assert settings["triggerer"] == {
        "job_heartbeat_sec": "0.5",
        "triggerer_health_check_threshold": "4",
        "capacity": "150",
    }
    default = AirflowStack(home=tmp_path, dags_folder=tmp_path).settings()
    assert default["database"] == {"sql_alchemy_conn": f"sqlite:///{tmp_path / 'airflow.db'}"}
    assert "capacity" not in default["triggerer"]


@pytest.mark.parametrize(
    ("run_id", "processed"),
    [("r+1", True), ("another", False)],
)
def test_a_deferral_skipped_for_a_locked_row_counts_as_processed(
    tmp_path: Path, run_id: str, processed: bool
) -> None:
    stack = AirflowStack(home=tmp_path, dags_folder=tmp_path)
    stack.log_dir.mkdir()
    (stack.log_dir / "scheduler.log").write_text(
        "2026-01-01 [info] Received executor event with state success for task instance "
        f"TaskInstanceKey(dag_id='d', task_id='wait', run_id='{run_id}', try_number=1, map_index=-1)\n"
    )

    assert stack.deferral_processed("d", "r+1", "wait") is processed


@pytest.mark.ha
def test_postgres_runs_as_a_service_user_and_leaves_nothing_behind() -> None:
    psycopg = pytest.importorskip("psycopg")
    try:
        server = PostgresServer()
    except PostgresNotFound as missing:
        pytest.skip(str(missing))
    with server:
        assert server.directory is not None
        directory = server.directory
        with psycopg.connect(server.url.replace("+psycopg", "")) as connection:
            row = connection.execute("SELECT current_user, current_database()").fetchone()
        assert row == ("airflow", "airflow")
        pid = server.pid
        assert pid is not None
        owner = os.stat(f"/proc/{pid}").st_uid
        assert (owner != 0) if os.geteuid() == 0 else (owner == os.geteuid())
    assert not directory.exists()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
