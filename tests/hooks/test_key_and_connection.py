"""Issue 19 findings 18, 19, 21 and 23 (max_price): the key never leaks, the connection is never swapped.

* 18: a key with whitespace or a control character inside is refused before any request, with a
  message showing no part of it; the scrubber also finds the key escaped (repr, JSON, percent).
* 19: a key echoed by the server across the 200-character cut of an error body leaves no prefix.
* 21: a connection that exists but cannot be parsed is an error, not a silent switch to
  ``PRIME_API_KEY``; the real fallback (connection absent) is logged at WARNING.
* 23: ``max_price`` inf or nan is refused before any request.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Callable
from urllib.parse import quote, quote_plus

import pytest
import structlog

from airflow_provider_prime.exceptions import PrimeAPIError, PrimeConfigError
from airflow_provider_prime.hooks._secrets import REDACTED, key_problem, scrub
from airflow_provider_prime.hooks._settings import PrimeApiSettings
from airflow_provider_prime.hooks.prime import PrimeHook
from airflow_provider_prime.models import PodRequest
from airflow_provider_prime.testing import PODS_PATH, PrimeSimulator
from tests.hooks.callers import Caller
from tests.hooks.fakes import KEY, Reply, ScriptedApi, always
from tests.payloads import make_offer

LEFT, RIGHT = "pkLEFTHALF7c1e", "RIGHTHALF93ab"


def _shows_part_of_the_key(text: str) -> bool:
    return LEFT in text or RIGHT in text or LEFT[:8] in text or RIGHT[-8:] in text


# --- 18: keys with whitespace or control characters are refused -------------------------------


@pytest.mark.parametrize("inner", ["\n", "\r", "\r\n", " ", "\t", "\x00", "\x1b", "\x7f", "\u2028", "\u200b"])
def test_a_key_with_whitespace_or_a_control_character_inside_is_refused(
    set_conn: Callable[..., None], inner: str
) -> None:
    key = LEFT + inner + RIGHT
    assert key_problem(key) is not None
    set_conn(host="https://api.prime.test", password=key)
    with pytest.raises(PrimeConfigError, match="API key is unusable") as caught:
        PrimeHook().get_settings()
    assert not _shows_part_of_the_key(str(caught.value))
    ok, message = PrimeHook().test_connection()
    assert not ok
    assert "API key is unusable" in message
    assert not _shows_part_of_the_key(message)


def test_a_key_from_the_environment_is_checked_too(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PRIME_API_KEY", f"{LEFT}\n{RIGHT}")
    with pytest.raises(PrimeConfigError, match="API key is unusable") as caught:
        PrimeHook("prime_nowhere").get_settings()
    assert not _shows_part_of_the_key(str(caught.value))


def test_ordinary_keys_are_accepted() -> None:
    for key in (KEY, "pk_0123456789abcdef", "a.b-c_d~e+f/g=", "clé-ünïcode"):
        assert key_problem(key) is None
        assert PrimeApiSettings(base_url="https://api.prime.test", api_key=key).api_key == key


@pytest.mark.parametrize("key", [KEY, 'pk"quote\\back%pct+plus/slash', "pk-clé-ünï-€"])
def test_the_scrubber_finds_escaped_forms(key: str) -> None:
    forms = [
        key,
        repr(key),
        json.dumps(key),
        json.dumps(key, ensure_ascii=False),
        quote(key, safe=""),
        quote_plus(key),
        repr(key.encode()),
        f"'Bearer {key}'",
    ]
    text = scrub(" | ".join(forms), key)
    assert REDACTED in text
    for form in forms:
        inner = form.strip("'\"").removeprefix("b'").removeprefix("Bearer ")
        assert inner not in text, form


# --- 19: scrub before truncating ------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        ("x" * 185 + KEY + "y" * 100).encode(),  # plain text, the key across the 200-character cut
        json.dumps({"detail": "x" * 185 + KEY}).encode(),  # a detail cut at 200 characters
        ("<b>" * 530 + KEY + "</b>").encode(),  # across the 1,600-byte read, tags then dropped
        ("word " * 37 + KEY).encode(),  # whitespace collapsed before the cut
    ],
    ids=["text", "json-detail", "html-tags", "spaces"],
)
def test_a_key_across_the_cut_of_an_error_body_leaves_no_prefix(
    mocked: Caller, api: ScriptedApi, body: bytes
) -> None:
    api.script = always(Reply(400, body))
    with pytest.raises(PrimeAPIError) as caught:
        mocked.pods(["p1"])
    texts = [str(caught.value), repr(caught.value), *caught.value.details]
    assert not any(KEY[:6] in text for text in texts), texts


# --- 21: a connection that cannot be parsed is not "absent" ------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        '{"conn_type": "prime", "password": "pk-conn-key", "extra": {"read_timeout": 1}',  # cut short
        '{"conn_type": "prime", "port": "abc", "password": "pk-conn-key"}',
    ],
    ids=["truncated-json", "bad-port"],
)
@pytest.mark.parametrize("kind", ["sync", "async"])
def test_an_unparsable_connection_is_an_error_not_the_environment(
    monkeypatch: pytest.MonkeyPatch, value: str, kind: str
) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_PRIME_DEFAULT", value)
    monkeypatch.setenv("PRIME_API_KEY", "pk-another-account")
    hook = PrimeHook()
    with pytest.raises(
        PrimeConfigError, match="AIRFLOW_CONN_PRIME_DEFAULT but Airflow could not parse it"
    ) as caught:
        hook.get_settings() if kind == "sync" else asyncio.run(hook.aget_settings())
    assert "pk-conn-key" not in str(caught.value)
    assert "pk-another-account" not in str(caught.value)


def test_the_fallback_to_the_environment_is_a_warning(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PRIME_API_KEY", "pk-env-key")
    with structlog.testing.capture_logs() as logs:
        PrimeHook("prime_nowhere").get_settings()
    (entry,) = [e for e in logs if "is not defined" in e["event"]]
    assert entry["log_level"] == "warning"


# --- 23: max_price must be a finite price -------------------------------------------------------


@pytest.mark.parametrize("price", ["inf", "-inf", "nan", math.inf, math.nan])
def test_a_non_finite_max_price_is_refused(price: object) -> None:
    with pytest.raises(PrimeConfigError, match="max_price"):
        PodRequest.from_offer(make_offer(), name="train", max_price=price)  # type: ignore[arg-type]


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_the_hook_refuses_an_unsendable_request_before_any_request(
    prime_simulator: PrimeSimulator, prime_connect: Callable[..., str], kind: str
) -> None:
    prime_connect(prime_simulator)
    good = PodRequest.from_offer(make_offer(), name="train")
    bad = good.model_copy(update={"max_price": math.inf})  # built around the validation
    hook = PrimeHook()
    with pytest.raises(PrimeConfigError, match="cannot be sent as JSON"):
        hook.create_pod(bad) if kind == "sync" else asyncio.run(hook.acreate_pod(bad))
    assert prime_simulator.stats.by_method_path[f"POST {PODS_PATH}"] == 0
    assert prime_simulator.billing()["billing"] == {}
