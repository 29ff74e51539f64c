"""The job operator end to end: ``PrimeRunJobOperator`` on real Airflow processes, the simulator's
SSH nodes really running the job (local processes, one home per node).

Each test adds its own ready two-node pods (or creates one, where the scenario needs the teardown),
runs one of the DAGs of ``dags/e2e_prime_job.py`` with a plain-bash command, and steers the job
through files under its own temporary directory (the nodes are local processes, so they see it):
a job waits on a *gate* file the test creates once Airflow is where the test wants it, and says
where its job directory is, so the test can wait until the lines it printed are recorded as
delivered. Orderings are proven by waiting for states and lines, never by sleeping.

Every test ends with its pods deleted, none still billing, and no process alive on their nodes
(the simulator's ``ssh_nodes`` stats); the job's launches are the simulator's ``job_launches``
(the job's own launch guard on each node), not every SSH exec.
"""

from __future__ import annotations

import re
import shlex
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from airflow_provider_prime.testing import PODS_PATH
from airflow_provider_prime.testing.lifecycles import fixed_pod
from airflow_provider_prime.testing.process import PrimeSimulatorProcess
from scripts.airflow_api import RunWatcher
from scripts.airflow_stack import AirflowStack, wait_until
from tests.e2e.conftest import CRASHED_TASKS_RETRY, ON_KILL_AIRFLOW
from tests.e2e.pods import make_ready, timestamp
from tests.e2e.runs import (
    STEP_TIMEOUT,
    assert_none_billing,
    billing,
    clear_failed_run,
    kill_task_process,
    last_try_log,
    pod_id_of,
    wait_deferred,
    wait_state,
)
from tests.e2e.task_end import assert_ended_in_triggerer

pytestmark = pytest.mark.e2e

TRAIN = "train"
DEFERRED, WORKER, TIMEOUT, TEARDOWN = (
    "e2e_prime_job",
    "e2e_prime_job_worker",
    "e2e_prime_job_timeout",
    "e2e_prime_job_teardown",
)
#: The DAGs' poll interval (``FAST_JOB`` in the DAG file).
POLL_INTERVAL = 1.0
#: What a poll may take on top of its interval on a loaded machine: SSH round trips to two nodes.
POLL_SLACK = 3.0
#: Airflow's default ``[triggerer] on_kill_timeout`` (the stack does not change it).
ON_KILL_TIMEOUT = 30.0
#: Lines of one node logged per poll (``max_lines``' default).
MAX_LINES = 500


# -- the pods and their nodes ------------------------------------------------------------------


@pytest.fixture
def pods(e2e_simulator: PrimeSimulatorProcess) -> Iterator[list[str]]:
    """Pod ids this test made; afterwards every one is deleted, none bills and none runs a process."""
    made: list[str] = []
    yield made
    delete_pods(e2e_simulator, made)
    assert_none_billing(e2e_simulator, made)
    assert processes_alive(e2e_simulator, made) == 0


def add_ready_pod(simulator: PrimeSimulatorProcess, made: list[str], nodes: int = 2) -> str:
    pod_id = f"e2e-job-{uuid.uuid4().hex[:8]}"
    simulator.add_pod(fixed_pod(pod_id, nodes=nodes, name=f"job-{pod_id}"))
    made.append(pod_id)
    return pod_id


def delete_pods(simulator: PrimeSimulatorProcess, pod_ids: list[str]) -> None:
    """Delete through the Prime API, as a teardown does (a pod already gone is fine)."""
    headers = {"Authorization": f"Bearer {simulator.api_key}"}
    with httpx.Client(base_url=simulator.base_url, headers=headers, timeout=30) as api:
        for pod_id in pod_ids:
            answer = api.delete(f"{PODS_PATH}{pod_id}")
            assert answer.status_code < 300 or answer.status_code == 404, answer.text


def node_stats(simulator: PrimeSimulatorProcess, pod_id: str) -> list[dict[str, Any]]:
    stats = simulator.node_stats()
    assert stats is not None, "the simulator has no SSH nodes"
    nodes: list[dict[str, Any]] = stats["pods"][pod_id]
    return nodes


def processes_alive(simulator: PrimeSimulatorProcess, pod_ids: list[str]) -> int:
    stats = simulator.node_stats() or {"pods": {}}
    return sum(node["processes_alive"] for pod_id in pod_ids for node in stats["pods"].get(pod_id, []))


def job_launches(simulator: PrimeSimulatorProcess, pod_id: str) -> list[dict[str, int]]:
    """Per node of the pod: job id -> launches of its command (the job's own guard)."""
    return [dict(node["job_launches"]) for node in node_stats(simulator, pod_id)]


# -- the job's side: commands, gates, its files --------------------------------------------------


class Job:
    """Files the test and the job's processes share (a directory on this machine, seen by the nodes)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, name: str) -> str:
        return shlex.quote(str(self.root / name))

    def gate(self, name: str = "gate") -> str:
        """Bash that waits until the test opens the gate ``name``."""
        return f"until [ -e {self.path(name)} ]; do sleep 0.1; done"

    def open(self, name: str = "gate") -> None:
        (self.root / name).touch()

    def mark(self, name: str) -> str:
        """Bash that writes the node's clock into ``<name>-<rank>`` (atomically)."""
        target = f"{self.root}/{name}-$PRIME_NODE_RANK"
        return f'date +%s.%N > "{target}.tmp" && mv "{target}.tmp" "{target}"'

    def marked(self, name: str, rank: int) -> float | None:
        try:
            return float((self.root / f"{name}-{rank}").read_text())
        except FileNotFoundError:
            return None

    def wait_marked(self, name: str, ranks: tuple[int, ...] = (0, 1), timeout: float = STEP_TIMEOUT) -> None:
        wait_until(
            lambda: all(self.marked(name, rank) is not None for rank in ranks),
            timeout,
            f"the job's nodes {ranks} to write {name!r}",
            interval=0.1,
        )

    @property
    def publish_dir(self) -> str:
        """Bash that tells the test where the job's directory is on this node."""
        return f'echo "$PRIME_JOB_DIR" > "{self.root}/jobdir-$PRIME_NODE_RANK"'

    def job_dir(self, rank: int) -> Path:
        return Path((self.root / f"jobdir-{rank}").read_text().strip())

    def delivered_all(self, rank: int, needle: str) -> bool:
        """The node's log holds ``needle`` and every byte of it is recorded as having reached Airflow."""
        try:
            folder = self.job_dir(rank)
            log = (folder / "output.log").read_bytes()
            delivered = int((folder / "delivered").read_text().strip() or 0)
        except (FileNotFoundError, ValueError):
            return False
        return needle.encode() in log and delivered >= len(log)

    def wait_delivered(self, needle: str, ranks: tuple[int, ...] = (0, 1)) -> None:
        wait_until(
            lambda: all(self.delivered_all(rank, needle) for rank in ranks),
            STEP_TIMEOUT,
            f"{needle!r} and every line before it recorded as delivered on nodes {ranks}",
        )


@pytest.fixture
def job(tmp_path: Path) -> Job:
    return Job(tmp_path)


def lines_of(label: str, first: int, last: int) -> str:
    """Bash printing ``<label> <i> of rank <rank>`` for i from ``first`` to ``last``."""
    return f'for i in $(seq {first} {last}); do echo "{label} $i of rank $PRIME_NODE_RANK"; done'


def script(*parts: str) -> str:
    return "\n".join(parts)


# -- Airflow's side ------------------------------------------------------------------------------

#: A job line as the tests count it: (rank, label, number).
Line = tuple[int, str, int]
NODE_LINE = re.compile(r"\[node (\d+)\] (\w+) (\d+) of rank (\d+)")


def run_job(stack: AirflowStack, dag_id: str, command: str, pod_ids: list[str] | None = None) -> RunWatcher:
    conf: dict[str, Any] = {"command": command}
    if pod_ids is not None:
        conf["pod_ids"] = pod_ids
    return stack.trigger(dag_id, conf)


def task_log(stack: AirflowStack, watcher: RunWatcher, try_number: int = 1) -> str:
    """The train task's log as Airflow's API serves it (the worker's and the triggers' parts)."""
    return stack.api.task_log(watcher.dag_id, watcher.run_id, TRAIN, try_number)


def node_lines(log: str) -> Counter[Line]:
    """How often each ``[node r] <label> <i> of rank r`` line is in the log (rank, label, i)."""
    found: Counter[Line] = Counter()
    for match in NODE_LINE.finditer(log):
        rank, label, number, said = match.groups()
        assert rank == said, f"a line of rank {said} under node {rank}: {match.group(0)}"
        found[(int(rank), label, int(number))] += 1
    return found


def expected(label: str, first: int, last: int, ranks: tuple[int, ...] = (0, 1)) -> Counter[Line]:
    return Counter({(rank, label, i): 1 for rank in ranks for i in range(first, last + 1)})


def only(found: Counter[Line], label: str) -> Counter[Line]:
    return Counter({key: n for key, n in found.items() if key[1] == label})


def trigger_fired_at(stack: AirflowStack, watcher: RunWatcher, try_number: int = 1) -> float:
    """When the task's trigger fired its event (epoch seconds), from the log's timestamps."""
    entries = stack.api.task_log_entries(watcher.dag_id, watcher.run_id, TRAIN, try_number)
    fired = [
        entry["timestamp"]
        for entry in entries
        if isinstance(entry, dict) and str(entry.get("event", "")).startswith("Trigger fired event")
    ]
    assert fired, "the trigger fired no event"
    return timestamp(fired[-1]).timestamp()


def job_id_in(log: str) -> str:
    match = re.search(r"Job (\S+) on \d+ node\(s\)", log)
    assert match, f"the job id is not in the log:\n{log[-3000:]}"
    return match.group(1)


def finished(watcher: RunWatcher) -> RunWatcher:
    """Wait for the run to end."""
    return watcher.wait(timeout=STEP_TIMEOUT)


# -- the scenarios -------------------------------------------------------------------------------


def test_a_two_node_deferred_job_logs_every_line_once_returns_its_result_and_launches_once_per_node(
    airflow_stack: AirflowStack, e2e_simulator: PrimeSimulatorProcess, pods: list[str], job: Job
) -> None:
    pod_id = add_ready_pod(e2e_simulator, pods)
    command = script(
        job.publish_dir,
        lines_of("line", 1, 40),
        job.gate(),
        lines_of("line", 41, 80),
        'if [ "$PRIME_NODE_RANK" = 0 ]; then',
        '  echo "{\\"loss\\": 0.25, \\"nodes\\": $PRIME_NUM_NODES, \\"master\\": \\"$MASTER_ADDR\\"}" '
        '> "$PRIME_RESULT_FILE"',
        "fi",
    )
    watcher = run_job(airflow_stack, DEFERRED, command, [pod_id])
    wait_deferred(airflow_stack, watcher, TRAIN)
    job.wait_delivered("line 40 of rank")  # the first half reached the log while deferred
    job.open()
    finished(watcher)

    assert watcher.state == "success", (watcher.history, last_try_log(airflow_stack, watcher, TRAIN))
    assert "deferred" in watcher.states(TRAIN)
    log = task_log(airflow_stack, watcher)
    assert node_lines(log) == expected("line", 1, 80), log[-3000:]
    xcom = airflow_stack.api.xcom(DEFERRED, watcher.run_id, TRAIN)
    hosts = [node["host"] for node in node_stats(e2e_simulator, pod_id)]
    assert [(n["rank"], n["host"], n["exit_code"]) for n in xcom["nodes"]] == [
        (0, hosts[0], 0),
        (1, hosts[1], 0),
    ]
    assert xcom["result"] == {"loss": 0.25, "nodes": 2, "master": hosts[0]}
    ident = job_id_in(log)
    assert job_launches(e2e_simulator, pod_id) == [{ident: 1}, {ident: 1}]
    assert processes_alive(e2e_simulator, [pod_id]) == 0  # the job ended with its command
    # The trigger recorded the result and ended the task: no worker resumed it (issue 23).
    assert_ended_in_triggerer(airflow_stack, DEFERRED, watcher.run_id, TRAIN, line="The job succeeded")


def test_a_failing_rank_fails_the_task_at_once_kills_the_others_and_the_teardown_deletes_the_pod(
    airflow_stack: AirflowStack, e2e_simulator: PrimeSimulatorProcess, pods: list[str], job: Job
) -> None:
    command = script(
        'if [ "$PRIME_NODE_RANK" = 1 ]; then',
        f"  {job.gate()}",
        '  for i in 1 2 3; do echo "rank 1 last words $i"; done',
        f"  {job.mark('failed')}",
        "  exit 3",
        "fi",
        job.publish_dir,
        f"trap '{job.mark('killed')}; exit 143' TERM",
        'echo "rank 0 waits on the collective"',
        "sleep 600 & wait",
    )
    watcher = run_job(airflow_stack, TEARDOWN, command)
    wait_deferred(airflow_stack, watcher, "create_pod")
    pod_id = pod_id_of(airflow_stack, watcher, "create_pod")
    pods.append(pod_id)
    make_ready(e2e_simulator, pod_id, 2)
    wait_deferred(airflow_stack, watcher, TRAIN)
    # The trigger polls (its first poll waits JOB_SETTLE_AFTER_DEFERRAL, 15 s, after the deferral).
    job.wait_delivered("rank 0 waits on the collective", (0,))
    job.open()
    finished(watcher)

    assert watcher.state == "failed"
    assert watcher.states(TRAIN)[-1] == "failed"
    assert watcher.states("terminate_pod")[-1] == "success"
    failed_at, killed_at = job.marked("failed", 1), job.marked("killed", 0)
    assert failed_at is not None
    assert killed_at is not None, "rank 0 was not killed by TERM"
    # Rank 0 is killed by the wait that saw rank 1 fail: within one poll (and its round trips).
    log = task_log(airflow_stack, watcher)
    assert killed_at - failed_at < POLL_INTERVAL + POLL_SLACK, (killed_at - failed_at, log[-3000:])
    host = node_stats(e2e_simulator, pod_id)[1]["host"]
    assert re.search(
        rf"failed on node 1 \({pod_id} node 2, [^)]*{re.escape(host)}[^)]*\): it exited with code 3", log
    ), log[-3000:]
    for i in (1, 2, 3):
        assert f"  rank 1 last words {i}" in log
    # Every node, rank 1 too: an ended phase may have left processes that ignore TERM.
    assert "Killed the job's processes on node(s) 0, 1 (the job failed)" in log
    assert_none_billing(e2e_simulator, [pod_id])
    assert processes_alive(e2e_simulator, [pod_id]) == 0


def test_a_worker_killed_mid_job_leaves_it_running_and_the_retry_adopts_it(
    airflow_stack: AirflowStack, e2e_simulator: PrimeSimulatorProcess, pods: list[str], job: Job
) -> None:
    """Followed in the worker; 3.3 retries a task whose process died, 3.1 fails it (cleared here)."""
    pod_id = add_ready_pod(e2e_simulator, pods)
    command = script(
        job.publish_dir,
        lines_of("before", 1, 30),
        job.gate(),
        lines_of("after", 1, 30),
        '[ "$PRIME_NODE_RANK" = 0 ] && echo \'{"adopted": true}\' > "$PRIME_RESULT_FILE"',
        "true",
    )
    watcher = run_job(airflow_stack, WORKER, command, [pod_id])
    wait_state(watcher, TRAIN, "running")
    job.wait_delivered("before 30 of rank")  # in try 1's log, and recorded so on the nodes
    ident = job_id_in(task_log(airflow_stack, watcher, 1))
    kill_task_process(watcher, TRAIN)
    if not CRASHED_TASKS_RETRY:
        watcher.wait(timeout=STEP_TIMEOUT)
        assert watcher.state == "failed"
        clear_failed_run(airflow_stack, watcher, TRAIN)
    watcher.wait(
        lambda w: w.ti(TRAIN)["try_number"] == 2 and w.states(TRAIN)[-1] == "running",
        timeout=STEP_TIMEOUT,
        what="the second try running",
    )
    wait_until(
        lambda: "adopting the job running on node(s) 0, 1" in task_log(airflow_stack, watcher, 2),
        STEP_TIMEOUT,
        "the second try to adopt the job",
    )
    job.open()
    finished(watcher)

    assert watcher.state == "success", (watcher.history, last_try_log(airflow_stack, watcher, TRAIN))
    first, second = (
        node_lines(task_log(airflow_stack, watcher, 1)),
        node_lines(task_log(airflow_stack, watcher, 2)),
    )
    assert only(first, "before") == expected("before", 1, 30)
    assert second == expected("after", 1, 30)  # the log goes on where it was: nothing again
    assert job_launches(e2e_simulator, pod_id) == [{ident: 1}, {ident: 1}]
    assert airflow_stack.api.xcom(WORKER, watcher.run_id, TRAIN)["result"] == {"adopted": True}


def test_a_triggerer_restarted_mid_job_loses_and_repeats_no_line_and_the_job_finishes(
    airflow_stack: AirflowStack, e2e_simulator: PrimeSimulatorProcess, pods: list[str], job: Job
) -> None:
    pod_id = add_ready_pod(e2e_simulator, pods)
    command = script(
        job.publish_dir,
        lines_of("line", 1, 50),
        job.gate("first"),
        lines_of("line", 51, 100),
        job.gate("second"),
        lines_of("line", 101, 150),
    )
    watcher = run_job(airflow_stack, DEFERRED, command, [pod_id])
    wait_deferred(airflow_stack, watcher, TRAIN)
    job.wait_delivered("line 50 of rank")
    job.open("first")  # printed while the triggerer stops: read by the next one
    first = watcher.ti(TRAIN)["trigger"]["triggerer_id"]
    airflow_stack.components.pop("triggerer").stop(grace=15)  # SIGTERM: a clean restart cancels its triggers
    airflow_stack.start(["triggerer"])
    watcher.wait(
        lambda w: (w.ti(TRAIN).get("trigger") or {}).get("triggerer_id") not in (None, first),
        timeout=STEP_TIMEOUT,
        what="the new triggerer taking the trigger over",
    )
    job.wait_delivered("line 100 of rank")
    job.open("second")
    finished(watcher)

    assert watcher.state == "success", (watcher.history, last_try_log(airflow_stack, watcher, TRAIN))
    assert watcher.ti(TRAIN)["try_number"] == 1
    log = task_log(airflow_stack, watcher)
    assert node_lines(log) == expected("line", 1, 150), log[-3000:]
    ident = job_id_in(log)
    assert job_launches(e2e_simulator, pod_id) == [{ident: 1}, {ident: 1}]


def test_a_deferred_job_marked_failed(
    airflow_stack: AirflowStack, e2e_simulator: PrimeSimulatorProcess, pods: list[str], job: Job
) -> None:
    """3.3: the trigger's on_kill kills the job within on_kill_timeout, the pod untouched.
    3.1: nothing of the task runs: the job runs on until the pod is deleted (as the teardown does)."""
    pod_id = add_ready_pod(e2e_simulator, pods)
    command = script(job.mark("started"), job.gate(), job.mark("ran-on"), "sleep 600")
    watcher = run_job(airflow_stack, DEFERRED, command, [pod_id])
    wait_deferred(airflow_stack, watcher, TRAIN)
    job.wait_marked("started")
    marked_at = time.monotonic()
    airflow_stack.api.request(
        "PATCH",
        f"/dags/{DEFERRED}/dagRuns/{watcher.run_id}/taskInstances/{TRAIN}",
        json={"new_state": "failed"},
    )
    finished(watcher)
    assert watcher.state == "failed"
    if ON_KILL_AIRFLOW:
        wait_until(
            lambda: processes_alive(e2e_simulator, [pod_id]) == 0,
            ON_KILL_TIMEOUT,
            "the trigger's on_kill to kill the job",
        )
        assert time.monotonic() - marked_at < ON_KILL_TIMEOUT + POLL_SLACK
        assert billing(e2e_simulator, [pod_id]) == [pod_id]  # killed by the job's kill, not a delete
        wait_until(
            lambda: (
                "Killed the job's processes on node(s) 0, 1 (the task was stopped)"
                in task_log(airflow_stack, watcher)
            ),
            STEP_TIMEOUT,
            "the trigger's on_kill to say it killed the job",
        )
        return
    assert processes_alive(e2e_simulator, [pod_id]) > 0
    job.open()
    job.wait_marked("ran-on")  # the job ran on after its task failed, as the docs say
    delete_pods(e2e_simulator, [pod_id])  # what the teardown does
    assert_none_billing(e2e_simulator, [pod_id])
    assert processes_alive(e2e_simulator, [pod_id]) == 0  # the pod's deletion killed it


def test_execution_timeout_while_deferred_kills_the_job_and_fails_the_task_with_the_timeout(
    airflow_stack: AirflowStack, e2e_simulator: PrimeSimulatorProcess, pods: list[str], job: Job
) -> None:
    pod_id = add_ready_pod(e2e_simulator, pods)
    command = script(f"trap '{job.mark('killed')}; exit 143' TERM", job.mark("started"), "sleep 600 & wait")
    watcher = run_job(airflow_stack, TIMEOUT, command, [pod_id])
    wait_deferred(airflow_stack, watcher, TRAIN)
    job.wait_marked("started")
    finished(watcher)

    assert watcher.state == "failed"
    assert "deferred" in watcher.states(TRAIN)
    log = task_log(airflow_stack, watcher)
    assert "AirflowTaskTimeout" in log or "TaskTimeout" in log, log[-3000:]
    assert "did not finish by the deadline" in log
    assert "execution_timeout=0:00:15" in log
    assert job.marked("killed", 0) is not None
    assert job.marked("killed", 1) is not None
    assert billing(e2e_simulator, [pod_id]) == [pod_id]  # the job's kill, not a delete
    assert processes_alive(e2e_simulator, [pod_id]) == 0


def test_a_pod_deleted_under_a_running_job_fails_the_task_at_once_naming_its_state(
    airflow_stack: AirflowStack, e2e_simulator: PrimeSimulatorProcess, pods: list[str], job: Job
) -> None:
    pod_id = add_ready_pod(e2e_simulator, pods)
    command = script(job.publish_dir, 'echo "started"', "sleep 600")
    watcher = run_job(airflow_stack, DEFERRED, command, [pod_id])
    wait_deferred(airflow_stack, watcher, TRAIN)
    job.wait_delivered("started")  # the trigger polls
    deleted_at = time.time()
    delete_pods(e2e_simulator, [pod_id])
    finished(watcher)
    took = time.time() - deleted_at

    assert watcher.state == "failed"
    log = task_log(airflow_stack, watcher)
    assert re.search(rf"A pod under the job failed while it ran: .*{pod_id}.*(DELETING|TERMINATED)", log), (
        log[-3000:]
    )
    # The trigger sees it on its next poll (the shared status poller's answer)...
    assert trigger_fired_at(airflow_stack, watcher) - deleted_at < POLL_INTERVAL + POLL_SLACK
    assert took < 30, took  # ...then Airflow resumes the task to fail it (no SSH grace of 60 s)


def test_a_job_flooding_its_output_logs_the_capped_amount_and_counts_what_it_skipped(
    airflow_stack: AirflowStack, e2e_simulator: PrimeSimulatorProcess, pods: list[str], job: Job
) -> None:
    pod_id = add_ready_pod(e2e_simulator, pods)
    total = 200_000
    command = script(job.gate(), f"seq -f 'flood %.0f of rank '$PRIME_NODE_RANK 1 {total}")
    watcher = run_job(airflow_stack, DEFERRED, command, [pod_id])
    wait_deferred(airflow_stack, watcher, TRAIN)
    job.open()
    finished(watcher)

    assert watcher.state == "success", (watcher.history, last_try_log(airflow_stack, watcher, TRAIN))
    log = task_log(airflow_stack, watcher)
    shown = node_lines(log)
    for rank in (0, 1):
        numbers = sorted(i for (r, _, i), n in shown.items() if r == rank for _ in range(n))
        skipped = [
            int(n) for n in re.findall(rf"\[node {rank}\] skipped (\d+) lines; the whole log is at ", log)
        ]
        assert skipped, f"no skipped-count line for node {rank}"
        assert numbers
        assert numbers[-1] == total
        assert len(numbers) == len(set(numbers))
        # At most max_lines per poll; a poll that read a full window (thousands of lines) counts a skip.
        assert len(numbers) <= MAX_LINES * (len(skipped) + 1), (len(numbers), skipped)
        assert len(numbers) + sum(skipped) == total  # every line shown or counted
    assert len(log) < 200_000  # bytes: the floods were 2 x ~4 MB
