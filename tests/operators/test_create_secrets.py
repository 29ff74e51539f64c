"""Pod env values never reach Airflow's Rendered Template view (finding 20).

Airflow renders the template fields and stores them (``_serialize_rendered_fields``, which redacts
what the secret masker knows) before ``execute`` runs. These tests render the operator the way the
Task SDK does, unmapped and mapped, and serialize with the Task SDK's own function.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from airflow.sdk import DAG
from airflow.sdk.execution_time.task_runner import _serialize_rendered_fields

from airflow_provider_prime.models import PodRequest
from airflow_provider_prime.operators.pod import PrimeCreatePodOperator
from tests.operators.conftest import TaskInstance, make_context


def _sdk_redacts_rendered_fields() -> bool:
    """Whether this Task SDK redacts what the masker knows before storing rendered fields.

    Airflow 3.1.0's ``_serialize_rendered_fields`` sends them as rendered and leaves masking to the
    API server, whose masker knows only sensitive field names: what a task masks cannot reach it.
    """
    from airflow_provider_prime._compat import mask_secret

    probe = f"probe_{uuid.uuid4().hex}"
    mask_secret(probe)
    with DAG("probe_dag", schedule=None):
        task = PrimeCreatePodOperator(task_id="probe", name=probe)
    return probe not in json.dumps(_serialize_rendered_fields(task))


pytestmark = pytest.mark.skipif(
    not _sdk_redacts_rendered_fields(),
    reason="this Airflow (3.1) stores rendered fields unredacted from the task; the API server masks them",
)


def secret(label: str) -> str:
    """A token no other test has registered with the (process-wide) masker."""
    return f"{label}_{uuid.uuid4().hex}"


def stored(task: Any) -> str:
    """What Airflow sends to its API server for the Rendered Template view."""
    return json.dumps(_serialize_rendered_fields(task))


def context(ti: TaskInstance, dag: DAG) -> dict[str, Any]:
    return {**make_context(ti), "dag": dag, "params": {}, "run_id": ti.run_id}


@pytest.mark.parametrize(
    "where",
    ["env_vars dict", "env_vars list", "request dict", "request list", "request model", "request templated"],
)
def test_env_values_are_masked_when_the_fields_are_rendered(where):
    hf, wandb = secret("hf"), secret("wandb")
    pairs = {"HF_TOKEN": hf, "WANDB_KEY": wandb}
    listed = [{"key": k, "value": v} for k, v in pairs.items()]
    offer = {"cloud_id": "sim-h100-80gb-1x", "gpu_type": "H100_80GB", "gpu_count": 1, "name": "x"}
    kwargs: dict[str, Any] = {
        "env_vars dict": {"env_vars": pairs},
        "env_vars list": {"env_vars": listed},
        "request dict": {"request": {**offer, "env_vars": pairs}},
        "request list": {"request": {**offer, "envVars": listed}},
        "request model": {"request": PodRequest.model_validate({**offer, "env_vars": pairs})},
        "request templated": {"request": {**offer, "envVars": {"WANDB_KEY": "{{ params.token }}"}}},
    }[where]
    if where == "request templated":
        wandb = hf  # one value, from a template: what it renders to is the secret
    with DAG("train_dag", schedule=None) as dag:
        operator = PrimeCreatePodOperator(task_id="create_pod", gpu_type="H100_80GB", **kwargs)
    operator.render_template_fields({**context(TaskInstance(), dag), "params": {"token": hf}})

    rendered = stored(operator)
    assert hf not in rendered
    assert wandb not in rendered
    if where != "request model":  # a model's repr leaves the env out altogether
        assert "***" in rendered


def test_env_values_of_a_mapped_create_are_masked_when_its_expansion_is_rendered():
    tokens = [secret("hf"), secret("hf")]
    with DAG("train_dag", schedule=None) as dag:
        mapped = PrimeCreatePodOperator.partial(task_id="create_pod", gpu_type="H100_80GB").expand(
            env_vars=[[{"key": "HF_TOKEN", "value": token}] for token in tokens]
        )
    for index, token in enumerate(tokens):
        ti = TaskInstance(map_index=index)
        ti.task = mapped  # type: ignore[attr-defined]
        ctx = context(ti, dag)
        mapped.render_template_fields(ctx)  # what the Task SDK calls: it unmaps, then renders
        rendered = stored(ctx["task"])
        assert token not in rendered
        assert "***" in rendered
