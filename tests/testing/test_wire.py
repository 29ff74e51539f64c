"""The HTTP/1.1 layer with raw sockets: keep-alive, pipelining, closing, and malformed requests."""

from __future__ import annotations

import json
import socket

import pytest

from airflow_provider_prime.testing import WHOAMI_PATH, Fault, PrimeSimulator, fixed_pod


def exchange(sim: PrimeSimulator, payload: bytes, timeout: float = 5.0) -> bytes:
    """Send raw bytes, read until the server closes the connection."""
    with socket.create_connection((sim.host, sim.port), timeout=timeout) as conn:
        conn.sendall(payload)
        chunks = []
        while chunk := conn.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def responses(raw: bytes) -> list[tuple[int, dict[str, str], bytes]]:
    """Split a byte stream into (status, headers, body) using Content-Length."""
    out = []
    while raw:
        head, _, rest = raw.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        length = int(headers.get("content-length", "0"))
        out.append((int(lines[0].split()[1]), headers, rest[:length]))
        raw = rest[length:]
    return out


def request(path: str, key: str | None = None, extra: str = "", version: str = "HTTP/1.1") -> bytes:
    auth = f"Authorization: Bearer {key}\r\n" if key else ""
    return f"GET {path} {version}\r\nHost: sim\r\n{auth}{extra}\r\n".encode()


def test_pipelined_requests_are_answered_in_order(sim: PrimeSimulator) -> None:
    sim.add_pod(fixed_pod("a"), fixed_pod("b"))
    sim.inject(Fault.slow(0.2))  # the first answer is late; the others must still come after it
    payload = (
        request("/api/v1/pods/status?pod_ids=a", sim.api_key)
        + request("/api/v1/pods/status?pod_ids=b", sim.api_key)
        + request(WHOAMI_PATH, extra="Connection: close\r\n")
    )
    answers = responses(exchange(sim, payload))
    assert [status for status, _, _ in answers] == [200, 200, 401]
    assert [json.loads(body)["data"][0]["podId"] for _, _, body in answers[:2]] == ["a", "b"]
    assert answers[2][1]["connection"] == "close"


def test_http_1_0_closes_after_one_answer_unless_kept_alive(sim: PrimeSimulator) -> None:
    (answer,) = responses(exchange(sim, request(WHOAMI_PATH, sim.api_key, version="HTTP/1.0")))
    assert answer[0] == 200
    assert answer[1]["connection"] == "close"
    with socket.create_connection((sim.host, sim.port), timeout=5) as conn:
        conn.sendall(request(WHOAMI_PATH, sim.api_key, "Connection: keep-alive\r\n", "HTTP/1.0"))
        first = conn.recv(65536)
        conn.sendall(request(WHOAMI_PATH, sim.api_key, "Connection: close\r\n", "HTTP/1.0"))
        second = conn.recv(65536)
    assert first.startswith(b"HTTP/1.1 200")
    assert second.startswith(b"HTTP/1.1 200")


def test_a_request_split_across_packets_is_reassembled(sim: PrimeSimulator) -> None:
    payload = request(WHOAMI_PATH, sim.api_key, "Connection: close\r\n")
    with socket.create_connection((sim.host, sim.port), timeout=5) as conn:
        for i in range(0, len(payload), 7):
            conn.sendall(payload[i : i + 7])
        data = b""
        while chunk := conn.recv(65536):
            data += chunk
    assert responses(data)[0][0] == 200


def test_control_bodies_are_read_by_content_length(sim: PrimeSimulator) -> None:
    body = json.dumps({"kind": "drop"}).encode()
    head = (
        f"POST /_sim/faults HTTP/1.1\r\nHost: sim\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    (answer,) = responses(exchange(sim, head.encode() + body))
    assert answer[0] == 200
    assert sim.faults[0]["kind"] == "drop"


@pytest.mark.parametrize(
    ("payload", "status"),
    [
        (b"NONSENSE\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nno-colon-here\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nContent-Length: -5\r\n\r\n", 400),
        (b"POST /_sim/faults HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", 501),
        (b"POST /_sim/faults HTTP/1.1\r\nContent-Length: 999999999\r\n\r\n", 413),
        (b"GET / HTTP/1.1\r\nX-Big: " + b"x" * 70_000 + b"\r\n\r\n", 431),
    ],
)
def test_malformed_requests_get_an_error_and_a_closed_connection(
    sim: PrimeSimulator, payload: bytes, status: int
) -> None:
    (answer,) = responses(exchange(sim, payload))
    assert answer[0] == status
    assert answer[1]["connection"] == "close"
    assert "detail" in json.loads(answer[2])


def test_an_endless_head_is_cut_off(sim: PrimeSimulator) -> None:
    with socket.create_connection((sim.host, sim.port), timeout=5) as conn:
        conn.sendall(b"GET / HTTP/1.1\r\nX-Big: " + b"x" * 70_000)  # no end of head in sight
        data = b""
        while chunk := conn.recv(65536):
            data += chunk
    assert data.startswith(b"HTTP/1.1 431")


def test_nothing_after_a_closing_request_is_served(sim: PrimeSimulator) -> None:
    payload = request(WHOAMI_PATH, sim.api_key, "Connection: close\r\n") + request(WHOAMI_PATH, sim.api_key)
    answers = responses(exchange(sim, payload))
    assert [status for status, _, _ in answers] == [200]
    assert sim.stats.total == 1


def test_a_dropped_request_ends_its_pipeline(sim: PrimeSimulator) -> None:
    sim.inject(Fault.drop())
    assert exchange(sim, request(WHOAMI_PATH, sim.api_key) + request(WHOAMI_PATH, sim.api_key)) == b""
    assert sim.stats.total == 1
