"""The simulator's pods with SSH nodes (``ssh_keys=``): a real SSH server per node, following the pod.

Pods move on a ManualClock; orderings are proven by what the API and the nodes answer after each
step, never by sleeping. Every test ends with no process alive on any node and, where pods were
made, none still billing.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import asyncssh
import httpx
import pytest

from airflow_provider_prime import job_ids
from airflow_provider_prime.hooks.prime import PrimeHook
from airflow_provider_prime.job_ids import job_dir
from airflow_provider_prime.job_script import REMOTE_COMMAND, launch_script
from airflow_provider_prime.sensors.pod_status import PodStatusSensor
from airflow_provider_prime.testing import (
    PODS_PATH,
    STATUS_PATH,
    CreateLifecycle,
    Fault,
    ManualClock,
    PodScript,
    PrimeSimulator,
    PrimeSimulatorProcess,
    Scenario,
    SimulatorClient,
    fixed_pod,
    ready_pod,
    vanishing_pod,
)
from airflow_provider_prime.testing.__main__ import main
from airflow_provider_prime.testing.pytest_plugin import SshKeyPair
from airflow_provider_prime.testing.ssh_nodes import JOB_ROOT, NodeState
from tests.simulated import advancing_per_request

DEADLINE = 20.0
DETACH = "setsid sleep 1000 >/dev/null 2>&1 </dev/null & echo $!"


def wait_until(condition: Callable[[], object], what: str) -> None:
    """Poll ``condition`` under a deadline (a state to reach, not an ordering to prove)."""
    deadline = time.monotonic() + DEADLINE
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.01)


def pid_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def run(node: dict[str, Any], key: Path, command: str) -> asyncssh.SSHCompletedProcess:
    """``command`` on a node of the handover (its host, port and user), with asyncssh."""

    async def go() -> asyncssh.SSHCompletedProcess:
        async with asyncssh.connect(
            node["host"], node["port"], username=node["user"], client_keys=[str(key)], known_hosts=None
        ) as conn:
            return await asyncio.wait_for(conn.run(command, check=True), DEADLINE)

    return asyncio.run(go())


def refused(node: dict[str, Any], key: Path) -> bool:
    try:
        run(node, key, "true")
    except (ConnectionRefusedError, ConnectionResetError, asyncssh.ConnectionLost):
        return True
    return False


def target(sim: PrimeSimulator, pod_id: str, rank: int) -> dict[str, Any]:
    """Where a node is, as the node itself says (before the API reports it)."""
    assert sim.ssh_nodes is not None
    found = sim.ssh_nodes.farm.targets(pod_id)[rank]
    return {"host": found.host, "port": found.port, "user": found.user}


def api(sim: PrimeSimulator) -> httpx.Client:
    return httpx.Client(
        base_url=sim.base_url, headers={"Authorization": f"Bearer {sim.api_key}"}, timeout=DEADLINE
    )


def status(sim: PrimeSimulator, pod_id: str) -> dict[str, Any]:
    with api(sim) as client:
        data: list[dict[str, Any]] = client.get(STATUS_PATH, params={"pod_ids": pod_id}).json()["data"]
    return data[0] if data else {}


@pytest.fixture
def ssh_sim(
    prime_simulator_factory: Callable[..., PrimeSimulator], prime_ssh_key: SshKeyPair, clock: ManualClock
) -> Iterator[Callable[..., PrimeSimulator]]:
    """``make(*pods, **options)``: a simulator on the manual clock whose nodes accept the test's key.

    Afterwards: the simulator stopped, and no process started on any of its nodes alive.
    """
    made: list[PrimeSimulator] = []

    def make(*pods: PodScript, **options: Any) -> PrimeSimulator:
        options.setdefault("clock", clock)
        sim = prime_simulator_factory(
            Scenario.of(pods, **options.pop("scenario", {})), **options, ssh_keys=[prime_ssh_key.public_key]
        )
        made.append(sim)
        return sim

    yield make
    for sim in made:
        sim.stop()
        nodes = sim.stats.nodes
        assert nodes is not None
        assert nodes.processes_alive == 0


# -- the whole life of a two-node pod ------------------------------------------------------------------


def test_a_two_node_pod_runs_commands_from_ready_until_deleted(ssh_sim, prime_ssh_key, prime_connect, clock):
    sim = ssh_sim(ready_pod("train", ready_at=10, nodes=2))
    prime_connect(sim)
    booting = [target(sim, "train", rank) for rank in (0, 1)]
    assert all(refused(node, prime_ssh_key.private_key_file) for node in booting)

    sensor = PodStatusSensor(
        task_id="wait", pod_ids=["train"], poke_interval=0.01, timeout=60, deferrable=False
    )
    ti = mock.Mock()
    ti.get_first_reschedule_date.return_value = None
    with advancing_per_request(sim, clock, step=1):
        handover = sensor.execute({"ti": ti})
    nodes = handover["train"]["nodes"]
    assert [(n["host"], n["port"], n["user"]) for n in nodes] == [
        (n["host"], n["port"], n["user"]) for n in booting
    ]
    assert [n["ip"] for n in nodes] == [n["host"] for n in booting]
    assert len({n["host"] for n in nodes}) == 2
    assert all(n["host"].startswith("127.") for n in nodes)

    homes = [run(node, prime_ssh_key.private_key_file, "pwd").stdout.strip() for node in nodes]
    jobs = [int(run(node, prime_ssh_key.private_key_file, DETACH).stdout) for node in nodes]
    assert homes[0] != homes[1]
    assert all(pid_alive(pid) for pid in jobs)
    during = sim.stats.nodes
    assert during is not None
    assert during.launches_per_node("train") == [2, 2]
    assert during.processes_alive == 2

    PrimeHook().delete_pod("train")
    assert status(sim, "train")["status"] == "DELETING"
    after = sim.stats.nodes  # waits for the kill under way
    assert after is not None
    assert after.processes_alive == 0
    assert not any(pid_alive(pid) for pid in jobs)
    assert [node.state for node in after.pods["train"]] == [NodeState.STOPPED] * 2
    assert after.launches_per_node("train") == [2, 2]  # counted after the teardown too
    assert all(refused(node, prime_ssh_key.private_key_file) for node in nodes)
    clock.advance(sim.create_lifecycle.deleting_for)
    assert sim.billing()["billing"] == {}


def test_each_node_serves_from_the_moment_the_api_reports_its_ssh(ssh_sim, prime_ssh_key, clock):
    lifecycle = CreateLifecycle(active_after=10, installed_after=20, ssh_after=(20, 40), deleting_for=0)
    sim = ssh_sim(scenario={"lifecycle": lifecycle})
    with api(sim) as client:
        offer = client.get("/api/v1/availability/multi-node").json()["items"][0]
        pod = client.post(
            PODS_PATH,
            json={
                "pod": {key: offer[key] for key in ("cloudId", "gpuType", "socket", "gpuCount")}
                | {"name": "late-node"},
                "provider": {"type": offer["provider"]},
            },
        ).json()
    key = prime_ssh_key.private_key_file
    nodes = [target(sim, pod["id"], rank) for rank in (0, 1)]
    clock.advance(10)
    active = status(sim, pod["id"])
    assert active["status"] == "ACTIVE"
    assert active["ip"] == [n["host"] for n in nodes]
    assert active["sshConnection"] == [None, None]
    assert refused(nodes[0], key)
    assert refused(nodes[1], key)
    clock.advance(10)
    half = status(sim, pod["id"])  # node 0's SSH is reported: it accepts, node 1 still boots
    assert half["sshConnection"] == [f"root@{nodes[0]['host']} -p {nodes[0]['port']}", None]
    assert run(nodes[0], key, "echo up").stdout == "up\n"
    assert refused(nodes[1], key)
    clock.advance(20)
    assert all(status(sim, pod["id"])["sshConnection"])
    assert run(nodes[1], key, "echo up").stdout == "up\n"
    with api(sim) as client:
        assert client.delete(f"{PODS_PATH}{pod['id']}").json() == {"status": "TERMINATED"}
    assert sim.ssh_nodes is not None
    assert sim.ssh_nodes.settle()
    assert refused(nodes[0], key)
    assert refused(nodes[1], key)
    assert sim.billing()["billing"] == {}


# -- faults: a node dies mid-job -----------------------------------------------------------------------


def test_a_node_dies_mid_job_the_pod_goes_error_its_ssh_drops_and_its_processes_die(
    ssh_sim, prime_ssh_key, clock
):
    sim = ssh_sim(fixed_pod("job", nodes=2))
    key = prime_ssh_key.private_key_file
    nodes = [target(sim, "job", rank) for rank in (0, 1)]
    assert status(sim, "job")["status"] == "ACTIVE"
    jobs = [int(run(node, key, DETACH).stdout) for node in nodes]

    async def attached_session_ends_when_node_1_dies() -> str:
        node = nodes[1]
        async with asyncssh.connect(
            node["host"], node["port"], username=node["user"], client_keys=[str(key)], known_hosts=None
        ) as conn:
            process = await conn.create_process("echo started; sleep 1000")
            assert await asyncio.wait_for(process.stdout.readline(), DEADLINE) == "started\n"
            sim.inject(Fault.node_dies("job", rank=1))
            answer = await asyncio.to_thread(status, sim, "job")  # the fault strikes on this request
            await asyncio.wait_for(conn.wait_closed(), DEADLINE)
            return str(answer["status"])

    assert asyncio.run(attached_session_ends_when_node_1_dies()) == "ERROR"
    assert not pid_alive(jobs[1])
    assert pid_alive(jobs[0])  # node 0 lives on; its SSH too
    assert run(nodes[0], key, "echo alive").stdout == "alive\n"
    assert refused(nodes[1], key)
    clock.advance(100)
    assert refused(nodes[1], key)  # dead for good
    stats = sim.stats.nodes
    assert stats is not None
    assert [node.state for node in stats.pods["job"]] == [NodeState.SERVING, NodeState.DEAD]
    assert [node.processes_alive for node in stats.pods["job"]] == [1, 0]
    sim.delete_pod("job", deleting_for=0)
    gone = sim.stats.nodes
    assert gone is not None
    assert gone.processes_alive == 0
    assert not pid_alive(jobs[0])
    assert sim.billing()["billing"] == {}


def test_the_control_api_kills_every_node_of_a_pod(ssh_sim, prime_ssh_key):
    sim = ssh_sim(fixed_pod("job", nodes=2))
    key = prime_ssh_key.private_key_file
    nodes = [target(sim, "job", rank) for rank in (0, 1)]
    status(sim, "job")
    jobs = [int(run(node, key, DETACH).stdout) for node in nodes]
    client = SimulatorClient(sim.base_url)
    assert client.kill_node("job")["status"] == "ERROR"
    with pytest.raises(RuntimeError, match="404"):
        client.kill_node("no-such-pod")
    with pytest.raises(RuntimeError, match="400"):
        client._call("POST", "pods/job/die", {"rank": "one"})
    node_stats = client.node_stats()
    client.close()
    assert not any(pid_alive(pid) for pid in jobs)
    assert node_stats is not None
    assert node_stats["processes_alive"] == 0
    assert [node["state"] for node in node_stats["pods"]["job"]] == ["dead", "dead"]
    assert status(sim, "job")["status"] == "ERROR"
    with pytest.raises(ValueError, match="nodes 0 to 1, not 2"):
        sim.kill_node("job", 2)
    sim.delete_pod("job", deleting_for=0)
    assert sim.billing()["billing"] == {}


def test_a_stopped_pod_s_nodes_die_and_a_removed_or_vanished_pod_s_nodes_go(ssh_sim, prime_ssh_key, clock):
    sim = ssh_sim(fixed_pod("stops"), fixed_pod("removed"), vanishing_pod("vanishes", vanish_at=5))
    key = prime_ssh_key.private_key_file
    status(sim, "stops")
    jobs = {pod: int(run(target(sim, pod, 0), key, DETACH).stdout) for pod in ("stops", "removed")}
    sim.set_pod_state("stops", "STOPPED", ssh_connection=[None], ip=[None])
    assert not pid_alive(jobs["stops"])
    assert sim.remove_pod("removed")
    stats = sim.stats.nodes
    assert stats is not None
    assert not pid_alive(jobs["removed"])
    assert {pod: [n.state for n in nodes] for pod, nodes in stats.pods.items()} == {
        "stops": [NodeState.DEAD],
        "removed": [NodeState.STOPPED],
        "vanishes": [NodeState.BOOTING],
    }
    assert sim.ssh_nodes is not None
    clock.advance(5)  # nobody asks: the simulator's own pass removes the vanished pod's nodes
    wait_until(lambda: "vanishes" not in sim.ssh_nodes.farm.stats().pods, "the vanished pod's nodes to go")
    sim.delete_pod("stops", deleting_for=0)
    assert sim.billing()["billing"] == {}


def launch_job(node: dict[str, Any], key: Path, job: str, text: str, expect: int) -> str:
    """Launch a job's command on a node with the job's own launch script; the action it took."""
    script = launch_script(job_dir(job), "command", text, {}, expect_launches=expect)

    async def go() -> asyncssh.SSHCompletedProcess:
        async with asyncssh.connect(
            node["host"], node["port"], username=node["user"], client_keys=[str(key)], known_hosts=None
        ) as conn:
            return await asyncio.wait_for(conn.run(REMOTE_COMMAND, input=script, check=True), DEADLINE)

    output = str(asyncio.run(go()).stdout)
    return output.rsplit("action ", 1)[1].strip()


def test_the_stats_count_each_jobs_command_launches_per_node_from_the_jobs_own_guard(ssh_sim, prime_ssh_key):
    """``job_launches``: per node, job id -> its command's launches (polls and probes do not count),
    kept after the pod's nodes are removed; over HTTP too."""
    sim = ssh_sim(fixed_pod("jobs", nodes=2))
    key = prime_ssh_key.private_key_file
    nodes = [target(sim, "jobs", rank) for rank in (0, 1)]
    first, second = "train-" + "1" * 24, "eval-" + "2" * 24
    status(sim, "jobs")  # the API reports the nodes: they serve
    assert launch_job(nodes[0], key, first, "sleep 1000", 0) == "launched"
    assert launch_job(nodes[0], key, first, "sleep 1000", 0) == "running"  # a re-sent launch: no second
    assert launch_job(nodes[1], key, first, "true", 0) == "launched"
    run(nodes[1], key, f"mkdir -p {JOB_ROOT}/{second}")  # a job whose command never launched
    wait_until(lambda: sim.stats.nodes.pods["jobs"][1].processes_alive == 0, "node 1's job to end")
    assert launch_job(nodes[1], key, first, "true", 0) == "changed"  # a stale guard launches nothing
    assert launch_job(nodes[1], key, first, "true", 1) == "launched"  # a relaunch counts

    counted = sim.stats.nodes
    assert counted is not None
    assert counted.job_launches_per_node("jobs") == [{first: 1}, {first: 2, second: 0}]
    assert counted.launches_per_node("jobs")[0] > 1  # every exec counts there, the launch's probe too
    snapshot = SimulatorClient(sim.base_url).node_stats()
    assert snapshot is not None
    assert [node["job_launches"] for node in snapshot["pods"]["jobs"]] == [{first: 1}, {first: 2, second: 0}]

    sim.remove_pod("jobs")  # the homes go with the nodes; the counts stay
    after = sim.stats.nodes
    assert after is not None
    assert after.processes_alive == 0
    assert after.job_launches_per_node("jobs") == [{first: 1}, {first: 2, second: 0}]


def test_the_job_root_the_stats_read_is_the_jobs():
    assert JOB_ROOT == job_ids.JOB_ROOT


def test_a_replaced_pod_gets_new_nodes_and_its_old_ones_are_removed(ssh_sim, prime_ssh_key):
    sim = ssh_sim(fixed_pod("again"))
    key = prime_ssh_key.private_key_file
    status(sim, "again")
    old = target(sim, "again", 0)
    job = int(run(old, key, DETACH).stdout)
    sim.add_pod(fixed_pod("again"))
    new = target(sim, "again", 0)
    assert new != old
    assert status(sim, "again")["sshConnection"] == f"root@{new['host']} -p {new['port']}"
    stats = sim.stats.nodes
    assert stats is not None
    assert stats.processes_alive == 0
    assert not pid_alive(job)
    assert set(stats.pods) == {"again", "again (earlier 1)"}
    assert stats.pods["again (earlier 1)"][0].launches == 1
    assert run(new, key, "echo new").stdout == "new\n"
    sim.set_scenario(Scenario.of([]))  # a new scenario: every old pod's nodes go
    assert sim.ssh_nodes is not None
    assert sim.ssh_nodes.settle()
    assert sim.ssh_nodes.farm.stats().pods == {}
    assert refused(new, key)


def test_an_unknown_key_is_refused(ssh_sim, tmp_path):
    sim = ssh_sim(fixed_pod("p"))
    status(sim, "p")
    stranger = tmp_path / "stranger"
    stranger.write_bytes(asyncssh.generate_private_key("ssh-ed25519").export_private_key("openssh"))
    with pytest.raises(asyncssh.PermissionDenied):
        run(target(sim, "p", 0), stranger, "true")
    stats = sim.stats.nodes
    assert stats is not None
    assert stats.pods["p"][0].auth_refused >= 1
    sim.delete_pod("p", deleting_for=0)


# -- off by default ------------------------------------------------------------------------------------


def test_without_keys_nothing_changes(sim):
    sim.add_pod(fixed_pod("p", nodes=2))
    assert sim.ssh_nodes is None
    assert sim.stats.nodes is None
    assert "ssh_nodes" not in sim.stats_snapshot()
    assert all(ip.startswith("203.0.113.") for ip in sim.pod_status("p")["ip"])
    assert sim.kill_node("p").status == "ERROR"  # the pod still goes ERROR: no node to kill


def test_the_testing_package_imports_without_asyncssh_and_keys_say_how_to_get_it():
    script = """
import sys
sys.modules["asyncssh"] = None  # as if the [ssh] extra were not installed
from airflow_provider_prime.testing import PrimeSimulator, fixed_pod
with PrimeSimulator([fixed_pod("p")]) as sim:
    assert sim.pod_status("p")["status"] == "ACTIVE"
try:
    PrimeSimulator(ssh_keys=["ssh-ed25519 AAAA"])
except ImportError as error:
    print(error)
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "pip install 'airflow-provider-prime[ssh]'" in done.stdout


def test_scripts_give_one_ssh_port_per_node():
    script = PodScript.model_validate(
        {
            **fixed_pod("p", nodes=2).model_dump(exclude_unset=True),
            "node_ips": ["127.0.0.2", "127.0.0.3"],
            "ssh_ports": [41, 42],
        }
    )
    assert script.report(0)["sshConnection"] == ["root@127.0.0.2 -p 41", "root@127.0.0.3 -p 42"]
    with pytest.raises(ValueError, match="ssh_ports has 1 entries for 2 nodes"):
        PodScript(pod_id="p", nodes=2, ssh_ports=(41,), timeline=fixed_pod("p").timeline)


def test_a_node_dies_fault_round_trips_as_json():
    fault = Fault.node_dies("pod-3", rank=1, after=30)
    assert Fault.model_validate(json.loads(fault.model_dump_json())) == fault
    with pytest.raises(ValueError, match="node_dies fault needs a target"):
        Fault(kind="node_dies")


# -- the command line ----------------------------------------------------------------------------------


def test_the_cli_serves_ssh_nodes_for_the_keys_given(prime_ssh_key):
    pods = Scenario.of([fixed_pod("cli", nodes=2)])
    with PrimeSimulatorProcess(pods, ssh_keys=[prime_ssh_key.public_key]) as process:
        assert "--ssh-key" in process.command()
        with httpx.Client(base_url=process.base_url, headers={"Authorization": "Bearer test-key"}) as client:
            answer = client.get(STATUS_PATH, params={"pod_ids": "cli"}).json()["data"][0]
        targets = [t.split("@")[1].split(" -p ") for t in answer["sshConnection"]]
        nodes = [{"host": host, "port": int(port), "user": "root"} for host, port in targets]
        outputs = [run(node, prime_ssh_key.private_key_file, "echo $USER $HOME").stdout for node in nodes]
        job = int(run(nodes[1], prime_ssh_key.private_key_file, DETACH).stdout)
        stats = process.node_stats()
        assert stats is not None
        assert stats["launches"] == 3
        assert stats["processes_alive"] == 1
        process.kill_node("cli", 1)
        assert not pid_alive(job)
        assert process.node_stats()["pods"]["cli"][1]["state"] == "dead"
        code = process.stop()
    assert code == 0
    assert all(out.startswith("root ") for out in outputs)
    assert outputs[0] != outputs[1]  # a home of its own per node


def test_the_cli_refuses_a_key_file_without_keys(tmp_path, capsys):
    empty = tmp_path / "empty.pub"
    empty.write_text("# no keys here\n\n")
    assert main(["--ssh-key", str(empty)]) == 2
    assert "no public key in the file" in capsys.readouterr().err
    garbage = tmp_path / "garbage.pub"
    garbage.write_text("ssh-ed25519 not-base64\n")
    assert main(["--ssh-key", str(garbage)]) == 2
    assert "not an OpenSSH public key" in capsys.readouterr().err
