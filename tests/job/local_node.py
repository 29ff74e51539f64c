"""Helpers of the job tests: a node that runs the remote scripts with the local ``bash`` in a
temporary home, the processes of a group, and a synchronous wait for a condition."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from airflow_provider_prime.job_script import (
    PhaseState,
    Probe,
    launch_script,
    parse_poll,
    parse_probe,
    poll_script,
    probe_script,
    read_lines,
)

JOB = ".prime-jobs/train-0123456789abcdef01234567"
WAIT_GO = 'while [ ! -f "$PRIME_JOB_DIR/go" ]; do sleep 0.02; done'


class Node:
    """A simulated node: a home directory where scripts run as ``bash -s``."""

    def __init__(self, home: Path, path: str | None = None) -> None:
        self.home = home
        self.path = path or os.environ["PATH"]

    def run(self, script: str) -> bytes:
        done = subprocess.run(
            ["bash", "-s"],
            input=script.encode(),
            env={"HOME": str(self.home), "PATH": self.path},
            capture_output=True,
            timeout=60,
            check=True,
        )
        assert not done.stderr, done.stderr
        return done.stdout

    @property
    def dir(self) -> Path:
        return self.home / JOB

    def launch(
        self, text: str, phase: str = "command", env: dict[str, str] | None = None, **kw: object
    ) -> Probe:
        return parse_probe(self.run(launch_script(JOB, phase, text, env or {}, **kw)))  # type: ignore[arg-type]

    def probe(self) -> Probe:
        return parse_probe(self.run(probe_script(JOB)))

    def go(self) -> None:
        (self.dir / "go").touch()

    def wait_for(self, phase: str = "command", state: PhaseState = PhaseState.EXITED) -> Probe:
        return until(lambda: (p := self.probe()).phase(phase).state is state and p)

    def read_all(self, offset: int = 0, cap: int = 1 << 20) -> tuple[list[str], int]:
        poll = parse_poll(self.run(poll_script(JOB, offset, cap=cap)))
        assert poll.chunk is not None
        ended = poll.probe.phase("command").state is not PhaseState.RUNNING
        read = read_lines(poll.chunk, final=ended)
        return list(read.lines), read.next_offset


def until(check: Callable[[], object], timeout: float = 20.0) -> object:
    """Poll ``check`` until it returns something truthy (waiting for a condition, not for time)."""
    end = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > end:
            raise AssertionError("condition not reached")
        time.sleep(0.02)


def live_members(group: int) -> list[int]:
    """Processes of ``group`` that are alive (zombies do not count)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(") ")[2].split()
        except OSError:
            continue
        if int(fields[2]) == group and fields[0] != "Z":
            found.append(int(stat.parent.name))
    return found
