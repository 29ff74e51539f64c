"""The example DAGs parse offline, with no Prime connection or API key anywhere.

Airflow parses DAG files often and everywhere (dag-processor, workers); a DAG file that reached
for the network, a connection or a Variable at parse time would be slow or broken. The tests
block every outgoing connection while parsing, so any such access fails the import.
"""

from __future__ import annotations

import importlib.util
import inspect
import socket
import subprocess
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

EXAMPLE_DAGS = Path(__file__).resolve().parents[1] / "example_dags"
LIFECYCLE = "example_prime_pod_lifecycle"
TRAINING_SCRIPT = EXAMPLE_DAGS / "training" / "train_regression.py"


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
        "example_prime_capacity_event",
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
    assert terminate.upstream_task_ids == {"create_pod", "train"}


@pytest.mark.usefixtures("offline")
def test_capacity_event_starts_a_run_per_appearance_and_gives_the_pod_back() -> None:
    from airflow_provider_prime.operators.pod import PrimeCreatePodOperator, PrimeTerminatePodOperator
    from airflow_provider_prime.triggers.capacity_event import PrimeCapacityEventTrigger

    dag = _dag_bag().dags["example_prime_capacity_event"]
    (asset,) = dag.timetable.asset_condition.objects
    (watcher,) = asset.watchers
    trigger = watcher.trigger
    assert isinstance(trigger, PrimeCapacityEventTrigger)
    assert [query.gpu_type for query in trigger.queries()] == ["H100_80GB", "H200_141GB"]
    create, terminate = dag.get_task("create_pod"), dag.get_task("terminate_pod")
    assert isinstance(create, PrimeCreatePodOperator)
    assert isinstance(terminate, PrimeTerminatePodOperator)
    assert create.deferrable
    assert terminate.is_teardown
    assert (create.regions, create.max_price, create.gpu_count) == (["europe"], 20.0, 8)


@pytest.mark.usefixtures("offline")
def test_wait_and_train_runs_a_command_on_every_node_only_when_asked() -> None:
    dag = _dag_bag().dags["example_prime_wait_and_train"]
    assert "run_on_every_node" in dag.get_task("wait_for_pods").downstream_task_ids
    assert dag.params["run_over_ssh"] is False  # the simulator's pods have no SSH server


# -- the lifecycle example's training ---------------------------------------------------------------


def _lifecycle_module() -> ModuleType:
    """The lifecycle DAG file as a module (its ``write_file_setup``), outside any DagBag."""
    spec = importlib.util.spec_from_file_location("lifecycle_example", EXAMPLE_DAGS / f"{LIFECYCLE}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _rendered(task: Any, field: str, params: dict[str, Any]) -> Any:
    """One template field of ``task`` as Airflow renders it for a run with these params (the DAG's
    own Jinja environment: native objects here)."""
    dag = task.dag
    return task.render_template(
        getattr(task, field), {"params": {**dag.params, **params}}, dag.get_template_env()
    )


@pytest.mark.usefixtures("offline")
def test_lifecycle_trains_with_the_job_operator_on_every_node_of_the_created_pod() -> None:
    from airflow.sdk.definitions.xcom_arg import XComArg

    from airflow_provider_prime.operators.job import PrimeRunJobOperator

    dag = _dag_bag().dags[LIFECYCLE]
    train = dag.get_task("train")

    assert isinstance(train, PrimeRunJobOperator)
    assert train.deferrable
    assert train.ssh_conn_id == "prime_ssh"
    assert isinstance(train.pods, XComArg)
    assert train.pods.operator.task_id == "create_pod"
    assert train.command == "python3 train_regression.py"
    assert train.upstream_task_ids == {"create_pod"}


@pytest.mark.usefixtures("offline")
def test_the_training_script_survives_jinja_and_bash_byte_for_byte(tmp_path: Path) -> None:
    """``setup`` is templated: rendered as a run renders it, then run by bash, it writes the script
    unchanged."""
    train = _dag_bag().dags[LIFECYCLE].get_task("train")
    script = TRAINING_SCRIPT.read_text(encoding="utf-8")
    assert not [d for d in ("{{", "{%", "{#") if d in script]  # what Jinja would act on

    setup = _rendered(train, "setup", {"fail_training": True})
    subprocess.run(["bash", "-c", setup], cwd=tmp_path, check=True, capture_output=True)

    assert (tmp_path / "train_regression.py").read_bytes() == TRAINING_SCRIPT.read_bytes()


@pytest.mark.parametrize(
    "text",
    [
        'print(f"{{x}}")\n',
        "# {% raw %}\n",
        "x = {#: 1}\n",
        "print(1)\nPRIME_TRAINING_SCRIPT_END\nprint(2)\n",
    ],
)
def test_a_script_jinja_or_the_here_document_would_alter_is_refused_at_parse_time(text: str) -> None:
    with pytest.raises(ValueError, match=r"train\.py (contains|has a line)"):
        _lifecycle_module().write_file_setup("train.py", text)


@pytest.mark.usefixtures("offline")
@pytest.mark.parametrize(("fail_training", "fail_rank"), [(False, "-1"), (True, "1")])
def test_fail_training_makes_rank_1_fail_through_the_job_env(fail_training: bool, fail_rank: str) -> None:
    train = _dag_bag().dags[LIFECYCLE].get_task("train")
    env = _rendered(train, "env", {"fail_training": fail_training})
    assert str(env["TRAIN_FAIL_RANK"]) == fail_rank


@pytest.mark.usefixtures("offline")
@pytest.mark.parametrize("multi_node", [False, True])
def test_the_run_conf_chooses_a_multi_node_pod(multi_node: bool) -> None:
    dag = _dag_bag().dags[LIFECYCLE]
    assert dag.params["multi_node"] is False  # one node unless asked (the demo asks on the simulator)
    create = dag.get_task("create_pod")
    assert _rendered(create, "multi_node", {"multi_node": multi_node}) is multi_node
    assert _rendered(create, "gpu_count", {"gpu_count": 16}) == 16
