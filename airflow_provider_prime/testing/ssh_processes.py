"""The local processes a simulated SSH node started: found by an environment marker, killed as groups.

Every command a :class:`~airflow_provider_prime.testing.ssh_nodes.SimulatedNode` runs starts in a
new session (so in its own process group) with ``PRIME_SIM_NODE=<token>`` in its environment, the
token unique to the node. Children inherit the variable, including the ones that leave the group on
purpose (``nohup ... &`` stays in the group; ``setsid`` makes a new session), which is how a job is
detached from its SSH session. So "the node's processes" are the live processes of this user whose
``/proc/<pid>/environ`` carries the node's token, plus the process groups the node started.

Killing them signals every such process group and every such process: SIGTERM, a grace, then
SIGKILL until none is left. What escapes: a process that starts with a cleared environment
(``env -i``, ``sudo``) *and* leaves its process group. Without ``/proc`` (not Linux) only the
process groups the node started are seen.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Collection, Iterable
from pathlib import Path

#: The environment variable that marks every process started on a simulated node.
MARKER_VARIABLE = "PRIME_SIM_NODE"
_PROC = Path("/proc")
_KILL_DEADLINE = 10.0
_POLL = 0.02


def proc_available() -> bool:
    """Whether processes can be found by their environment (Linux's ``/proc``)."""
    return (_PROC / "self" / "environ").exists()


def marked_processes(tokens: Collection[str]) -> dict[str, set[int]]:
    """The live processes carrying ``PRIME_SIM_NODE=<token>``, by token (one pass over ``/proc``).

    Zombies have an empty environment and do not count: they run nothing. Processes of other users
    cannot be read and are skipped.
    """
    found: dict[str, set[int]] = {token: set() for token in tokens}
    if not found or not proc_available():
        return found
    prefix = f"{MARKER_VARIABLE}=".encode()
    for entry in os.scandir(_PROC):
        if not entry.name.isdigit():
            continue
        try:
            with open(os.path.join(entry.path, "environ"), "rb") as environ:
                data = environ.read()
        except OSError:  # gone, or not ours
            continue
        if prefix not in data:
            continue
        for variable in data.split(b"\0"):
            if variable.startswith(prefix):
                token = variable[len(prefix) :].decode(errors="replace")
                if token in found:
                    found[token].add(int(entry.name))
                break
    return found


def group_alive(pgid: int) -> bool:
    """Whether a process group still has a member (zombies included: the fallback without /proc)."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # the group id now belongs to someone else's processes
        return False
    return True


class ProcessTracker:
    """One node's processes: the groups it started and everything carrying its marker."""

    def __init__(self, token: str) -> None:
        self.token = token
        self.launches = 0
        self._groups: set[int] = set()

    @property
    def marker(self) -> dict[str, str]:
        """The environment entry every process of the node starts with."""
        return {MARKER_VARIABLE: self.token}

    def launched(self, pid: int) -> None:
        """Count a started command; its pid is its process group (it was started in a new session)."""
        self.launches += 1
        self._groups.add(pid)

    def alive(self, scan: dict[str, set[int]] | None = None) -> set[int]:
        """The node's live processes (pass a :func:`marked_processes` result to share one scan)."""
        if proc_available():
            found = scan if scan is not None else marked_processes([self.token])
            return set(found.get(self.token, ()))
        self._groups = {pgid for pgid in self._groups if group_alive(pgid)}
        return set(self._groups)

    def _signal(self, pids: Iterable[int], sig: signal.Signals) -> None:
        """Signal each process and its process group.

        With ``/proc`` the groups are those of live marked processes (a group id whose members all
        died may be reused by someone else's group); without it, the groups the node started.
        """
        groups = set() if proc_available() else set(self._groups)
        pids = set(pids) - {os.getpid()}
        for pid in pids:
            try:
                groups.add(os.getpgid(pid))
                os.kill(pid, sig)
            except (ProcessLookupError, PermissionError):
                continue
        for pgid in groups - {os.getpgrp()}:  # never the simulator's own group
            try:
                os.killpg(pgid, sig)
            except (ProcessLookupError, PermissionError):
                continue

    async def kill_all(self, grace: float) -> None:
        """SIGTERM everything, wait up to ``grace`` seconds, then SIGKILL until nothing is left.

        Raises :class:`RuntimeError` naming the survivors if processes keep appearing for 10 s.
        """
        alive = self.alive()
        if grace > 0 and alive:
            self._signal(alive, signal.SIGTERM)
            deadline = time.monotonic() + grace
            while alive and time.monotonic() < deadline:
                await asyncio.sleep(_POLL)
                alive = self.alive()
        deadline = time.monotonic() + _KILL_DEADLINE
        while True:
            self._signal(alive, signal.SIGKILL)
            await asyncio.sleep(0)
            alive = self.alive()
            if not alive:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"simulated node {self.token}: processes {sorted(alive)} survive SIGKILL")
            await asyncio.sleep(_POLL)
        self._groups = {pgid for pgid in self._groups if group_alive(pgid)}
