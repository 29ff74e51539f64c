"""The simulator's SSH nodes: real SSH servers on 127.0.x.y that run what they are sent, locally.

Clients are the two the provider uses: asyncssh (the triggerer's path) and paramiko (Airflow's
``SSHHook``). Every test that starts processes ends with none alive; ordering is proven by waiting
for observable state under a deadline, never by sleeping.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import signal
import socket
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import asyncssh
import paramiko
import pytest

from airflow_provider_prime.testing.simulator import new_event_loop
from airflow_provider_prime.testing.ssh_farm import SshNodeFarm
from airflow_provider_prime.testing.ssh_nodes import (
    AddressPool,
    KeyRing,
    NodeState,
    NodeTarget,
    SimulatedNode,
)
from airflow_provider_prime.testing.ssh_processes import MARKER_VARIABLE, marked_processes

DEADLINE = 20.0


def wait_until(condition: Callable[[], object], what: str, timeout: float = DEADLINE) -> None:
    """Poll ``condition`` until it is true; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.01)


async def await_until(condition: Callable[[], object], what: str, timeout: float = DEADLINE) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


def exists(path: Path) -> bool:
    return path.exists()


def pid_alive(pid: int) -> bool:
    """Running (a zombie waiting for its reaper runs nothing)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.fixture(scope="module")
def client_key() -> asyncssh.SSHKey:
    return asyncssh.generate_private_key("ssh-ed25519")


@pytest.fixture
def key_file(client_key: asyncssh.SSHKey, tmp_path: Path) -> str:
    path = tmp_path / "id_ed25519"
    path.write_bytes(client_key.export_private_key("openssh"))
    path.chmod(0o600)
    return str(path)


@pytest.fixture
def farm(client_key: asyncssh.SSHKey) -> Iterator[SshNodeFarm]:
    """A farm accepting ``client_key``; afterwards no process started on any of its nodes is alive."""
    running = SshNodeFarm([client_key.export_public_key().decode()], stop_grace=1.0).start()
    tokens: set[str] = set()
    try:
        yield running
    finally:
        for pod_id in running.stats().pods:
            tokens.update(node.token for node in running.nodes(pod_id))
        running.close()
    assert not any(marked_processes(tokens).values())


@pytest.fixture
def pod(farm: SshNodeFarm) -> list[NodeTarget]:
    """A ready two-node pod."""
    targets = farm.add_pod("pod-a", node_count=2)
    farm.serve("pod-a")
    return targets


def connect(target: NodeTarget, key: asyncssh.SSHKey, **kwargs: object) -> asyncssh.SSHClientConnection:
    options: dict[str, object] = {"username": target.user, "client_keys": [key], "known_hosts": None}
    options.update(kwargs)
    return asyncssh.connect(target.host, target.port, **options)  # type: ignore[return-value]


# -- where nodes are -----------------------------------------------------------------------------------


def test_each_node_has_its_own_loopback_address_and_reports_it(farm):
    first = farm.add_pod("pod-1", node_count=3)
    second = farm.add_pod("pod-2", node_count=2)
    hosts = [target.host for target in first + second]
    assert len(set(hosts)) == 5
    assert all(host.startswith("127.0.") and host != "127.0.0.1" for host in hosts)
    assert first[0].ssh_connection == f"root@{first[0].host} -p {first[0].port}"
    farm.remove_pod("pod-1")
    farm.remove_pod("pod-2")


def test_the_pool_skips_addresses_in_use_and_wraps():
    pool = AddressPool(start=254 * 254 - 1)
    assert pool.allocate() == "127.0.254.254"
    assert pool.allocate() == "127.0.1.1"
    pool.release("127.0.254.254")
    assert pool.allocate() == "127.0.1.2"


def test_a_node_serves_loopback_only():
    with pytest.raises(ValueError, match="loopback only"):
        SimulatedNode(KeyRing(), host="0.0.0.0")


def test_the_key_ring_rejects_what_is_not_a_public_key():
    with pytest.raises(ValueError, match="not an OpenSSH public key"):
        KeyRing(["ssh-ed25519 not-base64"])


# -- lifecycle: booting, serving, refusing -------------------------------------------------------------


async def test_a_booting_node_refuses_then_serves_on_the_same_port_with_the_same_host_key(farm, client_key):
    (target,) = farm.add_pod("pod-boot", node_count=1)
    with pytest.raises(ConnectionRefusedError):
        await connect(target, client_key)
    farm.serve("pod-boot")
    node = farm.nodes("pod-boot")[0]
    host_key = node.host_public_key
    async with connect(target, client_key) as conn:
        assert conn.get_server_host_key().export_public_key().decode().strip() == host_key
    farm.refuse("pod-boot")
    with pytest.raises(ConnectionRefusedError):
        await connect(target, client_key)
    farm.serve("pod-boot")
    async with connect(target, client_key) as conn:
        assert conn.get_server_host_key().export_public_key().decode().strip() == host_key
    assert farm.targets("pod-boot") == [target]
    farm.remove_pod("pod-boot")


async def test_refuse_drops_sessions_but_the_processes_run_on(farm, pod, client_key):
    node = farm.nodes("pod-a")[0]
    async with connect(pod[0], client_key) as conn:
        job = await conn.create_process("echo up; exec sleep 1000")
        assert await job.stdout.readline() == "up\n"
        farm.refuse("pod-a", rank=0)
        await asyncio.wait_for(conn.wait_closed(), DEADLINE)
    assert node.state is NodeState.REFUSING
    assert farm.stats().pods["pod-a"][0].processes_alive == 1
    farm.serve("pod-a", rank=0)
    async with connect(pod[0], client_key) as conn:
        assert (await conn.run("echo back", check=True)).stdout == "back\n"


# -- authentication ----------------------------------------------------------------------------------


async def test_an_unknown_key_or_user_is_refused(farm, pod, client_key):
    stranger = asyncssh.generate_private_key("ssh-ed25519")
    with pytest.raises(asyncssh.PermissionDenied):
        await connect(pod[0], stranger)
    with pytest.raises(asyncssh.PermissionDenied):
        await connect(pod[0], client_key, username="ubuntu")
    with pytest.raises(asyncssh.PermissionDenied):
        await connect(pod[0], None, client_keys=None, password="root")  # no password auth at all
    assert farm.stats().pods["pod-a"][0].auth_refused >= 2
    assert farm.stats().launches == 0


async def test_keys_registered_or_removed_later_count_at_once(farm, pod):
    late = asyncssh.generate_private_key("ssh-ed25519")
    with pytest.raises(asyncssh.PermissionDenied):
        await connect(pod[1], late)
    farm.keys.add(late.export_public_key().decode())
    async with connect(pod[1], late) as conn:
        assert (await conn.run("true")).exit_status == 0
    farm.keys.remove(late.export_public_key().decode())
    with pytest.raises(asyncssh.PermissionDenied):
        await connect(pod[1], late)


# -- commands ------------------------------------------------------------------------------------------


async def test_a_command_returns_its_output_and_exit_status(farm, pod, client_key):
    async with connect(pod[0], client_key) as conn:
        result = await conn.run("echo out; echo err >&2; exit 3")
        assert (result.stdout, result.stderr, result.exit_status) == ("out\n", "err\n", 3)
        killed = await conn.run("kill -TERM $$")
        assert (killed.exit_status, killed.exit_signal[0]) == (-1, "TERM")
        assert (await conn.run("bash -lc 'echo $((6 * 7))'")).stdout == "42\n"
        assert (await conn.run("cat", input="fed through stdin\n")).stdout == "fed through stdin\n"
        shell = await conn.run(None, input="echo from a shell\n")  # no command: a shell reading stdin
        assert shell.stdout == "from a shell\n"


async def test_commands_run_in_the_nodes_home_with_a_clean_environment(farm, pod, client_key, monkeypatch):
    monkeypatch.setenv("PRIME_API_KEY", "sim-secret-not-for-nodes")
    node = farm.nodes("pod-a")[1]
    async with connect(pod[1], client_key) as conn:
        result = await conn.run("pwd; env", env={"LANG": "C.UTF-8", "SNEAKY": "1"}, check=True)
    cwd, *lines = result.stdout.splitlines()
    env = dict(line.split("=", 1) for line in lines)
    assert cwd == node.home == env["HOME"]
    assert (env["USER"], env["LOGNAME"], env["SHELL"]) == ("root", "root", "/bin/bash")
    assert env["SSH_CONNECTION"].split()[2:] == [pod[1].host, str(pod[1].port)]
    assert env["LANG"] == "C.UTF-8"  # sshd's AcceptEnv LANG LC_*
    assert "SNEAKY" not in env
    assert "PRIME_API_KEY" not in env
    assert "sim-secret-not-for-nodes" not in result.stdout
    assert env[MARKER_VARIABLE] == node.token
    assert farm.nodes("pod-a")[0].home != node.home


@pytest.mark.skipif(
    signal.getsignal(signal.SIGINT) is signal.SIG_IGN,
    reason="this process ignores SIGINT (started in the background by a non-interactive shell), and "
    "the commands the simulated nodes run inherit that; sshd on a real node resets it",
)
async def test_a_signal_request_reaches_the_commands_process_group(farm, pod, client_key):
    async with connect(pod[0], client_key) as conn:
        job = await conn.create_process("echo ready; exec sleep 1000")
        assert await job.stdout.readline() == "ready\n"
        # bash has printed "ready" but may not have exec'd sleep yet: an INT caught by bash's own
        # handler in that instant is lost in the exec (seen under CI load). So ask again until
        # the command ends; the first request that meets sleep ends it.
        completed = None
        for _ in range(int(DEADLINE)):
            job.send_signal("INT")
            try:
                completed = await asyncio.wait_for(asyncio.shield(job.wait()), 1.0)
                break
            except asyncio.TimeoutError:  # not the builtin one on Python 3.10
                continue
        assert completed is not None, "no INT request ended the command"
    assert completed.exit_signal is not None
    assert completed.exit_signal[0] == "INT"


async def test_an_attached_command_dies_of_sigpipe_when_the_client_goes(farm, pod, client_key):
    """As under sshd: without nohup and a redirect, a job does not outlive its session."""
    async with connect(pod[0], client_key) as conn:
        job = await conn.create_process("while true; do echo tick; sleep 0.01; done")
        assert await job.stdout.readline() == "tick\n"
        assert farm.stats().pods["pod-a"][0].processes_alive >= 1
    await await_until(lambda: farm.stats().processes_alive == 0, "the attached loop to die of SIGPIPE")


async def test_a_detached_process_outlives_its_session_and_stop_kills_it(farm, pod, client_key):
    node = farm.nodes("pod-a")[0]
    detach = (
        "nohup sleep 1000 >nohup.log 2>&1 </dev/null & echo $! > nohup.pid; "
        "setsid bash -c 'trap \"\" TERM; echo $$ > setsid.pid; exec sleep 1001' >/dev/null 2>&1 </dev/null & "
        "echo detached"
    )
    async with connect(pod[0], client_key) as conn:
        assert (await conn.run(detach, check=True)).stdout == "detached\n"
    home = Path(node.home)
    files = [home / "nohup.pid", home / "setsid.pid"]
    # A shell creates the file before it writes the pid: wait for the whole line.
    await await_until(lambda: all(f.exists() and f.read_text().endswith("\n") for f in files), "both pids")
    pids = [int(f.read_text()) for f in files]
    assert os.getpgid(pids[1]) != os.getpgid(pids[0])  # setsid left the session's process group
    await await_until(lambda: farm.stats().pods["pod-a"][0].processes_alive == 2, "two detached jobs")
    await await_until(lambda: farm.stats().pods["pod-a"][0].connections_open == 0, "the session to close")
    farm.remove_pod("pod-a")  # SIGTERM; the setsid job ignores it and gets SIGKILL after the grace
    assert not any(pid_alive(pid) for pid in pids)
    assert not exists(home)
    assert node.state is NodeState.STOPPED


async def test_die_drops_sessions_kills_every_process_and_stays_dead(farm, pod, client_key):
    node = farm.nodes("pod-a")[1]
    async with connect(pod[1], client_key) as conn:
        await conn.run("setsid sleep 1000 >/dev/null 2>&1 </dev/null &", check=True)
        job = await conn.create_process("echo working; exec sleep 1000")
        assert await job.stdout.readline() == "working\n"
        await await_until(lambda: farm.stats().pods["pod-a"][1].processes_alive == 2, "both processes")
        farm.die("pod-a", rank=1)
        await asyncio.wait_for(conn.wait_closed(), DEADLINE)
    assert farm.stats().pods["pod-a"][1].processes_alive == 0
    assert node.state is NodeState.DEAD
    with pytest.raises(ConnectionRefusedError):
        await connect(pod[1], client_key)
    with pytest.raises(RuntimeError, match="dead"):
        farm.serve("pod-a", rank=1)
    async with connect(pod[0], client_key) as conn:  # its sibling is untouched
        assert (await conn.run("echo alive")).stdout == "alive\n"


async def test_a_process_on_node_1_reaches_a_port_on_node_0s_address(farm, pod, client_key):
    """What ``MASTER_ADDR`` needs: rank 0 listens on its own address, rank 1 connects to it."""
    python = sys.executable
    serve = (
        f"{python} -c 'import socket, sys; s = socket.create_server((sys.argv[1], 0)); "
        'open("port", "w").write(str(s.getsockname()[1])); c, peer = s.accept(); '
        'c.sendall(b"hello from rank 0")\' '
        f"{pod[0].host} >server.log 2>&1 </dev/null &"
    )
    home0 = Path(farm.nodes("pod-a")[0].home)
    async with connect(pod[0], client_key) as conn:
        await conn.run(serve, check=True)
    await await_until(lambda: (home0 / "port").exists() and (home0 / "port").read_text(), "rank 0's port")
    port = int((home0 / "port").read_text())
    with pytest.raises(ConnectionRefusedError):  # bound to node 0's address, not to every address
        socket.create_connection((pod[1].host, port), timeout=DEADLINE).close()
    fetch = (
        f"{python} -c 'import socket, sys; print(socket.create_connection((sys.argv[1], int(sys.argv[2])))"
        f".recv(100).decode())' {pod[0].host} {port}"
    )
    async with connect(pod[1], client_key) as conn:
        assert (await conn.run(fetch, check=True)).stdout == "hello from rank 0\n"
    await await_until(lambda: farm.stats().processes_alive == 0, "rank 0's server to end")


# -- stats ----------------------------------------------------------------------------------------------


async def test_stats_count_launches_per_node_processes_alive_and_connections(farm, pod, client_key):
    assert farm.stats().launches_per_node("pod-a") == [0, 0]
    async with connect(pod[0], client_key) as first, connect(pod[0], client_key):
        await first.run("true")
        await first.run("false")
        job = await first.create_process("echo on; exec sleep 1000")
        assert await job.stdout.readline() == "on\n"
        stats = farm.stats()
        assert stats.launches_per_node("pod-a") == [3, 0]
        assert stats.pods["pod-a"][0].connections_open == 2
        assert (stats.processes_alive, stats.connections_open) == (1, 2)
        job.send_signal("KILL")
        await job.wait()
    await await_until(lambda: farm.stats().connections_open == 0, "the connections to close")
    assert farm.stats().processes_alive == 0
    assert farm.stats().launches == 3


async def test_a_node_drops_connections_beyond_10_in_their_handshake_like_sshd(farm, pod, client_key):
    """``MaxStartups 10``: an 11th unauthenticated connection is closed before the banner."""
    loiterers = [socket.create_connection((pod[0].host, pod[0].port), timeout=DEADLINE) for _ in range(10)]
    try:
        await await_until(lambda: farm.stats().pods["pod-a"][0].connections_open == 10, "10 handshakes")
        with pytest.raises((asyncssh.Error, ConnectionError, OSError)):
            await connect(pod[0], client_key)
        assert farm.stats().pods["pod-a"][0].handshakes_dropped == 1
        async with connect(pod[1], client_key) as conn:  # another node, another sshd
            assert (await conn.run("true")).exit_status == 0
    finally:
        for sock in loiterers:
            sock.close()
    await await_until(lambda: farm.stats().pods["pod-a"][0].connections_open == 0, "the loiterers to go")
    async with connect(pod[0], client_key) as conn:
        assert (await conn.run("true")).exit_status == 0


# -- paramiko, as Airflow's SSHHook uses it --------------------------------------------------------------


def test_airflows_ssh_hook_runs_a_command_on_a_node(farm, pod, key_file):
    from airflow.providers.ssh.hooks.ssh import SSHHook

    # Older SSH providers (4.1, beside Airflow 3.1) take no no_host_key_check argument: without a
    # connection they skip the host-key check by default.
    accepts = inspect.signature(SSHHook.__init__).parameters
    hook = SSHHook(
        remote_host=pod[1].host,
        username=pod[1].user,
        port=pod[1].port,
        key_file=key_file,
        conn_timeout=10,
        **({"no_host_key_check": True} if "no_host_key_check" in accepts else {}),
    )
    with hook.get_conn() as client:
        status, stdout, stderr = hook.exec_ssh_client_command(
            client,
            "echo $HOME; exit 4",
            get_pty=False,
            environment=None,
            timeout=10,
        )
    assert (status, stdout.decode(), stderr) == (4, farm.nodes("pod-a")[1].home + "\n", b"")
    assert farm.stats().launches_per_node("pod-a") == [0, 1]


def test_paramiko_pins_the_node_key_and_a_stranger_key_is_rejected(farm, pod, key_file, tmp_path):
    node = farm.nodes("pod-a")[0]
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(node.known_hosts_line() + "\n")
    client = paramiko.SSHClient()
    client.load_host_keys(str(known_hosts))
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    client.connect(pod[0].host, pod[0].port, username="root", key_filename=key_file, timeout=10)
    try:
        _, stdout, _ = client.exec_command("echo pinned")
        assert stdout.read() == b"pinned\n"
        assert stdout.channel.recv_exit_status() == 0
    finally:
        client.close()
    other = paramiko.SSHClient()
    other.load_host_keys(str(known_hosts))
    other.set_missing_host_key_policy(paramiko.RejectPolicy())
    with pytest.raises(paramiko.SSHException):  # node 1 shows another key: not pinned here
        other.connect(pod[1].host, pod[1].port, username="root", key_filename=key_file, timeout=10)
    other.close()
    stranger = tmp_path / "stranger"
    stranger.write_bytes(asyncssh.generate_private_key("ssh-ed25519").export_private_key("openssh"))
    refused = paramiko.SSHClient()
    refused.set_missing_host_key_policy(paramiko.AutoAddPolicy())
    with pytest.raises(paramiko.AuthenticationException):
        refused.connect(
            pod[0].host,
            pod[0].port,
            username="root",
            key_filename=str(stranger),
            timeout=10,
            look_for_keys=False,
            allow_agent=False,
        )
    refused.close()


@pytest.mark.parametrize("uvloop", [False, True], ids=["asyncio", "uvloop"])
def test_the_farm_is_steered_from_the_simulators_loop(client_key, uvloop):
    """The simulator's handlers run in a loop of their own (uvloop's when installed): they await."""
    if uvloop:
        pytest.importorskip("uvloop")
    loop = new_event_loop(prefer_uvloop=uvloop)
    with SshNodeFarm([client_key.export_public_key().decode()]) as farm:

        async def pod_life() -> tuple[str, int]:
            (target,) = await farm.aadd_pod("pod-other-loop")
            with pytest.raises(ValueError, match="already has simulated nodes"):
                await farm.aadd_pod("pod-other-loop")
            await farm.aserve("pod-other-loop")
            home = Path(farm.nodes("pod-other-loop")[0].home)
            async with connect(target, client_key) as conn:
                detach = "setsid sleep 1000 >/dev/null 2>&1 </dev/null & echo $! > job.pid"
                await asyncio.wait_for(conn.run(detach, check=True), DEADLINE)  # the session ends
                output = (await conn.run("echo steered")).stdout
            await await_until(lambda: farm.stats().processes_alive == 1, "the detached job")
            job = int((home / "job.pid").read_text())
            await farm.arefuse("pod-other-loop")
            await farm.adie("pod-other-loop")
            await farm.aremove_pod("pod-other-loop")
            return str(output), job

        try:
            output, job = loop.run_until_complete(pod_life())
        finally:
            loop.close()
        assert output == "steered\n"
        assert not pid_alive(job)
        assert farm.stats().pods == {}


def test_the_sync_methods_refuse_to_block_the_farms_own_loop(farm):
    farm.add_pod("pod-x")

    async def inside() -> None:
        farm.serve("pod-x")

    with pytest.raises(RuntimeError, match="await the nodes instead"):
        asyncio.run_coroutine_threadsafe(inside(), farm._loop).result(DEADLINE)
