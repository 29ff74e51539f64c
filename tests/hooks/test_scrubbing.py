"""The API key never leaves the hook inside an error, whatever the server or the network does.

Every error leaves the exchange through one scrub path; these tests drive arbitrary answers and
transport failures through both clients and look for the key everywhere an error can carry text:
``str``, ``repr``, ``args``, ``details`` and the whole ``__cause__`` / ``__context__`` chain.
"""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from airflow_provider_prime.exceptions import PrimeAPIError, PrimeBillingError
from tests.hooks.callers import Caller
from tests.hooks.fakes import KEY, Failure, Reply, ScriptedApi, always


def leaks(error: BaseException) -> list[str]:
    """Every text reachable from ``error`` that contains the key."""
    found: list[str] = []
    seen: set[int] = set()
    current: BaseException | None = error
    pending = [error]
    while pending:
        current = pending.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        texts = [str(current), repr(current), *map(repr, current.args)]
        texts += list(getattr(current, "details", []))
        found += [text for text in texts if KEY in text]
        pending += [link for link in (current.__cause__, current.__context__) if link is not None]
    return found


def test_a_402_does_not_put_the_echoed_key_in_details(mocked: Caller, api: ScriptedApi) -> None:
    # Regression (issue 11, bug 2): the 402 branch copied the server's text into `details` unscrubbed.
    api.script = always(Reply(402, {"detail": f"key {KEY} has no credit"}))
    with pytest.raises(PrimeBillingError) as caught:
        mocked.pods(["p1"])
    assert caught.value.details == ["key *** has no credit"]
    assert leaks(caught.value) == []


def echoed(text: str) -> st.SearchStrategy[bytes]:
    """Bodies that carry ``text``: JSON details of both shapes, a message, HTML, plain text."""
    return st.sampled_from(
        [
            json.dumps({"detail": text}),
            json.dumps({"detail": [{"loc": ["body", text], "msg": text}]}),
            json.dumps({"errors": [{"param": text, "details": text}]}),
            json.dumps({"message": text}),
            json.dumps({"data": [{"podId": text}]}),
            f"<html><title>{text}</title></html>",
            text,
        ]
    ).map(str.encode)


answers = st.builds(
    Reply,
    status=st.integers(100, 599).filter(lambda s: not 300 <= s < 400),
    body=echoed(f"Bearer {KEY}") | echoed(KEY),
    headers=st.sampled_from([{}, {"Retry-After": KEY}, {"WWW-Authenticate": f"Bearer {KEY}"}]),
)
failures = st.builds(Failure, st.sampled_from(["timeout", "connect", "drop"]), st.just(f"for {KEY}"))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(outcome=answers | failures)
def test_no_error_carries_the_key(mocked: Caller, api: ScriptedApi, outcome: Reply | Failure) -> None:
    api.script = always(outcome)
    error: PrimeAPIError | None = None
    try:
        mocked.pods(["p1"], max_retries=1)
    except PrimeAPIError as raised:
        error = raised
    assert error is None or leaks(error) == []


def test_a_requests_own_secrets_are_scrubbed_with_the_key():
    """A create's env values are scrubbed from the error of an API that echoes them, like the key."""
    from airflow_provider_prime.hooks._secrets import scrub

    text = 'refused: envVars HF_TOKEN="hf_abcdef123" bad; key sk-live-1 and hf_abcdef123 again'
    assert (
        scrub(text, ("sk-live-1", "hf_abcdef123"))
        == 'refused: envVars HF_TOKEN="***" bad; key *** and *** again'
    )


def test_short_env_values_are_not_secrets_of_the_request():
    from airflow_provider_prime.models import PodRequest

    request = PodRequest.model_validate(
        {
            "name": "p",
            "cloudId": "c",
            "gpuType": "H100_80GB",
            "gpuCount": 1,
            "socket": "SXM5",
            "envVars": {"DEBUG": "1", "HF_TOKEN": "hf_abcdef123"},
            "jupyterPassword": "secretpw",
        }
    )
    assert request.secret_values() == ("hf_abcdef123", "secretpw")
