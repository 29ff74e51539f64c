"""``SshNodeFarm``: the simulated SSH nodes of many pods, steered synchronously, keyed by pod id.

**Nodes run commands on the local machine, as the current user** (see
:mod:`~airflow_provider_prime.testing.ssh_nodes`). The farm serves them from a background thread
with a standard asyncio loop of its own, never uvloop's: uvloop's subprocesses inherit the parent's
file descriptors (open SSH sockets included), so a detached job would hold its SSH session open.
Every method is thread-safe and blocks until done, and each has an ``a``-prefixed coroutine twin
for callers in another event loop (the simulator's), so a pod book maps its events to one call
each::

    with SshNodeFarm(authorized_keys=[public_key]) as farm:
        targets = farm.add_pod("pod-1", node_count=2)   # booting: ports held, SSH refused
        farm.serve("pod-1")                              # the pod is ready
        farm.die("pod-1", rank=1)                        # a fault: node 1 is gone
        farm.remove_pod("pod-1")                         # deleted: every process killed
        assert farm.stats().processes_alive == 0
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Coroutine, Iterable, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, TypeVar

from airflow_provider_prime.testing.ssh_nodes import (
    DEFAULT_MAX_STARTUPS,
    DEFAULT_STOP_GRACE,
    DEFAULT_USER,
    AddressPool,
    KeyRing,
    NodeStats,
    NodeTarget,
    SimulatedNodes,
)
from airflow_provider_prime.testing.ssh_processes import marked_processes
from airflow_provider_prime.testing.ssh_session import DEFAULT_ACCEPT_ENV

_T = TypeVar("_T")
_CALL_TIMEOUT = 60.0


@dataclass(frozen=True)
class FarmStats:
    """Every node's counters by pod id (rank order) and their totals."""

    pods: dict[str, list[NodeStats]] = field(default_factory=dict)

    def _total(self, attribute: str) -> int:
        return sum(getattr(node, attribute) for nodes in self.pods.values() for node in nodes)

    @property
    def launches(self) -> int:
        return self._total("launches")

    @property
    def processes_alive(self) -> int:
        return self._total("processes_alive")

    @property
    def connections_open(self) -> int:
        return self._total("connections_open")

    def launches_per_node(self, pod_id: str) -> list[int]:
        return [node.launches for node in self.pods[pod_id]]

    def job_launches_per_node(self, pod_id: str) -> list[dict[str, int]]:
        """Per node of the pod, rank order: job id -> launches of that job's command there."""
        return [dict(node.job_launches) for node in self.pods[pod_id]]


class SshNodeFarm:
    """Simulated SSH nodes per pod; sync, thread-safe; serves from its own thread or a given loop."""

    def __init__(
        self,
        authorized_keys: Iterable[str] = (),
        *,
        user: str = DEFAULT_USER,
        addresses: AddressPool | None = None,
        path: str | None = None,
        accept_env: Sequence[str] = DEFAULT_ACCEPT_ENV,
        max_startups: int = DEFAULT_MAX_STARTUPS,
        stop_grace: float = DEFAULT_STOP_GRACE,
    ) -> None:
        self.keys = KeyRing(authorized_keys)
        self.user = user
        self.addresses = addresses or AddressPool()
        self.stop_grace = stop_grace
        self._path = path
        self._accept_env = tuple(accept_env)
        self._max_startups = max_startups
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._pods: dict[str, SimulatedNodes] = {}
        self._lock = threading.Lock()

    # -- running ------------------------------------------------------------------------------------

    def start(self) -> SshNodeFarm:
        """Start the farm's loop thread; returns once it runs."""
        if self._thread is not None:
            return self
        loop: asyncio.AbstractEventLoop = asyncio.SelectorEventLoop()
        ready = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(loop)
            loop.call_soon(ready.set)
            loop.run_forever()

        self._thread = threading.Thread(target=run, name="prime-ssh-nodes", daemon=True)
        self._loop = loop
        self._thread.start()
        ready.wait()
        return self

    def close(self) -> None:
        """Remove every pod (kill all their processes), then stop the farm's own thread."""
        if self._loop is None:
            return
        try:
            for pod_id in list(self._pods):
                self.remove_pod(pod_id)
        finally:
            loop, thread = self._loop, self._thread
            if thread is not None:
                loop.call_soon_threadsafe(loop.stop)
                thread.join()
            loop.close()
            self._thread = self._loop = None

    def __enter__(self) -> SshNodeFarm:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _submit(self, step: Coroutine[Any, Any, _T]) -> concurrent.futures.Future[_T]:
        loop = self._loop
        if loop is None:
            step.close()
            raise RuntimeError("the SSH node farm is not running: call start() or use it in a with block")
        return asyncio.run_coroutine_threadsafe(step, loop)

    def _call(self, step: Coroutine[Any, Any, _T]) -> _T:
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is not None and running is self._loop:
            step.close()
            raise RuntimeError("SshNodeFarm's sync methods block: in its own loop, await the nodes instead")
        return self._submit(step).result(_CALL_TIMEOUT)

    async def _acall(self, step: Coroutine[Any, Any, _T]) -> _T:
        return await asyncio.wait_for(asyncio.wrap_future(self._submit(step)), _CALL_TIMEOUT)

    # -- pods -----------------------------------------------------------------------------------------

    def add_pod(self, pod_id: str, node_count: int = 1) -> list[NodeTarget]:
        """Create a pod's nodes, booting (SSH refused); their targets in rank order."""
        self._check_new(pod_id)
        return self._register(pod_id, self._call(self._create(pod_id, node_count)))

    def _check_new(self, pod_id: str) -> None:
        with self._lock:
            if pod_id in self._pods:
                raise ValueError(f"pod {pod_id} already has simulated nodes")

    def _register(self, pod_id: str, nodes: SimulatedNodes) -> list[NodeTarget]:
        with self._lock:
            if pod_id not in self._pods:
                self._pods[pod_id] = nodes
                return nodes.targets
        self._submit(nodes.stop(0))  # another caller added the same pod meanwhile
        raise ValueError(f"pod {pod_id} already has simulated nodes")

    async def _create(self, pod_id: str, node_count: int) -> SimulatedNodes:
        return SimulatedNodes(
            node_count,
            self.keys,
            self.addresses,
            name=pod_id,
            user=self.user,
            path=self._path,
            accept_env=self._accept_env,
            max_startups=self._max_startups,
        )

    async def aadd_pod(self, pod_id: str, node_count: int = 1) -> list[NodeTarget]:
        """:meth:`add_pod` from another event loop."""
        self._check_new(pod_id)
        return self._register(pod_id, await self._acall(self._create(pod_id, node_count)))

    def nodes(self, pod_id: str) -> SimulatedNodes:
        """A pod's nodes (their coroutines must run in the farm's loop)."""
        with self._lock:
            try:
                return self._pods[pod_id]
            except KeyError:
                raise KeyError(f"pod {pod_id} has no simulated nodes") from None

    def targets(self, pod_id: str) -> list[NodeTarget]:
        return self.nodes(pod_id).targets

    def serve(self, pod_id: str, rank: int | None = None) -> None:
        """Accept SSH on the pod's nodes (every one, or ``rank``): the pod is ready."""
        self._call(self.nodes(pod_id).start(rank))

    def refuse(self, pod_id: str, rank: int | None = None) -> None:
        """Refuse SSH and drop connections; the processes run on (unreachable, not dead)."""
        self._call(self.nodes(pod_id).refuse(rank))

    def die(self, pod_id: str, rank: int | None = None) -> None:
        """A fault: the nodes die (SSH drops, every process SIGKILLed) and stay dead."""
        self._call(self.nodes(pod_id).die(rank))

    def remove_pod(self, pod_id: str) -> None:
        """The pod is deleted: kill every process on its nodes, stop their servers; idempotent."""
        with self._lock:
            nodes = self._pods.pop(pod_id, None)
        if nodes is not None:
            self._call(nodes.stop(self.stop_grace))

    def discard(self, pod_id: str) -> concurrent.futures.Future[None] | None:
        """:meth:`remove_pod` without waiting: the pod's nodes are gone from the farm at once, and
        the returned future is done once their processes are killed (None: the pod had no nodes).

        For a caller that must not block for the stop grace, such as a request handler.
        """
        with self._lock:
            nodes = self._pods.pop(pod_id, None)
        return None if nodes is None else self._submit(nodes.stop(self.stop_grace))

    async def aserve(self, pod_id: str, rank: int | None = None) -> None:
        await self._acall(self.nodes(pod_id).start(rank))

    async def arefuse(self, pod_id: str, rank: int | None = None) -> None:
        await self._acall(self.nodes(pod_id).refuse(rank))

    async def adie(self, pod_id: str, rank: int | None = None) -> None:
        await self._acall(self.nodes(pod_id).die(rank))

    async def aremove_pod(self, pod_id: str) -> None:
        with self._lock:
            nodes = self._pods.pop(pod_id, None)
        if nodes is not None:
            await self._acall(nodes.stop(self.stop_grace))

    def stats(self) -> FarmStats:
        """Counters of every node; one pass over ``/proc`` for all of them."""
        with self._lock:
            pods = dict(self._pods)
        tokens = [node.token for nodes in pods.values() for node in nodes.nodes]
        scan = marked_processes(tokens)
        return FarmStats(
            {pod_id: [node.stats(scan) for node in nodes.nodes] for pod_id, nodes in pods.items()}
        )
