"""``multi_node`` is templated, and its rendered text is read by its meaning.

The lifecycle example passes ``"{{ params.multi_node }}"`` so that a run's conf chooses a multi-node
pod. Rendered without native objects that is the text ``"False"`` or ``"True"``, which ``bool()``
would both read as true.
"""

from __future__ import annotations

from typing import Any

import pytest

from airflow_provider_prime.exceptions import PrimeConfigError
from airflow_provider_prime.operators.pod import PrimeCreatePodOperator
from tests.operators.conftest import account, billing_after_deletes, make_context


def test_multi_node_is_a_template_field() -> None:
    assert "multi_node" in PrimeCreatePodOperator.template_fields


@pytest.mark.parametrize(
    ("value", "gpu_count", "price_hr"),
    [
        ("True", 16, 39.84),
        (" true ", 16, 39.84),
        (True, 16, 39.84),
        ("False", 1, 2.49),
        ("", 1, 2.49),
    ],
)
def test_multi_node_given_as_text_by_a_template_is_read_by_its_meaning(
    lifecycle_sim: Any, value: object, gpu_count: int, price_hr: float
) -> None:
    sim = lifecycle_sim()
    operator = PrimeCreatePodOperator(
        task_id="create_pod",
        gpu_type="H100_80GB",
        gpu_count=gpu_count,
        multi_node=value,
        wait_for_ready=False,
    )
    operator.execute(make_context())
    ((pod_id, pod),) = account(sim)["pods"].items()
    assert pod["price_hr"] == price_hr  # the 2-node cluster offer (sim-h100-80gb-16x-cluster) or the 1x
    operator.hook.delete_pod(pod_id)
    assert billing_after_deletes(sim) == []


def test_a_multi_node_that_is_not_yes_or_no_is_a_config_error_before_any_request(
    lifecycle_sim: Any,
) -> None:
    sim = lifecycle_sim()
    operator = PrimeCreatePodOperator(
        task_id="create_pod", gpu_type="H100_80GB", multi_node="maybe", wait_for_ready=False
    )
    with pytest.raises(PrimeConfigError, match=r"^multi_node must be true or false, not 'maybe'"):
        operator.execute(make_context())
    assert not sim.stats.log
    assert account(sim)["created"] == {}
