"""A real Airflow api-server, a Prime API simulator and headless Debian Chromium, shared per module.

Chromium is Debian's (``apt-get install chromium``), driven by the ``playwright`` package with
``executable_path``: nothing is downloaded (``playwright install`` cannot reach its CDN here).
Locally the browser tests skip when ``/usr/bin/chromium`` is absent; under CI (``CI`` set) that is
a failure, because ``.ci/run`` installs it.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from airflow_provider_prime.testing import PrimeSimulator
from scripts.airflow_stack import AirflowStack

CHROMIUM = Path("/usr/bin/chromium")
#: As root and on a machine without internet: no sandbox, and nothing that phones home.
CHROMIUM_ARGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)
#: Generous: two cores are shared with the rest of the suite.
UI_TIMEOUT_MS = 30_000
expect.set_options(timeout=UI_TIMEOUT_MS)


@pytest.fixture(scope="module")
def chromium_path() -> Path:
    if not CHROMIUM.exists():
        reason = f"{CHROMIUM} is not installed (apt-get install chromium); .ci/run installs it"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    return CHROMIUM


@pytest.fixture(scope="module")
def ui_simulator() -> Iterator[PrimeSimulator]:
    """The API the connection test talks to; a unique key, so a leak would be recognisable."""
    with PrimeSimulator(api_keys=(f"ui-key-{secrets.token_hex(8)}",)) as simulator:
        yield simulator


@pytest.fixture(scope="module")
def api_server(tmp_path_factory: pytest.TempPathFactory, chromium_path: Path) -> Iterator[AirflowStack]:
    """Only the api-server (it serves the UI and runs connection tests), with testing enabled.

    Airflow disables the connection "Test" button unless ``[core] test_connection`` is Enabled;
    the simple auth manager with all users admin needs no login.
    """
    home = tmp_path_factory.mktemp("airflow-ui")
    dags = home / "dags"
    dags.mkdir()
    with AirflowStack(home=home, dags_folder=dags, config={"core": {"test_connection": "Enabled"}}) as stack:
        stack.init()
        stack.start(["api-server"])
        yield stack


@pytest.fixture(scope="module")
def browser(chromium_path: Path) -> Iterator[Browser]:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(chromium_path), args=list(CHROMIUM_ARGS))
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 1000})
    context.set_default_timeout(UI_TIMEOUT_MS)
    page = context.new_page()
    try:
        yield page
    finally:
        context.close()
