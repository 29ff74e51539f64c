"""``python -m airflow_provider_prime.testing`` / ``prime-api-simulator``: the simulator as a process.

The first line on stdout is the base URL (flushed at once) so a parent process can read it and
connect; everything else goes to stderr. Runs until SIGTERM or SIGINT, then exits with status 0.
Steer it over HTTP under ``/_sim/`` (see :mod:`airflow_provider_prime.testing.control`).

``--ssh-key PATH`` (repeatable; an OpenSSH public key file, several keys a line each) gives every
node of every pod a real SSH server on loopback accepting those keys, which runs the commands it is
sent **on this machine, as the user running the simulator** (needs ``airflow-provider-prime[ssh]``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import getpass
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from airflow_provider_prime.testing.builtin import BUILTIN_SCENARIOS
from airflow_provider_prime.testing.routes import PrimeApi
from airflow_provider_prime.testing.simulator import close_server, follow_nodes, new_event_loop, open_server
from airflow_provider_prime.testing.state import DEFAULT_API_KEY, DEFAULT_MAX_POD_IDS, SimulatorState


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="prime-api-simulator",
        description="A local simulator of the Prime Intellect pods API, for tests and demos.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    parser.add_argument("--port", type=int, default=0, help="port to listen on; 0 picks a free one")
    parser.add_argument(
        "--scenario",
        default="empty",
        help=f"built-in name ({', '.join(BUILTIN_SCENARIOS)}), bulk:N[:SECONDS], or a JSON file",
    )
    parser.add_argument(
        "--api-key",
        action="append",
        dest="api_keys",
        metavar="KEY",
        help=f"an accepted bearer key; repeat for several (default: {DEFAULT_API_KEY})",
    )
    parser.add_argument(
        "--time-scale", type=float, default=1.0, help="pod seconds per real second (10: ten times faster)"
    )
    parser.add_argument(
        "--max-pod-ids",
        type=int,
        default=DEFAULT_MAX_POD_IDS,
        help="most ids per status request before a 422; 0 for no limit (default: %(default)s)",
    )
    parser.add_argument(
        "--read-only-key",
        action="append",
        dest="read_only_keys",
        metavar="KEY",
        help="an accepted key without write permission (create and delete answer 403); repeatable",
    )
    parser.add_argument(
        "--ssh-key",
        action="append",
        dest="ssh_key_files",
        metavar="PATH",
        help="a public key file (one key a line) the pods' simulated SSH nodes accept; repeatable. "
        "Turns SSH nodes on: they run the commands they are sent on this machine, as this user",
    )
    parser.add_argument("--no-uvloop", action="store_true", help="use asyncio's own event loop")
    return parser


async def _serve(state: SimulatorState, host: str, port: int) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):  # before the URL is out: a parent may stop us at once
        loop.add_signal_handler(signum, stop.set)
    server, connections = await open_server(PrimeApi(state), host, port)
    bound = server.sockets[0].getsockname()
    print(f"http://{host}:{bound[1]}", flush=True)
    ids = list(state.pod_ids())
    names = ", ".join(ids[:5]) + (f" and {len(ids) - 5} more" if len(ids) > 5 else "") if ids else "none yet"
    print(
        f"prime-api-simulator: scenario {state.scenario.name!r} (pods: {names}), "
        f"time scale {state.time_scale:g}, {len(state.api_keys)} API key(s); stop with Ctrl-C",
        file=sys.stderr,
        flush=True,
    )
    follower = None
    if state.ssh_nodes is not None:
        print(
            f"prime-api-simulator: SSH nodes on, accepting {len(state.ssh_nodes.farm.keys)} key(s): "
            f"they run the commands they are sent on this machine, as {getpass.getuser()}",
            file=sys.stderr,
            flush=True,
        )
        follower = asyncio.ensure_future(follow_nodes(state))
    try:
        await stop.wait()
    finally:
        if follower is not None:
            follower.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await follower
        close_server(server, connections)
        await server.wait_closed()


def _public_keys(paths: Sequence[str]) -> list[str]:
    """Every key of the ``--ssh-key`` files (one a line, blanks and ``#`` comments skipped).

    ValueError naming a file without any; each key is checked when the nodes are made.
    """
    keys: list[str] = []
    for path in paths:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
        found = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
        if not found:
            raise ValueError(f"--ssh-key {path}: no public key in the file")
        keys += found
    return keys


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        state = SimulatorState(
            args.scenario,
            api_keys=args.api_keys or (DEFAULT_API_KEY,),
            read_only_keys=args.read_only_keys or (),
            time_scale=args.time_scale,
            max_pod_ids=args.max_pod_ids or None,
            ssh_keys=_public_keys(args.ssh_key_files) if args.ssh_key_files else (),
        )
    except (ValueError, OSError, ImportError) as error:  # pydantic's ValidationError is a ValueError
        print(f"prime-api-simulator: {error}", file=sys.stderr)
        return 2
    loop = new_event_loop(not args.no_uvloop)
    try:
        loop.run_until_complete(_serve(state, args.host, args.port))
    except OSError as error:
        print(f"prime-api-simulator: cannot listen on {args.host}:{args.port}: {error}", file=sys.stderr)
        return 1
    finally:
        loop.close()
        state.close_nodes()
    print("prime-api-simulator: stopped", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
