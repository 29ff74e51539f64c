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
    """No outgoing connection possible (the suite's conftest already removed any Prime settings)."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise OSError("network access while parsing a DAG file")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.mark.usefixtures("offline")
def test_example_dags_parse_offline() -> None:
    bag = _dag_bag()

    assert bag.import_errors == {}
    assert set(bag.dag_ids) == {
        "example_prime_wait_and_train",
        "example_prime_pod_lifecycle",
        "example_prime_reaper",
    }


@pytest.mark.usefixtures("offline")
def test_example_dags_wait_deferrably_and_hand_over_the_sensor_output() -> None:
    from airflow_provider_prime.sensors.pod_status import PodStatusSensor

    dag = _dag_bag().dags["example_prime_wait_and_train"]
    wait = dag.get_task("wait_for_pods")
    assert isinstance(wait, PodStatusSensor)
    assert wait.deferrable
    assert dag.params["pod_ids"] == []  # empty: the Variable, else the demo pods
    assert "train" in wait.downstream_task_ids


@pytest.mark.usefixtures("offline")
def test_lifecycle_creates_deferrably_and_terminates_as_the_teardown_of_the_create() -> None:
    from airflow_provider_prime.operators.pod import PrimeCreatePodOperator, PrimeTerminatePodOperator

    dag = _dag_bag().dags["example_prime_pod_lifecycle"]
    create, terminate = dag.get_task("create_pod"), dag.get_task("terminate_pod")

    assert isinstance(create, PrimeCreatePodOperator)
    assert isinstance(terminate, PrimeTerminatePodOperator)
    assert create.deferrable
    assert create.is_setup
    assert terminate.is_teardown
    assert terminate.trigger_rule == "all_done_setup_success"
    assert create.downstream_task_ids == {"train", "terminate_pod"}
    assert dag.get_task("train").downstream_task_ids == {"terminate_pod"}


@pytest.mark.usefixtures("offline")
def test_wait_and_train_runs_a_command_on_every_node_only_when_asked() -> None:
    dag = _dag_bag().dags["example_prime_wait_and_train"]
    assert "run_on_every_node" in dag.get_task("wait_for_pods").downstream_task_ids
    assert dag.params["run_over_ssh"] is False  # the simulator's pods have no SSH server
