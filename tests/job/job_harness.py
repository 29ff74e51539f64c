"""Helpers of the job operator tests: a simulator whose pods have real SSH nodes, the connections to
it, a task context, the task log as text, and the job's own record of its launches on each node."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from airflow_provider_prime.job_ids import job_dir, job_id
from airflow_provider_prime.job_nodes import JobNode
from airflow_provider_prime.job_script import Probe, Scripts
from airflow_provider_prime.testing import PrimeSimulator
from airflow_provider_prime.testing.pytest_plugin import SshKeyPair

#: Seconds any condition of these tests may take to come true (a bound on a hang, not a timing).
DEADLINE = 30.0


@dataclass
class TaskInstance:
    """The identity a job's task instance gives it (the job id is derived from it)."""

    dag_id: str = "train_dag"
    run_id: str = "manual__1"
    task_id: str = "train"
    map_index: int = -1
    try_number: int = 1
    start_date: Any = None
    xcoms: dict[str, Any] = field(default_factory=dict)

    def xcom_push(self, key: str, value: Any) -> None:
        self.xcoms[key] = value


def context(ti: TaskInstance | None = None) -> dict[str, Any]:
    return {"ti": ti or TaskInstance()}


def connect_ssh(monkeypatch: pytest.MonkeyPatch, key: SshKeyPair, conn_id: str = "ssh_default") -> str:
    """An Airflow SSH connection (from the environment) that logs in with ``key``."""
    extra = {"key_file": str(key.private_key_file)}
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps({"conn_type": "ssh", "extra": extra}))
    return conn_id


def text(logs: list[dict[str, Any]]) -> list[str]:
    """Every captured log record as the line it would print."""
    lines = []
    for record in logs:
        event, args = str(record.get("event", "")), record.get("positional_args") or ()
        try:
            lines.append(event % tuple(args) if args else event)
        except (TypeError, ValueError):
            lines.append(event)
    return lines


def wait_until(condition: Callable[[], object], what: str) -> None:
    """Wait for a state to be reached (never to prove an ordering)."""
    end = time.monotonic() + DEADLINE
    while not condition():
        if time.monotonic() > end:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.02)


class Running:
    """A call running in a thread: its result or its error once it ends."""

    def __init__(self, call: Callable[[], Any]) -> None:
        self.result: Any = None
        self.error: BaseException | None = None

        def run() -> None:
            try:
                self.result = call()
            except BaseException as exc:
                self.error = exc

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()

    def join(self) -> Any:
        self.thread.join(DEADLINE)
        assert not self.thread.is_alive(), "the call did not end"
        return self.result


def the_job_dir(ti: TaskInstance | None = None) -> str:
    from airflow_provider_prime.deployment import deployment_id

    ti = ti or TaskInstance()
    return job_dir(job_id(ti.dag_id, ti.run_id, ti.task_id, ti.map_index, deployment=deployment_id()))


def probes(sim: PrimeSimulator, pod_id: str, key: SshKeyPair, ti: TaskInstance | None = None) -> list[Probe]:
    """Each node's probe of the job (its phases and their launch counts), over SSH."""
    from airflow_provider_prime.job_nodes import handover_of, job_nodes
    from airflow_provider_prime.job_remote import JobRemote
    from airflow_provider_prime.job_ssh import HostKeyPins, NodeLinks, SshLogin

    statuses = {s.pod_id: s for s in sim_statuses(sim, [pod_id])}
    nodes: tuple[JobNode, ...] = job_nodes(handover_of([pod_id], statuses))
    login = SshLogin(
        username=None, private_key=None, key_file=str(key.private_key_file), passphrase=None, password=None
    )

    async def probe() -> list[Probe]:
        async with NodeLinks(login, HostKeyPins()) as links:
            return await JobRemote(nodes, links, Scripts(the_job_dir(ti))).probe()

    return asyncio.run(probe())


def sim_statuses(sim: PrimeSimulator, pod_ids: list[str]) -> list[Any]:
    from airflow_provider_prime.hooks.prime import PrimeHook

    return PrimeHook().get_pods_status(pod_ids)


def launches(sim: PrimeSimulator, pod_id: str, key: SshKeyPair, phase: str = "command") -> list[int]:
    """How many times the job's ``phase`` was launched on each node (the job's own guard counter)."""
    return [probe.phase(phase).launches for probe in probes(sim, pod_id, key)]


def alive(sim: PrimeSimulator) -> int:
    stats = sim.stats.nodes
    assert stats is not None
    return int(stats.processes_alive)


def job_simulator(
    factory: Callable[..., PrimeSimulator],
    connect: Callable[..., str],
    key: SshKeyPair,
    monkeypatch: pytest.MonkeyPatch,
    *pods: Any,
) -> PrimeSimulator:
    """A simulator with ``pods`` whose nodes accept ``key``, and Airflow's ``prime_default`` and
    ``ssh_default`` connections to it."""
    from airflow_provider_prime.testing import Scenario

    simulator = factory(Scenario(pods=list(pods)), ssh_keys=[key.public_key])
    connect(simulator)
    connect_ssh(monkeypatch, key)
    return simulator
