"""The official ``prime`` CLI against the simulator: every command a new user tries first.

Each command must exit 0 and show what the ``lifecycle`` scenario holds; the simulator's own
statistics confirm that a create and a delete really happened. Where the CLI itself breaks on
answers the real API sends, the test says so (strict xfail) and the simulator stays faithful.
"""

from __future__ import annotations

import json
import re

import pytest

from airflow_provider_prime.testing import PrimeSimulator, fixed_pod
from airflow_provider_prime.testing.scenario import Phase
from tests.cli.conftest import Run


def test_whoami_shows_the_user_and_the_key_scopes(prime: Run) -> None:
    result = prime("whoami")
    assert result.code == 0, result
    assert "Simulated User 1" in result.out
    assert "user1@simulator.invalid" in result.out
    assert "instances" in result.out  # the Token Permissions table, read from the scope object


def test_pods_list_shows_the_running_pods(prime: Run) -> None:
    result = prime("pods", "list")
    assert result.code == 0, result
    for name in ("trainer-single", "trainer-cluster", "trainer-booting"):
        assert name in result.out
    assert "finished-run" not in result.out  # terminated: only in the history
    assert "Total: 3" in result.out


def test_pods_list_as_json(prime: Run) -> None:
    result = prime("pods", "list", "-o", "json")
    assert result.code == 0, result
    listing = json.loads(result.out)
    assert listing["total_count"] == 3
    by_name = {pod["name"]: pod for pod in listing["pods"]}
    assert by_name["trainer-single"]["gpu"] == "H100_80GB x1"
    assert by_name["trainer-cluster"]["gpu"] == "H100_80GB x16"
    assert by_name["trainer-single"]["status"] == "ACTIVE"


def test_pods_status_of_a_single_node_pod(prime: Run, cli_simulator: PrimeSimulator) -> None:
    result = prime("pods", "status", "pod-life-single")
    assert result.code == 0, result
    status = cli_simulator.pod_status("pod-life-single")
    assert status is not None
    assert "trainer-single" in result.out
    assert status["sshConnection"] in result.out
    assert "TCP:22->22 (SSH - SSH)" in result.out  # primePortMapping with string ports


def test_pods_status_of_a_ready_multi_node_pod(prime: Run, cli_simulator: PrimeSimulator) -> None:
    result = prime("pods", "status", "pod-life-cluster")
    assert result.code == 0, result
    status = cli_simulator.pod_status("pod-life-cluster")
    assert status is not None
    assert ", ".join(status["ip"]) in result.out
    assert "H100_80GB x16" in result.out


@pytest.mark.xfail(
    strict=True,
    reason="prime 0.18.0 types sshConnection as str | list[str]: a multi-node pod whose SSH is up on "
    "some nodes only (the API sends null for the others) fails its validation",
)
def test_pods_status_of_a_multi_node_pod_still_booting(prime: Run, cli_simulator: PrimeSimulator) -> None:
    booting = Phase(
        status="ACTIVE", installation_status="ACTIVE", installation_progress=60, ip_nodes=2, ssh_nodes=1
    )
    cli_simulator.add_pod(fixed_pod("pod-cli-half-up", nodes=2, phase=booting, name="half-up"))
    try:
        result = prime("pods", "status", "pod-cli-half-up")
    finally:
        cli_simulator.remove_pod("pod-cli-half-up")
    assert result.code == 0, result


def test_pods_history_shows_the_terminated_pod(prime: Run) -> None:
    result = prime("pods", "history")
    assert result.code == 0, result
    assert "finished-run" in result.out
    assert "pod-life-old" in result.out


def test_availability_list_shows_the_offers(prime: Run) -> None:
    result = prime("availability", "list")
    assert result.code == 0, result
    for shown in ("H100 80GB", "A100 80GB", "B200 180GB", "tensordock", "dc_roan", "$0.89", "$2.49"):
        assert shown in result.out, shown


def test_pods_create_and_terminate_without_a_prompt(prime: Run, cli_simulator: PrimeSimulator) -> None:
    created = prime(
        "pods",
        "create",
        "--cloud-id",
        "sim-h100-80gb-1x",
        "--name",
        "cli-made",
        "--disk-size",
        "100",
        "--vcpus",
        "16",
        "--memory",
        "128",
        "--image",
        "ubuntu_22_cuda_12",
        "--yes",
    )
    assert created.code == 0, created
    found = re.search(r"Successfully created pod (\w+)", created.out)
    assert found, created
    pod_id = found.group(1)
    assert cli_simulator.billing()["created"] == {"cli-made": 1}
    assert cli_simulator.billing()["pods"][pod_id]["name"] == "cli-made"

    terminated = prime("pods", "terminate", pod_id, "--yes")
    assert terminated.code == 0, terminated
    assert f"Successfully terminated pod {pod_id}" in terminated.out
    billing = cli_simulator.billing()
    assert billing["deleted"] == {"cli-made": 1}
    assert billing["pods"][pod_id]["status"] in ("DELETING", "TERMINATED")
