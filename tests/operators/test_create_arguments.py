"""Bad arguments are the user's to fix: a ``PrimeConfigError`` naming the argument, before any request.

Finding 23: ``gpu_count="abc"`` (a template that rendered wrong) gave a bare ``ValueError``.
"""

from __future__ import annotations

from typing import Any

import pytest

from airflow_provider_prime.exceptions import PrimeConfigError
from airflow_provider_prime.operators.pod import PrimeCreatePodOperator
from tests.operators.conftest import account, billing_after_deletes, make_context


@pytest.mark.parametrize(
    ("argument", "value"),
    [
        ("gpu_count", "abc"),
        ("gpu_count", "0"),
        ("gpu_count", 1.5),
        ("gpu_count", [1]),
        ("disk_size", "big"),
        ("vcpus", "2.5"),
        ("memory", {"gb": 64}),
        ("memory", True),
        ("max_price", "cheap"),
        ("max_price", "inf"),
        ("max_price", "-1"),
    ],
)
def test_a_bad_number_is_a_config_error_naming_the_argument_before_any_request(
    lifecycle_sim, argument, value
):
    sim = lifecycle_sim()
    kwargs: dict[str, Any] = {"gpu_type": "H100_80GB", argument: value}
    with pytest.raises(PrimeConfigError, match=rf"^{argument} must be a positive") as caught:
        PrimeCreatePodOperator(task_id="create_pod", wait_for_ready=False, **kwargs).execute(make_context())
    assert repr(value) in str(caught.value)
    assert not sim.stats.log
    assert account(sim)["created"] == {}


@pytest.mark.parametrize(
    ("argument", "value"),
    [("gpu_count", "1"), ("gpu_count", " 1 "), ("disk_size", "100"), ("max_price", "9.5")],
)
def test_numbers_given_as_text_by_a_template_are_read(lifecycle_sim, argument, value):
    sim = lifecycle_sim()
    kwargs: dict[str, Any] = {"gpu_type": "H100_80GB", argument: value}
    PrimeCreatePodOperator(task_id="create_pod", wait_for_ready=False, **kwargs).execute(make_context())
    (pod_id,) = account(sim)["pods"]
    PrimeCreatePodOperator(task_id="create_pod").hook.delete_pod(pod_id)
    assert billing_after_deletes(sim) == []
