"""`make demo`: a real Airflow waits for GPU pods and hands their SSH targets to a training task.

Runs ``example_dags/example_prime_wait_and_train.py`` on a throw-away Airflow (``.demo/`` in the
repository, SQLite, wiped on every run) against a local Prime API simulator whose two pods (one
single-node, one two-node) become ready 20 and 35 seconds after the run starts. With
``PRIME_POD_IDS=id1,id2`` and credentials (``PRIME_API_KEY``, optionally ``PRIME_API_BASE_URL``,
or a whole ``AIRFLOW_CONN_PRIME_DEFAULT``) it waits for those pods on the real API instead.

It prints what happens: task states (DEFERRED: the wait moved to the triggerer), the pods'
progress as the trigger reports it, the SSH targets the training task got, the final state.
Exit status 0 if the run succeeded, 1 if it failed, 130 on Ctrl-C; every process it started is
stopped in all cases. ``--keep`` leaves Airflow running afterwards (until Ctrl-C) to look around
in its UI.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from types import FrameType
from typing import Any

from airflow_provider_prime.testing.connection import airflow_connection_env
from airflow_provider_prime.testing.process import SimulatorClient
from scripts.airflow_api import AirflowApiError, RunWatcher
from scripts.airflow_stack import AirflowStack, tail

REPO = Path(__file__).resolve().parents[1]
DEMO_HOME = REPO / ".demo"
DAG_ID = "example_prime_wait_and_train"
SENSOR, TRAIN = "wait_for_pods", "train"
#: What the run may take at most before the demo gives up (the DAG's own timeout is 30 minutes).
RUN_TIMEOUT = float(os.environ.get("PRIME_DEMO_TIMEOUT", "1800"))

STATE_NOTES = {
    "deferred": "waiting in the triggerer: no worker slot held while the pods boot",
    "up_for_retry": "failed, will retry",
}


class Console:
    """Timestamped lines, seconds since the demo started."""

    def __init__(self) -> None:
        self.start = time.monotonic()

    def say(self, text: str = "") -> None:
        print(f"[{time.monotonic() - self.start:5.1f}s] {text}" if text else "", flush=True)


@contextmanager
def simulator(home: Path) -> Iterator[SimulatorClient]:
    """The Prime API simulator as a subprocess serving the ``demo`` scenario; its output to a log."""
    log_path = home / "simulator.log"
    command = [sys.executable, "-m", "airflow_provider_prime.testing", "--scenario", "demo", "--port", "0"]
    with log_path.open("w") as log:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=log, text=True)
    client: SimulatorClient | None = None
    try:
        assert process.stdout is not None
        url = process.stdout.readline().strip()  # the simulator prints its URL first
        if not url.startswith("http://"):
            raise RuntimeError(f"the simulator did not start; see {log_path}:\n{tail(log_path)}")
        client = SimulatorClient(url)
        yield client
    finally:
        if client is not None:
            client.close()
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def real_api_settings(environ: Mapping[str, str]) -> tuple[list[str], dict[str, str]] | None:
    """Pod ids and connection env for the real API, or None to use the simulator."""
    pod_ids = [p.strip() for p in environ.get("PRIME_POD_IDS", "").split(",") if p.strip()]
    if not pod_ids:
        return None
    if "AIRFLOW_CONN_PRIME_DEFAULT" in environ:
        return pod_ids, {"AIRFLOW_CONN_PRIME_DEFAULT": environ["AIRFLOW_CONN_PRIME_DEFAULT"]}
    if environ.get("PRIME_API_KEY"):
        return pod_ids, {}  # the hook falls back to PRIME_API_KEY / PRIME_API_BASE_URL
    raise SystemExit("PRIME_POD_IDS is set but there is no PRIME_API_KEY nor AIRFLOW_CONN_PRIME_DEFAULT")


class Narrator:
    """Prints task state changes and, while the sensor waits, the trigger's progress lines."""

    MARKERS = ("Waiting for pods: ", "All pods ready: ", "Pod wait failed: ")

    def __init__(self, console: Console, stack: AirflowStack) -> None:
        self.console, self.stack = console, stack
        self.seen: set[str] = set()

    def on_change(self, task_id: str, state: str, ti: Mapping[str, Any]) -> None:
        if state == "none":  # not scheduled yet
            return
        note = STATE_NOTES.get(state, "")
        self.console.say(f"{task_id:<14} {state.upper()}{'  (' + note + ')' if note else ''}")

    def progress(self, watcher: RunWatcher) -> None:
        """New progress lines in the sensor's log (the trigger writes them there while deferred)."""
        if watcher.states(SENSOR)[-1:] in ([], ["none"]):
            return
        try:
            entries = log_entries(self.stack, watcher, SENSOR)
        except AirflowApiError:  # no log yet
            return
        for event in (e.get("event", "") for e in entries if isinstance(e, dict)):
            marker = next((m for m in self.MARKERS if event.startswith(m)), None)
            if marker and event not in self.seen:
                self.seen.add(event)
                self.console.say(f"{'':<14} pods: {event.removeprefix(marker)}")


def log_entries(stack: AirflowStack, watcher: RunWatcher, task_id: str) -> list[Any]:
    try_number = watcher.ti(task_id)["try_number"] or 1
    return stack.api.task_log_entries(DAG_ID, watcher.run_id, task_id, try_number)


def report_success(console: Console, stack: AirflowStack, watcher: RunWatcher) -> None:
    """The handover (SSH targets per node) and what the training task made of it."""
    pods: dict[str, Any] = stack.api.xcom(DAG_ID, watcher.run_id, SENSOR)
    console.say("SSH targets the sensor handed to the training task (its XCom):")
    for pod_id, pod in pods.items():
        nodes = pod["ssh_connections"]
        console.say(f"  {pod_id}: {pod['status']}, provider {pod['provider_type']}, {len(nodes)} node(s)")
        for rank, target in enumerate(nodes):
            console.say(f"    node {rank}: ssh {target}")
    commands: dict[str, list[str]] = stack.api.xcom(DAG_ID, watcher.run_id, TRAIN)
    console.say("Commands the training task built from them:")
    for command in (c for per_pod in commands.values() for c in per_pod):
        console.say(f"  {command}")


def report_failure(console: Console, stack: AirflowStack, watcher: RunWatcher) -> None:
    """Why each failed task failed: the exception its log records."""
    for task_id, states in watcher.history.items():
        if states[-1] != "failed":
            continue
        errors = [
            f"{detail['exc_type']}: {detail['exc_value']}"
            for entry in log_entries(stack, watcher, task_id)
            if isinstance(entry, dict)
            for detail in entry.get("error_detail") or []
        ]
        console.say(f"{task_id} failed: {errors[-1] if errors else 'see its log in ' + rel(stack.log_dir)}")


def follow(console: Console, stack: AirflowStack, conf: Mapping[str, Any]) -> RunWatcher:
    """Trigger the example DAG and narrate the run until it ends."""
    narrator = Narrator(console, stack)
    watcher = stack.trigger(DAG_ID, conf, on_change=narrator.on_change)
    console.say(f"triggered {DAG_ID}, run {watcher.run_id}")
    deadline = time.monotonic() + RUN_TIMEOUT
    while not watcher.finished:
        if time.monotonic() > deadline:
            raise TimeoutError(f"the run did not finish within {RUN_TIMEOUT:.0f}s")
        time.sleep(1.0)
        watcher.poll()
        narrator.progress(watcher)
    return watcher


def run_demo(console: Console, keep: bool) -> int:
    shutil.rmtree(DEMO_HOME, ignore_errors=True)
    DEMO_HOME.mkdir()
    real = real_api_settings(os.environ)
    with ExitStack() as cleanup:
        sim: SimulatorClient | None = None
        if real is None:
            sim = cleanup.enter_context(simulator(DEMO_HOME))
            conf: dict[str, Any] = {}  # the DAG falls back to the demo pods
            conn_env = airflow_connection_env(sim.base_url, sim.api_key)
            console.say(
                f"Prime API: a local simulator at {sim.base_url} (log: {rel(DEMO_HOME)}/simulator.log)"
            )
            console.say("  two pods: one node ready 20 s, two nodes ready 35 s after the run starts")
        else:
            pod_ids, conn_env = real
            conf = {"pod_ids": pod_ids}
            console.say(f"Prime API: the real one, for pods {', '.join(pod_ids)}")
        home = DEMO_HOME / "airflow"
        stack = cleanup.enter_context(
            AirflowStack(home=home, dags_folder=REPO / "example_dags", env=conn_env)
        )
        console.say(f"Airflow home: {rel(home)} (SQLite); Airflow's logs: {rel(stack.log_dir)}/")
        console.say("initialising the metadata database ...")
        stack.init()
        console.say("starting api-server, dag-processor, scheduler, triggerer ...")
        stack.start()
        stack.wait_for_dags(DAG_ID)
        console.say(f"Airflow is up: {stack.base_url} (the UI needs no login)")
        if sim is not None:
            sim.reset(scenario=True)  # the pods start booting with the run
        watcher = follow(console, stack, conf)
        (report_success if watcher.state == "success" else report_failure)(console, stack, watcher)
        console.say(f"run finished: {watcher.state.upper()}")
        if keep:
            console.say(f"Airflow stays up at {stack.base_url} until Ctrl-C")
            signal.pause()
        console.say("stopping Airflow" + (" and the simulator" if sim else "") + " ...")
    console.say(f"done; logs kept in {rel(DEMO_HOME)}/")
    return 0 if watcher.state == "success" else 1


def rel(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    """Unwind (stopping every process on the way out); further signals must not cut that short."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scripts.demo", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--keep", action="store_true", help="leave Airflow running after the run, until Ctrl-C"
    )
    args = parser.parse_args(argv)
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)  # stop everything on `kill` too, not only on Ctrl-C
    console = Console()
    try:
        return run_demo(console, args.keep)
    except KeyboardInterrupt:
        console.say("interrupted; everything stopped")
        return 130
    except (RuntimeError, TimeoutError) as error:
        console.say(f"demo failed: {error}")
        console.say(f"Airflow's logs: {rel(DEMO_HOME / 'airflow' / 'logs')}/")
        return 1


if __name__ == "__main__":
    sys.exit(main())
