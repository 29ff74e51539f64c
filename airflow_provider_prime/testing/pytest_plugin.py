"""pytest fixtures for testing against the Prime API simulator.

Enable with ``pytest_plugins = ["airflow_provider_prime.testing.pytest_plugin"]`` in a top-level
``conftest.py``. Fixtures:

* ``prime_simulator``: a fresh, started :class:`PrimeSimulator` per test (no pods unless the
  ``prime_simulator`` marker says otherwise), stopped afterwards::

      @pytest.mark.prime_simulator("demo", time_scale=20)
      def test_waits(prime_simulator): ...

* ``prime_simulator_factory``: ``make(scenario=None, **options) -> PrimeSimulator`` for tests that
  need several simulators, or pods of their own (``make([ready_pod("p")], clock=clock)``, or the
  pod scripts as arguments: ``make(ready_pod("a"), ready_pod("b"))``); all stopped afterwards.
* SSH nodes: give ``ssh_keys=[public key, ...]`` to the factory (or the marker) and every node of
  every pod is a real SSH server on loopback that runs what it is sent **on this machine, as the
  current user** (needs ``airflow-provider-prime[ssh]``). ``prime_ssh_key`` makes a key pair::

      sim = prime_simulator_factory(ready_pod("p", nodes=2), ssh_keys=[prime_ssh_key.public_key])

* ``prime_simulator_defaults``: options every simulator of the factory starts with unless the
  call gives them (``{}``; override the fixture in a ``conftest.py``, e.g. ``{"time_scale": 20}``).
  A ``time_scale`` default is not applied to a simulator given a ``clock``: the test drives it.
* ``prime_connect``: ``connect(target, *, conn_id="prime_default", api_key=None, extra=None)``
  defines an Airflow connection to a simulator (or to a base URL) for the test's duration and
  returns the connection id; ``extra`` defaults to ``prime_connection_extra``.
* ``prime_connection_extra``: the connection extra ``prime_connect`` uses by default (``{}``;
  override it with transport options, e.g. short timeouts and millisecond backoff).
* ``prime_connection``: ``prime_connect(prime_simulator)``; returns ``"prime_default"``.
* ``prime_clean_env``: removes ``PRIME_API_KEY``, ``PRIME_API_BASE_URL``, ``PRIME_BASE_URL`` and
  ``AIRFLOW_CONN_PRIME_DEFAULT`` for the test, so a developer's own settings cannot leak in
  (request it from an autouse fixture of your own to apply it everywhere).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import pytest

from airflow_provider_prime.testing.builtin import ScenarioSpec
from airflow_provider_prime.testing.connection import airflow_connection_env
from airflow_provider_prime.testing.scenario import PodScript, Scenario
from airflow_provider_prime.testing.simulator import PrimeSimulator

SimulatorFactory = Callable[..., PrimeSimulator]
#: The environment variables ``prime_clean_env`` removes.
PRIME_ENV_VARS = ("PRIME_API_KEY", "PRIME_API_BASE_URL", "PRIME_BASE_URL", "AIRFLOW_CONN_PRIME_DEFAULT")


@dataclass(frozen=True)
class SshKeyPair:
    """A throw-away ed25519 key pair: ``private_key_file`` (OpenSSH format, mode 600) and ``public_key``."""

    private_key_file: Path
    public_key: str


class Connect(Protocol):
    """The ``prime_connect`` fixture's signature."""

    def __call__(
        self,
        target: PrimeSimulator | Any,
        *,
        conn_id: str = "prime_default",
        api_key: str | None = None,
        extra: dict[str, Any] | None = None,
    ) -> str: ...


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "prime_simulator(scenario=None, **options): scenario and PrimeSimulator options "
        "(time_scale, api_keys, read_only_keys, clock, max_pod_ids, ssh_keys) "
        "for the prime_simulator fixture",
    )


@pytest.fixture
def prime_simulator_defaults() -> dict[str, Any]:
    """Options every simulator of ``prime_simulator_factory`` gets unless given; override to change."""
    return {}


@pytest.fixture
def prime_simulator_factory(prime_simulator_defaults: dict[str, Any]) -> Iterator[SimulatorFactory]:
    """Start simulators on demand; every one is stopped when the test ends."""
    started: list[PrimeSimulator] = []

    def make(scenario: ScenarioSpec | PodScript = None, *pods: PodScript, **options: Any) -> PrimeSimulator:
        if isinstance(scenario, PodScript):
            scenario = Scenario.of((scenario, *pods))
        elif pods:
            raise TypeError("give pod scripts as arguments, or one scenario, not both")
        defaults = dict(prime_simulator_defaults)
        if "clock" in options:
            defaults.pop("time_scale", None)
        simulator = PrimeSimulator(scenario, **{**defaults, **options}).start()
        started.append(simulator)
        return simulator

    yield make
    for simulator in started:
        simulator.stop()


@pytest.fixture
def prime_simulator(
    request: pytest.FixtureRequest, prime_simulator_factory: SimulatorFactory
) -> PrimeSimulator:
    """A started simulator for this test alone, configured by the ``prime_simulator`` marker."""
    marker = request.node.get_closest_marker("prime_simulator")
    args: tuple[Any, ...] = marker.args if marker else ()
    options: dict[str, Any] = dict(marker.kwargs) if marker else {}
    return prime_simulator_factory(*args, **options)


@pytest.fixture
def prime_connection_extra() -> dict[str, Any]:
    """The connection extra (transport options) ``prime_connect`` uses; override to change."""
    return {}


@pytest.fixture
def prime_connect(monkeypatch: pytest.MonkeyPatch, prime_connection_extra: dict[str, Any]) -> Connect:
    """``connect(simulator or base URL, conn_id=..., api_key=..., extra=...)`` for this test."""

    def connect(
        target: PrimeSimulator | Any,
        *,
        conn_id: str = "prime_default",
        api_key: str | None = None,
        extra: dict[str, Any] | None = None,
    ) -> str:
        base_url = target if isinstance(target, str) else target.base_url
        key = api_key or (None if isinstance(target, str) else target.api_key)
        if not key:
            raise ValueError("prime_connect needs api_key= when given a base URL")
        settings = prime_connection_extra if extra is None else extra
        for name, value in airflow_connection_env(base_url, key, conn_id, extra=settings).items():
            monkeypatch.setitem(os.environ, name, value)
        return conn_id

    return connect


@pytest.fixture
def prime_connection(prime_simulator: PrimeSimulator, prime_connect: Connect) -> str:
    """``prime_default`` pointing at ``prime_simulator`` through ``AIRFLOW_CONN_PRIME_DEFAULT``."""
    return prime_connect(prime_simulator)


@pytest.fixture
def prime_clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No ``PRIME_*`` settings or default Prime connection from the developer's environment."""
    for name in PRIME_ENV_VARS:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def prime_ssh_key(tmp_path: Path) -> SshKeyPair:
    """A fresh ed25519 key pair in the test's temporary directory, for ``ssh_keys=`` and SSH clients.

    Skips the test when asyncssh (``airflow-provider-prime[ssh]``) is not installed.
    """
    asyncssh = pytest.importorskip("asyncssh", reason="SSH nodes need airflow-provider-prime[ssh]")
    key = asyncssh.generate_private_key("ssh-ed25519", comment="prime-simulator-test")
    path = tmp_path / "prime_simulator_id_ed25519"
    path.write_bytes(key.export_private_key("openssh"))
    path.chmod(0o600)
    return SshKeyPair(path, key.export_public_key("openssh").decode().strip())
