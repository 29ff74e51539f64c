"""A local simulator of the Prime Intellect pods status API, for tests, demos and benchmarks.

Start it in-process (``PrimeSimulator``), as a process (``PrimeSimulatorProcess`` or the
``prime-api-simulator`` command), or as a pytest fixture (``pytest_plugin``). Pods follow scripted
timelines (``Scenario`` of ``PodScript`` of ``Phase``; builders such as ``ready_pod``), faults are
staged on demand (``Fault``), and every request is counted (``SimulatorStats``).
See ``docs/simulator.md``.
"""

from __future__ import annotations

from airflow_provider_prime.testing.builtin import (
    BUILTIN_SCENARIOS,
    LIVE_EXTRA_FIELDS,
    builtin_scenario,
    bulk_scenario,
    resolve_scenario,
)
from airflow_provider_prime.testing.clock import ManualClock
from airflow_provider_prime.testing.connection import airflow_connection_env
from airflow_provider_prime.testing.faults import Fault, FaultKind
from airflow_provider_prime.testing.lifecycles import (
    DEFAULT_INSTALLATION_FAILURE,
    failing_pod,
    fixed_pod,
    install_failure_pod,
    ready_pod,
    stopped_pod,
    vanishing_pod,
)
from airflow_provider_prime.testing.process import PrimeSimulatorProcess, SimulatorClient
from airflow_provider_prime.testing.routes import STATUS_PATH, WHOAMI_PATH
from airflow_provider_prime.testing.scenario import Phase, PodScript, Scenario
from airflow_provider_prime.testing.simulator import PrimeSimulator
from airflow_provider_prime.testing.state import DEFAULT_API_KEY, DEFAULT_MAX_POD_IDS, SimulatorState
from airflow_provider_prime.testing.stats import NO_KEY, NO_RESPONSE, RequestRecord, SimulatorStats

__all__ = [
    "BUILTIN_SCENARIOS",
    "DEFAULT_API_KEY",
    "DEFAULT_INSTALLATION_FAILURE",
    "DEFAULT_MAX_POD_IDS",
    "LIVE_EXTRA_FIELDS",
    "NO_KEY",
    "NO_RESPONSE",
    "STATUS_PATH",
    "WHOAMI_PATH",
    "Fault",
    "FaultKind",
    "ManualClock",
    "Phase",
    "PodScript",
    "PrimeSimulator",
    "PrimeSimulatorProcess",
    "RequestRecord",
    "Scenario",
    "SimulatorClient",
    "SimulatorState",
    "SimulatorStats",
    "airflow_connection_env",
    "builtin_scenario",
    "bulk_scenario",
    "failing_pod",
    "fixed_pod",
    "install_failure_pod",
    "ready_pod",
    "resolve_scenario",
    "stopped_pod",
    "vanishing_pod",
]
