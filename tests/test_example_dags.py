"""The example DAGs parse offline, with no Prime connection or API key anywhere.

Airflow parses DAG files often and everywhere (dag-processor, workers); a DAG file that reached
for the network, a connection or a Variable at parse time would be slow or broken. The tests
block every outgoing connection while parsing, so any such access fails the import.
"""

from __future__ import annotations

import inspect
import socket
from pathlib import Path
from typing import Any

import pytest

EXAMPLE_DAGS = Path(__file__).resolve().parents[1] / "example_dags"


def _dag_bag() -> Any:
    try:  # Airflow >= 3.2
        from airflow.dag_processing.dagbag import DagBag
    except ImportError:  # Airflow 3.1
        from airflow.models.dagbag import DagBag  # type: ignore[no-redef]
    options: dict[str, Any] = {"dag_folder": EXAMPLE_DAGS}
    if "include_examples" in inspect.signature(DagBag.__init__).parameters:
        options["include_examples"] = False
    return DagBag(**options)


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """No Prime connection or key in the environment, and no outgoing connection possible."""
    for name in ("AIRFLOW_CONN_PRIME_DEFAULT", "PRIME_API_KEY", "PRIME_API_BASE_URL", "PRIME_BASE_URL"):
        monkeypatch.delenv(name, raising=False)

    def refuse(*args: object, **kwargs: object) -> None:
        raise OSError("network access while parsing a DAG file")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.mark.usefixtures("offline")
def test_example_dags_parse_offline() -> None:
    bag = _dag_bag()

    assert bag.import_errors == {}
    assert set(bag.dag_ids) == {"example_prime_wait_and_train", "example_prime_pod_lifecycle"}


@pytest.mark.usefixtures("offline")
def test_example_dags_wait_deferrably_and_hand_over_the_sensor_output() -> None:
    from airflow_provider_prime.sensors.pod_status import PodStatusSensor

    bag = _dag_bag()
    for dag_id in bag.dag_ids:
        dag = bag.dags[dag_id]
        wait = dag.get_task("wait_for_pods")
        assert isinstance(wait, PodStatusSensor)
        assert wait.deferrable
        assert dag.params["pod_ids"] == []  # empty: the Variable, else the demo pods
        assert "train" in wait.downstream_task_ids


@pytest.mark.usefixtures("offline")
def test_lifecycle_teardown_is_marked_and_runs_after_failures_too() -> None:
    dag = _dag_bag().dags["example_prime_pod_lifecycle"]
    release = dag.get_task("release_pods")

    assert release.is_teardown
    # ALL_DONE_SETUP_SUCCESS with no setup task upstream is all_done: it runs after failures too.
    assert release.trigger_rule == "all_done_setup_success"
    assert not any(t.is_setup for t in dag.tasks)
    assert dag.get_task("train").downstream_task_ids == {"release_pods"}


@pytest.mark.usefixtures("offline")
def test_wait_and_train_runs_a_command_on_every_node_only_when_asked() -> None:
    dag = _dag_bag().dags["example_prime_wait_and_train"]
    assert "run_on_every_node" in dag.get_task("wait_for_pods").downstream_task_ids
    assert dag.params["run_over_ssh"] is False  # the simulator's pods have no SSH server
