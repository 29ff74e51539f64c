"""Throughput of the Prime API simulator: how many status polls per second it answers.

The simulator runs as its own process (``prime-api-simulator``, as benchmarks and end-to-end runs
use it), or with ``--in-process`` in a thread of this one (as ``PrimeSimulator`` in tests); the load
comes from other processes, each with a few keep-alive connections sending one
request at a time (no pipelining) as fast as answers come back. Everything stays on 127.0.0.1 and
is bounded in connections and seconds.

    python -m bench.simulator                       # defaults: 2 clients x 16 connections, 5 s a case
    python -m bench.simulator --seconds 3 --clients 1 --connections 8

Prints, per case (pod ids per request), requests per second, latency percentiles, and the server's
CPU seconds per 1000 requests (from /proc), then checks the server counted the same requests.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import platform
import statistics
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

from airflow_provider_prime.testing import PrimeSimulator, PrimeSimulatorProcess
from airflow_provider_prime.testing.simulator import new_event_loop

POD_COUNT = 1000


@dataclass
class ClientResult:
    requests: int
    errors: int
    latencies: list[float]


class _PollingConnection(asyncio.Protocol):
    """Sends the request, waits for one whole response, sends again, until the deadline."""

    def __init__(self, request: bytes, deadline: float, done: asyncio.Future[ClientResult]) -> None:
        self._request, self._deadline, self._done = request, deadline, done
        self._buffer = bytearray()
        self._transport: asyncio.Transport | None = None
        self._sent_at = 0.0
        self.result = ClientResult(0, 0, [])

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]
        self._send()

    def _send(self) -> None:
        assert self._transport is not None
        self._sent_at = time.perf_counter()
        self._transport.write(self._request)

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        end = self._buffer.find(b"\r\n\r\n")
        if end < 0:
            return
        head = bytes(self._buffer[:end]).lower()
        length = next(
            int(line.split(b":", 1)[1]) for line in head.split(b"\r\n") if line.startswith(b"content-length:")
        )
        if len(self._buffer) < end + 4 + length:
            return
        now = time.perf_counter()
        if not head.startswith(b"http/1.1 200"):
            self.result.errors += 1
        self.result.requests += 1
        self.result.latencies.append(now - self._sent_at)
        del self._buffer[: end + 4 + length]
        if now < self._deadline:
            self._send()
        else:
            assert self._transport is not None
            self._transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self._done.done():
            self._done.set_result(self.result)


async def _client(host: str, port: int, request: bytes, connections: int, seconds: float) -> ClientResult:
    loop = asyncio.get_running_loop()
    deadline = time.perf_counter() + seconds
    futures: list[asyncio.Future[ClientResult]] = []
    for _ in range(connections):
        done: asyncio.Future[ClientResult] = loop.create_future()
        await loop.create_connection(lambda d=done: _PollingConnection(request, deadline, d), host, port)
        futures.append(done)
    results = await asyncio.wait_for(asyncio.gather(*futures), seconds + 30)
    latencies = [value for result in results for value in result.latencies]
    return ClientResult(sum(r.requests for r in results), sum(r.errors for r in results), latencies)


def _client_process(args: tuple[str, int, bytes, int, float]) -> ClientResult:
    loop = new_event_loop()
    try:
        return loop.run_until_complete(_client(*args))
    finally:
        loop.close()


def _cpu_seconds(pid: int) -> float:
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()  # noqa: SIM115
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _request(host: str, port: int, ids_per_request: int, api_key: str) -> bytes:
    query = "&".join(f"pod_ids=pod-{i:05d}" for i in range(ids_per_request))
    return (
        f"GET /api/v1/pods/status?{query} HTTP/1.1\r\nHost: {host}:{port}\r\n"
        f"Authorization: Bearer {api_key}\r\nAccept: application/json\r\n\r\n"
    ).encode()


def run(
    seconds: float, clients: int, connections: int, cases: list[int], server_uvloop: bool, in_process: bool
) -> None:
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, {platform.python_implementation()} "
        f"{platform.python_version()}, load average {os.getloadavg()[0]:.2f} at start"
    )
    print(
        f"load: {clients} client process(es) x {connections} keep-alive connections, {seconds:g} s per case"
    )
    scenario = f"bulk:{POD_COUNT}:0"
    server: PrimeSimulator | PrimeSimulatorProcess
    if in_process:
        server = PrimeSimulator(scenario, prefer_uvloop=server_uvloop)
    else:
        server = PrimeSimulatorProcess(scenario, prefer_uvloop=server_uvloop)
    with server as sim:
        url = urlsplit(sim.base_url)
        host, port = url.hostname or "127.0.0.1", url.port or 80
        pid = os.getpid() if isinstance(sim, PrimeSimulator) else sim.pid
        assert pid is not None
        where = "a thread of this process" if in_process else "its own process"
        loop = "uvloop" if server_uvloop else "asyncio"
        print(f"server: {sim.base_url} in {where} (pid {pid}, {loop} event loop), {POD_COUNT} ready pods")
        print(
            f"{'ids/request':>11} {'requests/s':>11} {'p50 ms':>7} {'p99 ms':>7} {'errors':>6} "
            f"{'server CPU s/1000 req':>21}"
        )
        for ids in cases:
            sim.reset()
            request = _request(host, port, ids, sim.api_key)
            cpu_before = _cpu_seconds(pid)
            started = time.perf_counter()
            with multiprocessing.get_context("spawn").Pool(clients) as pool:
                results = pool.map(_client_process, [(host, port, request, connections, seconds)] * clients)
            elapsed = time.perf_counter() - started
            cpu = _cpu_seconds(pid) - cpu_before
            total = sum(r.requests for r in results)
            errors = sum(r.errors for r in results)
            latencies = sorted(v for r in results for v in r.latencies)
            p50 = statistics.median(latencies) * 1000
            p99 = latencies[int(len(latencies) * 0.99) - 1] * 1000
            rate = total / seconds
            print(f"{ids:>11} {rate:>11,.0f} {p50:>7.2f} {p99:>7.2f} {errors:>6} {cpu / total * 1000:>21.3f}")
            counted = sim.stats_snapshot()["total"]
            if counted != total:
                print(
                    f"  note: the server counted {counted} requests, the clients {total} "
                    f"({elapsed:.1f} s wall incl. process start)"
                )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=5.0, help="load duration per case (max 60)")
    parser.add_argument("--clients", type=int, default=2, help="client processes (max 8)")
    parser.add_argument("--connections", type=int, default=16, help="connections per client (max 256)")
    parser.add_argument("--ids", type=int, nargs="+", default=[1, 10, 100], help="pod ids per request")
    parser.add_argument("--no-uvloop", action="store_true", help="serve with asyncio's own event loop")
    parser.add_argument("--in-process", action="store_true", help="serve from a thread of this process")
    args = parser.parse_args()
    run(
        min(args.seconds, 60.0),
        max(1, min(args.clients, 8)),
        max(1, min(args.connections, 256)),
        [max(1, min(ids, 100)) for ids in args.ids],
        not args.no_uvloop,
        args.in_process,
    )


if __name__ == "__main__":
    main()
