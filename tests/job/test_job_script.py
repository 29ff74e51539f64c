"""The remote side of a job, run for real with the local ``bash`` in a temporary home directory.

No SSH is needed: a node runs each script as ``bash -s`` with the script on stdin, exactly as here.
Ordering is driven by files the test creates (a job waits for ``go``), never by sleeping.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from airflow_provider_prime.job_script import (
    LOG_FILE,
    LogChunk,
    PhaseState,
    PrimeJobError,
    Probe,
    commit_script,
    kill_script,
    launch_script,
    parse_poll,
    parse_probe,
    parse_result,
    poll_script,
    read_lines,
    result_script,
    shell_path,
)
from tests.job.local_node import JOB, WAIT_GO, Node, live_members, until

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc (Linux)")


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    """A node whose job is killed at the end, and which must then have no process of it alive."""
    simulated = Node(tmp_path)
    yield simulated
    simulated.run(kill_script(JOB, grace=0.5))
    for phase in ("setup", "command"):
        pid_file = simulated.dir / f"{phase}.pid"
        if pid_file.exists():
            assert live_members(int(pid_file.read_text().split()[0])) == []


class TestLaunch:
    def test_a_job_runs_detached_with_its_environment_in_its_directory(self, node: Node):
        env = {"PRIME_NODE_RANK": "1", "TRICKY": "a 'b' \"c\" $HOME `x` \\n"}
        probe = node.launch(
            'echo "rank=$PRIME_NODE_RANK"; echo "tricky=$TRICKY"; pwd; echo "$PRIME_RESULT_FILE"', env=env
        )
        assert probe.action == ("launched",)
        assert probe.directory == str(node.dir)
        probe = node.wait_for()
        assert probe.phase("command").exit_code == 0
        lines, offset = node.read_all()
        assert lines == [
            "rank=1",
            "tricky=a 'b' \"c\" $HOME `x` \\n",
            str(node.dir),
            f"{node.dir}/result.json",
        ]
        assert offset == probe.log_size
        assert (node.dir / "env").stat().st_mode & 0o777 == 0o600

    def test_the_gpus_are_counted_on_the_node_unless_given(self, node: Node):
        node.launch("echo gpus=$PRIME_GPUS_PER_NODE")
        node.wait_for()
        assert node.read_all()[0] == ["gpus=0"]  # no nvidia-smi here
        node.launch("echo gpus=$PRIME_GPUS_PER_NODE", env={"PRIME_GPUS_PER_NODE": "8"}, expect_launches=1)
        node.wait_for()
        assert node.read_all()[0][-1] == "gpus=8"

    def test_the_working_directory_is_created_under_the_home(self, node: Node):
        node.launch("pwd", working_dir="work/here")
        node.wait_for()
        assert node.read_all()[0] == [str(node.home / "work/here")]
        assert shell_path("~") == '"$HOME"'
        assert shell_path("/abs dir") == "'/abs dir'"
        assert shell_path("~/x y") == shell_path("x y") == "\"$HOME\"/'x y'"

    def test_the_exit_code_and_times_are_recorded(self, node: Node):
        node.launch("exit 7")
        phase = node.wait_for().phase("command")
        assert (phase.state, phase.exit_code, phase.succeeded, phase.launches) == (
            PhaseState.EXITED,
            7,
            False,
            1,
        )
        assert phase.seconds is not None
        assert phase.seconds >= 0

    def test_a_running_phase_is_adopted_never_launched_twice(self, node: Node):
        node.launch(WAIT_GO)
        again = node.launch(WAIT_GO)  # a retry, or a launch re-sent after a lost answer
        assert again.action == ("running",)
        assert again.phase("command").launches == 1
        node.go()
        assert node.wait_for().phase("command").launches == 1

    def test_a_launch_happens_only_at_the_launch_count_it_expects(self, node: Node):
        node.launch("echo first; exit 1")
        node.wait_for()
        stale = node.launch("echo second", expect_launches=0)
        assert stale.action == ("changed",)
        assert stale.phase("command").launches == 1
        first_size = stale.log_size
        relaunched = node.launch("echo second", expect_launches=1)
        assert relaunched.action == ("launched",)
        probe = node.wait_for()
        assert (probe.phase("command").launches, probe.phase("command").exit_code) == (2, 0)
        assert probe.phase("command").log_start == first_size
        # A new reader of the second launch starts after the first launch's output.
        assert node.read_all(probe.resume_offset())[0] == ["second"]
        assert node.read_all(0)[0] == ["first", "second"]  # the log is never truncated

    def test_setup_and_command_are_separate_phases_sharing_one_log(self, node: Node):
        node.launch("echo setting up", phase="setup")
        assert node.wait_for("setup").phase("setup").succeeded
        node.launch("echo training")
        probe = node.wait_for()
        assert probe.phase("setup").succeeded
        assert probe.phase("command").succeeded
        assert node.read_all()[0] == ["setting up", "training"]

    def test_what_the_command_leaves_behind_in_its_group_is_terminated_at_exit(self, node: Node):
        node.launch("sleep 300 & echo started")
        probe = node.wait_for()
        assert probe.phase("command").exit_code == 0
        until(lambda: live_members(probe.phase("command").pid or 0) == [])

    def test_a_node_without_setsid_is_refused_with_the_reason(self, tmp_path: Path):
        bin_dir = tmp_path / "bin"
        bin_dir.mkdir()
        for tool in ("bash", "mkdir", "cat"):
            (bin_dir / tool).symlink_to(shutil.which(tool) or tool)
        bare = Node(tmp_path / "home", str(bin_dir))
        (tmp_path / "home").mkdir()
        with pytest.raises(PrimeJobError, match="setsid is not installed on this node"):
            parse_probe(bare.run(launch_script(JOB, "command", "true", {})))

    def test_unknown_phases_are_refused(self):
        with pytest.raises(ValueError, match="not a phase"):
            launch_script(JOB, "train", "true", {})


class TestLogs:
    def test_a_partial_line_is_read_once_whole_when_it_completes(self, node: Node):
        node.launch(f"printf 'one\\ntw'; {WAIT_GO}; printf 'o\\nthree'")
        until(lambda: node.probe().log_size == 6)
        lines, offset = node.read_all()
        assert (lines, offset) == (["one"], 4)
        assert node.read_all(offset) == ([], 4)  # nothing new: nothing repeated
        node.go()
        node.wait_for()
        # The job ended: its unterminated last line counts too.
        assert node.read_all(offset) == (["two", "three"], 13)

    def test_a_flood_is_capped_on_the_node_and_the_skipped_lines_counted(self, node: Node):
        node.launch("for i in $(seq 1 5000); do echo line-$i; done")
        node.wait_for()
        poll = parse_poll(node.run(poll_script(JOB, 0, cap=100)))
        chunk = poll.chunk
        assert chunk is not None
        assert len(chunk.data) == 100
        read = read_lines(chunk, final=True)
        total = sum(len(f"line-{i}\n") for i in range(1, 5001))
        assert read.next_offset == total
        assert read.lines[-1] == "line-5000"
        assert read.skipped_lines + len(read.lines) == 5000  # every line shown or counted, once
        assert all(line.startswith("line-") for line in read.lines)

    def test_a_skip_that_ends_on_a_line_boundary_keeps_the_next_line_whole(self, node: Node):
        node.launch("printf 'aaaa\\nbbbb\\ncccc\\n'")
        node.wait_for()
        poll = parse_poll(node.run(poll_script(JOB, 0, cap=10)))
        assert poll.chunk is not None
        assert poll.chunk.clean
        assert read_lines(poll.chunk, final=True) == read_lines(poll.chunk, final=True)
        read = read_lines(poll.chunk, final=True)
        assert (read.lines, read.skipped_lines, read.next_offset) == (("bbbb", "cccc"), 1, 15)

    def test_delivered_only_rises_and_is_reported(self, node: Node):
        node.launch("echo x")
        node.wait_for()
        assert parse_probe(node.run(commit_script(JOB, 10))).delivered == 10
        assert parse_probe(node.run(commit_script(JOB, 5))).delivered == 10  # an older reader
        assert parse_poll(node.run(poll_script(JOB, 0, commit=12))).probe.delivered == 12

    def test_the_probe_reports_a_missing_job_directory_as_absent(self, node: Node):
        assert node.probe().absent
        assert parse_poll(node.run(poll_script(JOB, 0))).chunk is None
        assert parse_probe(node.run(kill_script(JOB))).absent


class TestKill:
    def test_the_whole_group_is_killed_children_included(self, node: Node):
        node.launch(f"sleep 300 & sleep 300 & echo children; {WAIT_GO}")
        probe = node.wait_for(state=PhaseState.RUNNING)
        group = probe.phase("command").pid or 0
        until(lambda: len(live_members(group)) >= 4)  # runner, bash -l, two sleeps
        killed = parse_probe(node.run(kill_script(JOB, grace=5)))
        assert killed.action == ("killed", "1", "0")
        assert killed.phase("command").state is PhaseState.KILLED
        assert live_members(group) == []

    def test_what_ignores_term_is_killed_after_the_grace(self, node: Node):
        node.launch(f"trap '' TERM; sh -c \"trap '' TERM; echo ready; {WAIT_GO}\"")
        probe = node.wait_for(state=PhaseState.RUNNING)
        until(lambda: "ready" in node.read_all()[0])
        killed = parse_probe(node.run(kill_script(JOB, grace=0.2)))
        assert killed.action == ("killed", "1", "1")
        assert live_members(probe.phase("command").pid or 0) == []

    def test_a_leader_killed_from_outside_is_lost_not_running(self, node: Node):
        node.launch(WAIT_GO)
        pid = node.wait_for(state=PhaseState.RUNNING).phase("command").pid or 0
        os.kill(pid, signal.SIGKILL)
        assert node.wait_for(state=PhaseState.LOST).phase("command").exit_code is None

    def test_a_reused_pid_is_neither_running_nor_killed(self, node: Node, tmp_path: Path):
        node.launch("true")
        node.wait_for()
        stranger = subprocess.Popen(["sleep", "300"], start_new_session=True)
        try:
            (node.dir / "command.exit").unlink()
            (node.dir / "command.pid").write_text(f"{stranger.pid} 1\n")  # another start time
            assert node.probe().phase("command").state is PhaseState.LOST
            assert parse_probe(node.run(kill_script(JOB, grace=0.1))).action == ("killed", "0", "0")
            assert stranger.poll() is None
        finally:
            stranger.kill()
            stranger.wait()


class TestResult:
    def test_rank_0s_json_result(self, node: Node):
        node.launch('echo \'{"loss": 0.25, "steps": [1, 2]}\' > "$PRIME_RESULT_FILE"')
        node.wait_for()
        assert parse_result(node.run(result_script(JOB))).value == {"loss": 0.25, "steps": [1, 2]}

    def test_no_result_file_or_no_job_is_none(self, node: Node):
        assert parse_result(node.run(result_script(JOB))).value is None
        node.launch("true")
        node.wait_for()
        assert parse_result(node.run(result_script(JOB))).value is None

    def test_a_result_too_large_or_not_json_is_not_used_and_says_why(self, node: Node):
        node.launch('printf "not json" > "$PRIME_RESULT_FILE"')
        node.wait_for()
        read = parse_result(node.run(result_script(JOB)))
        assert read.value is None
        assert read.problem is not None
        assert "not JSON" in read.problem
        (node.dir / "result.json").write_text(json.dumps("x" * 100))
        read = parse_result(node.run(result_script(JOB, limit=50)))
        assert read.value is None
        assert read.problem == ("the result file is 102 bytes, more than the limit; it was not read")


class TestReaders:
    def test_an_answer_that_is_not_a_job_report_is_refused(self):
        with pytest.raises(PrimeJobError, match="not a job report"):
            parse_probe(b"bash: command not found")
        with pytest.raises(PrimeJobError, match="no log line"):
            parse_probe("prime-job v1\nphase command state=running\n")
        with pytest.raises(PrimeJobError, match="unknown state"):
            parse_probe("prime-job v1\nphase command state=odd\nlog size=0 delivered=0 dir=/x\n")
        with pytest.raises(PrimeJobError, match="cut short"):
            parse_poll(b"prime-job v1\nlog size=9 delivered=0 dir=/x\nread from=0 length=9\nabc")
        with pytest.raises(PrimeJobError, match="not readable"):
            parse_result("prime-job v1\nsomething else\n")

    def test_a_line_longer_than_the_cap_comes_in_pieces_instead_of_stalling(self):
        chunk = LogChunk(start=0, data=b"x" * 8, size=20, cap=8)
        assert read_lines(chunk).lines == ("x" * 8,)
        assert read_lines(chunk).next_offset == 8

    def test_a_cut_line_after_a_skip_is_dropped_and_counted(self):
        chunk = LogChunk(
            start=10, data=b"ail\nnext\n", size=19, cap=9, skipped_bytes=10, skipped_lines=2, clean=False
        )
        read = read_lines(chunk)
        assert (read.lines, read.skipped_lines, read.next_offset) == (("next",), 3, 19)
        no_newline = LogChunk(start=10, data=b"middle", size=16, cap=6, skipped_bytes=10, clean=False)
        assert read_lines(no_newline) == read_lines(no_newline)
        assert read_lines(no_newline).next_offset == 16
        assert read_lines(no_newline).lines == ()

    def test_progress_bars_show_their_last_state_and_bad_bytes_do_not_break_a_line(self):
        chunk = LogChunk(start=0, data=b"10%\r50%\r100%\n\xff ok\n\r\n", size=19, cap=100)
        assert read_lines(chunk).lines == ("100%", "\ufffd ok", "")

    def test_log_path_and_a_truncated_log_is_read_from_its_start(self):
        probe = Probe(phases={}, log_size=5, delivered=50, directory="/j")
        assert probe.resume_offset() == 0  # truncated under the job: its new content is read from the start
        assert probe.log_path == f"/j/{LOG_FILE}"
