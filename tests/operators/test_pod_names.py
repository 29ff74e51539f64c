"""Derived pod names: stable per task instance, distinct across them, short, and recognisable."""

from __future__ import annotations

import re

from airflow_provider_prime.operators.pod_names import MARKER, dag_hash, dag_hash_of, derived_pod_name


def test_the_same_task_instance_always_gets_the_same_name() -> None:
    assert derived_pod_name("dag", "run", "create", 2) == derived_pod_name("dag", "run", "create", 2)
    assert derived_pod_name("dag", "run", "create", None) == derived_pod_name("dag", "run", "create", -1)


def test_every_part_of_the_task_instance_changes_the_name() -> None:
    base = derived_pod_name("dag", "run", "create", -1)
    others = {
        derived_pod_name("dag2", "run", "create", -1),
        derived_pod_name("dag", "run2", "create", -1),
        derived_pod_name("dag", "run", "create2", -1),
        derived_pod_name("dag", "run", "create", 0),
    }
    assert base not in others
    assert len(others) == 4


def test_names_are_short_plain_and_carry_the_marker_and_the_dag() -> None:
    long_ids = ("d" * 250, "manual__2026-01-01T00:00:00.123456+00:00" * 5, "Group.Create_POD" * 20, 12345)
    name = derived_pod_name(*long_ids)
    assert len(name) <= 49
    assert re.fullmatch(r"[a-z0-9-]+", name)
    assert name.startswith(MARKER)
    assert dag_hash_of(name) == dag_hash("d" * 250)


def test_a_task_id_without_letters_still_gives_a_name() -> None:
    assert dag_hash_of(derived_pod_name("dag", "run", "___", -1)) == dag_hash("dag")


def test_names_a_user_chose_are_not_taken_for_derived_ones() -> None:
    for name in (
        None,
        "",
        "my-training-pod",
        "airflow-train",
        f"{MARKER}x-nothex0123456789ab",
        "AIRFLOW-X-0123456789abcdef",
    ):
        assert dag_hash_of(name) is None
