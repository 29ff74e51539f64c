"""The I/O-free half of the hook (``_exchange``): requests, retry policy, error bodies, identities."""

from __future__ import annotations

import email.utils
import json
import random
import ssl

import pytest

from airflow_provider_prime.exceptions import PrimeConnectionError, PrimeResponseError
from airflow_provider_prime.hooks._endpoints import chunk_pod_ids, describe_pods, status_request
from airflow_provider_prime.hooks._errors import error_details, excerpt, transport_failure
from airflow_provider_prime.hooks._exchange import RetryPolicy, default_headers, parse_retry_after
from airflow_provider_prime.hooks._payloads import parse_identity
from airflow_provider_prime.hooks._settings import PrimeApiSettings
from tests.hooks.fakes import KEY, ids


def test_chunks_are_ordered_and_at_most_100() -> None:
    chunks = chunk_pod_ids(ids(250))
    assert [len(c) for c in chunks] == [100, 100, 50]
    assert [i for c in chunks for i in c] == ids(250)


def test_status_request_uses_repeated_keys_and_names_the_pods() -> None:
    settings = PrimeApiSettings(base_url="https://api.primeintellect.ai/api/v1/", api_key=KEY)
    request = status_request(settings, ["a", "b"])
    assert request.url == "https://api.primeintellect.ai/api/v1/pods/status"
    assert (request.method, request.params) == ("GET", (("pod_ids", "a"), ("pod_ids", "b")))
    assert request.action == "reading the status of pods a, b"
    assert KEY not in repr(request)


def test_headers_carry_bearer_key_accept_and_user_agent() -> None:
    headers = default_headers(PrimeApiSettings(base_url="", api_key=KEY), "python-test/1")
    assert headers["Authorization"] == f"Bearer {KEY}"
    assert headers["Accept"] == "application/json"
    assert headers["User-Agent"].startswith("airflow-provider-prime/")
    assert "python-test/1" in headers["User-Agent"]


def test_pod_lists_in_messages_are_truncated() -> None:
    assert describe_pods(["a"]) == "pod a"
    assert describe_pods(ids(8)) == "pods pod-0000, pod-0001, pod-0002, pod-0003, pod-0004 and 3 more"


def test_retry_after_seconds_and_http_dates() -> None:
    now = 1_700_000_000.0
    assert parse_retry_after("7", now) == 7.0
    assert parse_retry_after(" 1.5 ", now) == 1.5
    assert parse_retry_after("-3", now) == 0.0
    assert parse_retry_after(email.utils.formatdate(now + 12, usegmt=True), now) == pytest.approx(12.0)
    assert parse_retry_after(email.utils.formatdate(now - 60, usegmt=True), now) == 0.0
    for garbled in (None, "", "soon", "nan", "inf", "Mon, 99 Foo 2024"):
        assert parse_retry_after(garbled, now) is None


def test_backoff_is_full_jitter_under_an_exponential_capped_ceiling() -> None:
    policy = RetryPolicy(max_retries=10, backoff_base=1.0, backoff_max=8.0, retry_after_max=5.0)
    rng = random.Random(7)
    for retry, ceiling in [(1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (5, 8.0), (9, 8.0)]:
        samples = [policy.delay(retry, None, rng) for _ in range(200)]
        assert all(0.0 <= s <= ceiling for s in samples)
        assert max(samples) > ceiling * 0.8  # jitter spans the range, not a constant
        assert min(samples) < ceiling * 0.2


def test_retry_after_wins_over_backoff_but_is_capped() -> None:
    policy = RetryPolicy(max_retries=3, backoff_base=100.0, backoff_max=100.0, retry_after_max=5.0)
    rng = random.Random(1)
    assert policy.delay(1, "2", rng) == 2.0
    assert policy.delay(1, "3600", rng) == 5.0
    assert policy.delay(1, "garbage", rng) <= 100.0


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b'{"errors": [{"param": "pod_ids", "details": "too many"}]}', [("pod_ids", "too many")]),
        (b'{"detail": "Not authenticated"}', [(None, "Not authenticated")]),
        (
            b'{"detail": [{"loc": ["query", "pod_ids", 0], "msg": "bad id", "type": "x"}]}',
            [("query.pod_ids.0", "bad id")],
        ),
        (b'{"message": "slow down"}', [(None, "slow down")]),
        (b"<html>Bad Gateway</html>", []),
        (b"[1, 2]", []),
        (b"[" * 100_000, []),
    ],
)
def test_error_bodies_of_both_shapes_are_understood(
    body: bytes, expected: list[tuple[str | None, str]]
) -> None:
    assert error_details(body) == expected


def test_error_details_are_bounded() -> None:
    body = json.dumps({"errors": [{"param": f"p{n}", "details": "d"} for n in range(50)]}).encode()
    details = error_details(body)
    assert len(details) == 6
    assert details[-1] == (None, "and 45 more")


def test_excerpt_drops_markup_and_is_short() -> None:
    page = b"<html><head><title>502 Bad Gateway</title></head><body>" + b"x" * 5000 + b"</body></html>"
    text = excerpt(page)
    assert text.startswith("502 Bad Gateway")
    assert "<" not in text
    assert len(text) <= 200
    assert excerpt(b"") == "(empty body)"
    assert excerpt(b"\xff\xfe garbage").endswith("garbage")


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        ({"data": {"name": "Ada", "email": "ada@example.com"}}, "Ada <ada@example.com>"),
        ({"email": "ada@example.com"}, "ada@example.com"),
        ({"data": {"id": "u1"}}, "u1"),
        (
            {"data": {"name": "Ada", "scope": {"instances": {"read": True, "write": True}, "disks": None}}},
            "Ada (scopes: disks: none; instances: read, write)",
        ),
        (
            {"data": {"scope": {"availability": {"read": True, "write": False}}}},
            "this key (scopes: availability: read)",
        ),
        ({"data": None}, None),
        ([1], None),
        ("x", None),
    ],
)
def test_identity_is_read_from_whoami_when_present(payload: object, expected: str | None) -> None:
    assert parse_identity(payload) == expected


def test_a_plain_http_answer_to_tls_is_named_and_http_suggested_only_for_loopback() -> None:
    wrong_version = ssl.SSLError(1, "[SSL: WRONG_VERSION_NUMBER] wrong version number (_ssl.c:1020)")
    local = transport_failure(
        wrong_version, "https://localhost:8080/api/v1/pods/status", timeout=False, sent=True
    )
    assert (local.error, local.sent) == (PrimeResponseError, False)
    assert "set the connection host to http://localhost:8080" in local.hint
    remote = transport_failure(
        wrong_version, "https://api.example.com/api/v1/pods/status", timeout=False, sent=True
    )
    assert remote.hint == "The server may speak plain HTTP, not HTTPS."
    stalled = transport_failure(
        TimeoutError("_ssl.c:1003: The handshake operation timed out"),
        "https://127.0.0.1:9/x",
        timeout=True,
        sent=True,
    )
    assert stalled.error is PrimeConnectionError  # a slow server is possible: worth another try
    refused = transport_failure(
        ConnectionRefusedError(111, "refused"), "https://127.0.0.1:9/x", timeout=False, sent=False
    )
    assert (refused.error, refused.hint, refused.sent) == (PrimeConnectionError, "", False)
