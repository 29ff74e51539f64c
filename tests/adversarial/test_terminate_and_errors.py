"""Attacks on the terminate operator's input and on error texts: weird renderings, router 404s, echoes."""

from __future__ import annotations

from typing import Any

import pytest

from airflow_provider_prime.exceptions import PrimeError
from airflow_provider_prime.operators.pod import PrimeCreatePodOperator, PrimeTerminatePodOperator
from airflow_provider_prime.testing import Fault, ready_pod
from tests.operators.conftest import FAST_BOOT, account, billing_after_deletes, make_context

SECRET = "hf_Adversary0123456789secretvalue"


def terminate(pod_ids: Any, **kwargs: Any) -> PrimeTerminatePodOperator:
    kwargs.setdefault("wait_for_termination", False)
    return PrimeTerminatePodOperator(task_id="terminate_pod", pod_ids=pod_ids, **kwargs)


@pytest.mark.parametrize("rendered", ["None", "null", "[]", "none", " ", "[None]", "['None']", "pod-1,None"])
def test_a_template_that_rendered_nothing_fails_the_terminate(lifecycle_sim, rendered):
    """Held: ``pod_ids="{{ ti.xcom_pull('create', key='pod_id') }}"`` renders ``None`` as ``'None'``."""
    sim = lifecycle_sim(FAST_BOOT)
    with pytest.raises(PrimeError, match="pod_ids"):
        terminate(rendered).execute(make_context())
    assert [r for r in sim.stats.log if r.method == "DELETE"] == []


def test_an_empty_dict_rendered_as_text_fails_the_terminate(lifecycle_sim):
    lifecycle_sim(FAST_BOOT)
    with pytest.raises(PrimeError, match="pod_ids"):
        terminate("{}").execute(make_context())


def test_a_routers_404_on_delete_is_not_pod_gone(lifecycle_sim):
    """Held (finding 11): a gateway's 404 on the DELETE fails the terminate, naming the URL."""
    sim = lifecycle_sim(FAST_BOOT, ready_pod("pod-a", ready_at=0.0, name="box"))
    sim.inject(Fault.http_error(404, body_shape="detail", message="Not Found", method="DELETE", times=None))
    with pytest.raises(PrimeError, match="pod-a"):
        terminate(["pod-a"]).execute(make_context())
    sim.inject(
        Fault.http_error(404, body_shape="text", message="404 page not found", method="GET", times=None)
    )
    with pytest.raises(PrimeError, match="pod-a"):
        terminate(["pod-a"]).execute(make_context())
    sim.clear_faults()
    assert account(sim)["pods"]["pod-a"]["billing"] is True
    terminate(["pod-a"]).execute(make_context())
    assert billing_after_deletes(sim) == []


def test_an_env_value_echoed_by_a_refused_create_is_not_in_the_exception(lifecycle_sim):
    sim = lifecycle_sim(FAST_BOOT)
    sim.inject(
        Fault.http_error(
            422, body_shape="errors", message=f"envVars: value {SECRET} is not allowed", method="POST"
        )
    )
    operator = PrimeCreatePodOperator(
        task_id="create_pod", gpu_type="H100_80GB", env_vars={"HF_TOKEN": SECRET}, deferrable=False
    )
    with pytest.raises(PrimeError) as caught:
        operator.execute(make_context())
    assert SECRET not in str(caught.value)
    assert billing_after_deletes(sim) == []
