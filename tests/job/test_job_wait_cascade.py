"""A failure that cascades: the rank that died first must be the one the task names.

In distributed training a rank that crashes takes the others down with it: they see the peer
gone and exit too, milliseconds later (``train_regression.py`` exits 1 "lost rank 1"; NCCL and
``torchrun`` do the same). The wait names "the first node whose phase exits non-zero, by the
node's clock; the lowest rank on a tie": with end times in whole seconds the cascade was a tie and
rank 0 (the victim) was named instead of rank 1 (the cause), so the node records the end to the
microsecond (bash's ``EPOCHREALTIME``). Found by the lifecycle example's ``fail_training`` run.
"""

from __future__ import annotations

from pathlib import Path

from airflow_provider_prime.job_nodes import JobNode
from airflow_provider_prime.job_script import kill_script, launch_script, parse_poll, poll_script
from airflow_provider_prime.job_wait import JobOutcome, JobWait
from tests.job.local_node import JOB, Node, live_members, until
from tests.statuses import pod

NODES = (
    JobNode(0, "pod-a", 0, "h0", 22, "root", "10.0.0.1"),
    JobNode(1, "pod-a", 1, "h1", 22, "root", "10.0.0.2"),
)
#: Rank 1 crashes just after a second begins, so the cascade below ends within that same second.
CRASH = 's=$(date +%s); while [ "$(date +%s)" = "$s" ]; do sleep 0.01; done; echo "rank 1 crashed"; exit 3'


def test_the_rank_that_crashed_is_named_not_the_peer_it_took_down(tmp_path: Path) -> None:
    nodes = [Node(tmp_path / "n0"), Node(tmp_path / "n1")]
    peer_exit = tmp_path / "n1" / JOB / "command.exit"
    victim = f'while [ ! -f {peer_exit} ]; do sleep 0.01; done; sleep 0.05; echo "lost rank 1"; exit 1'
    for node, script in zip(nodes, (victim, CRASH), strict=True):
        node.home.mkdir()
        node.run(launch_script(JOB, "command", script, {}))
    until(lambda: all((node.dir / "command.exit").exists() for node in nodes))

    polls = {rank: parse_poll(node.run(poll_script(JOB, 0))) for rank, node in enumerate(nodes)}
    step = JobWait(NODES, deadline=2_000_000_000.0).take(polls, {"pod-a": pod("pod-a")}, 0.0)

    for node in nodes:  # nothing is left running either way
        node.run(kill_script(JOB, grace=1))
        until(lambda node=node: live_members(int((node.dir / "command.pid").read_text().split()[0])) == [])
    assert step.outcome is JobOutcome.FAILED
    assert "failed on node 1" in str(step.error), step.error
