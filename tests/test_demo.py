"""`make demo`'s own decisions, without Airflow: what it needs before renting a real pod, and which
lines of the train task's log it prints (``make demo`` itself runs the whole thing)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from scripts.demo import SSH_KEY_VAR, new_job_lines, real_create_settings

CREATE = {"PRIME_DEMO_CREATE_POD": "1", "PRIME_API_KEY": "pk-test"}


def test_without_the_opt_in_nothing_is_created_on_the_real_api(tmp_path: Path) -> None:
    key = tmp_path / "id_ed25519"
    key.write_text("key")
    assert real_create_settings({"PRIME_API_KEY": "pk-test", SSH_KEY_VAR: str(key)}) is None


def test_renting_a_real_pod_needs_an_ssh_key_and_says_so_before_anything_is_created() -> None:
    with pytest.raises(SystemExit) as stopped:
        real_create_settings(CREATE)
    message = str(stopped.value.code)
    assert SSH_KEY_VAR in message
    assert "public half is registered with Prime" in message
    assert "Nothing was created" in message
    assert "pk-test" not in message


def test_an_ssh_key_file_that_does_not_exist_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match=r"no such file\. Nothing was created"):
        real_create_settings({**CREATE, SSH_KEY_VAR: str(tmp_path / "missing")})


def test_the_ssh_key_becomes_airflows_prime_ssh_connection(tmp_path: Path) -> None:
    key = tmp_path / "id_ed25519"
    key.write_text("key")
    env = real_create_settings({**CREATE, SSH_KEY_VAR: str(key)})
    assert env is not None
    connection = json.loads(env["AIRFLOW_CONN_PRIME_SSH"])
    assert connection == {"conn_type": "ssh", "extra": {"key_file": str(key.resolve())}}
    assert "AIRFLOW_CONN_PRIME_DEFAULT" not in env  # the hook reads PRIME_API_KEY itself


def test_the_job_lines_are_printed_once_each_in_order_whatever_the_log_rereads() -> None:
    seen: set[tuple[int, str, str]] = set()
    first = [
        {"timestamp": "t1", "event": "Job train-1 on 2 node(s) of pod(s) p; its directory ..."},
        {"timestamp": "t2", "event": "Connecting to node 0", "level": "debug"},
        {"timestamp": "t3", "event": "[node 0] step 1/30 loss 1.4018"},
        {"timestamp": "t3", "event": "[node 1] step 1/30 loss 1.4018"},
        "a plain text line",
    ]
    again = [*first, {"timestamp": "t4", "event": "[node 0] step 2/30 loss 0.6417"}]

    assert new_job_lines(first, seen, 1) == [
        "Job train-1 on 2 node(s) of pod(s) p; its directory ...",
        "[node 0] step 1/30 loss 1.4018",
        "[node 1] step 1/30 loss 1.4018",
    ]
    assert new_job_lines(again, seen, 1) == ["[node 0] step 2/30 loss 0.6417"]
    assert new_job_lines(again, seen, 2) == new_job_lines(again, set(), 2)  # a retry's log is new
