"""The SSH nodes of a simulator's pods: a real SSH server per node that follows what the API reports.

Opt-in (``PrimeSimulator(ssh_keys=[...])``, ``prime-api-simulator --ssh-key PATH``), and **commands
sent to a node run on this machine, as the user running the simulator** (see
:mod:`~airflow_provider_prime.testing.ssh_nodes`): a test double for a GPU host, not a sandbox.

A pod gets its nodes when it enters the simulator (created through the API, added by a test, or
loaded from a scenario): ports held, SSH refused, and the pod's script rewritten so that its
``ip`` and ``sshConnection`` say where the nodes are (``root@127.0.x.y -p PORT``, a port per
node). From then on each node follows its pod as the API reports it:

==========================================================  ===============================================
The pod reports                                             Its node
==========================================================  ===============================================
the node's SSH connection (any status but those below)      serves
no SSH connection for the node (booting)                    refuses; its processes (if any) run on
STOPPED                                                     dies: SSH drops, processes SIGKILLed
DELETING, TERMINATED; vanished, removed or replaced         removed: processes killed, server stopped
``kill_node`` / a ``node_dies`` fault                       dies (and the pod is pinned ERROR)
==========================================================  ===============================================

A dead node stays dead. The simulator brings the nodes up to date after every API request, before
its answer is sent, so a client told a node's SSH connection finds it accepting; and a few times a
second for pods nobody asks about. Removing a pod's nodes does not hold up the answer (processes
get SIGTERM, a grace, then SIGKILL); :meth:`PodNodes.stats` waits for removals under way, so the
``processes_alive`` it reports is never flattered by a kill still in progress. A removed pod's
nodes stay in the statistics (state ``stopped``), so launches can be counted after the teardown.

The nodes run in :class:`~airflow_provider_prime.testing.ssh_farm.SshNodeFarm`'s own thread and
standard asyncio loop, never the simulator's (uvloop's children inherit open SSH sockets): the
simulator steers them through the farm's thread-safe methods.
"""

from __future__ import annotations

import concurrent.futures
import threading
from collections.abc import Iterable, Mapping
from dataclasses import asdict
from typing import Any

from airflow_provider_prime.testing.pod_book import DELETING, TERMINATED, with_timeline
from airflow_provider_prime.testing.scenario import PodScript
from airflow_provider_prime.testing.ssh_farm import FarmStats, SshNodeFarm
from airflow_provider_prime.testing.ssh_nodes import DEFAULT_STOP_GRACE, DEFAULT_USER, SimulatedNodes
from airflow_provider_prime.testing.ssh_processes import marked_processes

#: Pod statuses under which its nodes are removed (processes killed, servers stopped).
GONE_STATUSES = frozenset({DELETING, TERMINATED})
#: The pod status under which its nodes die (the machine is off).
STOPPED = "STOPPED"

_REFUSING, _SERVING, _DEAD = "refusing", "serving", "dead"
#: How long :meth:`PodNodes.stats` waits for removals beyond the stop grace.
_SETTLE_MARGIN = 15.0

#: What :meth:`PodNodes.follow` reads: per pod id, its status and whether each node's SSH is reported.
SshViews = Mapping[str, tuple[str, tuple[bool, ...]]]


class PodNodes:
    """Every pod's simulated SSH nodes, kept in step with the pods; thread-safe.

    ``public_keys``: the OpenSSH public keys the nodes accept (at least one).
    """

    def __init__(
        self,
        public_keys: Iterable[str],
        *,
        user: str = DEFAULT_USER,
        stop_grace: float = DEFAULT_STOP_GRACE,
    ) -> None:
        keys = list(public_keys)
        if not keys:
            raise ValueError("simulated SSH nodes need at least one public key to accept")
        self.farm = SshNodeFarm(keys, user=user, stop_grace=stop_grace)
        self._lock = threading.RLock()
        self._applied: dict[str, list[str]] = {}  # per live pod: each node's state as last set
        self._retired: list[tuple[str, SimulatedNodes]] = []  # removed pods' nodes, for the statistics
        self._pending: set[concurrent.futures.Future[None]] = set()
        self._closed = False
        self.farm.start()

    @property
    def closed(self) -> bool:
        return self._closed

    # -- pods come and go ---------------------------------------------------------------------------

    def place(self, script: PodScript) -> PodScript:
        """Give a pod new nodes, booting (any it had are removed); its script, saying where they are."""
        with self._lock:
            if self._closed:
                raise RuntimeError("the simulator's SSH nodes are closed: the simulator was stopped")
            self._remove(script.pod_id)
            targets = self.farm.add_pod(script.pod_id, script.nodes)
            self._applied[script.pod_id] = [_REFUSING] * script.nodes
        return with_timeline(
            script,
            script.timeline,
            node_ips=tuple(target.host for target in targets),
            ssh_ports=tuple(target.port for target in targets),
            ssh_user=self.farm.user,
        )

    def remove(self, pod_id: str) -> None:
        """The pod is gone: kill its processes and stop its servers (without waiting); idempotent."""
        with self._lock:
            self._remove(pod_id)

    def remove_all(self) -> None:
        with self._lock:
            for pod_id in list(self._applied):
                self._remove(pod_id)

    def _remove(self, pod_id: str) -> None:
        if self._applied.pop(pod_id, None) is None:
            return
        self._retired.append((pod_id, self.farm.nodes(pod_id)))
        stopping = self.farm.discard(pod_id)
        if stopping is not None:
            self._pending = {future for future in self._pending if not future.done()}
            self._pending.add(stopping)

    # -- following the pods -------------------------------------------------------------------------

    def follow(self, views: SshViews) -> None:
        """Bring every pod's nodes to what the API reports now (``PodBook.ssh_views()``)."""
        with self._lock:
            if self._closed:
                return
            for pod_id in list(self._applied):
                view = views.get(pod_id)
                if view is None or view[0] in GONE_STATUSES:
                    self._remove(pod_id)
                    continue
                status, reported = view
                applied = self._applied[pod_id]
                for rank, was in enumerate(applied):
                    if was == _DEAD:
                        continue  # a dead node stays dead
                    if status == STOPPED:
                        want = _DEAD
                    else:
                        want = _SERVING if rank < len(reported) and reported[rank] else _REFUSING
                    if want == was:
                        continue
                    if want == _DEAD:
                        self.farm.die(pod_id, rank)
                    elif want == _SERVING:
                        self.farm.serve(pod_id, rank)
                    else:
                        self.farm.refuse(pod_id, rank)
                    applied[rank] = want

    def kill(self, pod_id: str, rank: int | None = None) -> None:
        """A node dies (every node: ``rank`` None): SSH drops, its processes are SIGKILLed, for good.

        ``KeyError`` for a pod without nodes, ``ValueError`` for a rank it does not have.
        """
        with self._lock:
            applied = self._applied.get(pod_id)
            if applied is None:
                raise KeyError(pod_id)
            if rank is not None and not 0 <= rank < len(applied):
                raise ValueError(f"pod {pod_id} has nodes 0 to {len(applied) - 1}, not {rank}")
            self.farm.die(pod_id, rank)
            for index in range(len(applied)) if rank is None else (rank,):
                applied[index] = _DEAD

    # -- what happened ------------------------------------------------------------------------------

    def settle(self, timeout: float | None = None) -> bool:
        """Wait for removals under way (processes killed); False if some were still going at ``timeout``."""
        with self._lock:
            pending = [future for future in self._pending if not future.done()]
        if not pending:
            return True
        wait = self.farm.stop_grace + _SETTLE_MARGIN if timeout is None else timeout
        _, not_done = concurrent.futures.wait(pending, wait)
        return not not_done

    def stats(self) -> FarmStats:
        """Every node's counters, removed pods' too (state ``stopped``), once removals under way are done.

        A pod id that had nodes before (the pod was replaced, or the scenario reloaded) shows its
        earlier nodes under ``"<pod id> (earlier N)"``, N from 1 for the oldest, its latest under
        the pod id.
        """
        self.settle()
        with self._lock:
            pods: dict[str, SimulatedNodes] = {pod_id: self.farm.nodes(pod_id) for pod_id in self._applied}
            retired: dict[str, list[SimulatedNodes]] = {}
            for pod_id, nodes in self._retired:
                retired.setdefault(pod_id, []).append(nodes)
        for pod_id, generations in retired.items():
            if pod_id not in pods:
                pods[pod_id] = generations.pop()  # the newest
            for number, nodes in enumerate(generations, 1):
                pods[f"{pod_id} (earlier {number})"] = nodes
        scan = marked_processes([node.token for nodes in pods.values() for node in nodes.nodes])
        return FarmStats({pod_id: [node.stats(scan) for node in nodes] for pod_id, nodes in pods.items()})

    def snapshot(self) -> dict[str, Any]:
        """:meth:`stats` as plain JSON data (``GET /_sim/stats`` under ``ssh_nodes``)."""
        stats = self.stats()
        return {
            "launches": stats.launches,
            "processes_alive": stats.processes_alive,
            "connections_open": stats.connections_open,
            "pods": {
                pod_id: [{**asdict(node), "state": node.state.value} for node in nodes]
                for pod_id, nodes in stats.pods.items()
            },
        }

    def close(self) -> None:
        """Remove every pod's nodes, wait for their processes to die, and stop the farm; final."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            for pod_id in list(self._applied):
                self._remove(pod_id)
        try:
            self.settle()
        finally:
            self.farm.close()
