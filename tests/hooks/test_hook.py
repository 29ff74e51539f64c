"""PrimeHook: Airflow connections (AIRFLOW_CONN_* JSON), the CLI environment fallback, masking,
the connection test and the connection form."""

from __future__ import annotations

import json
import logging
import sys
import threading
import types
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import structlog

from airflow_provider_prime.exceptions import PrimeConfigError, PrimeTransientError
from airflow_provider_prime.get_provider_info import CONNECTION_FIELDS, get_provider_info
from airflow_provider_prime.hooks.prime import PrimeHook
from tests.hooks.fakes import KEY, Failure, LoopbackServer, Reply, ScriptedApi, Seen, always, serve_pods
from tests.simulated import FAST_RETRY

SetConn = Callable[..., None]


@pytest.fixture
def server(api: ScriptedApi) -> Iterator[LoopbackServer]:
    with LoopbackServer(api) as local:
        yield local


def test_init_never_touches_the_connection(monkeypatch: pytest.MonkeyPatch) -> None:
    def forbidden(*args: object) -> None:
        raise AssertionError("connection looked up in __init__")

    monkeypatch.setattr(PrimeHook, "get_connection", forbidden)
    monkeypatch.setattr(PrimeHook, "aget_connection", forbidden)
    PrimeHook("does_not_exist")
    PrimeHook()


def test_connection_host_password_and_extra_are_used(
    set_conn: SetConn, server: LoopbackServer, api: ScriptedApi
) -> None:
    set_conn(host=server.base_url + "/api/v1/", password=KEY, extra={**FAST_RETRY, "max_retries": 0})
    hook = PrimeHook()
    settings = hook.get_settings()
    assert settings.base_url == server.base_url
    assert settings.max_retries == 0
    statuses = hook.get_pods_status(["a", "b", "a"])
    assert sorted(s.pod_id for s in statuses) == ["a", "b"]
    assert api.seen[0].pod_ids == ["a", "b"]
    api.script = always(Reply(503))
    with pytest.raises(PrimeTransientError, match="after 1 attempts"):
        hook.get_pods_status(["a"])  # max_retries=0 from the extra: exactly one more request
    assert len(api.seen) == 2


async def test_async_hook_uses_the_async_connection_api(
    set_conn: SetConn, server: LoopbackServer, api: ScriptedApi
) -> None:
    set_conn("prime_async", host=server.base_url, password=KEY, extra={"read_timeout": 7})
    hook = PrimeHook("prime_async")
    settings = await hook.aget_settings()
    assert settings.read_timeout == 7.0
    statuses = await hook.aget_pods_status(["x", "y"])
    assert sorted(s.pod_id for s in statuses) == ["x", "y"]
    assert api.seen[0].headers["authorization"] == f"Bearer {KEY}"


async def test_async_lookup_never_calls_the_sync_api(monkeypatch: pytest.MonkeyPatch) -> None:
    async def aget_connection(conn_id: str) -> SimpleNamespace:
        return SimpleNamespace(conn_id=conn_id, host=None, port=None, password=KEY, extra=None)

    monkeypatch.setattr(PrimeHook, "aget_connection", staticmethod(aget_connection))
    monkeypatch.setattr(PrimeHook, "get_connection", lambda *a: pytest.fail("sync lookup in the event loop"))
    settings = await PrimeHook("prime_x").aget_settings()
    assert settings.base_url == "https://api.primeintellect.ai"


async def test_airflow_3_1_without_supervisor_looks_up_off_the_event_loop(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Airflow 3.1's async lookup outside a task or triggerer fails with this ImportError; the hook
    # then uses the sync lookup in a worker thread, never on the loop's own thread.
    async def aget_connection(conn_id: str) -> None:
        raise ImportError(
            "cannot import name 'SUPERVISOR_COMMS'", name="airflow.sdk.execution_time.task_runner"
        )

    loop_thread = threading.current_thread()
    threads: list[threading.Thread] = []

    def get_connection(conn_id: str) -> SimpleNamespace:
        threads.append(threading.current_thread())
        return SimpleNamespace(conn_id=conn_id, host="127.0.0.1:8443", port=None, password=KEY, extra=None)

    monkeypatch.setattr(PrimeHook, "aget_connection", staticmethod(aget_connection))
    monkeypatch.setattr(PrimeHook, "get_connection", staticmethod(get_connection))
    settings = await PrimeHook("prime_x").aget_settings()
    assert settings.base_url == "https://127.0.0.1:8443"
    assert len(threads) == 1
    assert threads[0] is not loop_thread


async def test_other_import_errors_are_not_mistaken_for_a_missing_connection(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def aget_connection(conn_id: str) -> None:
        raise ImportError("No module named 'hvac'", name="hvac")

    monkeypatch.setattr(PrimeHook, "aget_connection", staticmethod(aget_connection))
    with pytest.raises(ImportError, match="hvac"):
        await PrimeHook("prime_x").aget_settings()


@pytest.mark.parametrize(
    ("bad", "fragment"),
    [([], "empty"), (["ok", ""], "blank"), (["ok", None], "rendered nothing"), (7, "not int")],
)
def test_bad_ids_fail_before_any_lookup_or_request(bad: object, fragment: str) -> None:
    # No connection is defined: a lookup would fail differently, so the ids were refused first.
    with pytest.raises(PrimeConfigError, match=fragment):
        PrimeHook().get_pods_status(bad)


def test_a_bare_string_is_one_pod(set_conn: SetConn, server: LoopbackServer, api: ScriptedApi) -> None:
    set_conn(host=server.base_url, password=KEY)
    assert [s.pod_id for s in PrimeHook().get_pods_status("pod-abc")] == ["pod-abc"]
    assert api.seen[0].pod_ids == ["pod-abc"]


@pytest.mark.parametrize("base_var", ["PRIME_API_BASE_URL", "PRIME_BASE_URL"])
def test_missing_connection_falls_back_to_the_cli_environment(
    monkeypatch: pytest.MonkeyPatch, server: LoopbackServer, api: ScriptedApi, base_var: str
) -> None:
    monkeypatch.setenv("PRIME_API_KEY", KEY)
    monkeypatch.setenv(base_var, server.base_url + "/api/v1")
    hook = PrimeHook("prime_nowhere")
    with structlog.testing.capture_logs() as logs:
        settings = hook.get_settings()
    assert settings.base_url == server.base_url
    assert len(hook.get_pods_status(["p1"])) == 1
    (entry,) = [e for e in logs if "is not defined" in e["event"]]
    assert "'prime_nowhere' is not defined; using PRIME_API_KEY" in entry["event"]
    assert server.base_url in entry["event"]
    assert KEY not in str(logs)


async def test_async_missing_connection_falls_back_too(
    monkeypatch: pytest.MonkeyPatch, server: LoopbackServer, api: ScriptedApi
) -> None:
    monkeypatch.setenv("PRIME_API_KEY", KEY)
    monkeypatch.setenv("PRIME_API_BASE_URL", server.base_url)
    with structlog.testing.capture_logs() as logs:
        statuses = await PrimeHook("prime_nowhere").aget_pods_status(["p1"])
    assert [s.pod_id for s in statuses] == ["p1"]
    assert any("is not defined; using PRIME_API_KEY" in e["event"] for e in logs)


def test_no_key_anywhere_says_how_to_set_one() -> None:
    with pytest.raises(PrimeConfigError) as caught:
        PrimeHook("prime_nowhere").get_settings()
    message = str(caught.value)
    assert "connection 'prime_nowhere' is not defined" in message
    assert "AIRFLOW_CONN_PRIME_NOWHERE" in message
    assert "PRIME_API_KEY is not set" in message


async def test_no_key_anywhere_async() -> None:
    with pytest.raises(PrimeConfigError, match="PRIME_API_KEY is not set"):
        await PrimeHook("prime_nowhere").aget_settings()


def test_an_existing_connection_without_key_does_not_fall_back(
    set_conn: SetConn, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PRIME_API_KEY", KEY)
    set_conn(host="https://api.primeintellect.ai")
    with pytest.raises(PrimeConfigError, match="Connection 'prime_default' has no API key"):
        PrimeHook().get_settings()


@pytest.mark.parametrize(
    ("fields", "fragment"),
    [
        ({"host": "http://api.primeintellect.ai"}, "plain http to a non-loopback host"),
        ({"host": "http://192.168.1.10:8000"}, "plain http to a non-loopback host"),
        ({"extra": {"read_timeout": "soon"}}, "read_timeout must be a positive number"),
        ({"extra": {"retries": 2}}, "unknown extra field"),
    ],
)
def test_unusable_connections_are_refused(set_conn: SetConn, fields: dict[str, Any], fragment: str) -> None:
    set_conn(password=KEY, **fields)
    with pytest.raises(PrimeConfigError, match=fragment) as caught:
        PrimeHook().get_settings()
    assert "prime_default" in str(caught.value)
    assert KEY not in str(caught.value)


def test_the_key_is_masked_in_airflow_logs(set_conn: SetConn, monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow.sdk._shared.secrets_masker import redact

    fresh = f"pk-{uuid.uuid4().hex}"
    assert redact(f"key={fresh}") == f"key={fresh}"
    set_conn(password=fresh)
    PrimeHook().get_settings()
    assert redact(f"key={fresh}") == "key=***"

    from_env = f"pk-{uuid.uuid4().hex}"
    monkeypatch.setenv("PRIME_API_KEY", from_env)
    PrimeHook("prime_nowhere").get_settings()
    assert redact(f"key={from_env}") == "key=***"


async def test_the_key_is_masked_from_the_async_path(monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow.sdk._shared.secrets_masker import redact

    fresh = f"pk-{uuid.uuid4().hex}"
    monkeypatch.setenv("PRIME_API_KEY", fresh)
    await PrimeHook("prime_nowhere").aget_settings()
    assert redact(fresh) == "***"


def test_the_key_is_in_no_log_repr_or_error(
    set_conn: SetConn, server: LoopbackServer, api: ScriptedApi, caplog: pytest.LogCaptureFixture
) -> None:
    set_conn(host=server.base_url, password=KEY, extra={**FAST_RETRY, "max_retries": 2})
    api.script = always(Reply(502, f"<html>echo {KEY}</html>".encode()))
    hook = PrimeHook()
    with (
        caplog.at_level(logging.DEBUG),
        structlog.testing.capture_logs() as logs,
        pytest.raises(PrimeTransientError) as caught,
    ):
        hook.get_pods_status(["p1"])
    assert len(api.seen) == 3
    for text in (caplog.text, str(logs), str(caught.value), repr(caught.value), repr(hook.get_settings())):
        assert KEY not in text
    assert "retry 2 of 2" in caplog.text


def _whoami_or_pods(seen: Seen) -> Reply:
    if seen.path == "/api/v1/user/whoami":
        return Reply(200, {"data": {"name": "Ada Lovelace", "email": "ada@example.com"}})
    return serve_pods()(seen)


def test_test_connection_reports_who_is_connected(
    set_conn: SetConn, server: LoopbackServer, api: ScriptedApi
) -> None:
    api.script = _whoami_or_pods
    set_conn(host=server.base_url, password=KEY)
    ok, message = PrimeHook().test_connection()
    assert ok
    assert message == f"Connected to Prime Intellect at {server.base_url} as Ada Lovelace <ada@example.com>."
    assert [s.path for s in api.seen] == ["/api/v1/user/whoami"]


def test_test_connection_explains_a_wrong_key(
    set_conn: SetConn, server: LoopbackServer, api: ScriptedApi
) -> None:
    set_conn(host=server.base_url, password="wrong-key")
    ok, message = PrimeHook().test_connection()
    assert not ok
    assert "HTTP 401" in message
    assert '"Instances → Read" permission' in message
    assert len(api.seen) == 1
    assert "wrong-key" not in message


def test_test_connection_gives_up_quickly_on_an_unreachable_api(
    set_conn: SetConn, server: LoopbackServer, api: ScriptedApi
) -> None:
    api.script = always(Failure.DROP)
    set_conn(host=server.base_url, password=KEY, extra={**FAST_RETRY, "max_retries": 10})
    ok, message = PrimeHook().test_connection()
    assert not ok
    assert "Gave up after 2 attempts: Connection failed" in message
    assert len(api.seen) == 2  # the connection test caps retries at one


def test_test_connection_reports_configuration_problems() -> None:
    ok, message = PrimeHook("prime_nowhere").test_connection()
    assert not ok
    assert "PRIME_API_KEY is not set" in message


# --- the connection form ------------------------------------------------------------------------


def test_form_behaviour_hides_what_is_unused_and_labels_the_rest() -> None:
    behaviour = PrimeHook.get_ui_field_behaviour()
    assert set(behaviour["hidden_fields"]) == {"schema", "login", "port"}
    assert behaviour["relabeling"] == {"host": "API base URL", "password": "API key"}
    assert behaviour["placeholders"]["host"] == "https://api.primeintellect.ai"
    json.loads(behaviour["placeholders"]["extra"])  # the placeholder is a valid extra


def test_provider_info_declares_the_form_and_matches_airflow_schema() -> None:
    import jsonschema
    from airflow import providers_manager

    schema_path = Path(providers_manager.__file__).with_name("provider_info.schema.json")
    info = get_provider_info()
    jsonschema.validate(info, json.loads(schema_path.read_text()))
    (connection_type,) = info["connection-types"]
    assert connection_type["connection-type"] == PrimeHook.conn_type
    assert connection_type["hook-class-name"] == f"{PrimeHook.__module__}.{PrimeHook.__name__}"


def test_airflow_sees_the_form() -> None:
    from airflow.providers_manager import ProvidersManager

    if not hasattr(ProvidersManager, "_load_ui_metadata"):
        pytest.skip("Airflow < 3.2 builds forms from hook methods only when wtforms is installed")
    manager = ProvidersManager()
    assert manager.field_behaviours["prime"]["relabeling"]["password"] == "API key"
    widgets = {k for k in manager.connection_form_widgets if k.startswith("extra__prime__")}
    assert widgets == {f"extra__prime__{name}" for name in CONNECTION_FIELDS}


def test_form_widgets_for_airflow_3_1(monkeypatch: pytest.MonkeyPatch) -> None:
    # Airflow 3.1 asks the hook, through wtforms (mocked by its api-server); record what we build.
    class Field:
        def __init__(self, label: str, validators: list[Any], description: str, default: Any) -> None:
            self.label, self.validators, self.description, self.default = (
                label,
                validators,
                description,
                default,
            )

    class IntegerField(Field):
        pass

    class StringField(Field):
        pass

    wtforms = types.ModuleType("wtforms")
    wtforms.IntegerField = IntegerField  # type: ignore[attr-defined]
    wtforms.StringField = StringField  # type: ignore[attr-defined]
    validators = types.ModuleType("wtforms.validators")
    validators.Optional = lambda: "optional"  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "wtforms", wtforms)
    monkeypatch.setitem(sys.modules, "wtforms.validators", validators)

    widgets = PrimeHook.get_connection_form_widgets()
    assert set(widgets) == set(CONNECTION_FIELDS)
    assert isinstance(widgets["max_retries"], IntegerField)
    assert widgets["max_retries"].default == 3
    assert isinstance(widgets["read_timeout"], StringField)  # no float field in 3.1 forms
    assert widgets["read_timeout"].default == "30"
    assert widgets["read_timeout"].label == "Read timeout (seconds)"
    assert all(w.validators == ["optional"] for w in widgets.values())
