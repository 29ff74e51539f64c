"""Derived pod names: stable per task instance and deployment, distinct across them, short, recognisable."""

from __future__ import annotations

import re

import pytest

from airflow_provider_prime.operators.pod_names import (
    MARKER,
    MAX_NAME_LENGTH,
    DerivedName,
    dag_tag,
    deployment_tag,
    derived_pod_name,
    parse_derived_name,
)

PROD = "prod"


def name(
    dag: str = "dag",
    run: str = "run",
    task: str = "create",
    index: int | None = -1,
    *,
    deployment: str = PROD,
) -> str:
    return derived_pod_name(dag, run, task, index, deployment=deployment)


def test_the_same_task_instance_always_gets_the_same_name() -> None:
    assert name(index=2) == name(index=2)
    assert name(index=None) == name(index=-1)


def test_every_part_of_the_task_instance_and_the_deployment_changes_the_name() -> None:
    others = {
        name("dag2"),
        name(run="run2"),
        name(task="create2"),
        name(index=0),
        name(deployment="staging"),
    }
    assert name() not in others
    assert len(others) == 5


def test_a_name_carries_its_deployment_so_two_deployments_never_share_a_pod() -> None:
    """Finding 3: staging and prod with one key, one DAG and one scheduled run id."""
    prod = name("etl", "scheduled__2026-01-01T00:00:00+00:00", deployment="prod")
    staging = name("etl", "scheduled__2026-01-01T00:00:00+00:00", deployment="staging")
    assert prod != staging
    assert parse_derived_name(prod) == DerivedName(deployment_tag("prod"), dag_tag("etl"))
    assert parse_derived_name(staging) == DerivedName(deployment_tag("staging"), dag_tag("etl"))


def test_the_dag_part_is_48_bits() -> None:
    """Finding 15: a 24-bit DAG hash collides after some 7,500 DAG ids; 48 bits after some 16 million."""
    assert re.fullmatch(r"[0-9a-f]{12}", dag_tag("dag"))
    tags = {dag_tag(f"dag_{i}") for i in range(20_000)}
    assert len(tags) == 20_000  # 24 bits: about 12 collisions among these


def test_names_are_short_plain_and_carry_the_marker_the_deployment_and_the_dag() -> None:
    long_ids = ("d" * 250, "manual__2026-01-01T00:00:00.123456+00:00" * 5, "Group.Create_POD" * 20, 12345)
    derived = name(*long_ids, deployment="a" * 32)
    assert len(derived) == MAX_NAME_LENGTH <= 59
    assert re.fullmatch(r"[a-z0-9-]+", derived)
    assert derived.startswith(MARKER)
    assert parse_derived_name(derived) == DerivedName(deployment_tag("a" * 32), dag_tag("d" * 250))


def test_a_task_id_without_letters_still_gives_a_name() -> None:
    parsed = parse_derived_name(name(task="___"))
    assert parsed is not None
    assert parsed.dag_tag == dag_tag("dag")


@pytest.mark.parametrize(
    "other",
    [
        None,
        "",
        "my-training-pod",
        "airflow-train",
        f"{MARKER}x-nothex0123456789abcdef0123456789ab",
        "AIRFLOW-X-" + "0" * 30,
        "airflow-train-3f9a1c8d2e4b7a10c5",  # the 16-hex names of earlier versions
        f"{MARKER}x-" + "0" * 31,
    ],
)
def test_names_a_user_chose_are_not_taken_for_derived_ones(other: str | None) -> None:
    assert parse_derived_name(other) is None
