"""Settings: base URL normalisation, loopback-only http, extras validation, key hygiene."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from airflow_provider_prime.exceptions import PrimeConfigError
from airflow_provider_prime.hooks._options import OPTIONS, docs_table
from airflow_provider_prime.hooks._settings import (
    DEFAULT_BASE_URL,
    PrimeApiSettings,
    extra_options,
    normalise_base_url,
    settings_from_connection,
    settings_from_environment,
)
from tests.hooks.fakes import KEY

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("raw", "port", "expected"),
    [
        (None, None, "https://api.primeintellect.ai"),
        ("", None, "https://api.primeintellect.ai"),
        ("https://api.primeintellect.ai/", None, "https://api.primeintellect.ai"),
        ("https://api.primeintellect.ai/api/v1", None, "https://api.primeintellect.ai"),
        ("https://api.primeintellect.ai/api/v1/", None, "https://api.primeintellect.ai"),
        ("HTTPS://API.PrimeIntellect.ai", None, "https://api.primeintellect.ai"),
        ("api.primeintellect.ai", None, "https://api.primeintellect.ai"),
        ("https://proxy.example.com/prime/api/v1", None, "https://proxy.example.com/prime"),
        ("http://127.0.0.1:8080/api/v1/", None, "http://127.0.0.1:8080"),
        ("http://127.8.9.10:1", None, "http://127.8.9.10:1"),
        ("http://localhost:9", None, "http://localhost:9"),
        ("http://[::1]:9/", None, "http://[::1]:9"),
        ("127.0.0.1", 8443, "https://127.0.0.1:8443"),
        ("http://127.0.0.1", 8080, "http://127.0.0.1:8080"),
        ("http://127.0.0.1:7000", 8080, "http://127.0.0.1:7000"),
    ],
)
def test_base_url_is_normalised(raw: str | None, port: int | None, expected: str) -> None:
    assert normalise_base_url(raw, port) == expected


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        ("http://api.primeintellect.ai", "plain http to a non-loopback host"),
        ("http://10.0.0.5:8080", "plain http to a non-loopback host"),
        ("http://localhost.evil.com", "plain http to a non-loopback host"),
        ("ftp://api.primeintellect.ai", "http or https"),
        ("https://", "http or https"),
        ("https://user:pw@api.primeintellect.ai", "must not contain credentials"),
        ("https://api.primeintellect.ai/?x=1", "query or fragment"),
        ("https://api.primeintellect.ai:notaport", "not a valid URL"),
    ],
)
def test_bad_base_urls_are_refused(raw: str, fragment: str) -> None:
    with pytest.raises(PrimeConfigError, match=fragment):
        normalise_base_url(raw)


def test_settings_hide_the_key_and_validate_on_construction() -> None:
    settings = PrimeApiSettings(base_url="https://api.primeintellect.ai/api/v1", api_key=KEY)
    assert settings.base_url == DEFAULT_BASE_URL
    assert KEY not in repr(settings)
    assert KEY not in str(settings)
    with pytest.raises(PrimeConfigError, match="empty"):
        PrimeApiSettings(base_url="", api_key=" ")
    with pytest.raises(PrimeConfigError, match="non-loopback"):
        PrimeApiSettings(base_url="http://api.primeintellect.ai", api_key=KEY)
    with pytest.raises(PrimeConfigError, match="read_timeout must be a positive"):
        PrimeApiSettings(base_url="", api_key=KEY, read_timeout=0)


def test_fingerprint_tracks_every_field_without_revealing_the_key() -> None:
    one = PrimeApiSettings(base_url="", api_key=KEY)
    same = PrimeApiSettings(base_url="https://api.primeintellect.ai/", api_key=KEY)
    assert one.fingerprint == same.fingerprint
    assert one.fingerprint != dataclasses.replace(one, api_key=KEY + "x").fingerprint
    assert one.fingerprint != dataclasses.replace(one, read_timeout=31).fingerprint
    assert one.fingerprint != dataclasses.replace(one, base_url="https://other.example").fingerprint
    assert KEY not in one.fingerprint


def test_extras_are_parsed_with_strings_blanks_and_prefixed_names(tmp_path: Path) -> None:
    bundle = tmp_path / "ca.pem"
    bundle.write_text("not checked here")
    extra = {
        "connect_timeout": "2.5",
        "read_timeout": 12,
        "extra__prime__max_retries": "5",
        "backoff_base": 0,
        "backoff_max": None,  # a blank form field: default
        "retry_after_max": "",
        "verify": str(bundle),
    }
    settings = PrimeApiSettings(base_url="", api_key=KEY, **extra_options(json.dumps(extra)))
    assert (settings.connect_timeout, settings.read_timeout, settings.max_retries) == (2.5, 12.0, 5)
    assert (settings.backoff_base, settings.backoff_max, settings.retry_after_max) == (0.0, 30.0, 60.0)
    assert settings.verify == str(bundle)
    assert PrimeApiSettings(base_url="", api_key=KEY, **extra_options({"verify": "false"})).verify is False
    assert extra_options(None) == {}
    assert extra_options("") == {}


@pytest.mark.parametrize(
    ("extra", "fragment"),
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "must be a JSON object"),
        ({"read_timout": 3}, "unknown extra field.*'read_timout'"),
        ({"read_timeout": 0}, "read_timeout must be a positive number"),
        ({"read_timeout": "fast"}, "read_timeout must be a positive number"),
        ({"connect_timeout": True}, "connect_timeout must be a positive number"),
        ({"backoff_max": -1}, "backoff_max must be a non-negative number"),
        ({"retry_after_max": "inf"}, "retry_after_max must be a non-negative number"),
        ({"max_retries": 2.5}, "max_retries must be a whole number"),
        ({"max_retries": -1}, "max_retries must be a whole number"),
        ({"max_retries": 1000}, "max_retries must be a whole number from 0 to 100"),
        ({"verify": "/no/such/bundle.pem"}, "does not exist"),
        ({"verify": 3}, "verify must be true, false or the path"),
    ],
)
def test_bad_extras_are_explained(extra: object, fragment: str) -> None:
    raw = extra if isinstance(extra, str) else json.dumps(extra)
    with pytest.raises(PrimeConfigError, match=fragment):
        PrimeApiSettings(base_url="", api_key=KEY, **extra_options(raw))


def test_the_connection_page_shows_the_options_table() -> None:
    # The table is generated from the options (hooks/_options.py); the page must carry it as is.
    page = (ROOT / "docs" / "connection.md").read_text()
    assert docs_table() in page, f"docs/connection.md must contain, verbatim:\n{docs_table()}"


def test_defaults_and_bounds_come_from_the_table() -> None:
    settings = PrimeApiSettings(base_url="", api_key=KEY)
    for option in OPTIONS:
        assert getattr(settings, option.name) == option.default, option.name
    with pytest.raises(PrimeConfigError, match="from 0 to 100"):
        PrimeApiSettings(base_url="", api_key=KEY, max_retries=101)


def _conn(**fields: object) -> SimpleNamespace:
    base = {"conn_id": "prime_x", "host": None, "port": None, "password": KEY, "extra": None}
    base.update(fields)
    return SimpleNamespace(**base)


def test_connection_maps_host_password_and_extra() -> None:
    conn = _conn(host="http://127.0.0.1:9999/api/v1/", password=f"  {KEY}\n", extra='{"max_retries": 0}')
    settings = settings_from_connection(conn)
    assert settings.base_url == "http://127.0.0.1:9999"
    assert settings.api_key == KEY  # pasted whitespace removed
    assert settings.max_retries == 0


def test_connection_errors_name_the_connection() -> None:
    with pytest.raises(PrimeConfigError, match=r"Connection 'prime_x' has no API key.*password"):
        settings_from_connection(_conn(password=None))
    with pytest.raises(PrimeConfigError, match=r"Connection 'prime_x': .*non-loopback"):
        settings_from_connection(_conn(host="http://example.com"))
    with pytest.raises(PrimeConfigError, match="Connection 'prime_x': unknown extra"):
        settings_from_connection(_conn(extra='{"timeout": 3}'))


def test_environment_follows_the_cli_order() -> None:
    assert settings_from_environment({}) is None
    assert settings_from_environment({"PRIME_API_KEY": " "}) is None
    only_key = settings_from_environment({"PRIME_API_KEY": KEY})
    assert only_key is not None
    assert only_key.base_url == DEFAULT_BASE_URL
    legacy = settings_from_environment({"PRIME_API_KEY": KEY, "PRIME_BASE_URL": "http://localhost:1/api/v1"})
    assert legacy is not None
    assert legacy.base_url == "http://localhost:1"
    both = settings_from_environment(
        {
            "PRIME_API_KEY": KEY,
            "PRIME_API_BASE_URL": "https://a.example",
            "PRIME_BASE_URL": "https://b.example",
        }
    )
    assert both is not None
    assert both.base_url == "https://a.example"
    with pytest.raises(PrimeConfigError, match=r"environment.*non-loopback"):
        settings_from_environment({"PRIME_API_KEY": KEY, "PRIME_API_BASE_URL": "http://a.example"})
