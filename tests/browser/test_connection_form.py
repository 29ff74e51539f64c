"""The "Prime Intellect" connection form in Airflow's real UI, driven by headless Chromium.

What is checked is what a user sees: the type is offered, the host and password fields are
relabelled "API base URL" and "API key" with their placeholders, the fields the hook ignores are
hidden, the extra options show their defaults, a saved connection holds what was typed, and the
"Test" button reports success against the simulator and a clear failure for a wrong key.

Airflow 3.1 shows no result of a "Test" click (apache/airflow#55669; 3.2 added notifications,
#59354): there the test reads the answer the page received, which is what 3.2+ displays.

Two known Airflow UI bugs break the "Test" button for every connection type that stores a
password and no port, whatever the provider; the test repairs exactly those in the request the
page sends (see :func:`repair_known_airflow_bugs`) so that it tests this provider's form and hook:

* Airflow 3.1.0-3.1.6 sends the masked ``***`` as the password instead of the stored one
  (apache/airflow#59298, fixed in 3.1.7 by #59643);
* Airflow 3.3 sends ``port: 0`` for a connection without a port, which the API answers with
  "400 Bad Request" (apache/airflow#73298).

``UPDATE_DOCS_SCREENSHOT=1`` also saves the filled form to ``docs/img/connection-form.png``.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import pytest
from packaging.version import Version
from playwright.sync_api import Locator, Page, Route, expect

from airflow_provider_prime.get_provider_info import CONNECTION_FIELDS, UI_FIELD_BEHAVIOUR
from airflow_provider_prime.testing import WHOAMI_PATH, PrimeSimulator
from scripts.airflow_stack import AirflowStack

pytestmark = pytest.mark.browser

DOCS_SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "img" / "connection-form.png"
#: Standard fields a Prime connection does not use, by the label Airflow gives them.
HIDDEN_LABELS = ("Login", "Port", "Schema")
#: The first Airflow whose connection test restores the stored password instead of testing ``***``.
MASKED_PASSWORD_FIXED_IN = Version("3.1.7")
MASKED = "***"
#: The first Airflow that shows the result of a connection test (3.1 shows nothing).
NOTIFICATIONS_SINCE = Version("3.2")


def open_prime_form(page: Page, api_server: AirflowStack, conn_id: str) -> Locator:
    """Open "Add Connection", name it and pick the "Prime Intellect" type; the dialog."""
    page.goto(f"{api_server.base_url}/connections")
    page.get_by_role("button", name="Add Connection").click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_label("Connection ID").fill(conn_id)
    dialog.get_by_role("combobox", name="Connection Type").fill("Prime")
    page.get_by_role("option", name="Prime Intellect", exact=True).click()
    return dialog


def add_prime_connection(page: Page, api_server: AirflowStack, conn_id: str, base_url: str, key: str) -> None:
    """Create a Prime connection through the form and wait until the list shows it."""
    dialog = open_prime_form(page, api_server, conn_id)
    dialog.get_by_label("API base URL").fill(base_url)
    dialog.get_by_label("API key").fill(key)
    dialog.get_by_role("button", name="Save").click()
    expect(dialog).to_be_hidden()
    expect(connection_row(page, conn_id)).to_be_visible()


def connection_row(page: Page, conn_id: str) -> Locator:
    return page.get_by_role("row").filter(has=page.get_by_text(conn_id, exact=True))


def click_test(page: Page, conn_id: str) -> dict[str, Any]:
    """Click the row's "Test Connection"; the api-server's answer to the page (status, message)."""
    with page.expect_response("**/api/v2/connections/test") as response:
        # A DOM click event on the button itself, not a mouse click: the button's tooltip (opened by
        # hover and by focus, and reopened when a toast hands focus back) can sit over the next
        # row's button, which made mouse clicks on the second row flaky on a loaded machine.
        connection_row(page, conn_id).get_by_role("button", name="Test Connection").dispatch_event("click")
    result: dict[str, Any] = response.value.json()
    return result


def notification(page: Page, title: str) -> str:
    """Wait for a notification whose text matches ``title`` (a regex); all notifications' text."""
    notifications = page.get_by_role("region", name=re.compile("Notifications"))
    expect(notifications).to_contain_text(re.compile(title))
    return notifications.inner_text()


def airflow_version(api_server: AirflowStack) -> Version:
    return Version(api_server.api.request("GET", "/version")["version"])


def repair_known_airflow_bugs(page: Page, version: Version, keys: dict[str, str]) -> None:
    """Undo, in the page's "Test" requests, the two Airflow UI bugs named in the module docstring.

    ``keys`` maps connection ids to the key typed into their form: what a fixed Airflow tests with.
    """
    restore_password = version < MASKED_PASSWORD_FIXED_IN

    def handle(route: Route) -> None:
        body: dict[str, Any] = route.request.post_data_json
        if body.get("port") == 0:  # no connection listens on port 0: it means "no port"
            del body["port"]
        if restore_password and body.get("password") == MASKED and body.get("connection_id") in keys:
            body["password"] = keys[body["connection_id"]]
        route.continue_(post_data=json.dumps(body))

    page.route("**/api/v2/connections/test", handle)


def test_form_offers_prime_fields_and_saves_them(
    page: Page, api_server: AirflowStack, ui_simulator: PrimeSimulator
) -> None:
    dialog = open_prime_form(page, api_server, "prime_default")

    placeholders = UI_FIELD_BEHAVIOUR["placeholders"]
    base_url = dialog.get_by_label("API base URL")
    key = dialog.get_by_label("API key")
    expect(base_url).to_have_attribute("placeholder", placeholders["host"])
    expect(key).to_have_attribute("placeholder", placeholders["password"])
    expect(key).to_have_attribute("type", "password")
    for label in (*HIDDEN_LABELS, "Host", "Password"):
        expect(dialog.get_by_label(label, exact=True)).to_have_count(0)

    base_url.fill(ui_simulator.base_url)
    key.fill(ui_simulator.api_key)
    page.evaluate("document.activeElement.blur()")  # no caret in the picture
    screenshot = dialog.screenshot()
    if os.environ.get("UPDATE_DOCS_SCREENSHOT"):
        DOCS_SCREENSHOT.parent.mkdir(exist_ok=True)
        DOCS_SCREENSHOT.write_bytes(screenshot)

    # The extra options, each with its label and its default.
    dialog.get_by_role("button", name="Extra Fields", exact=True).click()
    for spec in CONNECTION_FIELDS.values():
        row = dialog.get_by_role("group").filter(has=page.get_by_text(spec["label"], exact=True))
        expect(row.locator("input")).to_have_value(str(spec["schema"]["default"]))

    dialog.get_by_role("button", name="Save").click()
    expect(dialog).to_be_hidden()
    expect(connection_row(page, "prime_default")).to_contain_text("prime")

    stored = api_server.api.request("GET", "/connections/prime_default")
    assert stored["conn_type"] == "prime"
    assert stored["host"] == ui_simulator.base_url
    assert [stored[name] for name in ("login", "port", "schema")] == [None, None, None]  # hidden: unset
    assert ui_simulator.api_key not in json.dumps(stored)  # the API shows it masked
    assert float(json.loads(stored["extra"])["read_timeout"]) == 30  # the form's default was saved


def test_test_button_reports_success_then_a_clear_failure_for_a_wrong_key(
    page: Page, api_server: AirflowStack, ui_simulator: PrimeSimulator
) -> None:
    wrong_key = "not-a-valid-key"
    keys = {"prime_ok": ui_simulator.api_key, "prime_wrong_key": wrong_key}
    for conn_id, key in keys.items():
        add_prime_connection(page, api_server, conn_id, ui_simulator.base_url, key)
    version = airflow_version(api_server)
    repair_known_airflow_bugs(page, version, keys)
    ui_simulator.stats.reset()

    result = click_test(page, "prime_ok")
    assert result["status"] is True, result
    assert result["message"].startswith(f"Connected to Prime Intellect at {ui_simulator.base_url}")
    if version >= NOTIFICATIONS_SINCE:
        shown = notification(page, "Test Connection (Successful|Failed)")
        assert "Test Connection Successful" in shown, shown
        assert result["message"] in shown, shown

    result = click_test(page, "prime_wrong_key")
    assert result["status"] is False, result
    assert "rejected the API key (HTTP 401)" in result["message"]
    assert "Instances → Read" in result["message"]  # what to check, not just "failed"
    assert wrong_key not in result["message"]
    if version >= NOTIFICATIONS_SINCE:
        shown = notification(page, "Test Connection Failed")
        assert result["message"] in shown, shown

    # Both clicks reached the simulator, each with the key of its own connection.
    whoami = [(r.api_key, r.status) for r in ui_simulator.stats.log if r.path == WHOAMI_PATH]
    assert (ui_simulator.api_key, 200) in whoami
    assert (wrong_key, 401) in whoami
