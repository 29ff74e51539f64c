"""``PrimeSimulator``: the simulated Prime API served from a background thread of the calling process.

The server gets its own thread and event loop, so it works the same under synchronous code, under
pytest-asyncio, and next to Airflow's own loops, and it never blocks the caller's loop. Steering
(``add_pod``, ``inject``, ``stats``...) comes from :class:`SimulatorState` and is thread-safe.

With ``ssh_keys``, every node of every pod is also a real SSH server on loopback that runs the
commands it is sent **on this machine, as the current user**
(:mod:`~airflow_provider_prime.testing.ssh_pods`); stopping the simulator kills their processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import threading
from collections.abc import Sequence
from types import TracebackType

from airflow_provider_prime.testing.clock import Clock
from airflow_provider_prime.testing.routes import PrimeApi
from airflow_provider_prime.testing.state import (
    DEFAULT_API_KEY,
    DEFAULT_MAX_POD_IDS,
    ScenarioSpec,
    SimulatorState,
)
from airflow_provider_prime.testing.wire import Handler, HttpProtocol

#: Real seconds between two passes that bring SSH nodes in step with pods nobody asks about.
NODE_FOLLOW_INTERVAL = 0.2


def new_event_loop(prefer_uvloop: bool = True) -> asyncio.AbstractEventLoop:
    """uvloop's loop when it is installed (Airflow's api-server brings it; it serves ~2x faster)."""
    if prefer_uvloop:
        try:
            import uvloop
        except ImportError:
            pass
        else:
            loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
            return loop
    return asyncio.new_event_loop()


async def open_server(handler: Handler, host: str, port: int) -> tuple[asyncio.Server, set[HttpProtocol]]:
    """Listen on ``host:port`` (0: a free port) with ``handler``; also returns the live connections."""
    connections: set[HttpProtocol] = set()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: HttpProtocol(handler, connections), host, port, backlog=2048, reuse_address=True
    )
    return server, connections


async def follow_nodes(state: SimulatorState, interval: float = NODE_FOLLOW_INTERVAL) -> None:
    """Keep the SSH nodes in step with the pods until cancelled (every answer does so too).

    A pod nobody polls still loses its nodes when its timeline deletes it or makes it vanish.
    """
    while True:
        await asyncio.sleep(interval)
        try:
            state.sync_nodes()
        except Exception as error:  # reported, never fatal to the server
            print(f"prime-api-simulator: SSH nodes: {error}", file=sys.stderr, flush=True)


def close_server(server: asyncio.Server, connections: set[HttpProtocol]) -> None:
    """Stop listening and cut every open connection (hanging requests included)."""
    server.close()
    for connection in list(connections):
        connection.abort()


class PrimeSimulator(SimulatorState):
    """A local Prime API on ``127.0.0.1`` and a free port; use as a context manager or start()/stop().

    ::

        with PrimeSimulator("demo", time_scale=10) as sim:
            hook_settings = (sim.base_url, sim.api_key)
            sim.inject(Fault.rate_limited(retry_after=1))
            ...
            assert sim.stats.by_path["/api/v1/pods/status"] >= 1
    """

    def __init__(
        self,
        scenario: ScenarioSpec = None,
        *,
        api_keys: Sequence[str] = (DEFAULT_API_KEY,),
        read_only_keys: Sequence[str] = (),
        host: str = "127.0.0.1",
        port: int = 0,
        time_scale: float = 1.0,
        clock: Clock | None = None,
        max_pod_ids: int | None = DEFAULT_MAX_POD_IDS,
        log_size: int = 10_000,
        prefer_uvloop: bool = True,
        ssh_keys: Sequence[str] = (),
    ) -> None:
        super().__init__(
            scenario,
            api_keys=api_keys,
            read_only_keys=read_only_keys,
            time_scale=time_scale,
            clock=clock,
            max_pod_ids=max_pod_ids,
            log_size=log_size,
            ssh_keys=ssh_keys,
        )
        self.host = host
        self._requested_port = port
        self._prefer_uvloop = prefer_uvloop
        self._port: int | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stopping: asyncio.Event | None = None

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("the simulator is not running; call start() or use it as a context manager")
        return self._port

    @property
    def base_url(self) -> str:
        """``http://HOST:PORT``, what a Prime connection's host field takes."""
        return f"http://{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> PrimeSimulator:
        """Start serving (returns once the port is bound); errors binding are raised here."""
        if self.running:
            return self
        if self.ssh_nodes is not None and self.ssh_nodes.closed:
            raise RuntimeError("a simulator with SSH nodes cannot start again once stopped: make a new one")
        ready = threading.Event()
        failure: list[BaseException] = []
        loop = new_event_loop(self._prefer_uvloop)
        self._loop = loop
        self._thread = threading.Thread(
            target=self._serve, args=(loop, ready, failure), name="prime-api-simulator", daemon=True
        )
        self._thread.start()
        ready.wait()
        if failure:
            self._thread.join()
            self._thread = None
            raise failure[0]
        return self

    def stop(self) -> None:
        """Stop serving, close every connection, kill the SSH nodes' processes; safe to call twice."""
        try:
            self._stop_serving()
        finally:
            self.close_nodes()

    def _stop_serving(self) -> None:
        thread, loop, stopping = self._thread, self._loop, self._stopping
        if thread is None or loop is None:
            return
        if stopping is not None and not loop.is_closed():
            loop.call_soon_threadsafe(stopping.set)
        thread.join()
        self._thread = self._loop = self._stopping = None
        self._port = None

    def __enter__(self) -> PrimeSimulator:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        where = self.base_url if self._port is not None else "stopped"
        return f"<PrimeSimulator {self.scenario.name!r} {where}>"

    def _serve(
        self, loop: asyncio.AbstractEventLoop, ready: threading.Event, failure: list[BaseException]
    ) -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._run(ready))
        except BaseException as error:  # reported to start() when it happens while binding
            if not ready.is_set():
                failure.append(error)
                ready.set()
            else:
                raise
        finally:
            loop.close()

    async def _run(self, ready: threading.Event) -> None:
        server, connections = await open_server(PrimeApi(self), self.host, self._requested_port)
        self._stopping = asyncio.Event()
        self._port = server.sockets[0].getsockname()[1]
        ready.set()
        follower = asyncio.ensure_future(follow_nodes(self)) if self.ssh_nodes is not None else None
        try:
            await self._stopping.wait()
        finally:
            if follower is not None:
                follower.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await follower
            close_server(server, connections)
            await server.wait_closed()
