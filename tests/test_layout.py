"""Where things are defined: each shared thing once, in the module named after it (issue 20)."""

from __future__ import annotations

import ast
import asyncio
from pathlib import Path

import airflow_provider_prime
from airflow_provider_prime import models
from airflow_provider_prime.hooks import _plans
from airflow_provider_prime.hooks import prime as hook_module
from airflow_provider_prime.hooks._settings import PrimeApiSettings
from airflow_provider_prime.hooks.prime import PrimeHook
from airflow_provider_prime.triggers import polling

PACKAGE = Path(airflow_provider_prime.__file__).parent
TESTS = Path(__file__).parent


def imported_modules(path: Path) -> set[str]:
    """The modules ``path`` imports (``from x import y`` gives ``x`` and ``x.y``)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def test_the_hook_does_not_import_the_provider_info() -> None:
    for path in (PACKAGE / "hooks").glob("*.py"):
        assert "airflow_provider_prime.get_provider_info" not in imported_modules(path), path.name


def test_the_hook_module_re_exports_no_private_class() -> None:
    tree = ast.parse(Path(hook_module.__file__).read_text())
    re_exported = {
        alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom)
        for alias in node.names
        if alias.asname == alias.name
    }
    assert re_exported <= {"CHUNK_SIZE", "LIST_LAG_BOUND"}  # constants of the API, never a class
    assert hook_module.__all__ == ["PrimeHook"]


def test_gone_or_going_is_the_models_set() -> None:
    assert _plans.GONE_STATES is models.GONE_STATES
    assert models.GONE_STATES | models.BROKEN_STATES == models.FAILED_POD_STATES


def test_every_api_path_of_the_hook_is_in_the_endpoints_module() -> None:
    for path in (PACKAGE / "hooks").glob("*.py"):
        strings = [
            node.value
            for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, ast.Constant) and isinstance(node.value, str)
        ]
        paths = [text for text in strings if text.startswith("/api/v1/")]  # "/api/v1" alone: the root
        assert not paths or path.name == "_endpoints.py", (path.name, paths)


def test_the_poller_gets_its_client_from_the_hook() -> None:
    settings = PrimeApiSettings(base_url="http://127.0.0.1:9", api_key="pk-layout")

    async def factory_of_a_new_poller() -> object:
        return polling.PodStatusPoller(settings)._client_factory

    assert asyncio.run(factory_of_a_new_poller()) == PrimeHook.async_status_client


def test_test_modules_import_helpers_from_helper_modules_only() -> None:
    for path in TESTS.rglob("*.py"):
        tests_imported = [
            name
            for name in imported_modules(path)
            if name.startswith("tests.") and name.rsplit(".", 1)[-1].startswith("test_")
        ]
        assert not tests_imported, (str(path.relative_to(TESTS)), tests_imported)
