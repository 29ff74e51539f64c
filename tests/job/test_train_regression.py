"""The demo's training script (``example_dags/training/train_regression.py``), run as it runs on
the nodes: one real process per rank, meeting at ``MASTER_ADDR:MASTER_PORT`` over loopback TCP.

Every rank gets only the environment a job gives a node (no inherited Airflow or Prime settings)
and its own result path, as each node has its own job directory. Steps do not pause
(``TRAIN_STEP_SECONDS=0``); every wait is bounded, and a test that would hang fails instead.
"""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import pytest

EXAMPLE_DAGS = Path(__file__).resolve().parents[2] / "example_dags"
SCRIPT = EXAMPLE_DAGS / "training" / "train_regression.py"
#: The most one job of these tests may take, start to last exit (seconds).
JOB_BOUND = 10.0
STEPS = 30
#: The loss the fit reaches in ``STEPS`` steps: the noise's variance is 0.0025.
LOSS_BOUND = 0.01


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("train_regression", SCRIPT)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


train_regression = _load()


@dataclass
class Rank:
    rank: int
    returncode: int
    stdout: str
    stderr: str
    result_file: Path

    def steps(self) -> list[str]:
        return [line for line in self.stdout.splitlines() if line.startswith("step ")]


class Job:
    """One process per rank, started at once, as the job starts them on the nodes.

    ``only`` starts some ranks only (the others never show up); ``per_rank`` adds to one rank's
    environment."""

    def __init__(
        self,
        home: Path,
        world: int,
        master_addr: str,
        port: int,
        only: list[int] | None = None,
        per_rank: dict[int, dict[str, str]] | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.home, self.world = home, world
        self.procs: dict[int, subprocess.Popen[bytes]] = {}
        self.started = time.monotonic()
        for rank in range(world) if only is None else only:
            node = home / f"node{rank}"
            node.mkdir(parents=True)
            with (node / "out").open("wb") as out, (node / "err").open("wb") as err:
                self.procs[rank] = subprocess.Popen(
                    [sys.executable, str(SCRIPT)],
                    cwd=node,
                    stdout=out,
                    stderr=err,
                    env={
                        "PATH": os.environ["PATH"],
                        "NODE_RANK": str(rank),
                        "NNODES": str(world),
                        "MASTER_ADDR": master_addr,
                        "MASTER_PORT": str(port),
                        "PRIME_RESULT_FILE": str(node / "job" / "result.json"),
                        "TRAIN_STEPS": str(STEPS),
                        "TRAIN_STEP_SECONDS": "0",
                        "TRAIN_RENDEZVOUS_SECONDS": "8",
                        **(env or {}),
                        **(per_rank or {}).get(rank, {}),
                    },
                )

    def wait(self) -> tuple[list[Rank], float]:
        """Every rank's outcome, and the seconds until the last one exited."""
        try:
            for proc in self.procs.values():
                proc.wait(timeout=max(0.1, self.started + JOB_BOUND - time.monotonic()))
            elapsed = time.monotonic() - self.started
        finally:
            self.kill()
        ranks = []
        for rank, proc in self.procs.items():
            node = self.home / f"node{rank}"
            out, err = (node / "out").read_text(), (node / "err").read_text()
            ranks.append(Rank(rank, proc.returncode, out, err, node / "job" / "result.json"))
        return ranks, elapsed

    def kill(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def run_job(home: Path, world: int, master_addr: str = "127.0.0.1", **env: str) -> tuple[list[Rank], float]:
    return Job(home, world, master_addr, free_port(master_addr), env=env).wait()


def free_port(*addresses: str) -> int:
    """A TCP port free on every one of ``addresses`` right now."""
    for _ in range(50):
        with socket.socket() as first:
            first.bind((addresses[0], 0))
            port: int = first.getsockname()[1]
            try:
                for other in addresses[1:]:
                    with socket.socket() as probe:
                        probe.bind((other, port))
            except OSError:
                continue
            return port
    raise AssertionError(f"no port free on all of {addresses}")


def loopback(address: str) -> str:
    """``address`` if this machine can listen on it (Linux routes all of 127/8), else skip."""
    try:
        with socket.socket() as probe:
            probe.bind((address, 0))
    except OSError:
        pytest.skip(f"cannot listen on {address} here (only Linux serves all of 127.0.0.0/8)")
    return address


def assert_trained(ranks: list[Rank], world: int) -> None:
    for rank in ranks:
        assert rank.returncode == 0, (rank.rank, rank.stdout, rank.stderr)
        assert rank.stdout.splitlines()[0].startswith(f"rank {rank.rank} of {world}, master ")
        assert [line.split(" loss ")[0] for line in rank.steps()] == [
            f"step {step}/{STEPS}" for step in range(1, STEPS + 1)
        ]
    # The loss printed is the mean over every shard: the same on every rank, or the all-reduce broke.
    assert len({tuple(rank.steps()) for rank in ranks}) == 1
    result = json.loads(ranks[0].result_file.read_text())
    assert set(result) == {"weights", "bias", "final_loss", "steps", "nodes"}
    assert result["nodes"] == world
    assert result["steps"] == STEPS
    assert len(result["weights"]) == train_regression.FEATURES
    assert result["final_loss"] < LOSS_BOUND
    first_loss = float(ranks[0].steps()[0].split(" loss ")[1])
    assert result["final_loss"] < first_loss / 50
    weights, bias = train_regression.true_model(0)
    assert result["weights"] == pytest.approx(weights, abs=0.1)
    assert result["bias"] == pytest.approx(bias, abs=0.1)
    # Only rank 0 writes the result.
    assert not any(rank.result_file.exists() for rank in ranks[1:])


@pytest.mark.parametrize("world", [2, 3])
def test_ranks_meet_at_the_master_and_converge_together(tmp_path: Path, world: int) -> None:
    ranks, _ = run_job(tmp_path, world)

    assert_trained(ranks, world)
    assert sum("joined from" in line for line in ranks[0].stdout.splitlines()) == world - 1


def test_two_jobs_on_distinct_loopback_addresses_share_a_port(tmp_path: Path) -> None:
    """As on the simulator: every node has its own 127.0.x.y, and two pods' jobs both use the
    default port. Rank 0 listens on ``MASTER_ADDR`` only, so neither job takes the other's port."""
    first, second = loopback("127.0.7.1"), loopback("127.0.8.1")
    port = free_port(first, second)

    jobs = [Job(tmp_path / "a", 2, first, port), Job(tmp_path / "b", 3, second, port)]
    (ranks_a, _), (ranks_b, _) = (job.wait() for job in jobs)

    assert_trained(ranks_a, 2)
    assert_trained(ranks_b, 3)
    assert f"master {first}:{port}" in ranks_a[1].stdout
    assert f"master {second}:{port}" in ranks_b[2].stdout


def test_one_node_trains_without_any_socket(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("NNODES=1 opened a socket")

    monkeypatch.setattr(socket, "socket", refuse)
    result_file = tmp_path / "result.json"
    env = {"TRAIN_STEPS": str(STEPS), "TRAIN_STEP_SECONDS": "0", "PRIME_RESULT_FILE": str(result_file)}

    assert train_regression.main(env) == 0

    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("rank 0 of 1, master 127.0.0.1:29500")
    assert sum(line.startswith("step ") for line in out) == STEPS
    result = json.loads(result_file.read_text())
    assert result["nodes"] == 1
    assert result["final_loss"] < LOSS_BOUND


@pytest.mark.parametrize(("world", "failing"), [(2, 1), (3, 1), (3, 0)])
def test_a_failing_rank_exits_3_and_every_other_rank_stops_at_once(
    tmp_path: Path, world: int, failing: int
) -> None:
    ranks, elapsed = run_job(tmp_path, world, TRAIN_FAIL_RANK=str(failing))

    assert elapsed < JOB_BOUND  # the peers noticed the disconnect: nobody waited for a timeout
    assert ranks[failing].returncode == 3
    assert "failing at step 3, as TRAIN_FAIL_RANK asks" in ranks[failing].stderr
    for rank in ranks:
        assert len(rank.steps()) == 2, rank.stdout  # steps 1 and 2, then the failure at step 3
        if rank.rank != failing:
            assert rank.returncode == 1, (rank.rank, rank.stderr)
            assert "step 3" in rank.stderr or "lost rank 0" in rank.stderr
    if failing:
        # Rank 0 names the rank it lost, and tells the others why the run stops.
        assert f"step 3: lost rank {failing} at 127.0.0.1" in ranks[0].stderr
        for rank in ranks[1:]:
            if rank.rank != failing:
                assert f"stopped the run: step 3: lost rank {failing}" in rank.stderr
    else:
        for rank in ranks[1:]:
            assert "lost rank 0 at MASTER_ADDR:MASTER_PORT 127.0.0.1:" in rank.stderr
    assert not ranks[0].result_file.exists()


def test_a_rank_that_cannot_reach_the_master_names_it(tmp_path: Path) -> None:
    port = free_port("127.0.0.1")
    (rank,), _ = Job(tmp_path, 2, "127.0.0.1", port, only=[1], env={"TRAIN_RENDEZVOUS_SECONDS": "0.5"}).wait()

    assert rank.returncode == 1
    assert f"cannot reach rank 0 at MASTER_ADDR:MASTER_PORT 127.0.0.1:{port} within 0.5 s" in rank.stderr


def test_rank_0_names_the_ranks_that_did_not_join(tmp_path: Path) -> None:
    port = free_port("127.0.0.1")
    ranks, _ = Job(tmp_path, 3, "127.0.0.1", port, only=[0, 1], env={"TRAIN_RENDEZVOUS_SECONDS": "1"}).wait()

    assert ranks[0].returncode == 1
    assert f"ranks [2] did not join at MASTER_ADDR:MASTER_PORT 127.0.0.1:{port} within 1 s" in ranks[0].stderr
    assert ranks[1].returncode == 1  # told why, instead of waiting for its own timeout
    assert "stopped the run: ranks [2] did not join" in ranks[1].stderr


def test_rank_0_refuses_a_master_addr_that_is_not_its_own(tmp_path: Path) -> None:
    # 192.0.2.0/24 is TEST-NET-1: never an address of this machine.
    (rank,), _ = Job(tmp_path, 2, "192.0.2.1", 29500, only=[0]).wait()

    assert rank.returncode == 1
    assert "cannot listen on MASTER_ADDR:MASTER_PORT 192.0.2.1:29500" in rank.stderr
    assert "MASTER_ADDR must be an address of this node" in rank.stderr


def test_ranks_that_disagree_on_the_run_are_refused_before_any_step(tmp_path: Path) -> None:
    """A different ``TRAIN_STEPS`` on one node would otherwise desynchronise the all-reduce."""
    port = free_port("127.0.0.1")
    ranks, _ = Job(tmp_path, 2, "127.0.0.1", port, per_rank={1: {"TRAIN_STEPS": str(STEPS + 1)}}).wait()

    assert [rank.returncode for rank in ranks] == [1, 1]
    assert f"rank 1 runs with {{'world': 2, 'steps': {STEPS + 1}, 'seed': 0}}" in ranks[0].stderr
    assert "stopped the run: rank 0 runs with" in ranks[1].stderr
    assert ranks[0].steps() == ranks[1].steps() == []


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"NODE_RANK": "2", "NNODES": "2", "MASTER_ADDR": "h"}, "NODE_RANK=2 with NNODES=2"),
        ({"NODE_RANK": "one"}, "NODE_RANK='one' is not a number"),
        ({"NODE_RANK": "1", "NNODES": "2"}, "MASTER_ADDR is not set, and NNODES=2 needs it"),
        ({"MASTER_PORT": "70000"}, "MASTER_PORT=70000 is not a TCP port"),
        ({"TRAIN_STEPS": "0"}, "TRAIN_STEPS=0 must be at least 1"),
    ],
)
def test_a_wrong_environment_exits_2_naming_the_variable(
    env: dict[str, str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert train_regression.main(env) == 2
    assert message in capsys.readouterr().err


def test_shards_are_deterministic_per_rank_and_drawn_from_one_model() -> None:
    assert train_regression.make_shard(7, 1) == train_regression.make_shard(7, 1)
    assert train_regression.make_shard(7, 1) != train_regression.make_shard(7, 2)
    assert train_regression.make_shard(7, 1) != train_regression.make_shard(8, 1)
    weights, bias = train_regression.true_model(7)
    xs, ys = train_regression.make_shard(7, 2)
    *_, loss = train_regression.gradient_and_loss(weights, bias, xs, ys)
    assert loss < 0.01  # the true model fits every shard up to the noise


def test_the_dag_processor_skips_the_training_scripts() -> None:
    """``example_dags/.airflowignore``: the scripts the DAGs ship to the nodes are not DAG files."""
    from airflow.utils.file import list_py_file_paths

    found = {
        Path(path).relative_to(EXAMPLE_DAGS).as_posix() for path in list_py_file_paths(EXAMPLE_DAGS, False)
    }

    assert "example_prime_pod_lifecycle.py" in found
    assert not any(path.startswith("training/") for path in found), found
