"""The pod's log: ``PrimeHook.get_pod_log`` / ``aget_pod_log`` read every plausible answer shape.

The endpoint's shape is not documented (FACTS.md "Pod log"), so the parser is checked on each
shape in memory, then the hook over real HTTP against the simulator: its own answer (told by the
pod's timeline), text and JSON shapes staged with faults, 404s, per-key visibility, and the key
scrubbed from whatever the log says.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import pytest

from airflow_provider_prime.exceptions import PrimeConfigError, PrimeNotFoundError
from airflow_provider_prime.hooks._payloads import (
    MAX_LOG_LINE_CHARS,
    PayloadError,
    parse_pod_log,
    tidy_log_lines,
)
from airflow_provider_prime.hooks.prime import PrimeHook
from airflow_provider_prime.testing import (
    DEFAULT_INSTALLATION_FAILURE,
    Fault,
    ManualClock,
    PrimeSimulator,
    install_failure_pod,
    ready_pod,
)
from airflow_provider_prime.testing.pod_logs import INSTALL_STEPS, log_body, pod_log
from tests.simulated import FAST_RETRY

KEY = "pk-log-secret-0123456789"


@pytest.mark.parametrize(
    ("payload", "lines"),
    [
        ("boot\ninstall\nfailed", ["boot", "install", "failed"]),  # plain text (the exchange's str)
        ("one line", ["one line"]),  # a JSON string decodes to the same str
        (["a", "b\nc"], ["a", "b", "c"]),
        (
            [{"timestamp": 1, "message": "a"}, {"line": "b"}, {"log": "c"}, {"text": "d"}],
            ["a", "b", "c", "d"],
        ),
        ({"data": "x\ny", "status": "ok"}, ["x", "y"]),
        ({"data": ["x", "y"]}, ["x", "y"]),
        ({"logs": "x\ny"}, ["x", "y"]),
        ({"logs": [{"message": "x"}]}, ["x"]),
        ({"data": {"logs": ["x", "y"]}}, ["x", "y"]),
        ({"lines": ["x"]}, ["x"]),
        ({"data": None, "status": "ok"}, []),
        ({"status": "ok"}, []),
        (None, []),
        ("", []),
        ([1, {"level": "info"}], ["1", '{"level": "info"}']),  # entries without text kept as JSON
    ],
)
def test_every_plausible_shape_is_read(payload: Any, lines: list[str]) -> None:
    assert parse_pod_log(payload) == lines


@pytest.mark.parametrize("payload", [42, 1.5, True, {"items": [1, 2]}, {"data": 42}])
def test_other_shapes_say_what_was_expected(payload: Any) -> None:
    with pytest.raises(PayloadError, match="not text, a list of lines or an object with one of data, logs"):
        parse_pod_log(payload)


def test_tidy_keeps_the_tail_scrubs_the_key_and_cuts_long_lines() -> None:
    raw = [
        "old line",
        f"export PRIME_API_KEY={KEY}",
        f'{{"key": {json.dumps(KEY)}}}',
        "\x1b[31mred\x1b[0m text",
        "10%\r50%\r100% done\r",
        "x" * 5000,
        "",
        "",
    ]
    tidy = tidy_log_lines(raw, 7, KEY)
    assert tidy == [
        "export PRIME_API_KEY=***",
        '{"key": "***"}',
        "red text",
        "100% done",
        "x" * (MAX_LOG_LINE_CHARS - 1) + "…",
    ]
    assert tidy_log_lines(raw, 0, KEY) == []


def test_the_simulator_tells_the_log_from_the_pod_timeline() -> None:
    script = install_failure_pod("bad", fail_at=60)
    assert pod_log(script, 0.0)[0].startswith("[+    0.0s] Allocating 1x H100_80GB")
    before = pod_log(script, 59.0)
    after = pod_log(script, 61.0)
    assert not any("ERROR" in line for line in before)
    assert after[-1].endswith(f"ERROR: {DEFAULT_INSTALLATION_FAILURE}")
    assert any(line.endswith(INSTALL_STEPS[0]) for line in after)
    assert pod_log(script, 61.0, tail=2) == after[-2:]
    assert log_body(["a", "b"]) == {"data": "a\nb", "status": "ok"}


# -- over HTTP, against the simulator -------------------------------------------------------------


@pytest.fixture
def prime_connection_extra() -> dict[str, Any]:
    return dict(FAST_RETRY)


@pytest.fixture(params=["sync", "async"])
def read(request: pytest.FixtureRequest) -> Callable[..., list[str]]:
    """``PrimeHook().get_pod_log`` or its async twin, behind one signature."""

    def run(pod_id: str, tail: int = 50) -> list[str]:
        hook = PrimeHook()
        if request.param == "sync":
            return hook.get_pod_log(pod_id, tail)
        return asyncio.run(hook.aget_pod_log(pod_id, tail))

    return run


@pytest.fixture
def failed(
    prime_simulator_factory: Callable[..., PrimeSimulator], prime_connect: Callable[..., str]
) -> PrimeSimulator:
    """A simulator whose pod ``bad`` failed its installation, and ``good`` is ready; the key is KEY."""
    clock = ManualClock()
    sim = prime_simulator_factory(
        install_failure_pod("bad", fail_at=60), ready_pod("good", ready_at=5), clock=clock, api_keys=(KEY,)
    )
    clock.advance(120)
    prime_connect(sim)
    return sim


def test_the_hook_reads_the_simulators_log_with_its_tail(
    failed: PrimeSimulator, read: Callable[..., list[str]]
) -> None:
    lines = read("bad", 50)
    assert lines[-1].endswith(f"ERROR: {DEFAULT_INSTALLATION_FAILURE}")
    assert any(line.endswith(INSTALL_STEPS[-1]) for line in lines)
    assert read("bad", 3) == lines[-3:]
    assert failed.stats.by_path["/api/v1/pods/bad/log"] == 2


def test_tail_zero_asks_nothing(failed: PrimeSimulator, read: Callable[..., list[str]]) -> None:
    assert read("bad", 0) == []
    assert failed.stats.by_path["/api/v1/pods/bad/log"] == 0


@pytest.mark.parametrize("tail", [-1, 1.5, True, "50"])
def test_a_bad_tail_is_refused_before_any_request(tail: Any) -> None:
    with pytest.raises(PrimeConfigError, match="tail must be a whole number"):
        PrimeHook().get_pod_log("bad", tail)


def test_an_unknown_pod_is_not_found(failed: PrimeSimulator, read: Callable[..., list[str]]) -> None:
    with pytest.raises(PrimeNotFoundError, match="'nope' does not exist or is not visible"):
        read("nope")


def test_a_pod_of_another_key_is_not_found(
    prime_simulator_factory: Callable[..., PrimeSimulator],
    prime_connect: Callable[..., str],
    read: Callable[..., list[str]],
) -> None:
    clock = ManualClock()
    sim = prime_simulator_factory(
        install_failure_pod("theirs", fail_at=10, api_keys=("pk-other",)),
        api_keys=(KEY, "pk-other"),
        clock=clock,
    )
    clock.advance(20)
    prime_connect(sim, api_key=KEY)
    with pytest.raises(PrimeNotFoundError):
        read("theirs")
    prime_connect(sim, api_key="pk-other")
    assert read("theirs")[-1].endswith(DEFAULT_INSTALLATION_FAILURE)


@pytest.mark.parametrize(
    "fault",
    [
        Fault.raw(f"booting\nkey is {KEY}\ninstall failed\n", content_type="text/plain"),
        Fault.json_reply(f"booting\nkey is {KEY}\ninstall failed"),
        Fault.json_reply(["booting", f"key is {KEY}", "install failed"]),
        Fault.json_reply(
            {"logs": [{"message": "booting"}, {"message": f"key is {KEY}"}, {"message": "install failed"}]}
        ),
        Fault.json_reply({"data": ["booting", f"key is {KEY}", "install failed"], "status": "ok"}),
    ],
    ids=["text", "json-string", "json-lines", "logs-objects", "data-lines"],
)
def test_every_shape_over_http_with_the_key_scrubbed(
    failed: PrimeSimulator, read: Callable[..., list[str]], fault: Fault
) -> None:
    failed.inject(fault.model_copy(update={"path": "/api/v1/pods/bad/log"}))
    lines = read("bad")
    assert lines == ["booting", "key is ***", "install failed"]
    assert KEY not in json.dumps(lines)


def test_an_empty_answer_is_an_empty_log(failed: PrimeSimulator, read: Callable[..., list[str]]) -> None:
    failed.inject(Fault.raw("", path="/api/v1/pods/bad/log"))
    assert read("bad") == []
