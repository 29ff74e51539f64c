"""The distribution as a user gets it: built, checked, installed next to Airflow in a clean venv.

``python -m build`` makes the sdist and, from it, the wheel; ``twine check`` validates their
metadata; the wheel is installed into a fresh virtualenv with the same Airflow (and the same
dependency versions, so uv serves everything from its cache) as the one running the tests. There,
``airflow providers list`` must find the provider through its entry point and ``airflow connections
test`` must reach the simulator through the installed hook, with nothing imported from this
checkout.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from importlib.metadata import version
from pathlib import Path

import pytest

from airflow_provider_prime import __version__
from airflow_provider_prime.testing import PrimeSimulator
from airflow_provider_prime.testing.connection import airflow_connection_env

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
DIST_NAME = "airflow_provider_prime"
#: Generous bounds for one command on two shared cores; a hang fails instead of blocking CI.
COMMAND_TIMEOUT = 300


def run(*args: str | Path, cwd: Path, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(
        [str(a) for a in args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT,
        check=False,
    )
    assert done.returncode == 0, f"{' '.join(map(str, args))} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def find_uv() -> str:
    """The uv the Makefile installs into the test venv (else one on PATH)."""
    beside = Path(sys.executable).with_name("uv")
    found = str(beside) if beside.exists() else shutil.which("uv")
    if found is None:
        pytest.skip("uv is not installed (`make test` installs it into the venv)")
    return found


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``python -m build`` of this checkout: the folder holding the sdist and the wheel."""
    out = tmp_path_factory.mktemp("dist")
    env = {**os.environ, "PATH": f"{Path(find_uv()).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    run(sys.executable, "-m", "build", "--installer", "uv", "--outdir", out, ROOT, cwd=out, env=env)
    return out


@pytest.fixture(scope="module")
def wheel(dist: Path) -> Path:
    (found,) = dist.glob(f"{DIST_NAME}-{__version__}-py3-none-any.whl")
    return found


def test_build_gives_a_wheel_and_an_sdist_that_twine_accepts(dist: Path) -> None:
    sdist = dist / f"{DIST_NAME}-{__version__}.tar.gz"
    assert sdist.exists(), sorted(p.name for p in dist.iterdir())
    output = run(sys.executable, "-m", "twine", "check", "--strict", *sorted(dist.iterdir()), cwd=dist)
    assert output.count("PASSED") == 2, output
    # The sdist carries what running the tests and building the docs needs.
    with tarfile.open(sdist) as archive:
        top = {name.split("/")[1] for name in archive.getnames() if name.count("/") >= 1}
    assert {"airflow_provider_prime", "tests", "scripts", "example_dags", "docs", "Makefile"} <= top, top
    assert {"pyproject.toml", "README.md", "mkdocs.yml", "PKG-INFO"} <= top, top


def test_wheel_holds_the_typed_package_and_its_entry_point(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        info = f"{DIST_NAME}-{__version__}.dist-info"
        entry_points = archive.read(f"{info}/entry_points.txt").decode()
        metadata = archive.read(f"{info}/METADATA").decode()
    for module in ("hooks/prime.py", "sensors/pod_status.py", "triggers/pod_status.py", "py.typed"):
        assert f"{DIST_NAME}/{module}" in names
    assert not any(name.startswith(("tests/", "example_dags/", "scripts/")) for name in names)
    assert "[apache_airflow_provider]" in entry_points
    assert "provider_info = airflow_provider_prime.get_provider_info:get_provider_info" in entry_points
    assert "Requires-Dist: apache-airflow<4,>=3.1.0" in metadata


def test_wheel_installs_next_to_airflow_and_airflow_finds_it(wheel: Path, tmp_path: Path) -> None:
    uv = find_uv()
    # Pin every dependency to what the test venv has: the same resolution, served from uv's cache.
    constraints = tmp_path / "constraints.txt"
    frozen = run(uv, "pip", "freeze", "--python", sys.executable, cwd=tmp_path).splitlines()
    constraints.write_text(
        "\n".join(line for line in frozen if not line.startswith(("-e", "airflow-provider")))
    )
    venv = tmp_path / "venv"
    run(uv, "venv", "--quiet", "--python", sys.executable, venv, cwd=tmp_path)
    python = venv / "bin" / "python"
    airflow = f"apache-airflow=={version('apache-airflow')}"
    run(uv, "pip", "install", "--quiet", "--python", python, "-c", constraints, airflow, wheel, cwd=tmp_path)

    installed = run(python, "-c", "import airflow_provider_prime as p; print(p.__file__)", cwd=tmp_path)
    assert installed.strip().startswith(str(venv)), installed  # the wheel, not this checkout

    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "PRIME_"))}
    env.update(AIRFLOW_HOME=str(tmp_path / "airflow-home"), AIRFLOW__CORE__LOAD_EXAMPLES="False")
    listed = run(venv / "bin" / "airflow", "providers", "list", "-o", "json", cwd=tmp_path, env=env)
    versions = {p["package_name"]: p["version"] for p in json.loads(listed)}
    assert versions.get("airflow-provider-prime") == __version__, versions

    with PrimeSimulator() as simulator:
        env.update(airflow_connection_env(simulator.base_url, simulator.api_key))
        env["AIRFLOW__CORE__TEST_CONNECTION"] = "Enabled"
        output = run(venv / "bin" / "airflow", "connections", "test", "prime_default", cwd=tmp_path, env=env)
        assert "Connection success!" in output, output
        assert simulator.stats.by_path["/api/v1/user/whoami"] == 1
