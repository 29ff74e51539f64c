"""Real Airflow components on loopback, in a throw-away home: what `make demo` and tests/e2e run.

One :class:`AirflowStack` owns an ``AIRFLOW_HOME`` (an ``airflow.cfg`` written here, SQLite unless
given another database URL, free ports on 127.0.0.1) and the component processes started in it.
Every component runs in its own process group, so stopping one also stops the task and
trigger-runner subprocesses it forked; no process outlives :meth:`AirflowStack.stop` (also run by
``with`` on errors and Ctrl-C).

Components are started individually rather than through ``airflow standalone`` so that one of
them (the triggerer) can be killed and restarted while the others keep running, and so that
several triggerers (``triggerer-1``, ``triggerer-2``...: high availability, as in production) can
run side by side, each with its own log. Airflow's own output goes to ``<home>/logs/<component>.log``.
"""

from __future__ import annotations

import configparser
import contextlib
import ctypes
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from cryptography.fernet import Fernet

from scripts.airflow_api import AirflowApi, OnChange, RunWatcher

#: The components a DAG with a deferrable sensor needs: the api-server also hosts the execution
#: API the task processes report to, the dag-processor parses the DAG files.
COMPONENTS = ("api-server", "dag-processor", "scheduler", "triggerer")
#: The component name as the api-server's /monitor/health reports it.
HEALTH_KEYS = {"scheduler": "scheduler", "triggerer": "triggerer", "dag-processor": "dag_processor"}
#: Extra command-line flags: the log servers are not needed (all logs are local files).
FLAGS = {"scheduler": ("--skip-serve-logs",), "triggerer": ("--skip-serve-logs",)}
#: The job type the api-server's /jobs lists a triggerer's job under.
TRIGGERER_JOB = "TriggererJob"

#: prctl(2) option: the signal a process gets when its parent dies.
PR_SET_PDEATHSIG = 1
#: ``airflow_local_settings.py`` for ``sensor_overrides``: Airflow applies ``task_policy`` to every
#: task wherever a DAG file is parsed (dag-processor and the worker alike).
SENSOR_POLICY = '''"""Written by scripts/airflow_stack.py: sensor settings for a throw-away Airflow."""

from airflow.sdk import BaseSensorOperator

OVERRIDES = {overrides!r}


def task_policy(task):
    if isinstance(task, BaseSensorOperator):
        for name, value in OVERRIDES.items():
            setattr(task, name, value)
'''


def command_of(name: str) -> str:
    """The Airflow command a component runs: ``triggerer-2`` is one more ``airflow triggerer``."""
    return "triggerer" if name.startswith("triggerer-") else name


def triggerer_names(count: int) -> tuple[str, ...]:
    """``("triggerer",)`` for one (the name tests/e2e and the demo use), else numbered from 1."""
    if count < 1:
        raise ValueError(f"a stack needs at least one triggerer, not {count}")
    return ("triggerer",) if count == 1 else tuple(f"triggerer-{i}" for i in range(1, count + 1))


def die_with_parent() -> None:
    """In a new component, before exec: have Linux SIGTERM it if the process that started it dies.

    The last line of defence when the demo or pytest is SIGKILLed and cannot stop its components
    (``prctl(PR_SET_PDEATHSIG)``; "dies" means the thread that started it, the main thread here).
    A no-op where there is no prctl.
    """
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_until(check: Callable[[], Any], timeout: float, what: str, interval: float = 0.5) -> Any:
    """Call ``check`` until it returns something truthy (returned) or ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


@dataclass
class Component:
    """One running Airflow command, the leader of its own process group."""

    name: str
    process: subprocess.Popen[bytes]
    log_path: Path
    #: The Airflow job this process runs, once known (triggerers: see :meth:`AirflowStack.start`).
    job_id: int | None = None

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def terminate(self) -> None:
        """Ask the leader to shut down (SIGTERM); it stops its own children in order."""
        with contextlib.suppress(ProcessLookupError):
            self.process.terminate()

    def stop(self, *, grace: float = 3.0) -> None:
        """SIGTERM the leader, SIGKILL its whole group after ``grace`` seconds; returns once all are gone.

        Only the leader gets SIGTERM, so it can shut down its children in order; stragglers die
        with the group. ``grace`` is short on purpose: a triggerer alone waits 10 s for its trigger
        runner to exit, and nothing a throw-away stack holds needs a clean shutdown.
        """
        self.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=grace)
        self.kill()

    def kill(self) -> None:
        """SIGKILL the whole process group (a crash, as far as Airflow can tell)."""
        self._signal(signal.SIGKILL)
        self.process.wait()
        # Children that were still alive die with the group; wait until none is left.
        with contextlib.suppress(TimeoutError):
            wait_until(lambda: not self._group_alive(), 5, f"{self.name}'s children", 0.1)

    def _signal(self, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, sig)

    def _group_alive(self) -> bool:
        try:
            os.killpg(self.process.pid, 0)
        except (ProcessLookupError, PermissionError):
            return False
        return True


@dataclass
class AirflowStack:
    """Airflow's components in ``home``, reading DAGs from ``dags_folder``; use as a context manager.

    ``env`` is added to every component's environment (connections as ``AIRFLOW_CONN_*``, say);
    ``config`` overrides or extends the generated ``airflow.cfg`` (section -> option -> value).
    ``python`` runs ``-m airflow``: the interpreter whose Airflow is under test.
    ``sensor_overrides`` sets attributes of every sensor when its DAG is parsed (a cluster policy
    in ``<home>/config/airflow_local_settings.py``), e.g. ``{"poke_interval": 2.0}`` to run
    example DAGs written for the real API faster, without changing them.

    Production shape (tests/ha, bench/production.py): ``database_url`` is the metadata database's
    SQLAlchemy URL (default: SQLite in ``home``; see :mod:`scripts.postgres` for a throw-away
    Postgres), ``database_async_url`` the one for Airflow's async engine (None: Airflow derives it,
    which for ``postgresql`` means asyncpg); ``executor`` and ``parallelism`` go to ``[core]``;
    ``triggerers`` is how many triggerer processes run (:attr:`component_names`);
    ``triggerer_heartbeat`` is their ``job_heartbeat_sec`` and ``triggerer_health_threshold``
    how stale a heartbeat may get before another triggerer takes that one's triggers over
    (``triggerer_health_check_threshold``);
    ``triggerer_capacity`` caps the triggers one triggerer runs (None: Airflow's 1,000).
    """

    home: Path
    dags_folder: Path
    env: Mapping[str, str] = field(default_factory=dict)
    config: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    python: str = sys.executable
    sensor_overrides: Mapping[str, Any] = field(default_factory=dict)
    api_port: int = field(default_factory=free_port)
    database_url: str | None = None
    database_async_url: str | None = None
    executor: str = "LocalExecutor"
    parallelism: int = 4
    triggerers: int = 1
    triggerer_heartbeat: float = 2.0
    triggerer_health_threshold: float = 10.0
    triggerer_capacity: int | None = None
    #: Seconds the REST client waits for one answer (a loaded api-server on Postgres can be slow).
    api_timeout: float = 30.0
    components: dict[str, Component] = field(default_factory=dict, init=False)
    _api: AirflowApi | None = field(default=None, init=False)
    #: Every triggerer job id ever matched to a component: a new process's job is the one not in here.
    _known_jobs: set[int] = field(default_factory=set, init=False)

    @property
    def component_names(self) -> tuple[str, ...]:
        """What :meth:`start` starts by default: the components a deferrable sensor needs."""
        return (*(name for name in COMPONENTS if name != "triggerer"), *triggerer_names(self.triggerers))

    @property
    def triggerer_components(self) -> dict[str, Component]:
        """The running triggerers by component name."""
        return {name: c for name, c in self.components.items() if command_of(name) == "triggerer"}

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def log_dir(self) -> Path:
        return self.home / "logs"

    @property
    def api(self) -> AirflowApi:
        """A REST client for the api-server (created once it is up)."""
        if self._api is None:
            self._api = AirflowApi(self.base_url, timeout=self.api_timeout)
        return self._api

    def __enter__(self) -> AirflowStack:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- set-up ----------------------------------------------------------------------------------

    def settings(self) -> dict[str, dict[str, str]]:
        """The ``airflow.cfg`` content: SQLite (by default), LocalExecutor, loopback, fast loops."""
        triggerer = {
            "job_heartbeat_sec": f"{self.triggerer_heartbeat:g}",
            "triggerer_health_check_threshold": f"{self.triggerer_health_threshold:g}",
        }
        if self.triggerer_capacity is not None:
            triggerer["capacity"] = str(self.triggerer_capacity)
        base: dict[str, dict[str, str]] = {
            "core": {
                "dags_folder": str(self.dags_folder),
                "executor": self.executor,
                "parallelism": str(self.parallelism),
                "load_examples": "False",
                "dags_are_paused_at_creation": "False",
                "auth_manager": "airflow.api_fastapi.auth.managers.simple.simple_auth_manager."
                "SimpleAuthManager",
                "simple_auth_manager_all_admins": "True",
                "execution_api_server_url": f"{self.base_url}/execution/",
                "fernet_key": Fernet.generate_key().decode(),
            },
            "database": {"sql_alchemy_conn": self.database_url or f"sqlite:///{self.home / 'airflow.db'}"},
            "api": {
                "host": "127.0.0.1",
                "port": str(self.api_port),
                "base_url": self.base_url,
                "workers": "1",
                "secret_key": secrets.token_urlsafe(16),
            },
            "api_auth": {"jwt_secret": secrets.token_urlsafe(32)},
            "scheduler": {"scheduler_heartbeat_sec": "2", "scheduler_idle_sleep_time": "0.5"},
            "dag_processor": {
                "refresh_interval": "5",
                "min_file_process_interval": "30",
                "parsing_processes": "1",
            },
            # A killed triggerer's triggers move to a live one once its heartbeat is this old.
            "triggerer": triggerer,
            "logging": {
                "base_log_folder": str(self.log_dir),
                "dag_processor_child_process_log_directory": str(self.log_dir / "dag_processor"),
                "worker_log_server_port": str(free_port()),
                "trigger_log_server_port": str(free_port()),
            },
        }
        if self.database_async_url is not None:
            base["database"]["sql_alchemy_conn_async"] = self.database_async_url
        for section, options in self.config.items():
            base.setdefault(section, {}).update(options)
        return base

    def process_env(self) -> dict[str, str]:
        """The environment of every component: this one, minus stray Airflow settings, plus ours."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW__", "AIRFLOW_CONN_"))}
        env.update(AIRFLOW_HOME=str(self.home), AIRFLOW_CONFIG=str(self.home / "airflow.cfg"))
        env.update(self.env)
        return env

    def init(self) -> None:
        """Write ``airflow.cfg`` into an empty ``home`` and create the metadata database."""
        self.home.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(exist_ok=True)
        parser = configparser.ConfigParser(interpolation=None)
        parser.read_dict(self.settings())
        with (self.home / "airflow.cfg").open("w") as cfg:
            parser.write(cfg)
        if self.sensor_overrides:
            config_dir = self.home / "config"
            config_dir.mkdir(exist_ok=True)
            policy = SENSOR_POLICY.format(overrides=dict(self.sensor_overrides))
            (config_dir / "airflow_local_settings.py").write_text(policy)
        log = self.log_dir / "db-migrate.log"
        with log.open("wb") as out:
            done = subprocess.run(
                [self.python, "-m", "airflow", "db", "migrate"],
                env=self.process_env(),
                cwd=self.home,
                stdout=out,
                stderr=subprocess.STDOUT,
                check=False,
            )
        if done.returncode != 0:
            raise RuntimeError(f"`airflow db migrate` failed; see {log}:\n{tail(log)}")

    # -- processes -------------------------------------------------------------------------------

    def start(self, names: Iterable[str] | None = None, *, timeout: float = 120.0) -> None:
        """Start the given components (default :attr:`component_names`) that are not running yet and
        wait until the api-server says they are up.

        Every triggerer's job id is found out (:attr:`Component.job_id`), so a test can tell which
        process runs a trigger: the first triggerer starts with the other components, each further
        one once the job of the one before it has shown up, and a triggerer's job is the live one no
        earlier triggerer had.
        """
        wanted = [n for n in (self.component_names if names is None else names) if not self._running(n)]
        first_triggerer = True
        for name in wanted:
            if command_of(name) == "triggerer":
                if not first_triggerer:
                    continue
                first_triggerer = False
            self.components[name] = self._spawn(name)
        self.wait_healthy(timeout=timeout)
        for name in wanted:
            if command_of(name) == "triggerer":
                if name not in self.components:
                    self.components[name] = self._spawn(name)
                self._find_job(self.components[name], timeout)
        self.wait_healthy(timeout=timeout)

    def _running(self, name: str) -> bool:
        return name in self.components and self.components[name].alive()

    def _find_job(self, component: Component, timeout: float) -> None:
        def new_job() -> int | None:
            self._check_alive()
            alive = {int(job["id"]) for job in self.api.jobs(TRIGGERER_JOB, alive=True)}
            fresh = alive - self._known_jobs
            return max(fresh) if fresh else None

        component.job_id = wait_until(new_job, timeout, f"the job of {component.name}", interval=0.5)
        self._known_jobs.add(component.job_id)

    def triggerer_by_job(self, job_id: int) -> Component | None:
        """The running triggerer whose job is ``job_id`` (None if it is not one of ours, or dead)."""
        return next((c for c in self.triggerer_components.values() if c.job_id == job_id), None)

    def _spawn(self, name: str) -> Component:
        log_path = self.log_dir / f"{name}.log"
        command = command_of(name)
        out: IO[bytes]
        with log_path.open("ab") as out:
            process = subprocess.Popen(
                [self.python, "-m", "airflow", command, *FLAGS.get(command, ())],
                env=self.process_env(),
                cwd=self.home,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: stopped as a whole
                preexec_fn=die_with_parent,
            )
        return Component(name, process, log_path)

    def wait_healthy(self, *, timeout: float = 120.0) -> None:
        """Wait until the api-server answers and every started component reports a live heartbeat."""

        def healthy() -> bool:
            self._check_alive()
            health = self.api.health()
            return health is not None and all(
                health.get(HEALTH_KEYS[command], {}).get("status") == "healthy"
                for command in map(command_of, self.components)
                if command in HEALTH_KEYS
            )

        wait_until(healthy, timeout, "the Airflow components to be healthy", interval=1.0)

    def _check_alive(self) -> None:
        for component in self.components.values():
            if not component.alive():
                raise RuntimeError(
                    f"airflow {component.name} exited early; see {component.log_path}:\n"
                    f"{tail(component.log_path)}"
                )

    # -- DAGs ------------------------------------------------------------------------------------

    def wait_for_dags(self, *dag_ids: str, timeout: float = 120.0) -> None:
        """Wait until the dag-processor stored these DAGs; fail at once on an import error."""

        def parsed() -> bool:
            errors = self.api.import_errors()
            if errors:
                details = "\n".join(f"{e['filename']}:\n{e['stack_trace']}" for e in errors)
                raise RuntimeError(f"DAG import errors:\n{details}")
            return all(self.api.dag(dag_id) is not None for dag_id in dag_ids)

        wait_until(parsed, timeout, f"the dag-processor to parse {', '.join(dag_ids)}", interval=1.0)

    def trigger(
        self, dag_id: str, conf: Mapping[str, Any] | None = None, *, on_change: OnChange | None = None
    ) -> RunWatcher:
        """Unpause the DAG, start a run with ``conf`` and return a watcher for it."""
        self.api.unpause(dag_id)
        run_id = self.api.trigger(dag_id, conf)
        return RunWatcher(self.api, dag_id, run_id, on_change)

    def task_log_files(self, dag_id: str, run_id: str, task_id: str) -> dict[str, str]:
        """The task's log files by name: ``attempt=1.log`` from the worker and, for a deferred task,
        ``attempt=1.log.trigger.<triggerer job id>.log`` from each triggerer that ran its trigger."""
        folder = self.log_dir / f"dag_id={dag_id}" / f"run_id={run_id}" / f"task_id={task_id}"
        return {path.name: path.read_text(errors="replace") for path in sorted(folder.glob("*.log"))}

    def deferral_processed(self, dag_id: str, run_id: str, task_id: str, map_index: int = -1) -> bool:
        """Whether the scheduler has taken note that the worker process which deferred the task ended.

        Until it has, a trigger that fires at once races the scheduler: the deferring process's
        stale "success" can fail the resumed task (apache/airflow#66374, #67287, #72716). Tests that
        decide when a trigger fires wait for this first. Read from the scheduler's log, the only
        place that says it: "TaskInstance Finished ... state=deferred". On Postgres the scheduler
        skips a task instance whose row another process holds locked, and then logs only that it
        received the event: gone unhandled, it cannot race anything either.
        """
        ti = (
            rf"dag_id={re.escape(dag_id)}, task_id={re.escape(task_id)}, run_id={re.escape(run_id)}, "
            rf"map_index={map_index},"
        )
        key = (
            rf"dag_id='{re.escape(dag_id)}', task_id='{re.escape(task_id)}', run_id='{re.escape(run_id)}', "
            rf"try_number=\d+, map_index={map_index}\)"
        )
        log = (self.log_dir / "scheduler.log").read_text(errors="replace")
        finished = re.findall(rf"TaskInstance Finished: {ti} .*?, state=(\w+), executor=", log)
        if finished:
            return "deferred" in finished
        return (
            re.search(
                rf"Received executor event with state \w+ for task instance TaskInstanceKey\({key}", log
            )
            is not None
        )

    def kill(self, name: str) -> None:
        """SIGKILL one component's process group, as a crash would."""
        self.components.pop(name).kill()

    def stop(self) -> None:
        """Stop every component, all at once (each gets the same short grace period)."""
        stopping = list(self.components.values())
        self.components.clear()
        for component in stopping:
            component.terminate()
        for component in stopping:
            component.stop()
        if self._api is not None:
            self._api.close()
            self._api = None


def tail(path: Path, lines: int = 30) -> str:
    """The last lines of a log file, for error messages."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""
