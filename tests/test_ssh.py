"""SSH targets parsed from the platform's text, and Airflow SSH hooks built from a handover node.

The hook tests need Airflow's SSH provider (not a dependency of this one) and skip without it; the
last one runs a command through ``SSHHook`` against an asyncssh server on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_prime.exceptions import PrimeConfigError
from airflow_provider_prime.ssh import SshTarget, node_entry, parse_ssh_target, ssh_hook, ssh_hook_kwargs


@pytest.mark.parametrize(
    ("text", "target"),
    [
        ("root@203.0.113.10 -p 22", SshTarget("root", "203.0.113.10", 22)),
        ("ssh root@h -p 2222", SshTarget("root", "h", 2222)),
        ("root@h", SshTarget("root", "h", 22)),
        ("  root@h -p 2200\n", SshTarget("root", "h", 2200)),
        ("root@h -p2222", SshTarget("root", "h", 2222)),
        ("-l ubuntu h", SshTarget("ubuntu", "h", 22)),
        ("h:2200", SshTarget(None, "h", 2200)),
        ("ssh://root@h:2222", SshTarget("root", "h", 2222)),
        ("ssh -i ~/.ssh/id -o StrictHostKeyChecking=no root@h -p 23", SshTarget("root", "h", 23)),
        ("root@2001:db8::1 -p 22", SshTarget("root", "2001:db8::1", 22)),
        ("root@[2001:db8::1]:2222", SshTarget("root", "2001:db8::1", 2222)),
        ("root@[2001:db8::1]", SshTarget("root", "2001:db8::1", 22)),
    ],
)
def test_targets_are_read_from_the_forms_seen(text, target):
    assert parse_ssh_target(text) == target


@pytest.mark.parametrize("text", [None, "", "   ", "-p 22", "root@h -p twenty", "ssh", "root@"])
def test_no_target_or_an_unreadable_one_is_none(text):
    assert parse_ssh_target(text) is None


def test_a_node_keeps_the_platforms_text_and_adds_the_fields():
    assert node_entry("root@203.0.113.10 -p 2222", "203.0.113.10") == {
        "ssh_connection": "root@203.0.113.10 -p 2222",
        "ip": "203.0.113.10",
        "user": "root",
        "host": "203.0.113.10",
        "port": 2222,
    }
    assert node_entry(None, None)["host"] is None


def test_hook_kwargs_come_from_the_node_and_overrides_win():
    node = node_entry("root@203.0.113.10 -p 2222", "203.0.113.10")
    assert ssh_hook_kwargs(node) == {
        "remote_host": "203.0.113.10",
        "username": "root",
        "port": 2222,
        "no_host_key_check": True,
    }
    assert ssh_hook_kwargs(node, ssh_conn_id="my_key", no_host_key_check=False)["no_host_key_check"] is False


def test_a_node_without_ssh_is_a_clear_error():
    with pytest.raises(PrimeConfigError, match="no SSH target"):
        ssh_hook_kwargs(node_entry(None, "10.0.0.1"))


def test_without_the_ssh_provider_the_error_says_how_to_install_it(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "airflow.providers.ssh.hooks.ssh", None)
    with pytest.raises(PrimeConfigError, match="pip install apache-airflow-providers-ssh"):
        ssh_hook(node_entry("root@h -p 22", None))


def test_the_hook_targets_the_node_and_takes_the_key_from_the_connection(monkeypatch, tmp_path):
    pytest.importorskip("airflow.providers.ssh")
    key = tmp_path / "id_ed25519"
    key.write_text("not read until connecting")
    connection = {
        "conn_type": "ssh",
        "host": "ignored.example",
        "login": "ignored",
        "extra": {"key_file": str(key)},
    }
    monkeypatch.setenv("AIRFLOW_CONN_MY_SSH", json.dumps(connection))
    hook = ssh_hook(node_entry("ubuntu@203.0.113.7 -p 2222", "203.0.113.7"), ssh_conn_id="my_ssh")
    assert (hook.remote_host, hook.username, hook.port) == ("203.0.113.7", "ubuntu", 2222)
    assert hook.key_file == str(key)
    assert hook.no_host_key_check is True


# -- a real command over SSH, against a local server ------------------------------------------------


@pytest.fixture
def ssh_server(tmp_path: Path) -> Iterator[dict[str, Any]]:
    """An asyncssh server on 127.0.0.1 that accepts one client key and echoes the command it runs."""
    asyncssh = pytest.importorskip("asyncssh")
    pytest.importorskip("airflow.providers.ssh")
    client_key = asyncssh.generate_private_key("ssh-ed25519")
    (tmp_path / "client").write_bytes(client_key.export_private_key())
    authorized = asyncssh.import_authorized_keys(client_key.export_public_key().decode())
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    state: dict[str, Any] = {}

    async def handle(process: Any) -> None:
        process.stdout.write(f"ran: {process.command}\n")
        process.exit(0)

    async def start() -> None:
        state["server"] = await asyncssh.listen(
            "127.0.0.1",
            0,
            server_host_keys=[asyncssh.generate_private_key("ssh-ed25519")],
            authorized_client_keys=authorized,
            process_factory=handle,
        )
        state["port"] = state["server"].sockets[0].getsockname()[1]
        ready.set()

    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(start(), loop)
    assert ready.wait(30)
    yield {"port": state["port"], "key_file": str(tmp_path / "client")}

    async def stop() -> None:
        state["server"].close()
        await state["server"].wait_closed()

    asyncio.run_coroutine_threadsafe(stop(), loop).result(30)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(30)
    loop.close()


def test_a_command_runs_on_the_node_through_the_hook(ssh_server):
    node = node_entry(f"tester@127.0.0.1 -p {ssh_server['port']}", "127.0.0.1")
    hook = ssh_hook(node, key_file=ssh_server["key_file"], conn_timeout=10)
    with hook.get_conn() as client:
        status, stdout, _ = hook.exec_ssh_client_command(
            client, "nvidia-smi -L", get_pty=False, environment=None, timeout=10
        )
    assert status == 0
    assert stdout.decode() == "ran: nvidia-smi -L\n"
