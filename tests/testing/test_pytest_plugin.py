"""The pytest plugin: fixtures, the marker, the Airflow connection, and use from a user's project."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from airflow_provider_prime.testing import WHOAMI_PATH, ManualClock, PrimeSimulator, fixed_pod
from airflow_provider_prime.testing.pytest_plugin import PRIME_ENV_VARS, Connect


def test_the_fixture_is_a_fresh_running_empty_simulator(prime_simulator: PrimeSimulator) -> None:
    assert prime_simulator.running
    assert prime_simulator.scenario.name == "empty"
    assert prime_simulator.stats.total == 0
    headers = {"Authorization": f"Bearer {prime_simulator.api_key}"}
    assert httpx.get(prime_simulator.base_url + WHOAMI_PATH, headers=headers).status_code == 200


@pytest.mark.prime_simulator("fast", time_scale=5.0, api_keys=("marker-key",))
def test_the_marker_configures_the_fixture(prime_simulator: PrimeSimulator) -> None:
    assert prime_simulator.scenario.name == "fast"
    assert prime_simulator.time_scale == 5.0
    assert prime_simulator.api_key == "marker-key"


def test_prime_connection_points_airflow_at_the_simulator(
    prime_connection: str, prime_simulator: PrimeSimulator
) -> None:
    from airflow.models.connection import Connection

    value = os.environ[f"AIRFLOW_CONN_{prime_connection.upper()}"]
    connection = Connection.from_json(value, conn_id=prime_connection)
    assert (connection.conn_type, connection.host) == ("prime", prime_simulator.base_url)
    assert connection.password == prime_simulator.api_key


def _connection(conn_id: str = "prime_default") -> dict[str, object]:
    value: dict[str, object] = json.loads(os.environ[f"AIRFLOW_CONN_{conn_id.upper()}"])
    return value


@pytest.fixture
def prime_simulator_defaults() -> dict[str, object]:
    return {"time_scale": 7.0}


@pytest.fixture
def prime_connection_extra() -> dict[str, object]:
    return {"read_timeout": 0.5}


def test_factory_defaults_apply_unless_given_and_never_with_a_clock(
    prime_simulator_factory: Callable[..., PrimeSimulator],
) -> None:
    assert prime_simulator_factory().time_scale == 7.0
    assert prime_simulator_factory(time_scale=2.0).time_scale == 2.0
    assert prime_simulator_factory(clock=ManualClock()).time_scale == 1.0


def test_factory_takes_pod_scripts_as_the_scenario(
    prime_simulator_factory: Callable[..., PrimeSimulator],
) -> None:
    sim = prime_simulator_factory([fixed_pod("a"), fixed_pod("b")])
    assert sim.scenario.pod_ids == ["a", "b"]
    assert sim.scenario.offers  # the built-in offers come along


def test_prime_connect_uses_the_default_extra_or_the_one_given(
    prime_simulator: PrimeSimulator, prime_connect: Connect
) -> None:
    assert prime_connect(prime_simulator) == "prime_default"
    assert _connection()["extra"] == {"read_timeout": 0.5}
    assert prime_connect(prime_simulator.base_url, api_key="other", conn_id="second", extra={}) == "second"
    second = _connection("second")
    assert (second["host"], second["password"], "extra" in second) == (
        prime_simulator.base_url,
        "other",
        False,
    )
    with pytest.raises(ValueError, match="api_key"):
        prime_connect(prime_simulator.base_url)


def test_a_users_project_can_enable_the_plugin_and_every_simulator_is_stopped(tmp_path: Path) -> None:
    # The user's shell has its own Prime settings: prime_clean_env must hide them from the test.
    developer = dict.fromkeys(PRIME_ENV_VARS, "from-the-developer")
    (tmp_path / "conftest.py").write_text(
        'pytest_plugins = ["airflow_provider_prime.testing.pytest_plugin"]\n'
    )
    urls = tmp_path / "urls.json"
    (tmp_path / "test_user.py").write_text(
        textwrap.dedent(
            f"""
            import json
            import os
            import httpx
            from airflow_provider_prime.testing import ready_pod

            def test_clean_env(prime_clean_env):
                assert not {set(PRIME_ENV_VARS)!r} & set(os.environ)

            def test_waits(prime_simulator, prime_simulator_factory):
                other = prime_simulator_factory("demo")
                prime_simulator.add_pod(ready_pod("mine", ready_at=0))
                answer = httpx.get(
                    prime_simulator.base_url + "/api/v1/pods/status",
                    params={{"pod_ids": "mine"}},
                    headers={{"Authorization": "Bearer " + prime_simulator.api_key}},
                )
                assert answer.json()["data"][0]["installationStatus"] == "FINISHED"
                with open({str(urls)!r}, "w") as out:
                    json.dump([prime_simulator.base_url, other.base_url], out)
            """
        )
    )
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        # only what the user's conftest asks for
        env={**os.environ, **developer, "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 passed" in result.stdout
    for url in json.loads(urls.read_text()):
        with pytest.raises(httpx.ConnectError):
            httpx.get(url + WHOAMI_PATH)
