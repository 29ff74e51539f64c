"""A throw-away PostgreSQL server for a throw-away Airflow: the production tier's metadata database.

:class:`PostgresServer` runs Debian's ``postgresql`` binaries (found by :func:`find_bindir`) on a
fresh cluster in a temporary directory: ``initdb``, then ``postgres`` on a free port of 127.0.0.1
with its unix socket in that directory, ``fsync`` off (nothing here needs to survive a crash), and
one database. :meth:`PostgresServer.stop` (also run by ``with``) ends the server and deletes the
directory, so nothing is left running or on disk.

PostgreSQL refuses to run as root, and CI runs as root: then the cluster belongs to, and the server
runs as, the ``postgres`` user (``nobody`` where Debian's package did not create one). Which is why
the directory is made with :func:`tempfile.mkdtemp` and not under a caller's (root-only) path.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from scripts.airflow_stack import die_with_parent, free_port, tail, wait_until

#: Where Debian installs each major version's server binaries (``initdb`` is not on PATH there).
DEBIAN_BINDIRS = Path("/usr/lib/postgresql")
#: Who owns the cluster when this runs as root, in order of preference.
SERVICE_USERS = ("postgres", "nobody")
#: Server settings for a short-lived test database: fast rather than durable, and enough
#: connections for several Airflow components with their pools and worker processes.
SERVER_SETTINGS = {
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_connections": "300",
    "shared_buffers": "64MB",
}


class PostgresNotFound(RuntimeError):
    """No PostgreSQL server binaries on this machine."""


def find_bindir() -> Path:
    """The directory holding ``initdb`` and ``postgres``: ``$POSTGRES_BINDIR``, Debian's newest
    version, or wherever ``initdb`` is on PATH; :class:`PostgresNotFound` if none."""
    candidates: list[Path] = []
    if configured := os.environ.get("POSTGRES_BINDIR"):
        candidates.append(Path(configured))
    if DEBIAN_BINDIRS.is_dir():
        versions = [path / "bin" for path in DEBIAN_BINDIRS.iterdir() if path.name.isdigit()]
        candidates += sorted(versions, key=lambda path: int(path.parent.name), reverse=True)
    if on_path := shutil.which("initdb"):
        candidates.append(Path(on_path).resolve().parent)
    for bindir in candidates:
        if (bindir / "initdb").is_file() and (bindir / "postgres").is_file():
            return bindir
    raise PostgresNotFound(
        "PostgreSQL's server binaries (initdb, postgres) were not found in $POSTGRES_BINDIR, "
        f"{DEBIAN_BINDIRS}/<version>/bin or on PATH; install Debian's `postgresql` package"
    )


def service_user() -> pwd.struct_passwd | None:
    """The user the server runs as: None (this one) unless this process is root."""
    if os.geteuid() != 0:
        return None
    for name in SERVICE_USERS:
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    raise PostgresNotFound(f"running as root and none of the users {SERVICE_USERS} exists to run PostgreSQL")


@dataclass
class PostgresServer:
    """One PostgreSQL cluster and server, created by :meth:`start` and removed by :meth:`stop`."""

    database: str = "airflow"
    user: str = "airflow"
    port: int = field(default_factory=free_port)
    bindir: Path = field(default_factory=find_bindir)
    directory: Path | None = field(default=None, init=False)
    _process: subprocess.Popen[bytes] | None = field(default=None, init=False)
    _owner: pwd.struct_passwd | None = field(default=None, init=False)

    @property
    def url(self) -> str:
        """The SQLAlchemy URL of the database (psycopg 3; no password: loopback ``trust``)."""
        return f"postgresql+psycopg://{self.user}@127.0.0.1:{self.port}/{self.database}"

    @property
    def pid(self) -> int | None:
        """The server's process id while it runs."""
        return None if self._process is None else self._process.pid

    @property
    def log_path(self) -> Path:
        return self._dir / "server.log"

    @property
    def _dir(self) -> Path:
        if self.directory is None:
            raise RuntimeError("the PostgreSQL server has not been started")
        return self.directory

    def __enter__(self) -> PostgresServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self, *command: str) -> None:
        log = self._dir / "setup.log"
        with log.open("ab") as out:
            done = subprocess.run(
                command, stdout=out, stderr=subprocess.STDOUT, check=False, **self._as_owner()
            )
        if done.returncode != 0:
            raise RuntimeError(f"`{' '.join(command)}` failed; see {log}:\n{tail(log)}")

    def _as_owner(self) -> dict[str, Any]:
        owner = self._owner
        if owner is None:
            return {}
        return {"user": owner.pw_uid, "group": owner.pw_gid, "extra_groups": []}

    def start(self, *, timeout: float = 60.0) -> PostgresServer:
        """initdb, start the server, create the database; returns once it accepts connections."""
        if self._process is not None:
            return self
        self._owner = service_user()
        self.directory = Path(tempfile.mkdtemp(prefix="airflow-postgres-"))
        try:
            if self._owner is not None:
                os.chown(self.directory, self._owner.pw_uid, self._owner.pw_gid)
            data = self.directory / "data"
            self._run(
                str(self.bindir / "initdb"),
                f"--pgdata={data}",
                f"--username={self.user}",
                "--auth=trust",
                "--encoding=UTF8",
                "--no-sync",
            )
            self._spawn(data)
            wait_until(self._accepting, timeout, f"PostgreSQL on port {self.port}", interval=0.2)
            self._run(
                str(self.bindir / "createdb"),
                f"--host={self.directory}",
                f"--port={self.port}",
                f"--username={self.user}",
                self.database,
            )
        except BaseException:
            self.stop()
            raise
        return self

    def _spawn(self, data: Path) -> None:
        command = [str(self.bindir / "postgres"), "-D", str(data), "-k", str(self._dir)]
        command += ["-h", "127.0.0.1", "-p", str(self.port)]
        command += [arg for name, value in SERVER_SETTINGS.items() for arg in ("-c", f"{name}={value}")]
        out: IO[bytes]
        with self.log_path.open("ab") as out:
            self._process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=die_with_parent,
                **self._as_owner(),
            )

    def _accepting(self) -> bool:
        assert self._process is not None
        if self._process.poll() is not None:
            raise RuntimeError(f"PostgreSQL exited at start; see {self.log_path}:\n{tail(self.log_path)}")
        ready = subprocess.run(
            [str(self.bindir / "pg_isready"), "--quiet", f"--host={self._dir}", f"--port={self.port}"],
            check=False,
        )
        return ready.returncode == 0

    def stop(self, *, grace: float = 10.0) -> None:
        """Fast shutdown (SIGINT: disconnect everyone), SIGKILL after ``grace``; delete the cluster."""
        process, self._process = self._process, None
        if process is not None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        directory, self.directory = self.directory, None
        if directory is not None:
            shutil.rmtree(directory, ignore_errors=True)
