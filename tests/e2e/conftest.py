"""One real Airflow (api-server, dag-processor, scheduler, triggerer) and one simulator per session.

Starting Airflow costs half a minute, so every end-to-end test shares the same stack and simulator
and tells its runs apart by their own pod ids. The DAG folder holds the example DAGs and the
lifecycle test DAGs of ``tests/e2e/dags`` (linked into a temporary folder). The example DAGs run
unchanged except for their poll intervals and timeouts, shortened by a cluster policy (see
``AirflowStack``, and :data:`OPERATOR_OVERRIDES` for the lifecycle operators).
"""

from __future__ import annotations

import secrets
import signal
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import FrameType

import attrs
import pytest
from airflow.sdk.execution_time.supervisor import ActivitySubprocess
from airflow.triggers.base import BaseTrigger

from airflow_provider_prime.testing import CreateLifecycle, Scenario
from airflow_provider_prime.testing.connection import airflow_connection_env, ssh_connection_env
from airflow_provider_prime.testing.process import PrimeSimulatorProcess
from airflow_provider_prime.testing.pytest_plugin import SshKeyPair
from scripts.airflow_stack import AirflowStack

EXAMPLE_DAGS = Path(__file__).resolve().parents[2] / "example_dags"
E2E_DAGS = Path(__file__).resolve().parent / "dags"
DAG_IDS = (
    "example_prime_wait_and_train",
    "example_prime_pod_lifecycle",
    "example_prime_reaper",
    "e2e_prime_worker_wait",
    "e2e_prime_no_retry",
    "e2e_prime_short_deferral",
    "e2e_prime_mapped",
    "e2e_prime_reaper",
    "e2e_prime_job",
    "e2e_prime_job_worker",
    "e2e_prime_job_timeout",
    "e2e_prime_job_teardown",
)
#: Whether this Airflow calls a trigger's ``on_kill`` when a user acts on a deferred task (3.3+).
ON_KILL_AIRFLOW = hasattr(BaseTrigger, "on_kill")
#: Whether a task whose process dies (SIGKILL, OOM) gets its retries (3.3) or fails at once (3.1).
CRASHED_TASKS_RETRY = "_should_retry" in attrs.fields_dict(ActivitySubprocess)
#: Pods created through the API: ACTIVE after 1 s, installed after ten hours; DELETING for 1 s.
SLOW_BOOT = CreateLifecycle(active_after=1.0, installed_after=36_000.0, deleting_for=1.0)
#: The sensor polls every 2 s here instead of the DAGs' 10 s; a run that hangs fails in 3 minutes.
SENSOR_OVERRIDES = {"poke_interval": 2.0, "timeout": 180.0}
#: The same for the lifecycle operators of the example DAGs (the test DAGs set their own).
OPERATOR_OVERRIDES = {
    "PrimeCreatePodOperator": {"poll_interval": 2.0, "timeout": 180.0},
    "PrimeTerminatePodOperator": {"poll_interval": 1.0, "timeout": 60.0},
}
#: Appended to the stack's cluster policy: the sensor policy, then :data:`OPERATOR_OVERRIDES`.
OPERATOR_POLICY = """

_sensor_policy = task_policy
OPERATOR_OVERRIDES = {overrides!r}


def task_policy(task):
    _sensor_policy(task)
    if task.dag_id.startswith("example_"):
        for name, value in OPERATOR_OVERRIDES.get(type(task).__name__, {{}}).items():
            setattr(task, name, value)
"""


@pytest.fixture(scope="session")
def e2e_ssh_key(tmp_path_factory: pytest.TempPathFactory) -> SshKeyPair:
    """The key Airflow's ``prime_ssh`` connection logs in to the simulated nodes with."""
    asyncssh = pytest.importorskip("asyncssh", reason="the job tests need airflow-provider-prime[ssh]")
    key = asyncssh.generate_private_key("ssh-ed25519", comment="prime-e2e")
    path = tmp_path_factory.mktemp("ssh") / "id_ed25519"
    path.write_bytes(key.export_private_key("openssh"))
    path.chmod(0o600)
    return SshKeyPair(path, key.export_public_key("openssh").decode().strip())


@pytest.fixture(scope="session")
def e2e_simulator(e2e_ssh_key: SshKeyPair) -> Iterator[PrimeSimulatorProcess]:
    """The simulator as its own process, with no pods (each test adds or creates its own), created
    pods that would take ten hours to boot (tests make them ready), SSH nodes that accept
    :func:`e2e_ssh_key`, and a unique key (that tests can look for where it must never appear)."""
    scenario = Scenario(name="e2e", lifecycle=SLOW_BOOT)
    with PrimeSimulatorProcess(
        scenario=scenario, api_keys=(f"e2e-key-{secrets.token_hex(8)}",), ssh_keys=[e2e_ssh_key.public_key]
    ) as simulator:
        yield simulator


@pytest.fixture(scope="session")
def airflow_stack(
    tmp_path_factory: pytest.TempPathFactory, e2e_simulator: PrimeSimulatorProcess, e2e_ssh_key: SshKeyPair
) -> Iterator[AirflowStack]:
    """Airflow on loopback with SQLite, the example DAGs parsed, its ``prime_default`` the simulator.

    Every process is stopped when the session ends, and at once if starting fails.
    """
    dags = tmp_path_factory.mktemp("dags")
    for dag_file in (*EXAMPLE_DAGS.glob("*.py"), *E2E_DAGS.glob("e2e_*.py")):
        (dags / dag_file.name).symlink_to(dag_file)
    stack = AirflowStack(
        home=tmp_path_factory.mktemp("airflow-home"),
        dags_folder=dags,
        env={
            **airflow_connection_env(e2e_simulator.base_url, e2e_simulator.api_key),
            **ssh_connection_env(e2e_ssh_key.private_key_file),
        },
        sensor_overrides=SENSOR_OVERRIDES,
    )
    # A SIGTERM (a CI timeout, say) unwinds pytest, so this fixture still stops every process.
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        with stack:
            stack.init()
            with (stack.home / "config" / "airflow_local_settings.py").open("a") as policy:
                policy.write(OPERATOR_POLICY.format(overrides=OPERATOR_OVERRIDES))
            stack.start()
            stack.wait_for_dags(*DAG_IDS)
            yield stack
    finally:
        signal.signal(signal.SIGTERM, previous)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


@pytest.fixture
def pod_prefix() -> str:
    """A prefix no other test's pods share."""
    return f"e2e-{uuid.uuid4().hex[:8]}"
