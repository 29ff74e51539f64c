"""The official ``prime`` CLI in a virtualenv of its own, and a way to run it against a simulator.

The CLI (PyPI package ``prime``) is a client of the Prime API that none of us wrote, so it checks
the simulator's answers independently. It is installed once into ``.venv-prime-cli/`` at the
project root, isolated from Airflow's environment (it needs Python 3.11+, the lowest Airflow runs
on 3.10), and reused while its stamp names the pinned version. Only the package index is used.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from airflow_provider_prime.testing import PrimeSimulator

ROOT = Path(__file__).resolve().parents[2]
#: The CLI release the oracle tests were written against (its source was read, none copied).
PRIME_CLI_VERSION = "0.18.0"
VENV = ROOT / ".venv-prime-cli"
STAMP = VENV / f".installed-prime-{PRIME_CLI_VERSION}"
INSTALL_TIMEOUT = 600
COMMAND_TIMEOUT = 120


def _interpreter() -> str:
    """A Python the CLI supports (3.11+): the newest found, so every test run reuses one venv."""
    for version in ("3.13", "3.12", "3.11"):
        found = subprocess.run(
            [str(ROOT / "scripts" / "find-python"), version], capture_output=True, text=True, check=False
        )
        if found.returncode == 0 and found.stdout.strip():
            return found.stdout.strip()
    if sys.version_info >= (3, 11):
        return sys.executable
    pytest.fail("the prime CLI needs Python 3.11 or newer and none was found (scripts/find-python)")


def _install() -> None:
    """(Re)build the CLI's venv from the package index; the stamp is written last."""
    shutil.rmtree(VENV, ignore_errors=True)
    python = _interpreter()
    env = {name: value for name, value in os.environ.items() if not name.startswith("UV_EXCLUDE_NEWER")}
    uv = Path(sys.executable).with_name("uv")
    package = f"prime=={PRIME_CLI_VERSION}"
    if uv.exists():
        steps = [
            [str(uv), "venv", "--quiet", "--python", python, str(VENV)],
            [str(uv), "pip", "install", "--quiet", "--python", str(VENV / "bin" / "python"), package],
        ]
    else:
        pip = [str(VENV / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
        steps = [[python, "-m", "venv", str(VENV)], [*pip, package]]
    # Bytecode now: the test environment sets PYTHONDONTWRITEBYTECODE, and without .pyc files every
    # CLI run would compile its few hundred modules again (about twice the CPU of a run).
    steps.append([str(VENV / "bin" / "python"), "-m", "compileall", "-q", str(VENV / "lib")])
    for step in steps:
        done = subprocess.run(
            step, capture_output=True, text=True, env=env, timeout=INSTALL_TIMEOUT, check=False
        )
        if done.returncode != 0:
            pytest.fail(f"installing the prime CLI failed: {' '.join(step)}\n{done.stdout}\n{done.stderr}")
    STAMP.write_text(f"prime {PRIME_CLI_VERSION} with {python}\n")


@pytest.fixture(scope="module")
def prime_cli_path() -> Path:
    """The ``prime`` executable, installed on first use and reused while the stamp matches."""
    if not STAMP.exists():
        _install()
    return VENV / "bin" / "prime"


@dataclass(frozen=True)
class Result:
    code: int
    out: str

    def __str__(self) -> str:
        return f"exit {self.code}:\n{self.out}"


Run = Callable[..., Result]


@pytest.fixture(scope="module")
def cli_simulator() -> Iterator[PrimeSimulator]:
    """One simulator for the module, serving the built-in ``lifecycle`` scenario."""
    with PrimeSimulator("lifecycle") as sim:
        yield sim


@pytest.fixture(scope="module")
def prime(
    prime_cli_path: Path, cli_simulator: PrimeSimulator, tmp_path_factory: pytest.TempPathFactory
) -> Run:
    """``prime(*args)``: run the CLI against the simulator with a throw-away HOME; stdout+stderr."""
    home = tmp_path_factory.mktemp("prime-home")
    env = {name: value for name, value in os.environ.items() if not name.startswith("PRIME_")}
    env.update(
        HOME=str(home),
        PRIME_API_KEY=cli_simulator.api_key,
        PRIME_API_BASE_URL=cli_simulator.base_url,
        PRIME_DISABLE_VERSION_CHECK="1",
        COLUMNS="250",  # rich would wrap ids and names in its 80-column default
        NO_COLOR="1",
    )

    def run(*args: str) -> Result:
        done = subprocess.run(
            [str(prime_cli_path), *args],
            capture_output=True,
            text=True,
            env=env,
            stdin=subprocess.DEVNULL,  # a prompt would fail at once instead of waiting
            timeout=COMMAND_TIMEOUT,
            check=False,
        )
        return Result(done.returncode, done.stdout + done.stderr)

    return run
