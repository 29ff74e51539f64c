"""Simulated pod nodes with a real SSH server each, that run the commands they are sent.

**They run commands on the local machine, as the current user.** Each node is an SSH server
(asyncssh) on a loopback address of its own, ``127.0.x.y``, that accepts only the public keys
registered with it and runs every exec request as a local ``bash -c`` process in the node's own
home directory (a temporary directory). Nothing stops such a command from reading or changing
anything the current user can: it is a test double for a remote host, not a sandbox. It listens on
loopback only.

Lifecycle, as a pod's node sees it::

    booting --start()--> serving --refuse()--> refusing --start()--> serving
       any state --die()--> dead (a fault: SSH drops, every process killed, refusing)
       any state --stop()--> stopped (the pod is deleted: processes killed, port and home released)

A node holds its port from the moment it exists: while booting, refusing or dead the port is bound
but not listening, so a connection is refused (as on a pod whose sshd is not up yet), and the
``(user, host, port)`` it reports never changes. Its host key is generated once and kept for the
node's life, so a client may pin the key it first sees.

Like ``sshd`` with ``MaxStartups 10`` (the strict form of the default ``10:30:100``), a node drops
a new connection while 10 others are still in their handshake: a client that stays under that is
safe against a real sshd. The processes a node started, detached ones included, are found by an
environment marker (:mod:`~airflow_provider_prime.testing.ssh_processes`); see
:mod:`~airflow_provider_prime.testing.ssh_session` for how a command is run.

:class:`SimulatedNode` and :class:`SimulatedNodes` are asynchronous (they live in the loop that
serves them); :class:`~airflow_provider_prime.testing.ssh_farm.SshNodeFarm` is the thread-backed,
synchronous front end that a simulator uses per pod.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import ipaddress
import os
import random
import secrets
import shutil
import socket
import tempfile
import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import asyncssh

from airflow_provider_prime.testing.ssh_processes import ProcessTracker
from airflow_provider_prime.testing.ssh_session import DEFAULT_ACCEPT_ENV, SessionContext, run_session

#: sshd's default ``MaxStartups`` (unauthenticated connections at once), in its strict form.
DEFAULT_MAX_STARTUPS = 10
#: How long ``stop()`` lets processes end after SIGTERM before SIGKILL.
DEFAULT_STOP_GRACE = 2.0
DEFAULT_USER = "root"
#: Where a job of :class:`~airflow_provider_prime.operators.job.PrimeRunJobOperator` keeps its
#: directories on a node, under the node's home (``airflow_provider_prime.job_ids.JOB_ROOT``).
JOB_ROOT = ".prime-jobs"
#: The file in a job's directory that counts its command's launches (its launch guard).
COMMAND_LAUNCHES = "command.launches"


class KeyRing:
    """The public keys nodes accept (an account's SSH keys); thread-safe, shared by many nodes."""

    def __init__(self, keys: Iterable[str] = ()) -> None:
        self._lock = threading.Lock()
        self._keys: dict[bytes, str] = {}
        for key in keys:
            self.add(key)

    def add(self, public_key: str) -> None:
        """Accept an OpenSSH public key (``ssh-ed25519 AAAA... comment``); ``ValueError`` if unreadable."""
        try:
            blob = asyncssh.import_public_key(public_key).public_data
        except (asyncssh.KeyImportError, ValueError) as error:
            raise ValueError(f"not an OpenSSH public key: {public_key[:40]!r}... ({error})") from error
        with self._lock:
            self._keys[blob] = public_key.strip()

    def remove(self, public_key: str) -> None:
        """Stop accepting a key (no error if it was not there)."""
        blob = asyncssh.import_public_key(public_key).public_data
        with self._lock:
            self._keys.pop(blob, None)

    def accepts(self, key: asyncssh.SSHKey) -> bool:
        with self._lock:
            return key.public_data in self._keys

    def __len__(self) -> int:
        with self._lock:
            return len(self._keys)


class AddressPool:
    """Hands out loopback addresses ``127.0.x.y`` (x, y in 1..254), each to one node at a time.

    The whole of ``127/8`` is on Linux's ``lo``; each pool starts at a random place so that two
    simulators on one machine seldom share an address (it matters only for fixed ports such as a
    job's ``MASTER_PORT``). Where only ``127.0.0.1`` is configured (macOS), every node gets
    ``127.0.0.1`` and a port of its own: SSH still works, node addresses are then not distinct.
    """

    _SIDE = 254

    def __init__(self, start: int | None = None) -> None:
        self._lock = threading.Lock()
        self._next = random.randrange(self._SIDE * self._SIDE) if start is None else start
        self._in_use: set[str] = set()
        self.distinct = _can_bind("127.0.254.254")

    def allocate(self) -> str:
        if not self.distinct:
            return "127.0.0.1"
        with self._lock:
            for _ in range(self._SIDE * self._SIDE):
                index, self._next = self._next, (self._next + 1) % (self._SIDE * self._SIDE)
                address = f"127.0.{index // self._SIDE + 1}.{index % self._SIDE + 1}"
                if address not in self._in_use:
                    self._in_use.add(address)
                    return address
        raise RuntimeError("every 127.0.x.y address is in use by a simulated node")

    def release(self, address: str) -> None:
        with self._lock:
            self._in_use.discard(address)


def _can_bind(address: str) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind((address, 0))
        except OSError:
            return False
    return True


class NodeState(str, enum.Enum):
    BOOTING = "booting"
    SERVING = "serving"
    REFUSING = "refusing"
    DEAD = "dead"
    STOPPED = "stopped"


@dataclass(frozen=True)
class NodeTarget:
    """Where a node's SSH server is: what a pod's ``sshConnection`` and ``ip`` say."""

    user: str
    host: str
    port: int

    @property
    def ssh_connection(self) -> str:
        """The API's ``sshConnection`` text for this node: ``root@127.0.3.4 -p 40022``."""
        return f"{self.user}@{self.host} -p {self.port}"


@dataclass(frozen=True)
class NodeStats:
    """One node's counters: commands launched, its processes alive, SSH connections open.

    ``launches`` counts every exec request (a job's polls included); ``job_launches`` is, per job
    id, how many times the job's command was launched on the node, as the job's own launch guard
    counts it (:func:`job_launches`): one per logical task, whatever the retries, when adoption works.
    """

    host: str
    port: int
    state: NodeState
    launches: int
    processes_alive: int
    connections_open: int
    handshakes_dropped: int
    auth_refused: int
    job_launches: dict[str, int] = field(default_factory=dict)


def job_launches(home: str | Path) -> dict[str, int]:
    """Per job directory under ``home``, its command's launches (``.prime-jobs/<id>/command.launches``).

    A job whose command was never launched (its setup only, or nothing yet) counts 0. A count file
    caught while the launch script rewrites it (empty, not a number) is left out of this reading.
    """
    root = Path(home) / JOB_ROOT
    counts: dict[str, int] = {}
    try:
        jobs = sorted(entry for entry in root.iterdir() if entry.is_dir())
    except OSError:
        return counts
    for job in jobs:
        try:
            text = (job / COMMAND_LAUNCHES).read_text().strip()
        except FileNotFoundError:
            counts[job.name] = 0
            continue
        except OSError:
            continue
        if text.isdigit():
            counts[job.name] = int(text)
    return counts


class _NodeServer(asyncssh.SSHServer):
    """asyncssh's per-connection callbacks: track the connection, check the user and the key."""

    def __init__(self, node: SimulatedNode) -> None:
        self._node = node
        self._connection: asyncssh.SSHServerConnection | None = None

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        self._connection = conn
        self._node._connections.add(conn)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._connection is not None:
            self._node._connections.discard(self._connection)

    def begin_auth(self, username: str) -> bool:
        return True

    def password_auth_supported(self) -> bool:
        return False

    def public_key_auth_supported(self) -> bool:
        return True

    def validate_public_key(self, username: str, key: asyncssh.SSHKey) -> bool:
        accepted = username == self._node.user and self._node.keys.accepts(key)
        if not accepted:
            self._node._auth_refused += 1
        return accepted


class SimulatedNode:
    """One node of a simulated pod: an SSH server on ``host:port`` that runs what it is sent locally.

    Created booting (the port is held, connections are refused); call :meth:`start` when the pod is
    ready. Lives in the event loop that calls its coroutines; all of them must run in that loop.
    """

    def __init__(
        self,
        keys: KeyRing,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        user: str = DEFAULT_USER,
        name: str = "node",
        path: str | None = None,
        accept_env: Sequence[str] = DEFAULT_ACCEPT_ENV,
        max_startups: int = DEFAULT_MAX_STARTUPS,
    ) -> None:
        if not ipaddress.ip_address(host).is_loopback:
            raise ValueError(f"a simulated node serves loopback only, not {host!r}: it runs commands locally")
        self.keys = keys
        self.user = user
        self.name = name
        self._held: socket.socket | None = _bind(host, port, listen=False)
        self.host, self.port = self._held.getsockname()[:2]
        self.host_key = asyncssh.generate_private_key("ssh-ed25519")
        self.home = tempfile.mkdtemp(prefix=f"prime-sim-{name}-")
        self.state = NodeState.BOOTING
        self._tracker = ProcessTracker(f"{os.getpid()}-{secrets.token_hex(6)}-{name}")
        self._max_startups = max_startups
        self._context = SessionContext(
            user=user,
            home=self.home,
            path=path if path is not None else os.environ.get("PATH", os.defpath),
            marker=self._tracker.marker,
            accept_env=tuple(accept_env),
            launched=self._tracker.launched,
        )
        self._connections: set[asyncssh.SSHServerConnection] = set()
        self._handshakes: set[asyncio.Task[None]] = set()
        self._handshakes_dropped = 0
        self._auth_refused = 0
        self._listener: socket.socket | None = None
        self._accepting: asyncio.Task[None] | None = None
        self._options: asyncssh.SSHServerConnectionOptions | None = None
        #: The job launches read just before the home was removed (the node stopped).
        self._final_job_launches: dict[str, int] | None = None

    # -- what the API reports --------------------------------------------------------------------

    @property
    def target(self) -> NodeTarget:
        return NodeTarget(self.user, self.host, self.port)

    @property
    def host_public_key(self) -> str:
        """The node's host key in OpenSSH form, the same for the node's whole life."""
        return self.host_key.export_public_key().decode().strip()

    def known_hosts_line(self) -> str:
        """A ``known_hosts`` line for this node (``[host]:port key``)."""
        return f"[{self.host}]:{self.port} {self.host_public_key}"

    @property
    def token(self) -> str:
        """The value of ``PRIME_SIM_NODE`` in the environment of every process the node started."""
        return self._tracker.token

    def stats(self, scan: dict[str, set[int]] | None = None) -> NodeStats:
        return NodeStats(
            host=self.host,
            port=self.port,
            state=self.state,
            launches=self._tracker.launches,
            processes_alive=len(self._tracker.alive(scan)),
            connections_open=len(self._connections),
            handshakes_dropped=self._handshakes_dropped,
            auth_refused=self._auth_refused,
            job_launches=self.job_launches(),
        )

    def job_launches(self) -> dict[str, int]:
        """Per job id, its command's launches on this node (:func:`job_launches` of the home); a
        stopped node keeps what its home said when it was removed."""
        if self._final_job_launches is not None:
            return dict(self._final_job_launches)
        return job_launches(self.home)

    # -- lifecycle --------------------------------------------------------------------------------

    async def start(self) -> None:
        """Accept SSH connections (the pod is ready); again after :meth:`refuse`. No-op if serving."""
        if self.state is NodeState.SERVING:
            return
        if self.state in (NodeState.DEAD, NodeState.STOPPED):
            raise RuntimeError(f"simulated node {self.name} is {self.state.value}; it cannot serve again")
        if self._options is None:
            self._options = await asyncssh.SSHServerConnectionOptions.construct(
                server_factory=partial(_NodeServer, self),
                server_host_keys=[self.host_key],
                process_factory=partial(run_session, self._context),
                encoding=None,
                agent_forwarding=False,
                x11_forwarding=False,
                allow_scp=False,
                sftp_factory=None,
            )
        listener = _bind(self.host, self.port, listen=True)
        if self._held is not None:
            self._held.close()
            self._held = None
        self._listener = listener
        self._accepting = asyncio.ensure_future(self._accept(listener))
        self.state = NodeState.SERVING

    async def refuse(self) -> None:
        """Refuse connections and drop the open ones (booting, or unreachable); processes run on."""
        if self.state is NodeState.SERVING:
            await self._close_server()
            self.state = NodeState.REFUSING

    async def die(self) -> None:
        """A fault: the node is gone at once. SSH drops, every process is SIGKILLed; it refuses."""
        if self.state is NodeState.STOPPED:
            return
        await self._close_server()
        self.state = NodeState.DEAD
        await self._tracker.kill_all(grace=0)

    async def stop(self, grace: float = DEFAULT_STOP_GRACE) -> None:
        """The pod is deleted: kill every process (SIGTERM, ``grace``, SIGKILL), close, remove home."""
        if self.state is NodeState.STOPPED:
            return
        await self._close_server()
        try:
            await self._tracker.kill_all(grace=grace)
        finally:
            self.state = NodeState.STOPPED
            if self._held is not None:
                self._held.close()
                self._held = None
            self._final_job_launches = job_launches(self.home)
            shutil.rmtree(self.home, ignore_errors=True)

    def _discard(self) -> None:
        """Release a node that never served (its siblings failed to come up)."""
        if self._held is not None:
            self._held.close()
            self._held = None
        self._final_job_launches = {}
        shutil.rmtree(self.home, ignore_errors=True)
        self.state = NodeState.STOPPED

    # -- serving ------------------------------------------------------------------------------------

    async def _accept(self, listener: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        while True:
            sock, _ = await loop.sock_accept(listener)
            if len(self._handshakes) >= self._max_startups:
                self._handshakes_dropped += 1
                sock.close()
                continue
            task = asyncio.ensure_future(self._handshake(sock))
            self._handshakes.add(task)
            task.add_done_callback(self._handshakes.discard)

    async def _handshake(self, sock: socket.socket) -> None:
        """Run the SSH handshake and authentication; the connection then lives on its own."""
        with contextlib.suppress(asyncssh.Error, OSError, asyncio.TimeoutError):
            await asyncssh.run_server(sock, options=self._options)

    async def _close_server(self) -> None:
        """Stop listening (the port stays held), abort handshakes and connections."""
        if self._accepting is not None:
            self._accepting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._accepting
            self._accepting = None
        if self._listener is not None:
            self._listener.close()  # Linux will not bind a holder next to a listener: close first
            self._listener = None
            self._held = _bind(self.host, self.port, listen=False)
        handshakes = list(self._handshakes)
        for task in handshakes:
            task.cancel()
        await asyncio.gather(*handshakes, return_exceptions=True)
        connections = list(self._connections)
        for connection in connections:
            connection.abort()
        await asyncio.gather(*(c.wait_closed() for c in connections), return_exceptions=True)
        self._connections.clear()

    def __repr__(self) -> str:
        return f"<SimulatedNode {self.name} {self.user}@{self.host}:{self.port} {self.state.value}>"


def _bind(host: str, port: int, *, listen: bool) -> socket.socket:
    """A TCP socket bound to ``host:port``; listening or only holding the port (then it refuses).

    ``SO_REUSEADDR`` lets a holder and a listener share the port on Linux while only one listens,
    so the port never changes hands between a node's states.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        if listen:
            sock.listen(128)
            sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


class SimulatedNodes:
    """A pod's nodes in rank order, each on an address of its own from ``addresses``."""

    def __init__(
        self,
        count: int,
        keys: KeyRing,
        addresses: AddressPool,
        *,
        name: str = "pod",
        user: str = DEFAULT_USER,
        path: str | None = None,
        accept_env: Sequence[str] = DEFAULT_ACCEPT_ENV,
        max_startups: int = DEFAULT_MAX_STARTUPS,
    ) -> None:
        if count < 1:
            raise ValueError(f"a pod has at least one node, not {count}")
        self._addresses = addresses
        self.nodes: list[SimulatedNode] = []
        try:
            for rank in range(count):
                host = addresses.allocate()
                try:
                    node = SimulatedNode(
                        keys,
                        host=host,
                        user=user,
                        name=f"{name}-{rank}",
                        path=path,
                        accept_env=accept_env,
                        max_startups=max_startups,
                    )
                except BaseException:
                    addresses.release(host)
                    raise
                self.nodes.append(node)
        except BaseException:
            for node in self.nodes:
                node._discard()
                addresses.release(node.host)
            raise

    @property
    def targets(self) -> list[NodeTarget]:
        """``(user, host, port)`` per node, rank order: the pod's ``sshConnection`` and ``ip`` lists."""
        return [node.target for node in self.nodes]

    def __getitem__(self, rank: int) -> SimulatedNode:
        return self.nodes[rank]

    def __len__(self) -> int:
        return len(self.nodes)

    def __iter__(self) -> Iterator[SimulatedNode]:
        return iter(self.nodes)

    def _pick(self, rank: int | None) -> list[SimulatedNode]:
        return self.nodes if rank is None else [self.nodes[rank]]

    async def start(self, rank: int | None = None) -> None:
        for node in self._pick(rank):
            await node.start()

    async def refuse(self, rank: int | None = None) -> None:
        for node in self._pick(rank):
            await node.refuse()

    async def die(self, rank: int | None = None) -> None:
        await asyncio.gather(*(node.die() for node in self._pick(rank)))

    async def stop(self, grace: float = DEFAULT_STOP_GRACE) -> None:
        """Stop every node (concurrently) and give their addresses back."""
        try:
            await asyncio.gather(*(node.stop(grace) for node in self.nodes))
        finally:
            for node in self.nodes:
                self._addresses.release(node.host)
