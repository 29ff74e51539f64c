"""One SSH exec (or shell) request on a simulated node, run as a local ``bash -c`` process.

It behaves like OpenSSH's ``sshd`` where a job runner can tell the difference:

* the command runs as ``bash -c <command>`` (no command: ``bash`` reading the channel), in a new
  session, in the node's home directory, with a clean environment (``HOME``, ``USER``, ``PATH``,
  ``SSH_CONNECTION``...; of the variables the client sends only ``LANG`` and ``LC_*`` by default,
  sshd's usual ``AcceptEnv``): nothing of the simulator's own environment leaks in;
* the exit status (or the signal) is sent once the command has exited **and** its stdout and
  stderr are closed, so ``ssh node 'sleep 100 &'`` hangs as it does on a real host, and a detached
  job must redirect its output (``nohup cmd >log 2>&1 &``);
* when the client goes away, the read ends of the command's output pipes are closed (a command
  still writing to them gets SIGPIPE, as under sshd); a command that had a pseudo-terminal gets
  SIGHUP instead. A detached job is untouched;
* a ``signal`` channel request is delivered to the command's process group.
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import os
import signal
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass

import asyncssh

#: sshd's usual ``AcceptEnv``: the client's locale and nothing else.
DEFAULT_ACCEPT_ENV: tuple[str, ...] = ("LANG", "LC_*")
_CHUNK = 65536


@dataclass(frozen=True)
class SessionContext:
    """What a session needs from its node."""

    user: str
    home: str
    path: str
    marker: Mapping[str, str]
    accept_env: Sequence[str]
    launched: Callable[[int], None]


def session_environment(context: SessionContext, process: asyncssh.SSHServerProcess[bytes]) -> dict[str, str]:
    """The command's environment: a fresh login's variables, the accepted client ones, the marker."""
    peer = process.get_extra_info("peername") or ("", 0)
    local = process.get_extra_info("sockname") or ("", 0)
    env = {
        name: value
        for name, value in process.env.items()
        if isinstance(name, str)
        and isinstance(value, str)
        and any(fnmatch.fnmatchcase(name, pattern) for pattern in context.accept_env)
    }
    env.update(
        HOME=context.home,
        PWD=context.home,
        USER=context.user,
        LOGNAME=context.user,
        SHELL="/bin/bash",
        PATH=context.path,
        SSH_CONNECTION=f"{peer[0]} {peer[1]} {local[0]} {local[1]}",
        SSH_CLIENT=f"{peer[0]} {peer[1]} {local[1]}",
    )
    env.update(context.marker)
    return env


async def run_session(context: SessionContext, process: asyncssh.SSHServerProcess[bytes]) -> None:
    """Run the request's command and relay its I/O; the process factory of a node's server."""
    argv = ["/bin/bash", "-c", process.command] if process.command is not None else ["/bin/bash"]
    loop = asyncio.get_running_loop()
    out_read, out_write = os.pipe()
    err_read, err_write = os.pipe()
    try:
        child = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=out_write,
            stderr=err_write,
            cwd=context.home,
            env=session_environment(context, process),
            start_new_session=True,
        )
    except OSError as error:
        os.close(out_read)
        os.close(err_read)
        process.stderr.write(f"bash: {error}\n".encode())
        process.exit(127)
        return
    finally:
        os.close(out_write)
        os.close(err_write)
    context.launched(child.pid)
    stdout, stdout_pipe = await _read_pipe(loop, out_read)
    stderr, stderr_pipe = await _read_pipe(loop, err_read)
    assert child.stdin is not None
    feeder = asyncio.ensure_future(_feed_stdin(process, child.stdin, child.pid))
    output = asyncio.ensure_future(
        _gather(_relay(stdout, process.stdout), _relay(stderr, process.stderr), child.wait())
    )
    closed = asyncio.ensure_future(process.wait_closed())
    try:
        await asyncio.wait([output, closed], return_when=asyncio.FIRST_COMPLETED)
    finally:
        feeder.cancel()
        stdout_pipe.close()
        stderr_pipe.close()
        if not output.done():  # the client went away first
            output.cancel()
            if process.get_terminal_type() is not None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(child.pid, signal.SIGHUP)
        closed.cancel()
        if not child.stdin.is_closing():
            child.stdin.close()
    if output.cancelled() or output.exception() is not None:
        return
    status = child.returncode
    assert status is not None
    if status < 0:
        process.exit_with_signal(signal.Signals(-status).name.removeprefix("SIG"))
    else:
        process.exit(status)


async def _gather(*steps: Awaitable[object]) -> None:
    await asyncio.gather(*steps)


async def _read_pipe(
    loop: asyncio.AbstractEventLoop, fd: int
) -> tuple[asyncio.StreamReader, asyncio.BaseTransport]:
    reader = asyncio.StreamReader(limit=_CHUNK)
    transport, _ = await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(fd, "rb", buffering=0)
    )
    return reader, transport


async def _relay(source: asyncio.StreamReader, channel: asyncssh.SSHWriter[bytes]) -> None:
    """Copy a pipe to the channel until EOF, at the client's pace (a slow reader blocks the writer)."""
    while data := await source.read(_CHUNK):
        channel.write(data)
        await channel.drain()


async def _feed_stdin(
    process: asyncssh.SSHServerProcess[bytes], stdin: asyncio.StreamWriter, pgid: int
) -> None:
    """Copy the channel to the command's stdin; deliver signal requests to its process group."""
    try:
        while True:
            try:
                data = await process.stdin.read(_CHUNK)
            except asyncssh.SignalReceived as request:
                name = f"SIG{request.signal}"
                if name in signal.Signals.__members__:
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.killpg(pgid, signal.Signals[name])
                continue
            except (asyncssh.BreakReceived, asyncssh.TerminalSizeChanged):
                continue
            if not data:
                break
            stdin.write(data)
            await stdin.drain()
    except (OSError, asyncssh.Error):  # the command closed its stdin, or the channel broke
        pass
    finally:
        if not stdin.is_closing():
            stdin.close()
