"""The SSH links of a job: one asyncssh connection per node, reused, pinned, and gentle with sshd.

The job operator (in the worker) and its trigger (in the triggerer's event loop) send every script
of :mod:`.job_script` to a node through :meth:`NodeLinks.run`: the script is the standard input of
:data:`.job_script.REMOTE_COMMAND` on that node, and its standard output comes back as bytes.

**Credentials** come from an Airflow SSH connection, read the way Airflow's SSH provider reads it
(:func:`login_from_connection`): the login, the password, and the extras ``private_key`` (the key's
text), ``key_file``, ``private_key_passphrase`` (or ``passphrase``), ``conn_timeout`` and
``host_key``. Host, port and user come from the pod (the pod's user wins over the login; ``root``
when neither names one). With no key and no password, asyncssh's defaults are tried (the
machine's ``~/.ssh/id_*`` and the SSH agent). ``~/.ssh/config`` is not read: where a node is comes
from the pod only.

**Host keys: trust on first use, for the life of the job's wait.** A pod is a new machine every
time and the platform publishes no host key, so nothing can be checked on the very first
connection. The key a node shows then is pinned (:class:`HostKeyPins`), and every later connection
to it (a reconnect, or the trigger that continues the wait: it is handed the pins) must show the
same key, else :class:`PrimeHostKeyChangedError` and that node is never dialled again by these
links. The key is checked during the key exchange, before authentication, so no credential and no
command ever reach a host that shows another key. A connection extra ``host_key`` pins that key for
every node up front (rarely useful: every pod has its own key).

**One connection per node**, reused by every :meth:`~NodeLinks.run` and kept alive with SSH
keepalives (every 15 s), so a dead node is noticed. The jobs of one event loop (one triggerer)
that reach the same node with the same SSH connection share that connection: a fan-out of 50 jobs
on one pod holds one connection per node, not 50, its scripts bounded to
:data:`MAX_SESSIONS_PER_CONNECTION` at once (sshd's ``MaxSessions`` is 10). A job pinned to another
host key than the one the shared connection was verified with refuses it; one pinned to nothing
takes that key as its pin. The last job to let go closes the connection. A connection that
failed, dropped or timed out is closed; the next run reconnects. Failed connects to a node back
off (1, 2, 4 ... 30 s): inside the backoff, a run fails at once without dialling, so a dead node
costs nothing per poll.

**Handshakes are bounded**: at most :data:`MAX_HANDSHAKES_PER_HOST` connections per ``(host, port)``
are in their handshake at once in one event loop, across every :class:`NodeLinks` of that loop.
sshd's default ``MaxStartups 10:30:100`` starts dropping new connections beyond 10 unauthenticated
ones, so 50 jobs on one pod with 50 different SSH connections connect in turns instead of failing.

asyncssh only, imported when first needed: no thread and no blocking call on the event loop
(``pip install 'airflow-provider-prime[ssh]'``). No message or log line carries the private key,
its passphrase or the password.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import weakref
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any

from airflow_provider_prime._compat import aget_connection, amask_secret, get_connection, mask_secret
from airflow_provider_prime.exceptions import PrimeConfigError
from airflow_provider_prime.hooks._settings import unparsable_connection_error
from airflow_provider_prime.job_nodes import JobNode
from airflow_provider_prime.job_script import REMOTE_COMMAND, PrimeJobError

if TYPE_CHECKING:
    import asyncssh

log = logging.getLogger(__name__)

#: concurrent SSH handshakes per (host, port) on one event loop, at most (sshd's default MaxStartups is 10)
MAX_HANDSHAKES_PER_HOST = 4
#: Seconds between SSH keepalives on an idle connection; 3 unanswered ones close it.
KEEPALIVE_INTERVAL = 15.0
KEEPALIVE_COUNT_MAX = 3
#: The connection's ``conn_timeout`` when it names none (as Airflow's SSH provider).
DEFAULT_CONNECT_TIMEOUT = 10.0
#: The user when neither the pod nor the connection names one (Prime's pods log in as root).
DEFAULT_USER = "root"
#: Scripts running at once on one connection, at most (sshd's default MaxSessions is 10): more wait.
MAX_SESSIONS_PER_CONNECTION = 8
#: Backoff between failed connects to one node: the first pause, and the longest.
BACKOFF_FIRST = 1.0
BACKOFF_MAX = 30.0
#: The most bytes of standard output one script may answer with (the scripts cap themselves far below).
MAX_ANSWER_BYTES = 16 * 1024 * 1024
#: Seconds :meth:`NodeLinks.close` waits for the connections to close.
CLOSE_TIMEOUT = 5.0
_STDERR_SHOWN = 300
_INSTALL = "pip install 'airflow-provider-prime[ssh]'"


class PrimeNodeUnreachableError(PrimeJobError):
    """A node could not be reached over SSH, or its connection dropped or timed out while it ran a
    script. Transient: the next :meth:`NodeLinks.run` reconnects (after the backoff).

    ``node`` is the node, when known.
    """

    def __init__(self, message: str, node: JobNode | None = None, *, cause: str = "") -> None:
        super().__init__(message)
        self.node = node
        self.cause = cause or message


class PrimeNodeLoginRefusedError(PrimeNodeUnreachableError):
    """The node answered but refused the login (the key or password of the SSH connection).

    A subclass of :class:`PrimeNodeUnreachableError`, so it is waited out like one: a pod whose keys
    are still being installed refuses for a moment. Its message says what to check.
    """


class PrimeHostKeyChangedError(PrimeJobError):
    """The node showed another host key than the one pinned: never retried (see the module doc)."""

    def __init__(self, message: str, node: JobNode | None = None) -> None:
        super().__init__(message)
        self.node = node


# --- credentials --------------------------------------------------------------------------------


@dataclass(frozen=True, repr=False)
class SshLogin:
    """Credentials from an Airflow SSH connection; the repr shows no secret.

    ``username`` is the connection's login (the pod's user wins when the pod names one);
    ``private_key`` the key's text (extra ``private_key``); ``key_file`` a path (extra ``key_file``);
    ``passphrase`` the key's (extra ``private_key_passphrase``); ``password`` the connection's;
    ``connect_timeout`` seconds for TCP, handshake and login (extra ``conn_timeout``, else 10 s);
    ``host_key`` an OpenSSH public key line pinned for every node (extra ``host_key``), or None;
    ``conn_id`` the connection's id, for messages.
    """

    username: str | None = None
    private_key: str | None = None
    key_file: str | None = None
    passphrase: str | None = None
    password: str | None = None
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT
    host_key: str | None = None
    conn_id: str | None = None

    def __repr__(self) -> str:
        def hidden(value: str | None) -> str:
            return "None" if value is None else "'***'"

        return (
            f"SshLogin(conn_id={self.conn_id!r}, username={self.username!r}, "
            f"private_key={hidden(self.private_key)}, key_file={self.key_file!r}, "
            f"passphrase={hidden(self.passphrase)}, password={hidden(self.password)}, "
            f"connect_timeout={self.connect_timeout!r}, host_key={self.host_key!r})"
        )

    __str__ = __repr__

    def secrets(self) -> tuple[str, ...]:
        """The secret values (the key's text, its passphrase, the password), for masking."""
        return tuple(value for value in (self.private_key, self.passphrase, self.password) if value)

    def scrub(self, text: str) -> str:
        """``text`` with every secret (and every long line of the key's text) replaced by ``***``."""
        for secret in self.secrets():
            text = text.replace(secret, "***")
        for line in (self.private_key or "").splitlines():
            if len(line.strip()) >= 8:
                text = text.replace(line.strip(), "***")
        return text


def _blank_is_none(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value)
    return text if text.strip() else None


def _extras(conn: Any, conn_id: str) -> dict[str, Any]:
    raw = getattr(conn, "extra", None)
    if raw is None or raw == "":
        return {}
    if isinstance(raw, Mapping):
        data: Any = raw
    else:
        try:
            data = json.loads(raw)
        except ValueError:
            raise PrimeConfigError(
                f"The SSH connection {conn_id!r} has an extra field that is not valid JSON: fix it "
                '(e.g. {"private_key": "-----BEGIN OPENSSH PRIVATE KEY-----\\n..."} or {"key_file": "/path"})'
            ) from None
    if not isinstance(data, Mapping):
        raise PrimeConfigError(f"The SSH connection {conn_id!r} has an extra field that is not a JSON object")
    return dict(data)


def _host_key_line(value: str, conn_id: str) -> str:
    """The extra ``host_key`` as ``"<type> <base64>"`` (a bare key is RSA, as the SSH provider reads it)."""
    words = value.split()
    if len(words) >= 2:
        return f"{words[0]} {words[1]}"
    if words[0].startswith("ssh-") or words[0].startswith("ecdsa-"):
        raise PrimeConfigError(f"The SSH connection {conn_id!r} has a host_key without key data: {value!r}")
    return f"ssh-rsa {words[0]}"


def login_from_connection(conn: Any) -> SshLogin:
    """The credentials of an Airflow connection (SDK or core model), by the SSH provider's conventions.

    :raises PrimeConfigError: the extra is not a JSON object; both ``private_key`` and ``key_file``
        are given (the SSH provider refuses that too); ``conn_timeout`` is not a positive number.
    """
    conn_id = str(getattr(conn, "conn_id", None) or "ssh")
    extras = _extras(conn, conn_id)
    private_key = _blank_is_none(extras.get("private_key"))
    key_file = _blank_is_none(extras.get("key_file"))
    if private_key and key_file:
        raise PrimeConfigError(
            f"The SSH connection {conn_id!r} gives both private_key and key_file in its extra: keep one"
        )
    passphrase = _blank_is_none(extras.get("private_key_passphrase")) or _blank_is_none(
        extras.get("passphrase")
    )
    timeout_text = _blank_is_none(extras.get("conn_timeout", extras.get("timeout")))
    connect_timeout = DEFAULT_CONNECT_TIMEOUT
    if timeout_text is not None:
        try:
            connect_timeout = float(timeout_text)
        except ValueError:
            connect_timeout = -1.0
        if not connect_timeout > 0:
            raise PrimeConfigError(
                f"The SSH connection {conn_id!r} has conn_timeout={timeout_text!r}: give a number of "
                "seconds above 0 (the default is 10)"
            )
    no_check = str(extras.get("no_host_key_check", "false")).lower() == "true"
    host_key_text = _blank_is_none(extras.get("host_key"))
    host_key = None if no_check or host_key_text is None else _host_key_line(host_key_text, conn_id)
    return SshLogin(
        username=_blank_is_none(getattr(conn, "login", None)),
        private_key=private_key.strip() + "\n" if private_key else None,
        key_file=key_file,
        passphrase=passphrase,
        password=_blank_is_none(getattr(conn, "password", None)),
        connect_timeout=connect_timeout,
        host_key=host_key,
        conn_id=conn_id,
    )


def _missing(ssh_conn_id: str) -> PrimeConfigError:
    unparsable = unparsable_connection_error(ssh_conn_id)
    if unparsable is not None:
        return PrimeConfigError(
            f"The SSH connection {ssh_conn_id!r} is defined in AIRFLOW_CONN_{ssh_conn_id.upper()} but "
            "Airflow could not parse it: fix it (a JSON object such as "
            '\'{"conn_type": "ssh", "login": "root", "extra": {"key_file": "/path/to/key"}}\')'
        )
    return PrimeConfigError(
        f"The SSH connection {ssh_conn_id!r} is not defined: create it (type 'SSH') with the private key "
        "whose public key is registered with Prime Intellect, in the extra as private_key (the key's text) "
        f"or key_file (a path), e.g. AIRFLOW_CONN_{ssh_conn_id.upper()}="
        '\'{"conn_type": "ssh", "extra": {"key_file": "~/.ssh/id_ed25519"}}\''
    )


def _base_hook() -> Any:
    from airflow.sdk import BaseHook

    return BaseHook


def get_login(ssh_conn_id: str) -> SshLogin:
    """The credentials of the Airflow SSH connection ``ssh_conn_id`` (in a worker); secrets masked.

    :raises PrimeConfigError: the connection is not defined, cannot be parsed, or is unusable.
    """
    conn = get_connection(_base_hook(), ssh_conn_id)
    if conn is None:
        raise _missing(ssh_conn_id)
    login = login_from_connection(conn)
    for secret in login.secrets():
        mask_secret(secret)
    return login


async def aget_login(ssh_conn_id: str) -> SshLogin:
    """:func:`get_login` in the triggerer: Airflow's async connection API, nothing blocking the loop."""
    conn = await aget_connection(_base_hook(), ssh_conn_id)
    if conn is None:
        raise _missing(ssh_conn_id)
    login = login_from_connection(conn)
    for secret in login.secrets():
        await amask_secret(secret)
    return login


# --- host keys ----------------------------------------------------------------------------------


def host_port(host: str, port: int) -> str:
    """How pins name a node: ``host:port`` (``[v6]:port`` for an IPv6 address)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _key_line(text: str) -> str:
    """``"<type> <base64>"`` of an OpenSSH public key line (the comment dropped)."""
    words = text.split()
    if len(words) < 2:
        raise ValueError(f"not an OpenSSH public key line: {text!r}")
    return f"{words[0]} {words[1]}"


class HostKeyPins:
    """``"host:port"`` -> the OpenSSH public key line a node showed first (``"ssh-ed25519 AAAA..."``).

    A pin is set once and never replaced. :meth:`to_dict` and the constructor make a plain dict
    round trip, so a trigger's kwargs can carry the pins from the worker to the triggerer.
    """

    def __init__(self, pins: Mapping[str, str] | None = None) -> None:
        self._pins: dict[str, str] = {str(where): _key_line(str(key)) for where, key in (pins or {}).items()}

    def get(self, host: str, port: int) -> str | None:
        """The key line pinned for ``host:port``, or None."""
        return self._pins.get(host_port(host, port))

    def pin(self, host: str, port: int, key_line: str) -> str:
        """Pin ``key_line`` for ``host:port`` unless a key is pinned already; the pinned line."""
        return self._pins.setdefault(host_port(host, port), _key_line(key_line))

    def to_dict(self) -> dict[str, str]:
        return dict(self._pins)

    def __len__(self) -> int:
        return len(self._pins)

    def __iter__(self) -> Iterator[str]:
        return iter(dict(self._pins))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, HostKeyPins) and other._pins == self._pins

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"HostKeyPins({self._pins!r})"


# --- asyncssh, lazily ---------------------------------------------------------------------------


#: Ciphers offered first: AES-GCM runs on the CPU's AES instructions, where asyncssh's default
#: (ChaCha20-Poly1305) builds a cipher context per packet, its largest cost polling hundreds of
#: nodes (``make bench-jobs``' profile; 300 polls on loopback: 1.03 s of CPU against 1.40 s).
PREFERRED_CIPHERS = ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com")


def _encryption_algs() -> list[str]:
    """:data:`PREFERRED_CIPHERS`, then asyncssh's own list: a server without them still agrees."""
    from asyncssh.encryption import get_default_encryption_algs

    defaults = [alg.decode("ascii") for alg in get_default_encryption_algs()]
    return [alg for alg in PREFERRED_CIPHERS if alg in defaults] + [
        alg for alg in defaults if alg not in PREFERRED_CIPHERS
    ]


def require_asyncssh() -> None:
    """Raise :class:`PrimeConfigError` saying how to install asyncssh when it is missing.

    Also quiets asyncssh's own INFO lines (several per script: channel opened, command, exit,
    closed), which would otherwise flood every task log and the triggerer's, unless the deployment
    has set that logger's level itself.
    """
    try:
        import asyncssh  # noqa: F401
    except ImportError as exc:
        raise PrimeConfigError(
            f"Running a job on the pods needs asyncssh, which is not installed: {_INSTALL}"
        ) from exc
    quiet = logging.getLogger("asyncssh")
    if quiet.level == logging.NOTSET:
        quiet.setLevel(logging.WARNING)


_CLIENT_CLASS: type[Any] | None = None


def _client_class() -> type[Any]:
    """An ``asyncssh.SSHClient`` that records the host key shown and whether the connection was lost.

    asyncssh asks :meth:`validate_host_public_key` only for a key it was not given as trusted: with a
    pin, the pin is the one trusted key and any other key is refused (and recorded); without one,
    every key is accepted (trust on first use) and recorded.
    """
    global _CLIENT_CLASS
    if _CLIENT_CLASS is None:
        require_asyncssh()
        import asyncssh

        class PinningClient(asyncssh.SSHClient):
            def __init__(self, pinned: bool) -> None:
                self.pinned = pinned
                self.shown: asyncssh.SSHKey | None = None
                self.lost = False

            def validate_host_public_key(self, host: str, addr: str, port: int, key: asyncssh.SSHKey) -> bool:
                self.shown = key
                return not self.pinned

            def connection_lost(self, exc: Exception | None) -> None:
                self.lost = True

        _CLIENT_CLASS = PinningClient
    return _CLIENT_CLASS


# --- handshake slots ----------------------------------------------------------------------------


class _Slots:
    """One semaphore per ``(host, port)``, dropped when nobody holds or waits for it."""

    def __init__(self) -> None:
        self.semaphores: dict[tuple[str, int], tuple[asyncio.Semaphore, int]] = {}

    @contextlib.asynccontextmanager
    async def hold(self, host: str, port: int) -> Any:
        key = (host, port)
        semaphore, users = self.semaphores.get(key, (None, 0))
        if semaphore is None:
            semaphore = asyncio.Semaphore(MAX_HANDSHAKES_PER_HOST)
        self.semaphores[key] = (semaphore, users + 1)
        try:
            async with semaphore:
                yield
        finally:
            semaphore, users = self.semaphores[key]
            if users <= 1:
                del self.semaphores[key]
            else:
                self.semaphores[key] = (semaphore, users - 1)


_SLOTS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Slots] = weakref.WeakKeyDictionary()


def _slots() -> _Slots:
    loop = asyncio.get_running_loop()
    slots = _SLOTS.get(loop)
    if slots is None:
        slots = _SLOTS[loop] = _Slots()
    return slots


def handshakes_waiting(host: str, port: int) -> int:
    """Connects to ``host:port`` holding or waiting for a handshake slot in the running loop."""
    entry = _slots().semaphores.get((host, port))
    return 0 if entry is None else entry[1]


# --- the links ----------------------------------------------------------------------------------


@dataclass
class _Link:
    """One node's connection and its reconnect state."""

    conn: Any = None
    client: Any = None
    lock: asyncio.Lock | None = None
    sessions: asyncio.Semaphore | None = None
    dialling: bool = False
    failures: int = 0
    retry_at: float = 0.0
    last_error: str = ""
    #: The host key the live connection was verified with (a sharer pinned to another refuses it).
    host_key: str | None = None
    #: The :class:`NodeLinks` using this link (it is closed when the last one lets go).
    users: int = 0

    def alive(self) -> bool:
        return self.conn is not None and not self.client.lost

    def drop(self) -> None:
        conn, self.conn, self.client = self.conn, None, None
        if conn is not None:
            conn.close()


#: The links of every job on an event loop, by login, node and user: the jobs of one triggerer that
#: run on the same node (a fan-out on one pod) share one connection to it instead of one each.
_SHARED_LINKS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[tuple[Any, ...], _Link]] = (
    weakref.WeakKeyDictionary()
)


def _shared_links() -> dict[tuple[Any, ...], _Link]:
    loop = asyncio.get_running_loop()
    links = _SHARED_LINKS.get(loop)
    if links is None:
        links = _SHARED_LINKS[loop] = {}
    return links


def _cause(exc: BaseException) -> str:
    text = str(exc).strip()
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class NodeLinks:
    """A job's SSH links: one asyncssh connection per node, reused across runs, reconnected with backoff.

    Use it in one event loop (``async with NodeLinks(login, pins) as links``). ``clock_time`` is the
    monotonic clock the backoff reads (a test gives a fake one). ``connections_opened`` and
    ``connect_attempts`` count connections opened and dials tried, in total.
    """

    def __init__(
        self,
        login: SshLogin,
        pins: HostKeyPins | None = None,
        *,
        clock_time: Callable[[], float] = time.monotonic,
    ) -> None:
        self._login = login
        self._pins = pins if pins is not None else HostKeyPins()
        self._clock = clock_time
        self._links: dict[tuple[Any, ...], _Link] = {}
        self._changed: dict[str, str] = {}
        self._client_keys: list[Any] | None = None
        self.connections_opened = 0
        self.connect_attempts = 0

    @property
    def pins(self) -> HostKeyPins:
        """The host keys pinned so far (hand ``pins.to_dict()`` to whoever continues the wait)."""
        return self._pins

    def open_connections(self) -> int:
        """Connections open now."""
        return sum(1 for link in self._links.values() if link.alive())

    async def __aenter__(self) -> NodeLinks:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Let go of every link (idempotent): a connection no other job uses is closed. The links may
        be used again: they reconnect."""
        conns = []
        shared = _SHARED_LINKS.get(asyncio.get_running_loop(), {})
        for key, link in self._links.items():
            link.users -= 1
            if link.users <= 0:
                if link.conn is not None:
                    conns.append(link.conn)
                link.drop()
                if shared.get(key) is link:
                    del shared[key]
        self._links.clear()
        if conns:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(
                    asyncio.gather(*(conn.wait_closed() for conn in conns), return_exceptions=True),
                    CLOSE_TIMEOUT,
                )

    # -- running ------------------------------------------------------------------------------------

    async def run(self, node: JobNode, script: str, *, timeout: float) -> bytes:
        """Run ``script`` as the standard input of ``bash -s`` on ``node``; its standard output.

        The whole call (waiting for a handshake slot, connecting, running) is bounded by ``timeout``;
        a run that times out drops the node's connection.

        :raises PrimeNodeUnreachableError: the node could not be reached (or is inside the backoff
            after a failed connect), or its connection dropped or timed out during the script.
        :raises PrimeHostKeyChangedError: the node showed another host key than the pinned one.
        :raises PrimeJobError: ``bash -s`` failed on the node without any output (its exit code and
            standard error are in the message), or the answer was larger than ``MAX_ANSWER_BYTES``.
        :raises PrimeConfigError: asyncssh is missing, or the connection's key cannot be read.
        """
        link = self._link(node)
        if link.sessions is None:
            link.sessions = asyncio.Semaphore(MAX_SESSIONS_PER_CONNECTION)
        try:
            return await asyncio.wait_for(self._run(node, link, link.sessions, script), timeout)
        except asyncio.TimeoutError:
            link.drop()
            raise PrimeNodeUnreachableError(
                f"{node.label} did not answer over SSH within {timeout:g} s; its connection was closed "
                "and the next try reconnects",
                node,
            ) from None

    def _link(self, node: JobNode) -> _Link:
        key = (self._login, node.host, node.port, self._user(node))
        link = self._links.get(key)
        if link is None:
            shared = _shared_links()
            link = shared.get(key)
            if link is None:
                link = shared[key] = _Link()
            link.users += 1
            self._links[key] = link
        return link

    def _user(self, node: JobNode) -> str:
        return node.user or self._login.username or DEFAULT_USER

    async def _run(self, node: JobNode, link: _Link, sessions: asyncio.Semaphore, script: str) -> bytes:
        async with sessions:
            return await self._run_one(node, link, script)

    async def _run_one(self, node: JobNode, link: _Link, script: str) -> bytes:
        require_asyncssh()
        import asyncssh

        reused = link.alive()
        conn = await self._connection(node, link)
        try:
            process = await conn.create_process(REMOTE_COMMAND, encoding=None)
        except (asyncssh.Error, OSError) as exc:
            if link.conn is conn:
                link.drop()
            if not reused:
                raise self._unreachable(
                    node, "its SSH connection failed before the script started", exc
                ) from exc
            # The connection was stale (the node closed it while idle): nothing ran, so dial again once.
            conn = await self._connection(node, link)
            try:
                process = await conn.create_process(REMOTE_COMMAND, encoding=None)
            except (asyncssh.Error, OSError) as again:
                if link.conn is conn:
                    link.drop()
                raise self._unreachable(
                    node, "its SSH connection failed before the script started", again
                ) from again
        try:
            return await self._exchange(node, process, script)
        except (asyncssh.Error, OSError) as exc:
            if link.conn is conn:
                link.drop()
            raise self._unreachable(node, "its SSH connection failed during the script", exc) from exc
        finally:
            process.close()

    async def _exchange(self, node: JobNode, process: Any, script: str) -> bytes:
        process.stdin.write(script.encode())
        process.stdin.write_eof()
        stdout, stderr = await asyncio.gather(
            _read_capped(process.stdout, MAX_ANSWER_BYTES), _read_tail(process.stderr, _STDERR_SHOWN)
        )
        if stdout is None:
            raise PrimeJobError(
                f"{node.label} answered a job script with more than {MAX_ANSWER_BYTES} bytes; "
                "that is not a job report"
            )
        await process.wait_closed()
        status = process.exit_status
        if status is None or status < 0:
            signal = process.exit_signal
            if signal is not None:
                why = f"bash -s was killed by SIG{signal[0]}"
            else:
                why = "the connection closed before the script ended"
            raise PrimeNodeUnreachableError(f"{node.label} did not finish a job script: {why}", node)
        if status != 0 and not stdout:
            shown = self._login.scrub(stderr.decode(errors="replace").strip())
            raise PrimeJobError(
                f"{node.label} could not run a job script: `{REMOTE_COMMAND}` exited {status} without "
                f"output ({shown or 'nothing on stderr'}). The job needs bash on the node and a login "
                "shell that runs commands"
            )
        return stdout

    # -- connecting ---------------------------------------------------------------------------------

    async def _connection(self, node: JobNode, link: _Link) -> Any:
        """The node's live connection, dialled if needed (one dial at a time per node)."""
        if link.alive():
            return self._verified(node, link)
        if link.lock is None:
            link.lock = asyncio.Lock()
        async with link.lock:
            if link.alive():
                return self._verified(node, link)
            link.drop()
            where = host_port(node.host, node.port)
            if where in self._changed:
                raise PrimeHostKeyChangedError(self._changed[where], node)
            wait = link.retry_at - self._clock()
            if link.failures and wait > 0:
                raise PrimeNodeUnreachableError(
                    f"{node.label} is unreachable over SSH ({link.last_error}); {link.failures} dial(s) "
                    f"failed in a row, the next one is in {wait:.1f} s",
                    node,
                    cause=link.last_error,
                )
            try:
                conn, client = await self._dial(node, where, link)
            except PrimeNodeUnreachableError as exc:
                link.failures += 1
                link.retry_at = self._clock() + min(BACKOFF_MAX, BACKOFF_FIRST * 2 ** (link.failures - 1))
                link.last_error = exc.cause
                raise
            except asyncio.CancelledError:
                if link.dialling:  # the run timed out during the handshake: that dial failed too
                    link.failures += 1
                    link.retry_at = self._clock() + min(BACKOFF_MAX, BACKOFF_FIRST * 2 ** (link.failures - 1))
                    link.last_error = "no SSH handshake within the run's timeout"
                raise
            finally:
                link.dialling = False
            link.conn, link.client = conn, client
            link.failures, link.retry_at, link.last_error = 0, 0.0, ""
            return conn

    def _verified(self, node: JobNode, link: _Link) -> Any:
        """A live connection another job dialled, once its host key agrees with this job's pin."""
        where = host_port(node.host, node.port)
        if where in self._changed:
            raise PrimeHostKeyChangedError(self._changed[where], node)
        pinned = self._pins.get(node.host, node.port)
        if link.host_key is not None:
            if pinned is None:
                self._pins.pin(node.host, node.port, link.host_key)
            elif _key_line(pinned) != _key_line(link.host_key):
                import asyncssh

                shown = asyncssh.import_public_key(link.host_key)
                raise self._host_key_changed(node, where, pinned, shown)
        return link.conn

    def _keys(self) -> list[Any] | None:
        """The private key of the login, imported once (None: asyncssh's defaults)."""
        if self._client_keys is None:
            login = self._login
            if not (login.private_key or login.key_file):
                return None
            require_asyncssh()
            import asyncssh

            conn_id = login.conn_id or "ssh"
            try:
                if login.private_key:
                    key = asyncssh.import_private_key(login.private_key, login.passphrase)
                else:
                    key = asyncssh.read_private_key(_expand(login.key_file or ""), login.passphrase)
            except (asyncssh.KeyImportError, asyncssh.KeyEncryptionError, ValueError) as exc:
                where = "private_key" if login.private_key else f"key_file {login.key_file!r}"
                raise PrimeConfigError(
                    f"The SSH connection {conn_id!r}: its {where} could not be read as a private key "
                    f"({login.scrub(str(exc))}). Check the key and its private_key_passphrase"
                ) from None
            except OSError as exc:
                raise PrimeConfigError(
                    f"The SSH connection {conn_id!r}: key_file {login.key_file!r} cannot be read "
                    f"({exc.strerror or type(exc).__name__})"
                ) from None
            self._client_keys = [key]
        return self._client_keys

    async def _dial(self, node: JobNode, where: str, link: _Link) -> tuple[Any, Any]:
        require_asyncssh()
        import asyncssh

        login = self._login
        pin_line = self._pins.get(node.host, node.port) or login.host_key
        pinned_key = _import_pin(pin_line, node) if pin_line else None
        client = _client_class()(pinned=pinned_key is not None)
        options: dict[str, Any] = {
            "username": self._user(node),
            "known_hosts": ([pinned_key] if pinned_key else [], [], []),
            "connect_timeout": login.connect_timeout,
            "keepalive_interval": KEEPALIVE_INTERVAL,
            "keepalive_count_max": KEEPALIVE_COUNT_MAX,
            "config": None,
            "encryption_algs": _encryption_algs(),
        }
        keys = self._keys()
        if keys is not None:
            options["client_keys"] = keys
        if login.password:
            options["password"] = login.password
        self.connect_attempts += 1
        try:
            async with _slots().hold(node.host, node.port):
                link.dialling = True  # a slot is ours: from here, running out of time is a failed dial
                conn, _ = await asyncssh.create_connection(lambda: client, node.host, node.port, **options)
        except asyncssh.HostKeyNotVerifiable as exc:
            if pinned_key is not None and client.shown is not None:
                raise self._host_key_changed(node, where, pin_line or "", client.shown) from None
            raise self._unreachable(node, "its host key could not be verified", exc) from None
        except asyncssh.PermissionDenied as exc:
            raise PrimeNodeLoginRefusedError(
                f"{node.label} refused the SSH login as {self._user(node)!r} ({login.scrub(str(exc))}): "
                f"check that the key of the SSH connection {login.conn_id or 'ssh'!r} is one whose public "
                "key is registered with Prime Intellect, and the user",
                node,
            ) from None
        except asyncio.TimeoutError:
            raise self._unreachable(
                node, f"no SSH handshake within {login.connect_timeout:g} s (conn_timeout)", None
            ) from None
        except (asyncssh.Error, OSError) as exc:
            raise self._unreachable(node, "the SSH connection failed", exc) from None
        shown = conn.get_server_host_key()
        if shown is not None:
            line = shown.export_public_key("openssh").decode()
            if self._pins.get(node.host, node.port) is None:
                log.info("Pinned the host key of %s: %s", node.label, shown.get_fingerprint())
            self._pins.pin(node.host, node.port, line)
            link.host_key = line
        self.connections_opened += 1
        return conn, client

    def _unreachable(self, node: JobNode, what: str, exc: BaseException | None) -> PrimeNodeUnreachableError:
        cause = what if exc is None else f"{what}: {self._login.scrub(_cause(exc))}"
        return PrimeNodeUnreachableError(f"{node.label} is unreachable over SSH ({cause})", node, cause=cause)

    def _host_key_changed(
        self, node: JobNode, where: str, pin_line: str, shown: Any
    ) -> PrimeHostKeyChangedError:
        import asyncssh

        pinned = asyncssh.import_public_key(pin_line).get_fingerprint()
        source = (
            f"the connection {self._login.conn_id or 'ssh'!r}'s host_key"
            if self._pins.get(node.host, node.port) is None
            else "the key pinned when it was first reached"
        )
        message = (
            f"The host key of {node.label} changed during the job; refusing to connect: the pod may have "
            f"been replaced, or someone is in the middle (expected {pinned} from {source}, shown "
            f"{shown.get_fingerprint()}). Nothing was sent to it; it will not be dialled again"
        )
        self._changed[where] = message
        log.error("%s", message)
        return PrimeHostKeyChangedError(message, node)


def _expand(path: str) -> str:
    import os.path

    return os.path.expanduser(path)


def _import_pin(line: str, node: JobNode) -> Any:
    import asyncssh

    try:
        return asyncssh.import_public_key(line)
    except (asyncssh.KeyImportError, ValueError):
        raise PrimeConfigError(
            f"The host key pinned for {node.label} is not an OpenSSH public key: {line[:80]!r}"
        ) from None


async def _read_tail(stream: Any, keep: int) -> bytes:
    """Everything ``stream`` gives until EOF, of which the last ``keep`` bytes are kept."""
    tail = b""
    while True:
        data = await stream.read(65536)
        if not data:
            return tail
        tail = (tail + data)[-keep:]


async def _read_capped(stream: Any, cap: int) -> bytes | None:
    """Everything ``stream`` gives until EOF; None once more than ``cap`` bytes arrived."""
    chunks: list[bytes] = []
    size = 0
    while True:
        data = await stream.read(65536)
        if not data:
            return b"".join(chunks)
        size += len(data)
        if size > cap:
            return None
        chunks.append(data)


__all__ = [
    "MAX_HANDSHAKES_PER_HOST",
    "HostKeyPins",
    "NodeLinks",
    "PrimeHostKeyChangedError",
    "PrimeNodeLoginRefusedError",
    "PrimeNodeUnreachableError",
    "SshLogin",
    "aget_login",
    "get_login",
    "host_port",
    "login_from_connection",
]
