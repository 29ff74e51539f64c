"""The remote side of a job, as shell text, and pure readers of what it prints.

Every function here returns a bash script for one node, or parses that script's output; none does
I/O. The operator and its trigger send each script to a node as the standard input of
:data:`REMOTE_COMMAND` (``bash -s``), so nothing of it (the env's values) shows in a process list,
and no quoting depends on the login shell. Every value inside a script is quoted with ``shlex``.

**The job directory** (``PRIME_JOB_DIR``, :func:`.job_ids.job_dir`, relative paths under the SSH
user's home) holds, per phase (``setup``, then ``command``)::

    env                the job's environment (export lines; mode 0600)
    runner.sh          the wrapper that runs a phase (below)
    <phase>.sh         the user's text for that phase
    <phase>.launches   how many times the phase was launched (a compare-and-set guard)
    <phase>.pid        "<pid> <start time>" of the phase's process-group leader
    <phase>.started    epoch second the phase started
    <phase>.exit       "<exit code> <epoch second it ended>", written atomically
    <phase>.killed     written by the kill script before it signals the group
    <phase>.log_start  the log's size when the phase was launched
    output.log         stdout and stderr of every phase and launch, appended, never truncated
    delivered          the byte offset of the log up to which lines reached Airflow
    result.json        what rank 0 may write (PRIME_RESULT_FILE)

**A phase runs detached**: ``setsid nohup bash runner.sh`` with stdin from ``/dev/null`` and output
to the log, so it outlives the SSH session, the worker and the triggerer. The runner is the leader
of its own process group; it runs the phase in ``bash -l`` (after the env file, in the working
directory), then TERMs what the phase left behind in its group, then writes the exit file. A
phase is *running* while its leader lives; *exited* once the exit file exists; *killed* when the
kill script marked it and its leader died without an exit file; *lost* when its leader died
without either (the node restarted, or a SIGKILL from outside); *absent* before any launch.
Liveness ignores zombies (a container's PID 1 need not reap orphans) and a reused pid (the start
time is compared), reading ``/proc``; without ``/proc`` it falls back to ``kill -0``.

**"setup must succeed on every node before command starts anywhere"** is a barrier the operator
holds: it launches the ``setup`` phase on every node, waits until all exited 0 (the same wait as
for ``command``), and only then launches ``command``. Adoption and restart are decided for the
whole job by :mod:`.job_plan`; a launch script only guards against launching twice: it launches
when the phase is not running and has been launched exactly ``expect_launches`` times, so a
launch re-sent after a lost answer does nothing.

**Logs** are read by byte offset (:func:`poll_script`, :func:`read_lines`): one command per poll
prints the state of both phases, then at most ``cap`` bytes of the log from the offset. A node
that printed more than ``cap`` since the offset has the older part skipped on the node (counted in
lines, never sent). The offset only ever advances to the end of a complete line, so a partial last
line is read again whole next time: no line is lost or repeated, whoever reads next.
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any

from airflow_provider_prime.exceptions import PrimeJobError
from airflow_provider_prime.job_env import RESULT_FILE_NAME

#: How every script is run on a node: ``bash`` reading the script from its standard input.
REMOTE_COMMAND = "bash -s"
#: The phases of a job, in the order they run.
PHASES = ("setup", "command")
#: The log of every phase, in the job directory.
LOG_FILE = "output.log"
#: Bytes of log read per node per poll (at most); older output beyond it is skipped and counted.
DEFAULT_LOG_CAP = 64 * 1024
#: The largest result file read back (rank 0's JSON).
DEFAULT_RESULT_LIMIT = 1024 * 1024
#: Seconds between TERM and KILL when a job is killed.
DEFAULT_KILL_GRACE = 10.0
#: The first line of every script's output, so an answer from something else is never parsed.
HEADER = "prime-job v1"
#: How the kill script and a launch report ("prime-job error <why>") what they could not do.
_ERROR = "prime-job error "
_ABSENT = "absent"
_NO_SETSID = "setsid is not installed on this node (util-linux); it is needed to run the job detached"


class PhaseState(str, Enum):
    """Where one phase of a job stands on one node."""

    ABSENT = "absent"
    RUNNING = "running"
    EXITED = "exited"
    KILLED = "killed"
    LOST = "lost"


# --- shell pieces ------------------------------------------------------------------------------

# Functions every script shares. ``prime_stat PID`` sets PSTATE/PSTART from /proc (field 3 and 22
# of /proc/PID/stat, read after the last ")" so a command name with spaces cannot shift them).
_FUNCTIONS = r"""
prime_stat() {
  local line rest
  PSTATE= PSTART=
  if [ -r /proc/self/stat ]; then
    { read -r line < "/proc/$1/stat"; } 2>/dev/null || return 1
    rest=${line##*) }
    set -- $rest
    PSTATE=$1 PSTART=${20:-}
    return 0
  fi
  kill -0 "$1" 2>/dev/null || return 1
  PSTATE=S PSTART=-
}
prime_leader_alive() {
  prime_stat "$1" || return 1
  [ "$PSTATE" != Z ] && { [ "$2" = - ] || [ "$PSTART" = "$2" ]; }
}
prime_group_ours() {
  kill -0 -- "-$1" 2>/dev/null || return 1
  if prime_stat "$1"; then [ "$2" = - ] || [ "$PSTART" = "$2" ]; else return 0; fi
}
prime_group_live() {
  local f line rest
  kill -0 -- "-$1" 2>/dev/null || return 1
  [ -r /proc/self/stat ] || return 0
  for f in /proc/[0-9]*/stat; do
    { read -r line < "$f"; } 2>/dev/null || continue
    rest=${line##*) }
    set -- $1 $rest
    [ "${4:-}" = "$1" ] && [ "$2" != Z ] && return 0
  done
  return 1
}
prime_read() {
  local value=$2
  [ -f "$1" ] && { read -r value < "$1" || [ -n "$value" ]; }
  printf '%s' "$value"
}
prime_state() {
  S=absent RC=- ENDED=- PID=- START=- STARTED=-
  LAUNCHES=$(prime_read "$1.launches" 0)
  LOG_START=$(prime_read "$1.log_start" 0)
  STARTED=$(prime_read "$1.started" -)
  if [ -f "$1.pid" ]; then read -r PID START < "$1.pid"; fi
  if [ -f "$1.exit" ]; then
    S=exited
    read -r RC ENDED < "$1.exit"
  elif [ "$PID" != - ]; then
    if prime_leader_alive "$PID" "${START:--}"; then S=running
    elif [ -f "$1.killed" ]; then S=killed
    else S=lost
    fi
  elif [ "$LAUNCHES" != 0 ]; then
    S=lost
  fi
}
prime_report() {
  local p size delivered
  echo "prime-job v1"
  for p in setup command; do
    prime_state "$p"
    echo "phase $p state=$S rc=$RC pid=$PID started=$STARTED ended=$ENDED" \
      "launches=$LAUNCHES log_start=$LOG_START"
  done
  size=0
  [ -f output.log ] && size=$(wc -c < output.log | tr -d ' ')
  delivered=$(prime_read delivered 0)
  echo "log size=$size delivered=$delivered dir=$PWD"
}
"""

# The runner of one phase: ``runner.sh PHASE WORKDIR`` in the job directory, under setsid.
_RUNNER = r"""phase=$1
start=-
if [ -r /proc/self/stat ]; then
  read -r line < "/proc/$$/stat"
  rest=${line##*) }
  set -- "$@" $rest
  start=${22:-}
  set -- "$1" "$2"
fi
printf '%s %s\n' "$$" "$start" > "$phase.pid.tmp" && mv -f "$phase.pid.tmp" "$phase.pid"
date +%s > "$phase.started"
bash -lc '
. "$0/env"
export PRIME_JOB_DIR="$0" PRIME_RESULT_FILE="$0/__RESULT__"
if [ -z "${PRIME_GPUS_PER_NODE:-}" ]; then
  PRIME_GPUS_PER_NODE=$(nvidia-smi -L 2>/dev/null | grep -c "^GPU " || true)
  export PRIME_GPUS_PER_NODE
fi
mkdir -p -- "$1" && cd -- "$1" || exit 1
__prime_phase=$2
set --
. "$PRIME_JOB_DIR/$__prime_phase.sh"
' "$PWD" "$2" "$phase"
rc=$?
ended=${EPOCHREALTIME:-}
ended=${ended/,/.}
[ -n "$ended" ] || ended=$(date +%s)
trap '' TERM
kill -TERM -- "-$$" 2>/dev/null
printf '%s %s\n' "$rc" "$ended" > "$phase.exit.tmp" && mv -f "$phase.exit.tmp" "$phase.exit"
""".replace("__RESULT__", RESULT_FILE_NAME)


def shell_path(path: str) -> str:
    """``path`` as one shell word: ``~`` and ``~/x`` under ``$HOME``, relative paths too (where an SSH
    session starts), absolute ones as they are."""
    if path in ("~", ""):
        return '"$HOME"'
    if path.startswith("~/"):
        path = path[2:]
    if path.startswith("/"):
        return shlex.quote(path)
    return '"$HOME"/' + shlex.quote(path)


def _enter(job_dir: str, *, create: bool) -> str:
    where = shell_path(job_dir)
    if create:
        return (
            f"mkdir -p -- {where} && cd -- {where} || "
            f"{{ echo {shlex.quote(_ERROR + 'cannot create the job directory ' + job_dir)}; exit 0; }}\n"
        )
    return f"cd -- {where} 2>/dev/null || {{ echo {shlex.quote(HEADER)}; echo {_ABSENT}; exit 0; }}\n"


def _check_phase(phase: str) -> None:
    if phase not in PHASES:
        raise ValueError(f"not a phase: {phase!r} (one of {', '.join(PHASES)})")


# Two launches of one phase at once (two tries racing, a launch re-sent while the first still runs)
# must not both read "launched N times" and both launch: the check and the launch hold a lock. flock
# (util-linux, like setsid) releases it when the script ends, however it ends; without flock, a
# directory is the lock, taken over after 15 s so a launch that died holding it blocks no one forever.
_LOCK = r"""if command -v flock >/dev/null 2>&1; then
  exec 9>"$phase.lock" && flock 9
else
  i=0
  until mkdir "$phase.lockdir" 2>/dev/null; do
    i=$((i + 1)); [ $i -ge 300 ] && break; sleep 0.05
  done
  trap 'rmdir "$phase.lockdir" 2>/dev/null' EXIT
fi
"""


def env_file(env: Mapping[str, str]) -> str:
    """The env file: one ``export NAME='value'`` line per variable."""
    return "".join(f"export {name}={shlex.quote(value)}\n" for name, value in env.items())


def launch_script(
    job_dir: str,
    phase: str,
    text: str,
    env: Mapping[str, str],
    *,
    expect_launches: int | None = 0,
    working_dir: str | None = None,
) -> str:
    """Launch ``phase`` (``text``, run by ``bash -l``) detached on a node, unless it runs already.

    It launches only when the phase is not running and was launched ``expect_launches`` times
    before (``None``: whatever the count); otherwise it says why not (``action running`` or
    ``action changed``). The output is :func:`parse_probe`'s, with the action taken.
    ``working_dir`` (created if missing; relative to the home directory) defaults to the job directory.
    """
    _check_phase(phase)
    expect = -1 if expect_launches is None else int(expect_launches)
    workdir = '"$PWD"' if working_dir is None else shell_path(working_dir)
    q = shlex.quote
    return (
        "set -u\numask 077\ncd || exit 0\n"
        + _enter(job_dir, create=True)
        + "command -v setsid >/dev/null 2>&1 || "
        + f"{{ echo {q(_ERROR + _NO_SETSID)}; exit 0; }}\n"
        + _FUNCTIONS
        + f"phase={q(phase)}\nworkdir={workdir}\n"
        + _LOCK
        + 'prime_state "$phase"\n'
        + 'if [ "$S" = running ]; then action=running\n'
        + f'elif [ {expect} -ge 0 ] && [ "$LAUNCHES" != {expect} ]; then action=changed\n'
        + "else\n"
        + f"  printf '%s' {q(env_file(env))} > env.tmp && mv -f env.tmp env\n"
        + f'  printf \'%s\\n\' {q(text)} > "$phase.sh.tmp" && mv -f "$phase.sh.tmp" "$phase.sh"\n'
        # Replaced, not rewritten in place: bash reads a running script as it goes.
        + f"  printf '%s' {q(_RUNNER)} > runner.sh.tmp && mv -f runner.sh.tmp runner.sh\n"
        + '  rm -f "$phase.pid" "$phase.exit" "$phase.killed" "$phase.started"\n'
        + '  echo $((LAUNCHES + 1)) > "$phase.launches"\n'
        + f"  touch {LOG_FILE}\n"
        + f'  wc -c < {LOG_FILE} | tr -d " " > "$phase.log_start"\n'
        # 9>&-: the phase must not inherit the launch lock, or it would hold it for its whole life.
        + f'  setsid nohup bash runner.sh "$phase" "$workdir" < /dev/null >> {LOG_FILE} 2>&1 9>&- &\n'
        + '  i=0\n  while [ ! -s "$phase.pid" ] && [ $i -lt 200 ]; do sleep 0.05; i=$((i + 1)); done\n'
        + "  action=launched\n"
        + "fi\n"
        + "prime_report\n"
        + 'echo "action $action"\n'
    )


def _commit(offset: int) -> str:
    """Raise ``delivered`` to ``offset``, never lower it (an older reader may still be polling)."""
    return (
        f'[ {int(offset)} -gt "$(prime_read delivered 0)" ] && '
        f"echo {int(offset)} > delivered.tmp && mv -f delivered.tmp delivered\n"
    )


def poll_script(job_dir: str, offset: int, *, cap: int = DEFAULT_LOG_CAP, commit: int | None = None) -> str:
    """One poll of a node: record ``commit`` as delivered (when given), report both phases, then
    print at most ``cap`` bytes of the log from byte ``offset`` (:func:`parse_poll` reads it)."""
    if offset < 0 or cap <= 0:
        raise ValueError("offset must be >= 0 and cap > 0")
    save = "" if commit is None else _commit(commit)
    return (
        "set -u\ncd || exit 0\n"
        + _enter(job_dir, create=False)
        + _FUNCTIONS
        + save
        + "prime_report\n"
        + f"from={int(offset)} cap={int(cap)}\n"
        + f"size=0\n[ -f {LOG_FILE} ] && size=$(wc -c < {LOG_FILE} | tr -d ' ')\n"
        # Another reader of the job (a second copy of the trigger during a failover) logged further:
        # read after it, so no line is logged twice.
        + 'd=$(prime_read delivered 0)\n[ "$d" -gt "$from" ] && [ "$d" -le "$size" ] && from=$d\n'
        + '[ "$from" -gt "$size" ] && from=$size\n'
        + "avail=$((size - from)) skipped_bytes=0 skipped_lines=0 clean=1\n"
        + 'if [ "$avail" -gt "$cap" ]; then\n'
        + "  skipped_bytes=$((avail - cap))\n"
        + f"  skipped_lines=$(tail -c +$((from + 1)) {LOG_FILE} | head -c $skipped_bytes"
        + " | tr -cd '\\n' | wc -c | tr -d ' ')\n"
        + "  from=$((from + skipped_bytes)) avail=$cap\n"
        + f"  clean=$(tail -c +$from {LOG_FILE} | head -c 1 | wc -l | tr -d ' ')\n"
        + "fi\n"
        + 'echo "read from=$from size=$size cap=$cap skipped_bytes=$skipped_bytes '
        + 'skipped_lines=$skipped_lines clean=$clean length=$avail"\n'
        + f'[ "$avail" -gt 0 ] && tail -c +$((from + 1)) {LOG_FILE} | head -c $avail\n'
        + "exit 0\n"
    )


def probe_script(job_dir: str) -> str:
    """Report both phases and the log's size, read nothing (:func:`parse_probe`)."""
    return "set -u\ncd || exit 0\n" + _enter(job_dir, create=False) + _FUNCTIONS + "prime_report\n"


def commit_script(job_dir: str, offset: int) -> str:
    """Record that the log reached Airflow up to byte ``offset`` (read back as ``delivered``; only
    ever raised, so a slower reader cannot move it back)."""
    return (
        "set -u\ncd || exit 0\n"
        + _enter(job_dir, create=False)
        + _FUNCTIONS
        + _commit(offset)
        + "prime_report\n"
    )


def kill_script(job_dir: str, *, grace: float = DEFAULT_KILL_GRACE) -> str:
    """Kill every phase's whole process group: TERM, then KILL what is left after ``grace`` seconds.

    A group is signalled only while it is provably the job's (its leader's start time matches, or
    the leader is gone and the group still exists). Output: :func:`parse_probe`'s, with
    ``action killed <groups signalled> <groups that needed KILL>``.
    """
    tenths = max(0, round(grace * 10))
    return (
        "set -u\ncd || exit 0\n"
        + _enter(job_dir, create=False)
        + _FUNCTIONS
        + "groups= forced=0\n"
        + "for p in setup command; do\n"
        + '  [ -f "$p.pid" ] || continue\n'
        + '  read -r pid start < "$p.pid"\n'
        + '  prime_group_ours "$pid" "${start:--}" || continue\n'
        + '  if [ ! -f "$p.exit" ] && prime_leader_alive "$pid" "${start:--}"; then\n'
        + '    date +%s > "$p.killed"\n'
        + "  fi\n"
        + '  kill -TERM -- "-$pid" 2>/dev/null\n'
        + '  groups="$groups $pid"\n'
        + "done\n"
        + "i=0\n"
        + "while :; do\n"
        + "  alive=\n"
        + '  for g in $groups; do prime_group_live "$g" && alive="$alive $g"; done\n'
        + '  [ -z "$alive" ] && break\n'
        + f"  if [ $i -ge {tenths} ]; then\n"
        + '    for g in $alive; do kill -KILL -- "-$g" 2>/dev/null; forced=$((forced + 1)); done\n'
        + "    break\n"
        + "  fi\n"
        + "  sleep 0.1\n  i=$((i + 1))\n"
        + "done\n"
        + "n=0\nfor g in $groups; do n=$((n + 1)); done\n"
        + "prime_report\n"
        + 'echo "action killed $n $forced"\n'
    )


def result_script(job_dir: str, *, limit: int = DEFAULT_RESULT_LIMIT) -> str:
    """Print rank 0's result file, if it exists and is at most ``limit`` bytes (:func:`parse_result`)."""
    name = RESULT_FILE_NAME
    return (
        "set -u\ncd || exit 0\n"
        + _enter(job_dir, create=False)
        + f"echo {shlex.quote(HEADER)}\n"
        + f'if [ ! -f {name} ]; then echo "result none"; exit 0; fi\n'
        + f"size=$(wc -c < {name} | tr -d ' ')\n"
        + f'if [ "$size" -gt {int(limit)} ]; then echo "result too_large $size"; exit 0; fi\n'
        + f'echo "result size $size"\ncat {name}\n'
    )


# --- readers ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Phase:
    """One phase on one node, as the node reported it."""

    name: str
    state: PhaseState
    exit_code: int | None = None
    pid: int | None = None
    started: int | None = None
    ended: int | None = None
    launches: int = 0
    log_start: int = 0
    #: When the phase ended, to the microsecond where the node's bash has ``EPOCHREALTIME`` (5.0+):
    #: which rank failed first is told by it, and a peer that lost its rank ends milliseconds later.
    ended_at: float | None = None

    @property
    def seconds(self) -> int | None:
        """How long the phase ran (node clock), once it ended."""
        if self.started is None or self.ended is None:
            return None
        return self.ended - self.started

    @property
    def succeeded(self) -> bool:
        return self.state is PhaseState.EXITED and self.exit_code == 0


@dataclass(frozen=True)
class Probe:
    """What one node said about the job: each phase, the log, and the action a script took."""

    phases: Mapping[str, Phase]
    log_size: int = 0
    delivered: int = 0
    directory: str | None = None
    action: tuple[str, ...] = ()

    @property
    def absent(self) -> bool:
        """The job directory does not exist on the node."""
        return self.directory is None

    def phase(self, name: str) -> Phase:
        return self.phases.get(name) or Phase(name, PhaseState.ABSENT)

    def resume_offset(self, phase: str = "command") -> int:
        """Where a new reader of ``phase``'s output starts: after what already reached Airflow, and
        never before the phase's latest launch (an earlier launch's output is not re-shown)."""
        size = self.log_size
        # A log truncated under the job (logrotate's copytruncate, ": > output.log") voids the
        # offsets recorded before: read the new content from its start.
        delivered = self.delivered if self.delivered <= size else 0
        launched = self.phase(phase).log_start
        return min(max(delivered, launched if launched <= size else 0), size)

    @property
    def log_path(self) -> str:
        return f"{self.directory or '<job dir>'}/{LOG_FILE}"


@dataclass(frozen=True)
class LogChunk:
    """The bytes of log a poll read: ``data`` starts at byte ``start`` of the log."""

    start: int
    data: bytes
    size: int
    cap: int
    skipped_bytes: int = 0
    skipped_lines: int = 0
    clean: bool = True

    @property
    def reaches_end(self) -> bool:
        """Whether the chunk goes up to the log's size measured in the same poll."""
        return self.start + len(self.data) >= self.size


@dataclass(frozen=True)
class Poll:
    """One poll of one node: its probe and the log chunk read after it."""

    probe: Probe
    chunk: LogChunk | None = None


@dataclass(frozen=True)
class LogLines:
    """Complete lines read from a chunk, where the next read starts, and lines skipped on the way."""

    lines: tuple[str, ...]
    next_offset: int
    skipped_lines: int = 0


@dataclass(frozen=True)
class ResultRead:
    """Rank 0's result: ``value`` (``None`` when absent or unusable), and ``problem`` when unusable."""

    value: Any = None
    problem: str | None = None


_PHASE_LINE = re.compile(r"phase (?P<name>\w+) (?P<fields>.*)")
_FIELDS = re.compile(r"(\w+)=(\S*)")


def _number(text: str | None) -> int | None:
    return int(text) if text is not None and re.fullmatch(r"-?\d+", text) else None


def _moment(text: str | None) -> float | None:
    """An epoch second as the node wrote it: whole (``date +%s``) or with a fraction (``EPOCHREALTIME``)."""
    return float(text) if text is not None and re.fullmatch(r"-?\d+(\.\d+)?", text) else None


def _text(output: bytes | str) -> str:
    return output.decode("utf-8", "replace") if isinstance(output, bytes) else output


def _header_lines(text: str) -> list[str]:
    """The report's lines after the header. Whatever a login file printed before it is ignored,
    even with no newline of its own (a banner glued to the header)."""
    errors = [line.partition(_ERROR)[2] for line in text.splitlines() if _ERROR in line]
    if errors:
        raise PrimeJobError(f"The job's script on the node refused: {'; '.join(errors)}")
    at = text.find(HEADER + "\n")
    if at < 0 and text.rstrip("\n").endswith(HEADER):
        at = len(text.rstrip("\n")) - len(HEADER)
    if at < 0:
        shown = text.strip()[:300]
        raise PrimeJobError(f"The node's answer is not a job report (is bash installed?): {shown!r}")
    return text[at + len(HEADER) :].splitlines()[1:]


def parse_probe(output: bytes | str) -> Probe:
    """Read the report of :func:`probe_script`, :func:`launch_script`, :func:`kill_script` or
    :func:`commit_script` (and the header of :func:`poll_script`'s)."""
    lines = _header_lines(_text(output))
    if lines and lines[0] == "absent":
        return Probe(phases={})
    phases: dict[str, Phase] = {}
    log: dict[str, str] = {}
    action: tuple[str, ...] = ()
    for line in lines:
        match = _PHASE_LINE.fullmatch(line)
        if match:
            values = dict(_FIELDS.findall(match["fields"]))
            ended = _moment(values.get("ended"))
            try:
                state = PhaseState(values.get("state", ""))
            except ValueError as exc:
                raise PrimeJobError(f"The node reported an unknown state: {line!r}") from exc
            phases[match["name"]] = Phase(
                name=match["name"],
                state=state,
                exit_code=_number(values.get("rc")),
                pid=_number(values.get("pid")),
                started=_number(values.get("started")),
                ended=None if ended is None else int(ended),
                ended_at=ended,
                launches=_number(values.get("launches")) or 0,
                log_start=_number(values.get("log_start")) or 0,
            )
        elif line.startswith("log "):
            log = dict(_FIELDS.findall(line))
            directory = line.partition(" dir=")[2]
            log["dir"] = directory
        elif line.startswith("action "):
            action = tuple(line.split()[1:])
        elif line.startswith("read "):
            break
    if not log:
        raise PrimeJobError("The node's job report has no log line; the script's output was cut short")
    return Probe(
        phases=phases,
        log_size=_number(log.get("size")) or 0,
        delivered=_number(log.get("delivered")) or 0,
        directory=log.get("dir") or None,
        action=action,
    )


def parse_poll(output: bytes) -> Poll:
    """Read :func:`poll_script`'s output: the probe, then the raw log bytes after the ``read`` line."""
    header = output.find(HEADER.encode())  # a login file's line "read ..." before it is not the marker
    marker = output.find(b"\nread ", max(header, 0))
    if marker < 0:
        return Poll(parse_probe(output))  # an absent job directory: nothing to read
    end = output.find(b"\n", marker + 1)
    if end < 0:
        raise PrimeJobError("The node's poll answer was cut short after its read line")
    probe = parse_probe(output[:marker])
    values = {k: int(v) for k, v in _FIELDS.findall(output[marker + 1 : end].decode("ascii", "replace"))}
    data = output[end + 1 :]
    length = values.get("length", 0)
    if len(data) < length:
        raise PrimeJobError(f"The node's log read was cut short: {len(data)} of {length} bytes arrived")
    chunk = LogChunk(
        start=values.get("from", 0),
        data=data[:length],
        size=values.get("size", 0),
        cap=values.get("cap", DEFAULT_LOG_CAP),
        skipped_bytes=values.get("skipped_bytes", 0),
        skipped_lines=values.get("skipped_lines", 0),
        clean=bool(values.get("clean", 1)),
    )
    return Poll(probe, chunk)


def _display(raw: bytes) -> str:
    """A line as a log should show it: decoded, and only the last state of a ``\\r``-redrawn line
    (a progress bar), not every redraw."""
    text = raw.decode("utf-8", "replace")
    if "\r" in text:
        parts = [part for part in text.split("\r") if part]
        text = parts[-1] if parts else ""
    return text


def read_lines(chunk: LogChunk, *, final: bool = False) -> LogLines:
    """The complete lines of ``chunk`` and the offset after the last of them.

    A partial last line is left for the next read (the offset stops before it), unless ``final``
    (the phase ended and the chunk reaches the log's end): then it is a line too. A line longer
    than the cap is given in pieces of ``cap`` bytes rather than stalling the reader. After a skip
    that cut a line, its tail is skipped too (and counted).
    """
    data, start, skipped = chunk.data, chunk.start, chunk.skipped_lines
    if chunk.skipped_bytes and not chunk.clean:
        cut = data.find(b"\n")
        if cut < 0:  # all of it is the cut line, which the count must show
            return LogLines((), start + len(data), skipped + 1)
        data, start, skipped = data[cut + 1 :], start + cut + 1, skipped + 1
    last = data.rfind(b"\n")
    complete, rest = data[: last + 1], data[last + 1 :]
    lines = [_display(raw) for raw in complete.split(b"\n")[:-1]]
    consumed = len(complete)
    if rest and ((final and chunk.reaches_end) or len(rest) >= chunk.cap):
        lines.append(_display(rest))
        consumed += len(rest)
    return LogLines(tuple(lines), start + consumed, skipped)


def parse_result(output: bytes | str) -> ResultRead:
    """Read :func:`result_script`'s output: the JSON rank 0 wrote, ``None`` when there is none."""
    text = _text(output)
    lines = _header_lines(text)
    if not lines or lines[0] in ("absent", "result none"):
        return ResultRead()
    first = lines[0]
    if first.startswith("result too_large"):
        size = first.split()[-1]
        return ResultRead(problem=f"the result file is {size} bytes, more than the limit; it was not read")
    if not first.startswith("result size"):
        raise PrimeJobError(f"The node's result answer is not readable: {first!r}")
    body = text.split(first + "\n", 1)[1] if first + "\n" in text else ""
    if not body.strip():
        return ResultRead()
    try:
        return ResultRead(json.loads(body))
    except ValueError as exc:
        return ResultRead(problem=f"the result file is not JSON ({exc})")


@dataclass(frozen=True)
class Scripts:
    """The scripts of one job directory, for a driver that holds it in one place."""

    job_dir: str
    cap: int = DEFAULT_LOG_CAP
    grace: float = DEFAULT_KILL_GRACE
    result_limit: int = DEFAULT_RESULT_LIMIT

    def poll(self, offset: int, commit: int | None = None) -> str:
        return poll_script(self.job_dir, offset, cap=self.cap, commit=commit)

    def kill(self) -> str:
        return kill_script(self.job_dir, grace=self.grace)

    def result(self) -> str:
        return result_script(self.job_dir, limit=self.result_limit)

    def probe(self) -> str:
        return probe_script(self.job_dir)


__all__ = [
    "DEFAULT_KILL_GRACE",
    "DEFAULT_LOG_CAP",
    "DEFAULT_RESULT_LIMIT",
    "HEADER",
    "LOG_FILE",
    "PHASES",
    "REMOTE_COMMAND",
    "LogChunk",
    "LogLines",
    "Phase",
    "PhaseState",
    "Poll",
    "PrimeJobError",
    "Probe",
    "ResultRead",
    "Scripts",
    "commit_script",
    "env_file",
    "kill_script",
    "launch_script",
    "parse_poll",
    "parse_probe",
    "parse_result",
    "poll_script",
    "probe_script",
    "read_lines",
    "result_script",
    "shell_path",
]
