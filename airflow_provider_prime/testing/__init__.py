"""A local simulator of the Prime Intellect pods API, for tests, demos and benchmarks.

Start it in-process (``PrimeSimulator``), as a process (``PrimeSimulatorProcess`` or the
``prime-api-simulator`` command), or as a pytest fixture (``pytest_plugin``). Pods follow scripted
timelines (``Scenario`` of ``PodScript`` of ``Phase``; builders such as ``ready_pod``); a scenario
also sells ``Offer``s, and pods created through the API follow its ``CreateLifecycle``. Faults
are staged on demand (``Fault``), every request is counted (``SimulatorStats``), and
``billing()`` says which pods were created, deleted and still bill. See ``docs/simulator.md``.
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
    provisioned_pod,
    ready_pod,
    stopped_pod,
    vanishing_pod,
)
from airflow_provider_prime.testing.offers import Offer, Resource, default_offers
from airflow_provider_prime.testing.paths import (
    GPU_SUMMARY_PATH,
    GPUS_PATH,
    HISTORY_PATH,
    MULTI_NODE_PATH,
    PODS_PATH,
    STATUS_PATH,
    WHOAMI_PATH,
)
from airflow_provider_prime.testing.process import PrimeSimulatorProcess, SimulatorClient
from airflow_provider_prime.testing.scenario import CreateLifecycle, Phase, PodScript, Scenario
from airflow_provider_prime.testing.simulator import PrimeSimulator
from airflow_provider_prime.testing.state import DEFAULT_API_KEY, DEFAULT_MAX_POD_IDS, SimulatorState
from airflow_provider_prime.testing.stats import NO_KEY, NO_RESPONSE, RequestRecord, SimulatorStats

__all__ = [
    "BUILTIN_SCENARIOS",
    "DEFAULT_API_KEY",
    "DEFAULT_INSTALLATION_FAILURE",
    "DEFAULT_MAX_POD_IDS",
    "GPUS_PATH",
    "GPU_SUMMARY_PATH",
    "HISTORY_PATH",
    "LIVE_EXTRA_FIELDS",
    "MULTI_NODE_PATH",
    "NO_KEY",
    "NO_RESPONSE",
    "PODS_PATH",
    "STATUS_PATH",
    "WHOAMI_PATH",
    "CreateLifecycle",
    "Fault",
    "FaultKind",
    "ManualClock",
    "Offer",
    "Phase",
    "PodScript",
    "PrimeSimulator",
    "PrimeSimulatorProcess",
    "RequestRecord",
    "Resource",
    "Scenario",
    "SimulatorClient",
    "SimulatorState",
    "SimulatorStats",
    "airflow_connection_env",
    "builtin_scenario",
    "bulk_scenario",
    "default_offers",
    "failing_pod",
    "fixed_pod",
    "install_failure_pod",
    "provisioned_pod",
    "ready_pod",
    "resolve_scenario",
    "stopped_pod",
    "vanishing_pod",
]
