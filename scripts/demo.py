"""`make demo`: a real Airflow rents a GPU pod, waits until it is ready, trains on it and gives it back.

Runs ``example_dags/example_prime_pod_lifecycle.py`` (create → deferred wait → train on every node
→ terminate as a teardown) on a throw-away Airflow (``.demo/`` in the repository, SQLite, wiped on
every run) against a local Prime API simulator. The run rents the simulator's two-node offer
(``{"gpu_count": 16, "multi_node": true}``); the simulator gives each node a real SSH server on
loopback accepting a key pair the demo generates in ``.demo/ssh/`` (Airflow's ``prime_ssh``
connection holds the private half), so ``train`` really runs ``training/train_regression.py`` on
both nodes, as local processes of this user. The demo prints the job's lines as they reach the
task log, rank 0's result from the XCom, and ends with the simulator's own account: processes
left on its nodes, the pod-hours used and pods still billing (0). ``--dag wait-and-train`` runs
``example_prime_wait_and_train.py`` instead: the sensor waits for the simulator's two demo pods
(ready 20 and 35 s after the run starts) and hands their SSH targets to training.

The real API, only when asked: with ``PRIME_POD_IDS=id1,id2`` and credentials (``PRIME_API_KEY``,
optionally ``PRIME_API_BASE_URL``, or a whole ``AIRFLOW_CONN_PRIME_DEFAULT``) the wait-and-train
DAG waits for those pods (it creates nothing). Creating a pod, which bills, needs the explicit
``PRIME_DEMO_CREATE_POD=1`` as well as credentials and ``PRIME_SSH_KEY_FILE`` (the private key
whose public half is registered with Prime, which becomes Airflow's ``prime_ssh`` connection; the
demo refuses to create anything without it): the lifecycle DAG then rents the cheapest offer
(``PRIME_DEMO_GPU_TYPE`` to choose the GPU), runs the same script on it, and the demo deletes that
pod at the end whatever happens (failure, timeout, Ctrl-C).

It prints what happens: task states (DEFERRED: the wait moved to the triggerer), the pods'
progress as the trigger reports it, the job's lines as they reach Airflow, its result, the final
state. Exit status 0 if
the run succeeded, 1 if it failed, 130 on Ctrl-C; every process it started is stopped in all
cases. ``--keep`` leaves Airflow running afterwards (until Ctrl-C) to look around in its UI;
``--fail-training`` makes rank 1 of the lifecycle run fail, to watch the failure handling.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from types import FrameType
from typing import Any

from airflow_provider_prime.deployment import derived_deployment_id
from airflow_provider_prime.operators.pod_names import derived_pod_name
from airflow_provider_prime.testing.connection import airflow_connection_env, ssh_connection_env
from airflow_provider_prime.testing.process import SimulatorClient
from scripts.airflow_api import AirflowApiError, RunWatcher
from scripts.airflow_stack import AirflowStack, tail

REPO = Path(__file__).resolve().parents[1]
DEMO_HOME = REPO / ".demo"
WAIT_AND_TRAIN, LIFECYCLE = "example_prime_wait_and_train", "example_prime_pod_lifecycle"
#: The task that waits for the pods in each DAG (its log carries the trigger's progress lines).
WAITING_TASK = {WAIT_AND_TRAIN: "wait_for_pods", LIFECYCLE: "create_pod"}
TRAIN, TERMINATE = "train", "terminate_pod"
#: The opt-in without which the demo never creates a pod on the real API.
CREATE_OPT_IN = "PRIME_DEMO_CREATE_POD"
#: The private key (its public half registered with Prime) the training logs in to a real pod with.
SSH_KEY_VAR = "PRIME_SSH_KEY_FILE"
#: The lifecycle run's params on the simulator: its two-node offer (``sim-h100-80gb-16x-cluster``).
SIMULATOR_CONF: dict[str, Any] = {"gpu_count": 16, "multi_node": True}
#: What the run may take at most before the demo gives up (the DAG's own timeout is 30 minutes).
RUN_TIMEOUT = float(os.environ.get("PRIME_DEMO_TIMEOUT", "1800"))

STATE_NOTES = {
    "deferred": "waiting in the triggerer: no worker slot held while the pods boot",
    "up_for_retry": "failed, will retry",
}
#: Notes of one task's states that say more than :data:`STATE_NOTES`.
TASK_STATE_NOTES = {
    (TRAIN, "deferred"): "followed from the triggerer: no worker slot held while the job runs",
}


class Console:
    """Timestamped lines, seconds since the demo started."""

    def __init__(self) -> None:
        self.start = time.monotonic()

    def say(self, text: str = "") -> None:
        print(f"[{time.monotonic() - self.start:5.1f}s] {text}" if text else "", flush=True)


def demo_key_pair(home: Path) -> tuple[Path, Path]:
    """A throw-away ed25519 key pair in ``home/ssh``: (private key file, public key file)."""
    try:
        with warnings.catch_warnings():  # asyncssh's import warns that DSA is deprecated: noise here
            warnings.simplefilter("ignore")
            import asyncssh
    except ImportError:
        raise RuntimeError(
            "the simulated nodes need asyncssh: pip install 'airflow-provider-prime[ssh]'"
        ) from None
    folder = home / "ssh"
    folder.mkdir(mode=0o700, exist_ok=True)
    key = asyncssh.generate_private_key("ssh-ed25519", comment="prime-demo")
    private, public = folder / "id_ed25519", folder / "id_ed25519.pub"
    private.touch(mode=0o600)
    private.write_bytes(key.export_private_key("openssh"))
    public.write_bytes(key.export_public_key("openssh"))
    return private, public


@contextmanager
def simulator(home: Path, ssh_public_key: Path) -> Iterator[SimulatorClient]:
    """The Prime API simulator as a subprocess serving the ``demo`` scenario; its output to a log.

    Its nodes are SSH servers on loopback that accept ``ssh_public_key`` and run what they are sent
    as local processes of this user."""
    log_path = home / "simulator.log"
    command = [sys.executable, "-m", "airflow_provider_prime.testing", "--scenario", "demo", "--port", "0"]
    command += ["--ssh-key", str(ssh_public_key)]
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


def real_create_settings(environ: Mapping[str, str]) -> dict[str, str] | None:
    """Connection env for creating a pod on the real API and training on it (``prime_default`` and
    ``prime_ssh``), or None unless ``PRIME_DEMO_CREATE_POD=1``. Exits, before anything is created,
    when the credentials or the SSH key are missing."""
    if environ.get(CREATE_OPT_IN, "").strip() != "1":
        return None
    if "AIRFLOW_CONN_PRIME_DEFAULT" in environ:
        env = {"AIRFLOW_CONN_PRIME_DEFAULT": environ["AIRFLOW_CONN_PRIME_DEFAULT"]}
    elif environ.get("PRIME_API_KEY"):
        env = {}  # the hook falls back to PRIME_API_KEY / PRIME_API_BASE_URL
    else:
        raise SystemExit(f"{CREATE_OPT_IN}=1 needs PRIME_API_KEY or AIRFLOW_CONN_PRIME_DEFAULT")
    key_file = environ.get(SSH_KEY_VAR, "").strip()
    if not key_file:
        raise SystemExit(
            f"{CREATE_OPT_IN}=1 also needs {SSH_KEY_VAR}: the path of the private SSH key whose public"
            " half is registered with Prime (its console's SSH keys), so the training task can log in to"
            " the pod's nodes. Nothing was created."
        )
    path = Path(key_file).expanduser()
    if not path.is_file():
        raise SystemExit(f"{SSH_KEY_VAR}={key_file}: no such file. Nothing was created.")
    return {**env, **ssh_connection_env(path.resolve())}


def cheapest_offer_conf(environ: Mapping[str, str]) -> dict[str, Any]:
    """The lifecycle DAG's params for the cheapest offer on the real API (of PRIME_DEMO_GPU_TYPE if set)."""
    from airflow_provider_prime.hooks.prime import PrimeHook

    gpu_type = environ.get("PRIME_DEMO_GPU_TYPE") or None
    offers = [o for o in PrimeHook().list_gpu_offers(gpu_type=gpu_type) if o.prices.price is not None]
    if not offers:
        raise RuntimeError(f"no priced GPU offer{' of ' + gpu_type if gpu_type else ''} is available now")
    offer = min(offers, key=lambda o: o.prices.price or 0.0)
    return {"gpu_type": offer.gpu_type, "gpu_count": offer.gpu_count}


class Narrator:
    """Prints task state changes and, while the sensor waits, the trigger's progress lines."""

    MARKERS = ("Waiting for pods: ", "All pods ready: ", "Pod wait failed: ")

    def __init__(self, console: Console, stack: AirflowStack, dag_id: str) -> None:
        self.console, self.stack, self.dag_id = console, stack, dag_id
        self.seen: set[str] = set()

    def on_change(self, task_id: str, state: str, ti: Mapping[str, Any]) -> None:
        if state == "none":  # not scheduled yet
            return
        note = TASK_STATE_NOTES.get((task_id, state), STATE_NOTES.get(state, ""))
        self.console.say(f"{task_id:<14} {state.upper()}{'  (' + note + ')' if note else ''}")

    def progress(self, watcher: RunWatcher) -> None:
        """New progress lines in the sensor's log (the trigger writes them there while deferred)."""
        task_id = WAITING_TASK[self.dag_id]
        if watcher.states(task_id)[-1:] in ([], ["none"]):
            return
        try:
            entries = log_entries(self.stack, watcher, task_id)
        except AirflowApiError:  # no log yet
            return
        for event in (e.get("event", "") for e in entries if isinstance(e, dict)):
            marker = next((m for m in self.MARKERS if event.startswith(m)), None)
            if marker and event not in self.seen:
                self.seen.add(event)
                self.console.say(f"{'':<14} pods: {event.removeprefix(marker)}")


class JobLines:
    """Prints the training job's lines (``[node 1] step 3/30 loss 0.41``) and the job's own notes
    as they reach the train task's log, read through Airflow's API like every other log here."""

    def __init__(self, console: Console, stack: AirflowStack) -> None:
        self.console, self.stack = console, stack
        #: Entries printed, by (try, timestamp, text): the log is re-read whole on every poll.
        self.seen: set[tuple[int, str, str]] = set()

    def follow(self, watcher: RunWatcher) -> None:
        if watcher.dag_id != LIFECYCLE or watcher.states(TRAIN)[-1:] in ([], ["none"]):
            return
        try_number = watcher.ti(TRAIN)["try_number"] or 1
        try:
            entries = log_entries(self.stack, watcher, TRAIN)
        except AirflowApiError:  # no log yet
            return
        for line in new_job_lines(entries, self.seen, try_number):
            self.console.say(f"{'':<14} {line}")


def new_job_lines(entries: Sequence[Any], seen: set[tuple[int, str, str]], try_number: int) -> list[str]:
    """The job's lines and notes in ``entries`` not in ``seen`` (which they are added to), in order."""
    found = []
    for entry in entries:
        if not isinstance(entry, dict):
            continue
        event = str(entry.get("event", ""))
        if not event.startswith(("[node ", "Job ")):
            continue
        key = (try_number, str(entry.get("timestamp", "")), event)
        if key not in seen:
            seen.add(key)
            found.append(event)
    return found


def log_entries(stack: AirflowStack, watcher: RunWatcher, task_id: str) -> list[Any]:
    try_number = watcher.ti(task_id)["try_number"] or 1
    return stack.api.task_log_entries(watcher.dag_id, watcher.run_id, task_id, try_number)


def report_success(console: Console, stack: AirflowStack, watcher: RunWatcher) -> None:
    """The handover (SSH targets per node) and what the training task made of it."""
    if watcher.dag_id == LIFECYCLE:
        report_lifecycle(console, stack, watcher)
        return
    pods: dict[str, Any] = stack.api.xcom(WAIT_AND_TRAIN, watcher.run_id, WAITING_TASK[WAIT_AND_TRAIN])
    console.say("SSH targets the sensor handed to the training task (its XCom):")
    for pod_id, pod in pods.items():
        nodes = pod["ssh_connections"]
        console.say(f"  {pod_id}: {pod['status']}, provider {pod['provider_type']}, {len(nodes)} node(s)")
        for rank, target in enumerate(nodes):
            console.say(f"    node {rank}: ssh {target}")
    commands: dict[str, list[str]] = stack.api.xcom(WAIT_AND_TRAIN, watcher.run_id, TRAIN)
    console.say("Commands the training task built from them:")
    for command in (c for per_pod in commands.values() for c in per_pod):
        console.say(f"  {command}")


def report_lifecycle(console: Console, stack: AirflowStack, watcher: RunWatcher) -> None:
    """The pod the create task handed over, how the job ended on each node, its result (rank 0's
    JSON, from the train task's XCom), and what the pod cost."""
    pods: dict[str, Any] = stack.api.xcom(LIFECYCLE, watcher.run_id, WAITING_TASK[LIFECYCLE])
    for pod_id, pod in pods.items():
        console.say(
            f"pod {pod_id}: {pod['status']}, {pod['price_hr']}/h, {len(pod['ssh_connections'])} node(s)"
        )
    job: dict[str, Any] = stack.api.xcom(LIFECYCLE, watcher.run_id, TRAIN)
    for node in job["nodes"]:
        console.say(
            f"  node {node['rank']} ({node['host']}): exit code {node['exit_code']}"
            f" after {float(node['seconds'] or 0):.1f} s"
        )
    console.say(
        f"result (rank 0's $PRIME_RESULT_FILE, in the train task's XCom): {json.dumps(job['result'])}"
    )
    for pod_id, end in stack.api.xcom(LIFECYCLE, watcher.run_id, TERMINATE).items():
        console.say(f"terminated {pod_id}: {end['status']}, {end['hours']} h, cost {end['cost']}")


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
        why = errors[-1] if errors else "see its log in " + rel(stack.log_dir)
        console.say(f"{task_id} failed: {why.rstrip()}".replace("\n", "\n" + " " * 9))


def follow(
    console: Console, stack: AirflowStack, dag_id: str, conf: Mapping[str, Any], run: list[RunWatcher]
) -> RunWatcher:
    """Trigger the example DAG and narrate the run until it ends (``run`` gets the watcher at once)."""
    narrator, job_lines = Narrator(console, stack, dag_id), JobLines(console, stack)
    watcher = stack.trigger(dag_id, conf, on_change=narrator.on_change)
    run.append(watcher)
    console.say(f"triggered {dag_id}, run {watcher.run_id}")
    deadline = time.monotonic() + RUN_TIMEOUT
    while not watcher.finished:
        if time.monotonic() > deadline:
            raise TimeoutError(f"the run did not finish within {RUN_TIMEOUT:.0f}s")
        time.sleep(1.0)
        watcher.poll()
        narrator.progress(watcher)
        job_lines.follow(watcher)
    job_lines.follow(watcher)  # the last poll's lines
    return watcher


def run_demo(console: Console, keep: bool, dag: str, fail_training: bool = False) -> int:
    shutil.rmtree(DEMO_HOME, ignore_errors=True)
    DEMO_HOME.mkdir()
    real_wait, real_create = real_api_settings(os.environ), real_create_settings(os.environ)
    dag_id = LIFECYCLE if real_create is not None else WAIT_AND_TRAIN if real_wait else dag
    with ExitStack() as cleanup:
        sim: SimulatorClient | None = None
        conf: dict[str, Any] = {}  # the DAGs fall back to the demo pods / the simulator's offers
        if real_create is not None:
            conn_env = real_create
            conf = cheapest_offer_conf(os.environ)
            console.say(f"Prime API: the real one; {CREATE_OPT_IN}=1: renting the cheapest {conf} pod")
        elif real_wait is not None:
            pod_ids, conn_env = real_wait
            conf = {"pod_ids": pod_ids}
            console.say(f"Prime API: the real one, for pods {', '.join(pod_ids)} (nothing is created)")
        else:
            private_key, public_key = demo_key_pair(DEMO_HOME)
            sim = cleanup.enter_context(simulator(DEMO_HOME, public_key))
            conn_env = {
                **airflow_connection_env(sim.base_url, sim.api_key),
                **ssh_connection_env(private_key),
            }
            console.say(
                f"Prime API: a local simulator at {sim.base_url} (log: {rel(DEMO_HOME)}/simulator.log)"
            )
            console.say(
                "  each pod node is an SSH server on 127.0.x.y that runs what it is sent as a local process"
                f" of this user; Airflow's prime_ssh logs in with {rel(private_key)}"
            )
            if dag_id == WAIT_AND_TRAIN:
                console.say("  two pods: one node ready 20 s, two nodes ready 35 s after the run starts")
            else:
                conf = dict(SIMULATOR_CONF)
                console.say(
                    f"  the run rents the two-node offer ({json.dumps(conf)}), which boots in about 20 s,"
                    " and trains on both nodes"
                )
        if fail_training and dag_id == LIFECYCLE:
            conf["fail_training"] = True
            console.say("  fail_training: rank 1 exits 3 at step 3; the task fails, the pod goes anyway")
        home = DEMO_HOME / "airflow"
        stack = cleanup.enter_context(
            AirflowStack(home=home, dags_folder=REPO / "example_dags", env=conn_env)
        )
        console.say(f"Airflow home: {rel(home)} (SQLite); Airflow's logs: {rel(stack.log_dir)}/")
        console.say("initialising the metadata database ...")
        stack.init()
        console.say("starting api-server, dag-processor, scheduler, triggerer ...")
        stack.start()
        stack.wait_for_dags(dag_id)
        console.say(f"Airflow is up: {stack.base_url} (the UI needs no login)")
        if sim is not None:
            sim.reset(scenario=True)  # the pods start booting with the run
        run: list[RunWatcher] = []
        if dag_id == LIFECYCLE:
            cleanup.callback(give_back, console, stack, run, real_create is not None)
        watcher = follow(console, stack, dag_id, conf, run)
        (report_success if watcher.state == "success" else report_failure)(console, stack, watcher)
        console.say(f"run finished: {watcher.state.upper()}")
        if sim is not None and dag_id == LIFECYCLE:
            report_billing(console, sim)
        if keep:
            console.say(f"Airflow stays up at {stack.base_url} until Ctrl-C")
            signal.pause()
        console.say("stopping Airflow" + (" and the simulator" if sim else "") + " ...")
    console.say(f"done; logs kept in {rel(DEMO_HOME)}/")
    return 0 if watcher.state == "success" else 1


def give_back(console: Console, stack: AirflowStack, run: list[RunWatcher], real: bool) -> None:
    """Delete the demo's pod whatever happened (the DAG's teardown normally has): idempotent."""
    if not run or not real:
        return  # against the simulator the DAG's teardown is what is shown; its account says the rest
    from airflow_provider_prime.hooks.prime import PrimeHook

    hook = PrimeHook()
    # the deployment identity Airflow derives from the stack's airflow.cfg (execution_api_server_url)
    deployment = derived_deployment_id(f"{stack.base_url}/execution/", stack.base_url)
    name = derived_pod_name(LIFECYCLE, run[0].run_id, WAITING_TASK[LIFECYCLE], -1, deployment=deployment)
    try:
        for pod in hook.find_pods_by_name(name):
            hook.delete_pod(pod.id)
            console.say(f"deleted pod {pod.id} ({name}) on the way out")
    except Exception as error:  # say it loudly: this pod may be billing
        console.say(f"COULD NOT DELETE the demo's pod {name}: {error}; delete it in Prime's console")


def report_billing(console: Console, sim: SimulatorClient) -> None:
    """The simulator's own account of the run: the pod-hours used, what still runs on its nodes, and
    what is still billing (last: the line that matters)."""
    created = [pod for pod in sim.billing()["pods"].values() if pod["origin"] == "api"]
    console.say(f"pods created: {len(created)}")
    hours = sum(pod["seconds"] for pod in created) / 3600
    console.say(f"pod-hours used: {hours:.4f} (cost {sum(pod['cost'] for pod in created):.4f})")
    nodes = sim.node_stats()
    if nodes is not None:
        console.say(f"processes still running on the pods' nodes: {nodes['processes_alive']}")
    console.say(f"pods still billing: {sum(pod['billing'] for pod in created)}")


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
    parser.add_argument(
        "--dag",
        choices=("lifecycle", "wait-and-train"),
        default="lifecycle",
        help="create → wait → train → terminate (default), or wait for the demo pods and train",
    )
    parser.add_argument(
        "--fail-training",
        action="store_true",
        help="lifecycle: make rank 1 fail at step 3 (the task fails naming it; the pod is deleted anyway)",
    )
    args = parser.parse_args(argv)
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)  # stop everything on `kill` too, not only on Ctrl-C
    console = Console()
    try:
        dag = LIFECYCLE if args.dag == "lifecycle" else WAIT_AND_TRAIN
        return run_demo(console, args.keep, dag, fail_training=args.fail_training)
    except KeyboardInterrupt:
        console.say("interrupted; everything stopped")
        return 130
    except (RuntimeError, TimeoutError) as error:
        console.say(f"demo failed: {error}")
        console.say(f"Airflow's logs: {rel(DEMO_HOME / 'airflow' / 'logs')}/")
        return 1


if __name__ == "__main__":
    sys.exit(main())
