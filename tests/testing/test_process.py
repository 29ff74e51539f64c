"""The simulator as a separate process: the CLI, its signals and exit codes, and HTTP steering."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from airflow_provider_prime.testing import (
    PODS_PATH,
    STATUS_PATH,
    Fault,
    PrimeSimulator,
    PrimeSimulatorProcess,
    Scenario,
    SimulatorClient,
    fixed_pod,
    ready_pod,
)

CLI = [sys.executable, "-m", "airflow_provider_prime.testing"]


def start_cli(*args: str, command: list[str] = CLI) -> tuple[subprocess.Popen[str], str]:
    process = subprocess.Popen([*command, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert process.stdout is not None
    return process, process.stdout.readline().strip()


def finish(process: subprocess.Popen[str], signum: int) -> tuple[int, str]:
    process.send_signal(signum)
    try:
        _, stderr = process.communicate(timeout=20)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    return process.returncode, stderr


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_cli_prints_its_url_first_serves_and_exits_cleanly_on_signals(signum: int) -> None:
    process, url = start_cli("--scenario", "ready", "--api-key", "k1", "--api-key", "k2", "--time-scale", "5")
    try:
        assert url.startswith("http://127.0.0.1:")
        answer = httpx.get(
            url + STATUS_PATH, params={"pod_ids": "pod-ready-single"}, headers={"Authorization": "Bearer k2"}
        )
        assert answer.json()["data"][0]["status"] == "ACTIVE"
    finally:
        code, stderr = finish(process, signum)
    assert code == 0
    assert "scenario 'ready'" in stderr
    assert "stopped" in stderr
    assert "k1" not in stderr
    assert "k2" not in stderr


def test_console_script_runs_the_same_cli() -> None:
    script = Path(sys.executable).with_name("prime-api-simulator")
    if not script.exists():
        pytest.skip("the package is not installed with its console scripts in this environment")
    process, url = start_cli(command=[str(script)])
    try:
        assert httpx.get(url + "/_sim/health").json()["pods"] == 0
    finally:
        code, _ = finish(process, signal.SIGTERM)
    assert code == 0


def test_cli_refuses_an_unknown_scenario_with_status_2(tmp_path: Path) -> None:
    broken = tmp_path / "broken.json"
    broken.write_text('{"pods": [{"pod_id": "p"}]}')
    for spec in ("no-such-scenario", str(broken)):
        result = subprocess.run([*CLI, "--scenario", spec], capture_output=True, text=True, timeout=60)
        assert result.returncode == 2
        assert result.stdout == ""
        assert "prime-api-simulator:" in result.stderr


def test_cli_reports_a_busy_port_with_status_1() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run([*CLI, "--port", str(port)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert "cannot listen" in result.stderr


def test_process_is_steered_over_http_like_the_in_process_simulator() -> None:
    scenario = Scenario.of([ready_pod("slow-pod", ready_at=3600.0)], name="file-borne")
    with PrimeSimulatorProcess(scenario, api_keys=("proc-key",)) as sim:
        assert sim.pid is not None
        assert sim.api_key == "proc-key"
        assert sim.health() == {"status": "ok", "pods": 1}
        auth = {"Authorization": "Bearer proc-key"}
        with httpx.Client(base_url=sim.base_url, headers=auth) as client:
            assert (
                client.get(STATUS_PATH, params={"pod_ids": "slow-pod"}).json()["data"][0]["status"]
                == "PROVISIONING"
            )

            sim.set_pod_state("slow-pod", "ERROR", installation_failure="kernel panic")
            pod = client.get(STATUS_PATH, params={"pod_ids": "slow-pod"}).json()["data"][0]
            assert (pod["status"], pod["installationFailure"]) == ("ERROR", "kernel panic")

            sim.add_pod(fixed_pod("extra", nodes=2))
            assert {p["podId"] for p in sim.pods()} == {"slow-pod", "extra"}
            assert sim.remove_pod("extra")
            assert not sim.remove_pod("extra")

            ids = sim.inject(Fault.rate_limited(retry_after=1), {"kind": "http_error", "status": 503})
            assert len(ids) == 2
            assert [f["kind"] for f in sim.faults] == ["http_error", "http_error"]
            assert client.get(STATUS_PATH).status_code == 429
            sim.clear_faults(ids[1])
            assert client.get(STATUS_PATH).status_code == 200

            stats = sim.stats_snapshot(log=None)
            assert stats["total"] == 4
            assert stats["by_status"] == {"200": 3, "429": 1}
            assert stats["by_key"] == {"proc-key": 4}
            assert len(stats["log"]) == 4
            sim.reset()
            assert sim.stats_snapshot()["total"] == 0

            assert sim.set_scenario("demo")["pods"] == ["pod-demo-single", "pod-demo-cluster"]
            assert sim.set_scenario(Scenario.of([fixed_pod("x")]))["pods"] == ["x"]
        with pytest.raises(RuntimeError, match="404"):
            sim.set_pod_state("nope", "ERROR")
        scenario_file = sim.command()[sim.command().index("--scenario") + 1]
        assert Path(scenario_file).exists()
    assert sim.stop() is None  # already stopped by the context manager
    assert not Path(scenario_file).exists()


def test_process_exit_status_and_failure_to_start() -> None:
    sim = PrimeSimulatorProcess("fast").start()
    assert sim.stop() == 0
    with pytest.raises(RuntimeError, match="did not start"):
        PrimeSimulatorProcess("no-such-scenario").start()


def test_a_client_can_steer_an_in_process_simulator_too(sim: PrimeSimulator) -> None:
    client = SimulatorClient(sim.base_url)
    client.add_pod(fixed_pod("a"))
    assert sim.pod_status("a") is not None
    assert client.pods()[0]["podId"] == "a"
    client.close()


def test_a_process_with_a_read_only_key_refuses_its_writes_and_reports_billing() -> None:
    with PrimeSimulatorProcess("lifecycle", read_only_keys=("ro",)) as sim:
        body = {"pod": {"name": "x", "cloudId": "sim-h100-80gb-1x", "gpuType": "H100_80GB"}, "provider": {}}
        answer = httpx.post(sim.base_url + PODS_PATH, json=body, headers={"Authorization": "Bearer ro"})
        assert answer.status_code == 403
        billing = sim.billing()
        assert billing["created"] == {}
        assert set(billing["billing"]) == {"trainer-single", "trainer-cluster", "trainer-booting"}
