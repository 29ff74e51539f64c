"""The job's wait step, branch by branch, with an injected clock (no I/O); then for real with bash."""

from __future__ import annotations

from pathlib import Path

import pytest

from airflow_provider_prime.exceptions import PrimeConnectionError, PrimePodFailedError
from airflow_provider_prime.job_nodes import JobNode
from airflow_provider_prime.job_script import (
    LogChunk,
    Phase,
    PhaseState,
    Poll,
    Probe,
    kill_script,
    launch_script,
    parse_poll,
    parse_result,
    poll_script,
    result_script,
)
from airflow_provider_prime.job_wait import JobOutcome, JobWait, PrimeJobFailedError
from tests.job.local_node import JOB, Node, live_members, until
from tests.statuses import pod

R, X, K, L = PhaseState.RUNNING, PhaseState.EXITED, PhaseState.KILLED, PhaseState.LOST
NODES = (
    JobNode(0, "pod-a", 0, "h0", 22, "root", "10.0.0.1"),
    JobNode(1, "pod-a", 1, "h1", 22, "root", "10.0.0.2"),
    JobNode(2, "pod-b", 0, "h2", 22, "root", "10.0.0.3"),
)
PODS = {"pod-a": pod("pod-a"), "pod-b": pod("pod-b")}


def poll(
    state: PhaseState = R,
    rc: int | None = None,
    data: bytes = b"",
    *,
    start: int = 0,
    size: int | None = None,
    ended: int | None = None,
    phase: str = "command",
    **chunk: object,
) -> Poll:
    size = start + len(data) if size is None else size
    probe = Probe(
        phases={
            phase: Phase(phase, state, rc, pid=100, started=1000, ended=ended, ended_at=ended, launches=1)
        },
        log_size=size,
        directory="/home/root/.prime-jobs/j",
    )
    return Poll(
        probe, LogChunk(start=start, data=data, size=size, cap=int(chunk.pop("cap", 1 << 16)), **chunk)
    )  # type: ignore[arg-type]


def wait(nodes: tuple[JobNode, ...] = NODES, **kwargs: object) -> JobWait:
    return JobWait(nodes, deadline=2_000_000_000.0, **kwargs)  # type: ignore[arg-type]


class TestRunning:
    def test_lines_are_prefixed_with_the_rank_and_offsets_advance_to_complete_lines(self):
        w = wait()
        step = w.take(
            {0: poll(data=b"step 1 loss 0.5\nstep"), 1: poll(data=b"hello\n"), 2: poll()}, PODS, 10.0
        )
        assert step.outcome is JobOutcome.RUNNING
        assert step.error is None
        assert step.kill == ()
        assert step.lines == ("[node 0] step 1 loss 0.5", "[node 1] hello")
        assert w.offsets == {0: 16, 1: 6, 2: 0}
        step = w.take({0: poll(data=b"step 2 loss 0.3\n", start=16)}, PODS, 20.0)
        assert step.lines == ("[node 0] step 2 loss 0.3",)
        assert w.offsets[0] == 32

    def test_offsets_given_at_the_start_are_kept_for_nodes_not_polled(self):
        w = wait(offsets={1: 40})
        w.take({0: poll()}, None, 1.0)
        assert w.offsets == {0: 0, 1: 40, 2: 0}

    def test_a_flood_is_capped_per_node_per_poll_with_one_line_saying_where_the_log_is(self):
        data = b"".join(b"line %d\n" % i for i in range(10))
        step = wait(max_lines=3).take({0: poll(data=data, skipped_lines=100, skipped_bytes=900)}, PODS, 1.0)
        assert step.lines == (
            "[node 0] skipped 107 lines; the whole log is at /home/root/.prime-jobs/j/output.log on h0",
            "[node 0] line 7",
            "[node 0] line 8",
            "[node 0] line 9",
        )

    def test_a_pod_still_coming_or_unknown_is_not_a_failure(self):
        pods = {"pod-a": pod("pod-a", status="UNKNOWN"), "pod-b": pod("pod-b")}
        assert wait().take({0: poll()}, pods, 1.0).outcome is JobOutcome.RUNNING

    def test_a_failed_poll_of_the_pods_is_no_verdict_and_is_said_once_then_recovery(self):
        w = wait()
        first = w.trouble(PrimeConnectionError("refused"), 1.0)
        assert first.outcome is JobOutcome.RUNNING
        assert first.notes == ("Cannot reach the Prime API, will keep trying: refused",)
        assert w.trouble(PrimeConnectionError("refused"), 2.0).notes == ()
        step = w.take({0: poll()}, PODS, 3.0)
        assert step.notes == ("Prime API reachable again after 2 failed attempts over 2 s",)

    def test_a_node_unreachable_within_the_grace_waits_and_its_clock_resets_on_an_answer(self):
        w = wait(unreachable_grace=60.0)
        assert w.take({1: OSError("reset")}, PODS, 100.0).outcome is JobOutcome.RUNNING
        assert w.take({1: OSError("reset")}, PODS, 159.0).outcome is JobOutcome.RUNNING
        w.take({1: poll()}, PODS, 160.0)
        assert w.take({1: OSError("reset")}, PODS, 200.0).outcome is JobOutcome.RUNNING


class TestSucceeded:
    def test_every_node_exited_0_and_was_read_to_the_end(self):
        w = wait()
        polls = {r: poll(X, 0, b"done\n", ended=1000 + 10 * r) for r in range(3)}
        step = w.take(polls, PODS, 50.0)
        assert step.outcome is JobOutcome.SUCCEEDED
        assert step.kill == ()
        assert step.lines == ("[node 0] done", "[node 1] done", "[node 2] done")
        assert step.xcom({"loss": 0.1}) == {
            "nodes": [
                {"rank": 0, "host": "h0", "exit_code": 0, "seconds": 0},
                {"rank": 1, "host": "h1", "exit_code": 0, "seconds": 10},
                {"rank": 2, "host": "h2", "exit_code": 0, "seconds": 20},
            ],
            "result": {"loss": 0.1},
        }

    def test_success_waits_for_output_still_on_the_node_and_asks_to_poll_again_at_once(self):
        w = wait(NODES[:1])
        step = w.take({0: poll(X, 0, b"x" * 10, size=30, cap=10, ended=1001)}, PODS, 1.0)
        assert step.outcome is JobOutcome.RUNNING
        assert step.again
        step = w.take({0: poll(X, 0, b"tail\n", start=25, size=30, ended=1001)}, PODS, 1.1)
        assert step.outcome is JobOutcome.SUCCEEDED
        assert step.lines == ("[node 0] tail",)

    def test_an_unterminated_last_line_of_an_ended_node_is_logged(self):
        step = wait(NODES[:1]).take({0: poll(X, 0, b"a\nlast", ended=1000)}, PODS, 1.0)
        assert step.lines == ("[node 0] a", "[node 0] last")
        assert step.outcome is JobOutcome.SUCCEEDED

    def test_nodes_finished_in_earlier_polls_count(self):
        w = wait(NODES[:2])
        assert w.take({0: poll(X, 0, ended=1000), 1: poll()}, PODS, 1.0).outcome is JobOutcome.RUNNING
        assert w.take({1: poll(X, 0, ended=1005)}, PODS, 2.0).outcome is JobOutcome.SUCCEEDED

    def test_the_setup_barrier_is_the_same_wait_on_the_setup_phase(self):
        w = wait(NODES[:2], phase="setup")
        step = w.take({r: poll(X, 0, ended=1000, phase="setup") for r in range(2)}, PODS, 1.0)
        assert step.outcome is JobOutcome.SUCCEEDED


class TestFailed:
    def test_the_first_node_to_exit_non_zero_fails_the_job_with_its_last_20_lines_and_the_others_are_killed(
        self,
    ):
        w = wait()
        early = b"".join(b"out %d\n" % i for i in range(30))
        w.take({1: poll(data=early)}, PODS, 1.0)
        step = w.take(
            {
                0: poll(X, 2, ended=1050),
                1: poll(X, 1, b"Traceback\nRuntimeError: NCCL timeout\n", start=len(early), ended=1040),
                2: poll(),
            },
            PODS,
            2.0,
        )
        assert step.outcome is JobOutcome.FAILED
        assert isinstance(step.error, PrimeJobFailedError)
        assert step.kill == (0, 1, 2)  # every node: an ended phase may have left processes behind
        message = str(step.error)
        assert message.startswith(
            "The job's command failed on node 1 (pod-a node 2, root@h1:22): it exited with code 1. "
            "Its last 20 lines:\n  out 12\n"
        )
        assert "  out 11\n" not in message
        assert "  RuntimeError: NCCL timeout\n" in message
        assert message.endswith("The whole log is at /home/root/.prime-jobs/j/output.log on h1.")

    def test_on_the_same_second_the_lowest_rank_is_named(self):
        step = wait().take({2: poll(X, 1, ended=1000), 1: poll(X, 1, ended=1000)}, PODS, 1.0)
        assert "node 1 (" in str(step.error)
        assert step.kill == (0, 1, 2)

    @pytest.mark.parametrize(
        ("state", "says"),
        [
            (K, "was killed by a kill of this job"),
            (L, "ended without an exit code: its processes were killed from outside the job"),
            (PhaseState.ABSENT, "was never launched there"),
        ],
    )
    def test_killed_lost_or_never_launched_fail(self, state, says):
        step = wait().take({0: poll(state)}, PODS, 1.0)
        assert step.outcome is JobOutcome.FAILED
        assert says in str(step.error)
        assert "(no output)" in str(step.error)

    def test_a_job_directory_gone_from_a_node_fails(self):
        step = wait().take({0: Poll(Probe(phases={}))}, PODS, 1.0)
        assert "The job's directory is gone from node 0" in str(step.error)

    def test_a_node_unreachable_longer_than_the_grace_fails_naming_it(self):
        w = wait(unreachable_grace=60.0)
        w.take({2: OSError("Connection reset")}, PODS, 100.0)
        step = w.take({2: OSError("Connection reset")}, PODS, 160.0)
        assert step.outcome is JobOutcome.FAILED
        assert step.kill == (0, 1, 2)
        assert str(step.error).startswith(
            "node 2 (pod-b node 1, root@h2:22) has not answered over SSH for 60 s "
            "(the grace is 60 s): Connection reset"
        )

    @pytest.mark.parametrize("state", ["ERROR", "TERMINATED", "DELETING", "STOPPED"])
    def test_a_pod_that_breaks_under_the_job_fails_it_with_the_platforms_reason(self, state):
        pods = {**PODS, "pod-b": pod("pod-b", status=state, installation_failure="GPU fell off the bus")}
        step = wait().take({0: poll()}, pods, 1.0)
        assert step.outcome is JobOutcome.FAILED
        assert isinstance(step.error, PrimePodFailedError)
        assert str(step.error) == (
            f"A pod under the job failed while it ran: pod-b: pod is {state} "
            "(installation failure: GPU fell off the bus)"
        )
        assert step.kill == (0, 1, 2)  # pod-b's node too: one node of several may have died

    def test_a_pod_that_vanished_fails_after_the_missing_grace(self):
        w = wait(missing_grace=30.0)
        assert w.take({}, {"pod-a": PODS["pod-a"]}, 100.0).outcome is JobOutcome.RUNNING
        w.take({}, PODS, 110.0)  # back: the clock resets
        assert w.take({}, {"pod-a": PODS["pod-a"]}, 120.0).outcome is JobOutcome.RUNNING
        step = w.take({}, {"pod-a": PODS["pod-a"]}, 150.0)
        assert (
            str(step.error) == "A pod under the job failed while it ran: "
            "pod-b: not in the Prime API's answer any more (deleted?)"
        )

    def test_a_pod_failure_outranks_the_node_failures_it_causes(self):
        pods = {**PODS, "pod-a": pod("pod-a", status="TERMINATED")}
        step = wait().take({0: poll(L), 1: OSError("gone")}, pods, 1.0)
        assert isinstance(step.error, PrimePodFailedError)
        assert step.kill == (0, 1, 2)

    def test_the_timeout_message_names_the_nodes_still_running(self):
        w = wait()
        w.take({0: poll(X, 0, ended=1000), 1: poll(), 2: poll()}, PODS, 1.0)
        assert w.timeout_message() == (
            "The job's command did not finish by the deadline 2033-05-18T03:33:20+00:00; still running on: "
            "node 1 (pod-a node 2, root@h1:22), node 2 (pod-b node 1, root@h2:22)"
        )

    def test_a_wait_needs_nodes(self):
        with pytest.raises(ValueError, match="at least one node"):
            JobWait((), deadline=0.0)


class TestOnRealNodes:
    """Two nodes as two home directories, driven by the wait as the operator's drivers will."""

    def drive(self, nodes: list[Node], w: JobWait, now: float) -> tuple[list[str], object]:
        logged: list[str] = []
        for _ in range(2000):
            polls = {r: parse_poll(n.run(poll_script(JOB, w.offsets[r]))) for r, n in enumerate(nodes)}
            step = w.take(polls, PODS, now)
            logged.extend(step.lines)
            if step.outcome is not JobOutcome.RUNNING:
                return logged, step
            now += 1
        raise AssertionError("the job did not end")

    def test_a_two_node_job_logs_every_line_once_and_returns_rank_0s_result(self, tmp_path: Path):
        nodes = [Node(tmp_path / "n0"), Node(tmp_path / "n1")]
        script = (
            'for i in 1 2 3; do echo "step $i rank $PRIME_NODE_RANK"; done; printf partial-end; '
            '[ "$PRIME_NODE_RANK" = 0 ] && echo \'{"ok": true}\' > "$PRIME_RESULT_FILE"; true'
        )
        for rank, n in enumerate(nodes):
            n.home.mkdir()
            n.run(launch_script(JOB, "command", script, {"PRIME_NODE_RANK": str(rank)}))
        logged, step = self.drive(nodes, wait(tuple(NODES[:2])), 0.0)
        assert sorted(logged) == sorted(
            [f"[node {r}] step {i} rank {r}" for r in range(2) for i in (1, 2, 3)]
            + [f"[node {r}] partial-end" for r in range(2)]
        )
        result = parse_result(nodes[0].run(result_script(JOB))).value
        assert step.outcome is JobOutcome.SUCCEEDED  # type: ignore[attr-defined]
        assert step.xcom(result)["result"] == {"ok": True}  # type: ignore[attr-defined]

    def test_rank_1_fails_the_job_and_rank_0_is_killed(self, tmp_path: Path):
        nodes = [Node(tmp_path / "n0"), Node(tmp_path / "n1")]
        scripts = [
            'echo waiting; while [ ! -f "$PRIME_JOB_DIR/go" ]; do sleep 0.02; done',
            "echo boom; exit 3",
        ]
        for n, script in zip(nodes, scripts, strict=True):
            n.home.mkdir()
            n.run(launch_script(JOB, "command", script, {}))
        _, step = self.drive(nodes, wait(tuple(NODES[:2])), 0.0)
        assert "failed on node 1" in str(step.error)
        assert "  boom\n" in str(step.error)
        assert step.kill == (0, 1)  # type: ignore[attr-defined]
        group = int((nodes[0].dir / "command.pid").read_text().split()[0])
        for rank in step.kill:  # type: ignore[attr-defined]
            nodes[rank].run(kill_script(JOB, grace=2))
        until(lambda: live_members(group) == [])
