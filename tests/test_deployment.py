"""This deployment's identity: [prime] deployment_id, else derived from the Execution API address."""

from __future__ import annotations

import pytest

from airflow_provider_prime.deployment import deployment_id, derived_deployment_id
from airflow_provider_prime.exceptions import PrimeConfigError


@pytest.fixture
def airflow_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for var in (
        "AIRFLOW__PRIME__DEPLOYMENT_ID",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL",
        "AIRFLOW__API__BASE_URL",
    ):
        monkeypatch.delenv(var, raising=False)
    return monkeypatch


def test_an_explicit_deployment_id_wins(airflow_env: pytest.MonkeyPatch) -> None:
    airflow_env.setenv("AIRFLOW__PRIME__DEPLOYMENT_ID", " prod-eu-1\n")
    airflow_env.setenv("AIRFLOW__CORE__EXECUTION_API_SERVER_URL", "http://airflow.internal:8080/execution/")
    assert deployment_id() == "prod-eu-1"


@pytest.mark.parametrize("bad", ["Prod", "prod_eu", "a" * 33, "prod eu", "prod/eu"])
def test_a_bad_explicit_deployment_id_is_refused_clearly(airflow_env: pytest.MonkeyPatch, bad: str) -> None:
    airflow_env.setenv("AIRFLOW__PRIME__DEPLOYMENT_ID", bad)
    with pytest.raises(PrimeConfigError, match=r"deployment_id .*a-z, 0-9 and '-'"):
        deployment_id()


def test_the_default_is_a_hash_of_the_execution_api_address(airflow_env: pytest.MonkeyPatch) -> None:
    airflow_env.setenv("AIRFLOW__CORE__EXECUTION_API_SERVER_URL", "http://airflow.internal:8080/execution/")
    first = deployment_id()
    assert first == deployment_id()  # stable: nothing random, nothing of the process
    assert len(first) == 12
    assert int(first, 16) >= 0
    airflow_env.setenv("AIRFLOW__CORE__EXECUTION_API_SERVER_URL", "http://staging.internal:8080/execution/")
    assert deployment_id() != first


def test_a_process_without_execution_api_server_url_derives_it_from_base_url_like_airflow() -> None:
    """A triggerer configured with [api] base_url only agrees with a worker given the full address."""
    worker = derived_deployment_id("http://airflow.internal:8080/execution/", "")
    assert derived_deployment_id("", "http://airflow.internal:8080") == worker
    assert derived_deployment_id("", "http://airflow.internal:8080/") == worker
    assert derived_deployment_id("  http://airflow.internal:8080/execution  ", "http://elsewhere") == worker
    assert derived_deployment_id("", "") == derived_deployment_id("http://localhost:8080/execution/", "")


def test_base_url_decides_when_execution_api_server_url_is_unset(airflow_env: pytest.MonkeyPatch) -> None:
    airflow_env.setenv("AIRFLOW__API__BASE_URL", "http://airflow.internal:8080")
    assert deployment_id() == derived_deployment_id("http://airflow.internal:8080/execution/", "")


def test_the_option_is_declared_in_the_provider_info_as_airflow_validates_it() -> None:
    import json
    from pathlib import Path

    import airflow
    import jsonschema

    from airflow_provider_prime.get_provider_info import get_provider_info

    info = get_provider_info()
    schema = json.loads((Path(airflow.__file__).parent / "provider_info.schema.json").read_text())
    jsonschema.validate(info, schema)
    option = info["config"]["prime"]["options"]["deployment_id"]
    assert option["default"] == ""
    assert "execution_api_server_url" in option["description"]
