"""The job id: the same for every try of a task instance, different across deployments and tasks."""

from __future__ import annotations

import pytest

from airflow_provider_prime.job_ids import JOB_ID, job_dir, job_id


def test_the_same_task_instance_gets_the_same_id():
    a = job_id("dag", "run-1", "Train Model", 3, deployment="prod")
    assert a == job_id("dag", "run-1", "Train Model", 3, deployment="prod")
    assert JOB_ID.fullmatch(a)
    assert a.startswith("train-model-")


@pytest.mark.parametrize(
    "other",
    [
        ("dag2", "run-1", "Train Model", 3, "prod"),
        ("dag", "run-2", "Train Model", 3, "prod"),
        ("dag", "run-1", "Train", 3, "prod"),
        ("dag", "run-1", "Train Model", 4, "prod"),
        ("dag", "run-1", "Train Model", 3, "staging"),
    ],
)
def test_any_other_task_instance_or_deployment_gets_another(other):
    dag, run, task, index, deployment = other
    assert job_id(dag, run, task, index, deployment=deployment) != job_id(
        "dag", "run-1", "Train Model", 3, deployment="prod"
    )


def test_an_unmapped_task_is_map_index_minus_one_and_the_slug_has_a_fallback():
    assert job_id("d", "r", "t", None, deployment="x") == job_id("d", "r", "t", -1, deployment="x")
    assert job_id("d", "r", "___", deployment="x").startswith("job-")
    assert len(job_id("d", "r", "a" * 200, deployment="x")) <= 20 + 1 + 24


def test_the_job_directory_is_under_the_home_unless_the_root_is_absolute():
    jid = job_id("d", "r", "t", deployment="x")
    assert job_dir(jid) == f".prime-jobs/{jid}"
    assert job_dir(jid, "/scratch/jobs/") == f"/scratch/jobs/{jid}"
    with pytest.raises(ValueError, match="not a job id"):
        job_dir("../etc")
