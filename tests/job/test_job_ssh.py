"""The job's SSH links (:mod:`airflow_provider_prime.job_ssh`) against the simulator's real SSH nodes.

Every test that crosses the network talks SSH to an :class:`SshNodeFarm` node on loopback (a real
asyncssh server with sshd's strict ``MaxStartups 10``). The backoff reads a hand-moved clock; the
only real waits are for conditions (a marker file, a connection closing), never to prove an order.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

asyncssh = pytest.importorskip("asyncssh", reason="the job's SSH links need airflow-provider-prime[ssh]")

from airflow_provider_prime import job_ssh  # noqa: E402
from airflow_provider_prime.exceptions import PrimeConfigError  # noqa: E402
from airflow_provider_prime.job_nodes import JobNode  # noqa: E402
from airflow_provider_prime.job_script import PrimeJobError  # noqa: E402
from airflow_provider_prime.job_ssh import (  # noqa: E402
    HostKeyPins,
    NodeLinks,
    PrimeHostKeyChangedError,
    PrimeNodeLoginRefusedError,
    PrimeNodeUnreachableError,
    SshLogin,
    aget_login,
    get_login,
    host_port,
    login_from_connection,
)
from airflow_provider_prime.testing.ssh_farm import SshNodeFarm  # noqa: E402
from airflow_provider_prime.testing.ssh_nodes import SimulatedNode  # noqa: E402

POD = "pod-a"


class Clock:
    """A monotonic clock moved by hand."""

    def __init__(self) -> None:
        self.now = 5000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def farm(prime_ssh_key: Any) -> Iterator[SshNodeFarm]:
    with SshNodeFarm(authorized_keys=[prime_ssh_key.public_key]) as farm:
        farm.add_pod(POD, node_count=2)
        farm.serve(POD)
        yield farm
        farm.remove_pod(POD)
        assert farm.stats().processes_alive == 0


@pytest.fixture
def nodes(farm: SshNodeFarm) -> list[JobNode]:
    return [
        JobNode(rank=rank, pod_id=POD, index=rank, host=target.host, port=target.port, user=target.user)
        for rank, target in enumerate(farm.targets(POD))
    ]


@pytest.fixture
def login(prime_ssh_key: Any) -> SshLogin:
    return SshLogin(username=None, key_file=str(prime_ssh_key.private_key_file), conn_id="ssh_pods")


def launches(farm: SshNodeFarm, rank: int) -> int:
    return farm.stats().launches_per_node(POD)[rank]


def running(home: Path) -> int:
    """Scripts of the session-limit test that have started on the node."""
    return len(list(home.glob("running.*")))


async def until(condition: Any, what: str, limit: float = 10.0) -> None:
    """Wait (real time, bounded) until ``condition()`` holds: a condition, not an ordering."""
    deadline = time.monotonic() + limit
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        await asyncio.sleep(0.01)


# --- running over reused connections -------------------------------------------------------------


async def test_scripts_run_on_two_nodes_over_one_reused_connection_each(farm, nodes, login):
    async with NodeLinks(login, HostKeyPins()) as links:
        for _ in range(5):
            answers = await asyncio.gather(
                *(links.run(node, 'echo "rank $HOME"; echo noise >&2', timeout=20) for node in nodes),
                *(links.run(node, "cat /dev/null; echo two", timeout=20) for node in nodes),
            )
            homes = [farm.nodes(POD)[rank].home for rank in range(2)]
            assert answers == [
                f"rank {homes[0]}\n".encode(),
                f"rank {homes[1]}\n".encode(),
                b"two\n",
                b"two\n",
            ]
        assert links.connections_opened == 2
        assert links.connect_attempts == 2
        assert links.open_connections() == 2
        assert [node.connections_open for node in farm.stats().pods[POD]] == [1, 1]
        assert farm.stats().launches_per_node(POD) == [10, 10]
        assert set(links.pins.to_dict()) == {host_port(node.host, node.port) for node in nodes}
        assert links.pins.get(nodes[0].host, nodes[0].port) == farm.nodes(POD)[0].host_public_key
    assert links.open_connections() == 0
    await until(lambda: farm.stats().connections_open == 0, "the nodes saw the connections close")
    await links.close()  # idempotent


async def test_the_script_is_standard_input_and_large_answers_arrive_whole(farm, nodes, login):
    secret_value = "s3cr3t-value-in-the-script"
    script = (
        f"X={secret_value}\n"
        f"ps -eo args | grep -c -- {secret_value[:6]}-[v]alue || true\n"
        "head -c 300000 /dev/zero\n"
    )
    async with NodeLinks(login, HostKeyPins()) as links:
        answer = await links.run(nodes[0], script, timeout=20)
    count, _, zeros = answer.partition(b"\n")
    assert count == b"0"  # the script's text is in no process's arguments
    assert zeros == b"\0" * 300000


async def test_a_script_that_fails_without_output_is_a_job_error_with_its_stderr(farm, nodes, login):
    async with NodeLinks(login) as links:
        with pytest.raises(
            PrimeJobError, match=r"node 1 .*exited 3 without output \(no login here\)"
        ) as caught:
            await links.run(nodes[1], "echo 'no login here' >&2; exit 3", timeout=20)
        assert not isinstance(caught.value, PrimeNodeUnreachableError)
        assert await links.run(nodes[1], "echo x; exit 4", timeout=20) == b"x\n"  # output: the parser decides
        assert links.connections_opened == 1


async def test_the_pods_user_wins_over_the_login_and_root_is_the_default(farm, nodes, login):
    wrong_login = SshLogin(username="ubuntu", key_file=login.key_file)
    async with NodeLinks(wrong_login) as links:
        assert await links.run(nodes[0], "echo $USER", timeout=20) == b"root\n"  # the pod says root
    anonymous = [JobNode(n.rank, n.pod_id, n.index, n.host, n.port, user=None) for n in nodes]
    async with NodeLinks(SshLogin(key_file=login.key_file)) as links:
        assert await links.run(anonymous[0], "echo $USER", timeout=20) == b"root\n"
    async with NodeLinks(wrong_login) as links:
        with pytest.raises(PrimeNodeLoginRefusedError, match="refused the SSH login as 'ubuntu'"):
            await links.run(anonymous[0], "echo $USER", timeout=20)


# --- unreachable nodes, drops and backoff ---------------------------------------------------------


async def test_a_refusing_node_is_unreachable_then_reconnects_after_the_backoff(farm, nodes, login):
    clock = Clock()
    links = NodeLinks(login, HostKeyPins(), clock_time=clock)
    node = nodes[0]
    assert await links.run(node, "echo up", timeout=20) == b"up\n"

    await farm.arefuse(POD, 0)  # drops the open connection, refuses new ones
    with pytest.raises(
        PrimeNodeUnreachableError, match=r"node 0 \(pod-a node 1, root@.*connection refused"
    ) as caught:
        await links.run(node, "echo up", timeout=20)
    assert caught.value.node == node
    assert links.connect_attempts == 2

    # Inside the backoff (1 s after the first failed dial): no dial at all.
    with pytest.raises(PrimeNodeUnreachableError, match=r"next one is in 1\.0 s"):
        await links.run(node, "echo up", timeout=20)
    assert links.connect_attempts == 2
    clock.advance(1.0)
    with pytest.raises(PrimeNodeUnreachableError, match="connection refused"):
        await links.run(node, "echo up", timeout=20)  # dials, fails: the next pause is 2 s
    assert links.connect_attempts == 3

    await farm.aserve(POD, 0)  # back, but the links wait out the backoff before dialling
    clock.advance(1.9)
    with pytest.raises(
        PrimeNodeUnreachableError, match=r"2 dial\(s\) failed in a row, the next one is in 0\.1 s"
    ):
        await links.run(node, "echo up", timeout=20)
    assert links.connect_attempts == 3
    clock.advance(0.1)
    assert await links.run(node, "echo up", timeout=20) == b"up\n"
    assert (links.connect_attempts, links.connections_opened) == (4, 2)

    # A success resets the backoff: the next failure waits 1 s again.
    await farm.arefuse(POD, 0)
    with pytest.raises(PrimeNodeUnreachableError):
        await links.run(node, "echo up", timeout=20)
    with pytest.raises(PrimeNodeUnreachableError, match=r"next one is in 1\.0 s"):
        await links.run(node, "echo up", timeout=20)
    # The other node is not affected by its neighbour's backoff.
    assert await links.run(nodes[1], "echo other", timeout=20) == b"other\n"
    await links.close()


async def test_the_backoff_doubles_up_to_thirty_seconds(farm, nodes, login):
    clock = Clock()
    links = NodeLinks(login, clock_time=clock)
    await farm.arefuse(POD, 0)
    pauses = []
    for _ in range(8):
        with pytest.raises(PrimeNodeUnreachableError):
            await links.run(nodes[0], "true", timeout=20)
        with pytest.raises(PrimeNodeUnreachableError, match="next one is in") as caught:
            await links.run(nodes[0], "true", timeout=20)
        pauses.append(float(str(caught.value).rsplit("in ", 1)[1].split(" s")[0]))
        clock.advance(pauses[-1])
    assert pauses == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]
    assert links.connect_attempts == 8


async def test_a_node_dying_mid_script_is_unreachable_at_once_naming_it(farm, nodes, login):
    links = NodeLinks(login, clock_time=Clock())
    marker = Path(farm.nodes(POD)[1].home) / "started"
    running = asyncio.ensure_future(links.run(nodes[1], "touch ~/started; sleep 60", timeout=60))
    await until(marker.exists, "the script started on node 1")
    started = time.monotonic()
    await farm.adie(POD, 1)
    with pytest.raises(
        PrimeNodeUnreachableError, match=r"node 1 \(pod-a node 2, .*during the script"
    ) as caught:
        await running
    assert time.monotonic() - started < 30  # the drop is seen, not the 60 s timeout
    assert caught.value.node == nodes[1]
    assert links.open_connections() == 0
    assert await links.run(nodes[0], "echo alive", timeout=20) == b"alive\n"
    await links.close()


async def test_a_run_that_times_out_drops_the_connection_and_the_next_reconnects(farm, nodes, login):
    links = NodeLinks(login, clock_time=Clock())
    assert await links.run(nodes[0], "echo 1", timeout=20) == b"1\n"
    with pytest.raises(PrimeNodeUnreachableError, match=r"node 0 .*did not answer over SSH within 0\.3 s"):
        await links.run(nodes[0], "sleep 30", timeout=0.3)
    assert links.open_connections() == 0
    assert await links.run(nodes[0], "echo 2", timeout=20) == b"2\n"  # no backoff: the dial had worked
    assert links.connections_opened == 2
    await links.close()


async def test_a_connection_closed_by_the_node_while_idle_is_replaced_without_an_error(farm, nodes, login):
    links = NodeLinks(login, clock_time=Clock())
    assert await links.run(nodes[0], "echo 1", timeout=20) == b"1\n"
    await farm.arefuse(POD, 0)  # closes the idle connection...
    await farm.aserve(POD, 0)  # ...and the node is back before the next poll
    assert await links.run(nodes[0], "echo 2", timeout=20) == b"2\n"
    assert links.connections_opened == 2
    await links.close()


async def test_a_killed_script_is_reported_with_its_signal(farm, nodes, login):
    async with NodeLinks(login) as links:
        with pytest.raises(PrimeNodeUnreachableError, match=r"node 0 .*bash -s was killed by SIGKILL"):
            await links.run(nodes[0], "kill -9 $$", timeout=20)


# --- host keys ----------------------------------------------------------------------------------


async def test_a_wrong_pin_refuses_the_node_before_anything_is_sent(farm, nodes, login):
    other_key = farm.nodes(POD)[0].host_public_key
    pins = HostKeyPins({host_port(nodes[1].host, nodes[1].port): other_key})
    links = NodeLinks(login, pins, clock_time=Clock())
    with pytest.raises(PrimeHostKeyChangedError) as caught:
        await links.run(nodes[1], "touch ~/ran", timeout=20)
    message = str(caught.value)
    assert message.startswith("The host key of node 1 (pod-a node 2, root@")
    assert (
        "changed during the job; refusing to connect: the pod may have been replaced, "
        "or someone is in the middle" in message
    )
    assert caught.value.node == nodes[1]
    assert launches(farm, 1) == 0
    assert not (Path(farm.nodes(POD)[1].home) / "ran").exists()
    assert farm.stats().pods[POD][1].auth_refused == 0  # no key was even offered
    # Never dialled again by these links, whatever the clock.
    with pytest.raises(PrimeHostKeyChangedError):
        await links.run(nodes[1], "touch ~/ran", timeout=20)
    assert links.connect_attempts == 1
    assert await links.run(nodes[0], "echo fine", timeout=20) == b"fine\n"  # node 0's pin is its own key
    await links.close()


async def test_a_node_replaced_by_another_machine_at_its_address_is_refused(
    farm, nodes, login, prime_ssh_key
):
    links = NodeLinks(login, clock_time=Clock())
    assert await links.run(nodes[0], "echo first", timeout=20) == b"first\n"
    carried = HostKeyPins(links.pins.to_dict())  # what a trigger is handed
    await links.close()

    # The pod's node goes away and another machine answers at the same host and port.
    await farm.aremove_pod(POD)
    impostor = SimulatedNode(farm.keys, host=nodes[0].host, port=nodes[0].port, name="impostor")
    await impostor.start()
    try:
        for pins in (links.pins, carried):
            fresh = NodeLinks(login, pins, clock_time=Clock())
            with pytest.raises(PrimeHostKeyChangedError, match=r"node 0 .*changed during the job"):
                await fresh.run(nodes[0], "touch ~/ran", timeout=20)
            await fresh.close()
        assert impostor.stats().launches == 0
        assert impostor.stats().auth_refused == 0
        assert not (Path(impostor.home) / "ran").exists()
        # A new job (no pins) trusts it on first use.
        async with NodeLinks(login) as new_job:
            assert await new_job.run(nodes[0], "echo trusted", timeout=20) == b"trusted\n"
            assert new_job.pins.get(nodes[0].host, nodes[0].port) == impostor.host_public_key
    finally:
        await impostor.stop(0)
    await farm.aadd_pod(POD, node_count=1)  # for the fixture's teardown


async def test_the_connections_host_key_is_pinned_for_every_node(farm, nodes, login):
    host_key = farm.nodes(POD)[0].host_public_key
    with_pin = SshLogin(key_file=login.key_file, host_key=host_key, conn_id="ssh_pinned")
    async with NodeLinks(with_pin, clock_time=Clock()) as links:
        assert await links.run(nodes[0], "echo ok", timeout=20) == b"ok\n"
        with pytest.raises(PrimeHostKeyChangedError, match="from the connection 'ssh_pinned''s host_key"):
            await links.run(nodes[1], "echo no", timeout=20)
    assert launches(farm, 1) == 0


def test_pins_round_trip_through_a_plain_dict_and_are_never_replaced():
    pins = HostKeyPins()
    assert pins.pin("10.0.0.1", 22, "ssh-ed25519 AAAAfirst comment") == "ssh-ed25519 AAAAfirst"
    assert pins.pin("10.0.0.1", 22, "ssh-ed25519 AAAAsecond") == "ssh-ed25519 AAAAfirst"
    pins.pin("2001:db8::1", 2222, "ssh-rsa AAAAv6")
    assert pins.to_dict() == {"10.0.0.1:22": "ssh-ed25519 AAAAfirst", "[2001:db8::1]:2222": "ssh-rsa AAAAv6"}
    again = HostKeyPins(json.loads(json.dumps(pins.to_dict())))
    assert again == pins
    assert len(again) == 2
    assert again.get("10.0.0.1", 22) == "ssh-ed25519 AAAAfirst"
    assert again.get("10.0.0.1", 23) is None
    with pytest.raises(ValueError, match="not an OpenSSH public key line"):
        HostKeyPins({"h:22": "not-a-key-line"})


# --- bounded handshakes ---------------------------------------------------------------------------


async def test_fifty_jobs_on_one_pod_share_one_connection_to_each_node(farm, nodes, login):
    """50 jobs of one triggerer (one event loop) on one pod, with the same SSH connection: one
    connection to the node, shared, its sessions bounded; the last job to let go closes it."""
    jobs = [NodeLinks(login, clock_time=Clock()) for _ in range(50)]
    try:
        answers = await asyncio.gather(*(job.run(nodes[0], "echo ok", timeout=60) for job in jobs))
        assert answers == [b"ok\n"] * 50
        assert sum(job.connections_opened for job in jobs) == 1
        assert farm.stats().pods[POD][0].connections_open == 1
    finally:
        await asyncio.gather(*(job.close() for job in jobs[1:]))
    assert jobs[0].open_connections() == 1  # still used by one job
    await jobs[0].close()
    assert jobs[0].open_connections() == 0
    assert not job_ssh._shared_links()


async def test_fifty_logins_on_one_pod_stay_under_max_startups(farm, nodes, login):
    """50 jobs with 50 SSH connections (nothing to share) dial the same node at once: every run
    succeeds and the node drops no handshake, because at most MAX_HANDSHAKES_PER_HOST are in
    flight. With the bound raised to 50, the node drops the 11th concurrent handshake."""
    jobs = [NodeLinks(dataclasses.replace(login, conn_id=f"ssh_{i}"), clock_time=Clock()) for i in range(50)]
    try:
        answers = await asyncio.gather(*(job.run(nodes[0], "echo ok", timeout=60) for job in jobs))
        assert answers == [b"ok\n"] * 50
        assert farm.stats().pods[POD][0].handshakes_dropped == 0
        assert sum(job.connections_opened for job in jobs) == 50
        assert job_ssh.handshakes_waiting(nodes[0].host, nodes[0].port) == 0
        assert not job_ssh._slots().semaphores  # nothing is kept for hosts nobody dials
    finally:
        await asyncio.gather(*(job.close() for job in jobs))


async def test_a_run_timed_out_waiting_for_a_handshake_slot_starts_no_backoff(farm, nodes, login):
    held = [
        job_ssh._slots().hold(nodes[0].host, nodes[0].port) for _ in range(job_ssh.MAX_HANDSHAKES_PER_HOST)
    ]
    for slot in held:
        await slot.__aenter__()  # other jobs are in their handshakes with this node
    links = NodeLinks(login, clock_time=Clock())
    try:
        with pytest.raises(PrimeNodeUnreachableError, match=r"did not answer over SSH within 0\.2 s"):
            await links.run(nodes[0], "true", timeout=0.2)
        assert links.connect_attempts == 1
    finally:
        for slot in held:
            await slot.__aexit__(None, None, None)
    assert await links.run(nodes[0], "echo next", timeout=20) == b"next\n"  # at once: no backoff
    await links.close()


async def test_scripts_beyond_the_session_limit_wait_for_a_free_session(farm, nodes, login):
    home = Path(farm.nodes(POD)[0].home)
    script = "touch ~/running.$$; while [ ! -f ~/go ]; do sleep 0.02; done; echo done"
    async with NodeLinks(login) as links:
        runs = [
            asyncio.ensure_future(links.run(nodes[0], script, timeout=60))
            for _ in range(job_ssh.MAX_SESSIONS_PER_CONNECTION + 4)
        ]
        limit = job_ssh.MAX_SESSIONS_PER_CONNECTION
        await until(lambda: running(home) >= limit, "the first scripts run")
        assert running(home) == limit
        (home / "go").touch()
        assert await asyncio.gather(*runs) == [b"done\n"] * (limit + 4)
        assert links.connections_opened == 1


# --- credentials --------------------------------------------------------------------------------


class Conn:
    """The attributes of an Airflow connection that ``login_from_connection`` reads."""

    def __init__(self, conn_id: str = "ssh_pods", *, login=None, password=None, extra=None) -> None:
        self.conn_id = conn_id
        self.login = login
        self.password = password
        self.extra = None if extra is None else json.dumps(extra)


def test_a_login_reads_the_ssh_providers_conventions():
    key_text = (
        "-----BEGIN OPENSSH PRIVATE KEY-----\nAAAAkeymaterial0123456789\n-----END OPENSSH PRIVATE KEY-----"
    )
    login = login_from_connection(
        Conn(
            login="ubuntu",
            password="pw-1",
            extra={"private_key": key_text, "private_key_passphrase": "pp-1", "conn_timeout": "7"},
        )
    )
    assert login == SshLogin(
        username="ubuntu",
        private_key=key_text + "\n",
        key_file=None,
        passphrase="pp-1",
        password="pw-1",
        connect_timeout=7.0,
        conn_id="ssh_pods",
    )
    by_file = login_from_connection(Conn(extra={"key_file": "~/.ssh/id_ed25519", "passphrase": "pp-2"}))
    assert (by_file.key_file, by_file.passphrase, by_file.private_key) == ("~/.ssh/id_ed25519", "pp-2", None)
    assert by_file.connect_timeout == 10.0
    assert by_file.username is None
    assert by_file.password is None
    blank = login_from_connection(Conn(login="", password="", extra={"key_file": "", "conn_timeout": ""}))
    assert blank == SshLogin(conn_id="ssh_pods")
    assert login_from_connection(Conn()) == SshLogin(conn_id="ssh_pods")


def test_a_login_reads_the_host_key_extra():
    assert (
        login_from_connection(Conn(extra={"host_key": "ssh-ed25519 AAAAC3 a comment"})).host_key
        == "ssh-ed25519 AAAAC3"
    )
    assert (
        login_from_connection(Conn(extra={"host_key": "AAAAB3NzaC1yc2E"})).host_key
        == "ssh-rsa AAAAB3NzaC1yc2E"
    )
    skipped = Conn(extra={"host_key": "ssh-ed25519 AAAAC3", "no_host_key_check": "true"})
    assert login_from_connection(skipped).host_key is None


@pytest.mark.parametrize(
    ("extra", "match"),
    [
        ({"private_key": "k", "key_file": "/k"}, "both private_key and key_file"),
        ({"conn_timeout": "soon"}, "conn_timeout='soon'"),
        ({"conn_timeout": 0}, "conn_timeout='0'"),
        ({"host_key": "ssh-ed25519"}, "host_key without key data"),
    ],
)
def test_an_unusable_connection_is_a_clear_error(extra, match):
    with pytest.raises(PrimeConfigError, match=match) as caught:
        login_from_connection(Conn("ssh_bad", extra=extra))
    assert "'ssh_bad'" in str(caught.value)


def test_an_extra_that_is_not_a_json_object_is_a_clear_error():
    conn = Conn("ssh_bad")
    conn.extra = "{not json"
    with pytest.raises(PrimeConfigError, match="'ssh_bad' has an extra field that is not valid JSON"):
        login_from_connection(conn)
    conn.extra = "[1]"
    with pytest.raises(PrimeConfigError, match="not a JSON object"):
        login_from_connection(conn)


def test_the_repr_of_a_login_shows_no_secret():
    login = SshLogin(
        username="root",
        private_key="-----BEGIN KEY-----\nSECRETKEYLINE\n",
        passphrase="PASSPHRASE",
        password="PASSWORD",
    )
    for shown in (repr(login), str(login), f"{login}", repr([login])):
        for secret in ("SECRETKEYLINE", "PASSPHRASE", "PASSWORD"):
            assert secret not in shown
    assert "private_key='***'" in repr(login)
    assert "key_file=None" in repr(login)
    assert login.scrub("a SECRETKEYLINE b PASSWORD c") == "a *** b *** c"


def test_get_login_reads_the_airflow_connection(monkeypatch):
    monkeypatch.setenv(
        "AIRFLOW_CONN_SSH_PODS",
        json.dumps(
            {"conn_type": "ssh", "login": "ubuntu", "extra": {"key_file": "/keys/id", "conn_timeout": 3}}
        ),
    )
    login = get_login("ssh_pods")
    assert (login.username, login.key_file, login.connect_timeout, login.conn_id) == (
        "ubuntu",
        "/keys/id",
        3.0,
        "ssh_pods",
    )
    assert asyncio.run(aget_login("ssh_pods")) == login


def test_a_missing_connection_names_it_and_says_what_to_create(monkeypatch):
    monkeypatch.delenv("AIRFLOW_CONN_SSH_NOWHERE", raising=False)
    with pytest.raises(
        PrimeConfigError, match=r"The SSH connection 'ssh_nowhere' is not defined: create it"
    ) as caught:
        get_login("ssh_nowhere")
    assert "AIRFLOW_CONN_SSH_NOWHERE=" in str(caught.value)
    with pytest.raises(PrimeConfigError, match="'ssh_nowhere' is not defined"):
        asyncio.run(aget_login("ssh_nowhere"))


# --- secrets over the wire ----------------------------------------------------------------------


async def test_a_key_with_a_passphrase_given_as_text_logs_in(farm, nodes, tmp_path):
    key = asyncssh.generate_private_key("ssh-ed25519")
    farm.keys.add(key.export_public_key().decode())
    text = key.export_private_key("openssh", passphrase="correct horse battery").decode()
    login = login_from_connection(
        Conn(extra={"private_key": text, "private_key_passphrase": "correct horse battery"})
    )
    async with NodeLinks(login) as links:
        assert await links.run(nodes[0], "echo in", timeout=20) == b"in\n"
    key_file = tmp_path / "id_enc"
    key_file.write_bytes(key.export_private_key("openssh", passphrase="correct horse battery"))
    by_file = SshLogin(key_file=str(key_file), passphrase="correct horse battery")
    async with NodeLinks(by_file) as links:
        assert await links.run(nodes[1], "echo in", timeout=20) == b"in\n"


async def test_no_message_or_log_line_carries_a_secret(farm, nodes, caplog):
    caplog.set_level(logging.DEBUG)
    key = asyncssh.generate_private_key("ssh-ed25519")  # not registered with the nodes
    passphrase = "PASSPHRASE-do-not-show"
    password = "PASSWORD-do-not-show"
    text = key.export_private_key("openssh", passphrase=passphrase).decode()
    secrets = [passphrase, password, *(line for line in text.splitlines() if "-----" not in line)]
    messages = []

    refused = SshLogin(private_key=text, passphrase=passphrase, password=password, conn_id="ssh_secret")
    async with NodeLinks(refused, clock_time=Clock()) as links:
        with pytest.raises(PrimeNodeLoginRefusedError) as caught:
            await links.run(nodes[0], "true", timeout=20)
        messages.append(str(caught.value))
        with pytest.raises(PrimeNodeUnreachableError) as caught_again:
            await links.run(nodes[0], "true", timeout=20)
        messages.append(str(caught_again.value))
    wrong = SshLogin(private_key=text, passphrase="WRONG-PASSPHRASE", password=password, conn_id="ssh_secret")
    async with NodeLinks(wrong) as links:
        with pytest.raises(PrimeConfigError, match="'ssh_secret': its private_key could not be read") as bad:
            await links.run(nodes[0], "true", timeout=20)
        messages.append(str(bad.value))
    garbage = SshLogin(
        private_key="-----BEGIN OPENSSH PRIVATE KEY-----\nGARBAGEKEYTEXT\n", conn_id="ssh_secret"
    )
    async with NodeLinks(garbage) as links:
        with pytest.raises(PrimeConfigError) as bad_text:
            await links.run(nodes[0], "true", timeout=20)
        messages.append(str(bad_text.value))
    messages.append(repr(refused))
    for secret in [*secrets, "WRONG-PASSPHRASE", "GARBAGEKEYTEXT"]:
        for message in messages:
            assert secret not in message
        assert secret not in caplog.text
    assert "refused the SSH login as 'root'" in messages[0]
    assert "'ssh_secret'" in messages[0]


async def test_an_unreadable_key_file_is_a_config_error(farm, nodes, tmp_path):
    async with NodeLinks(SshLogin(key_file=str(tmp_path / "missing"), conn_id="ssh_pods")) as links:
        with pytest.raises(PrimeConfigError, match=r"'ssh_pods': key_file '.*missing' cannot be read"):
            await links.run(nodes[0], "true", timeout=20)
    assert links.connect_attempts == 0


async def test_without_asyncssh_the_error_says_how_to_install_it(monkeypatch, nodes, login):
    monkeypatch.setitem(sys.modules, "asyncssh", None)
    monkeypatch.setattr(job_ssh, "_CLIENT_CLASS", None)
    with pytest.raises(PrimeConfigError, match=r"pip install 'airflow-provider-prime\[ssh\]'"):
        await NodeLinks(login).run(nodes[0], "true", timeout=20)
    with pytest.raises(PrimeConfigError, match=r"airflow-provider-prime\[ssh\]"):
        job_ssh.require_asyncssh()


def test_importing_the_module_does_not_import_asyncssh():
    code = "import sys, airflow_provider_prime.job_ssh; print('asyncssh' in sys.modules)"
    import subprocess

    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=os.environ
    )
    assert done.stdout.strip() == "False"


def test_aes_gcm_is_offered_first_and_every_default_cipher_still_is() -> None:
    from asyncssh.encryption import get_default_encryption_algs

    from airflow_provider_prime.job_ssh import PREFERRED_CIPHERS, _encryption_algs

    offered = _encryption_algs()
    assert tuple(offered[: len(PREFERRED_CIPHERS)]) == PREFERRED_CIPHERS
    assert sorted(offered) == sorted(alg.decode() for alg in get_default_encryption_algs())


async def test_a_job_pinned_to_another_key_does_not_use_a_connection_another_job_shares(farm, nodes, login):
    first = NodeLinks(login, clock_time=Clock())
    assert await first.run(nodes[1], "echo up", timeout=20) == b"up\n"
    other_key = farm.nodes(POD)[0].host_public_key
    second = NodeLinks(
        login, HostKeyPins({host_port(nodes[1].host, nodes[1].port): other_key}), clock_time=Clock()
    )
    try:
        with pytest.raises(PrimeHostKeyChangedError):
            await second.run(nodes[1], "touch ~/ran", timeout=20)
        assert not (Path(farm.nodes(POD)[1].home) / "ran").exists()
        unpinned = NodeLinks(login, clock_time=Clock())
        assert await unpinned.run(nodes[1], "echo shared", timeout=20) == b"shared\n"
        assert unpinned.pins.to_dict() == first.pins.to_dict()  # it takes the key the link was verified with
        assert unpinned.connections_opened == 0
        await unpinned.close()
    finally:
        await second.close()
        await first.close()
