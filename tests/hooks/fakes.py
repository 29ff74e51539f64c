"""Fakes of the Prime API for the hook's tests, one per purpose, each named for it.

* :class:`ScriptedApi`: answers each request from a script (a function from the request seen to
  a :class:`Reply` or a :class:`Failure`) and records it, so a test can stage any answer, including
  ones the simulator does not produce, and assert on the exact traffic. It is reached three ways:
* :class:`InMemoryAdapter` plugs it into the sync client (a requests adapter, no socket);
* :func:`in_memory_transport` plugs it into the async client (``httpx.MockTransport``, no socket);
* :class:`LoopbackServer` serves it over real HTTP on 127.0.0.1 (the clients' real I/O paths).
* :class:`ConcurrencyTransport` (async only) measures how many requests are in flight at once.

The faithful API is the package's simulator (``airflow_provider_prime.testing``); tests that
check the contract use it, and its stats count requests.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import ssl
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import parse_qsl, urlsplit

import httpx
import requests
import requests.adapters
from requests.structures import CaseInsensitiveDict

KEY = "pk-test-SECRET-5f3a9c0d7e"
"""The API key the fakes accept; distinctive so a leak anywhere is easy to find."""


@dataclass(frozen=True)
class Seen:
    """One request as the fake API received it (``body``: the decoded JSON, or None)."""

    method: str
    path: str
    query: list[tuple[str, str]]
    headers: Mapping[str, str]
    body: Any = None
    #: (connect, read) timeouts the client gave this attempt (in-memory fakes only)
    timeouts: tuple[float, float] | None = None

    @property
    def pod_ids(self) -> list[str]:
        return [value for key, value in self.query if key == "pod_ids"]


@dataclass(frozen=True)
class Reply:
    """An answer; ``stream=True`` sends the body without a Content-Length (chunked or close-delimited)."""

    status: int = 200
    body: Any = b""
    headers: Mapping[str, str] = field(default_factory=dict)
    stream: bool = False

    def raw_body(self) -> bytes:
        if isinstance(self.body, bytes):
            return self.body
        if isinstance(self.body, str):
            return self.body.encode()
        return json.dumps(self.body).encode()


@dataclass(frozen=True)
class Failure:
    """No answer: a read timeout, a refused connection, or a connection dropped mid-request.

    ``text`` is the message of the library exception raised in memory (a test can put the key in it).
    """

    kind: str
    text: str = "(fake)"

    TIMEOUT: ClassVar[Failure]
    CONNECT: ClassVar[Failure]
    DROP: ClassVar[Failure]


Failure.TIMEOUT = Failure("timeout")
Failure.CONNECT = Failure("connect")
Failure.DROP = Failure("drop")


Script = Callable[[Seen], "Reply | Failure"]


def pod(pod_id: str, status: str = "ACTIVE", **fields: Any) -> dict[str, Any]:
    """A pod as the API reports it (camelCase), ready by default."""
    record: dict[str, Any] = {
        "podId": pod_id,
        "providerType": "runpod",
        "status": status,
        "sshConnection": f"root@10.0.0.1 -p {22}",
        "ip": "10.0.0.1",
        "installationStatus": "FINISHED",
        "installationProgress": 100,
    }
    record.update(fields)
    return record


def serve_pods(known: Mapping[str, dict[str, Any]] | None = None) -> Script:
    """Answer status requests like the API: the requested ids that exist, unknown ids left out.

    Without ``known`` every requested id exists and is ready.
    """

    def script(seen: Seen) -> Reply:
        ids = seen.pod_ids
        data = [known[i] for i in ids if i in known] if known is not None else [pod(i) for i in ids]
        return Reply(200, {"data": data, "status": "ok"})

    return script


def sequence(*replies: Reply | Failure, then: Script | None = None) -> Script:
    """Give ``replies`` in order, then defer to ``then`` (default: every pod ready)."""
    queue = list(replies)
    fallback = then or serve_pods()
    lock = threading.Lock()

    def script(seen: Seen) -> Reply | Failure:
        with lock:
            if queue:
                return queue.pop(0)
        return fallback(seen)

    return script


def always(reply: Reply | Failure) -> Script:
    return lambda seen: reply


class ScriptedApi:
    """A script plus the record of every request it answered; a wrong bearer key gets a 401."""

    def __init__(self, script: Script | None = None, key: str = KEY) -> None:
        self.script: Script = script or serve_pods()
        self.key = key
        self.seen: list[Seen] = []
        self._lock = threading.Lock()

    def answer(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str],
        body: bytes = b"",
        timeouts: tuple[float, float] | None = None,
    ) -> Reply | Failure:
        parts = urlsplit(url)
        seen = Seen(
            method=method,
            path=parts.path,
            query=parse_qsl(parts.query, keep_blank_values=True),
            headers={k.lower(): v for k, v in headers.items()},
            body=json.loads(body) if body else None,
            timeouts=timeouts,
        )
        with self._lock:
            self.seen.append(seen)
        if self.key and seen.headers.get("authorization") != f"Bearer {self.key}":
            return Reply(401, {"detail": "Invalid or missing API key"})
        return self.script(seen)

    @property
    def status_requests(self) -> list[Seen]:
        return [s for s in self.seen if s.path.rstrip("/") == "/api/v1/pods/status"]


class InMemoryAdapter(requests.adapters.BaseAdapter):
    """A requests transport adapter answering from a :class:`ScriptedApi`, without sockets."""

    def __init__(self, api: ScriptedApi) -> None:
        super().__init__()
        self.api = api

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        raw = request.body.encode() if isinstance(request.body, str) else request.body or b""
        timeouts = kwargs.get("timeout")
        outcome = self.api.answer(
            request.method or "GET", request.url or "", dict(request.headers), raw, timeouts
        )
        if isinstance(outcome, Failure):
            raise _requests_failure(outcome, request)
        response = requests.Response()
        response.status_code = outcome.status
        response.headers = CaseInsensitiveDict(outcome.headers)
        response.raw = io.BytesIO(outcome.raw_body())
        response.url = request.url or ""
        response.request = request
        return response

    def close(self) -> None:
        pass


def _requests_failure(failure: Failure, request: requests.PreparedRequest) -> Exception:
    """What requests raises for ``failure`` (a refused connection nests urllib3's error, as for real)."""
    from urllib3.exceptions import MaxRetryError, NewConnectionError

    if failure.kind == "timeout":
        return requests.exceptions.ReadTimeout(f"read timed out {failure.text}", request=request)
    if failure.kind == "connect":
        refused = NewConnectionError(None, f"Connection refused {failure.text}")  # type: ignore[arg-type]
        pool: Any = None  # MaxRetryError only keeps the pool for its message
        return requests.exceptions.ConnectionError(MaxRetryError(pool, request.url, refused), request=request)
    return requests.exceptions.ChunkedEncodingError(f"connection dropped {failure.text}", request=request)


def _httpx_failure(failure: Failure, request: httpx.Request) -> Exception:
    if failure.kind == "timeout":
        return httpx.ReadTimeout(f"read timed out {failure.text}", request=request)
    if failure.kind == "connect":
        return httpx.ConnectError(f"Connection refused {failure.text}", request=request)
    return httpx.RemoteProtocolError(f"connection dropped {failure.text}", request=request)


def in_memory_transport(api: ScriptedApi) -> httpx.MockTransport:
    """An httpx transport answering from a :class:`ScriptedApi`, without sockets."""

    def handler(request: httpx.Request) -> httpx.Response:
        timeout = request.extensions.get("timeout", {})
        timeouts = (timeout["connect"], timeout["read"]) if timeout else None
        outcome = api.answer(
            request.method, str(request.url), dict(request.headers), request.read(), timeouts
        )
        if isinstance(outcome, Failure):
            raise _httpx_failure(outcome, request)
        if outcome.stream:
            chunks = _Chunks(outcome.raw_body())
            return httpx.Response(outcome.status, headers=dict(outcome.headers), stream=chunks)
        return httpx.Response(outcome.status, headers=dict(outcome.headers), content=outcome.raw_body())

    return httpx.MockTransport(handler)


class _Chunks(httpx.AsyncByteStream):
    def __init__(self, body: bytes, size: int = 256 * 1024) -> None:
        self.body, self.size = body, size

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for start in range(0, len(self.body), self.size):
            yield self.body[start : start + self.size]


class ConcurrencyTransport(httpx.AsyncBaseTransport):
    """Answers every status request after a short await, counting how many are in flight at once."""

    def __init__(self, fail_pod: str | None = None) -> None:
        self.in_flight = 0
        self.peak = 0
        self.started = 0
        self.fail_pod = fail_pod
        self.first_started = asyncio.Event()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.started += 1
        self.first_started.set()
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        try:
            requested = request.url.params.get_list("pod_ids")
            if self.fail_pod in requested:
                return httpx.Response(401, json={"detail": "nope"})
            await asyncio.sleep(0.02)
            return httpx.Response(200, json={"data": [pod(i) for i in requested]})
        finally:
            self.in_flight -= 1


class LoopbackServer:
    """:class:`ScriptedApi` over real HTTP on 127.0.0.1 (a free port), for the clients' real I/O paths.

    ``Failure.TIMEOUT`` sleeps ``stall`` seconds before answering; ``Failure.DROP`` closes the
    socket without a response.
    """

    def __init__(self, api: ScriptedApi, stall: float = 1.0, tls: ssl.SSLContext | None = None) -> None:
        self.api = api
        self.stall = stall
        self.scheme = "https" if tls else "http"
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        if tls is not None:
            self._server.socket = tls.wrap_socket(self._server.socket, server_side=True)
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.02,), daemon=True)

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"{self.scheme}://{host}:{port}"

    def __enter__(self) -> LoopbackServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length) if length else b""
                outcome = owner.api.answer(self.command, self.path, dict(self.headers.items()), body)
                if isinstance(outcome, Failure) and outcome.kind == "timeout":
                    time.sleep(owner.stall)
                    outcome = Reply(200, {"data": [], "status": "late"})
                if isinstance(outcome, Failure):
                    self.close_connection = True
                    self.connection.close()
                    return
                assert isinstance(outcome, Reply)
                body = outcome.raw_body()
                self.send_response(outcome.status)
                headers = {k.lower(): v for k, v in outcome.headers.items()}
                headers.setdefault("content-type", "application/json")
                if outcome.stream:
                    headers["connection"] = "close"  # the body ends when the connection does
                    self.close_connection = True
                else:
                    headers.setdefault("content-length", str(len(body)))
                for name, value in headers.items():
                    self.send_header(name, value)
                self.end_headers()
                with contextlib.suppress(OSError):  # the client gave up (timeout or size limit)
                    self.wfile.write(body)

            do_POST = do_DELETE = do_GET

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler


def ids(count: int, prefix: str = "pod") -> list[str]:
    return [f"{prefix}-{n:04d}" for n in range(count)]


def flatten(seen: Iterable[Seen]) -> list[str]:
    return [pod_id for s in seen for pod_id in s.pod_ids]


def self_signed_tls(directory: Path) -> tuple[ssl.SSLContext, Path]:
    """A server TLS context for 127.0.0.1 with a fresh self-signed certificate, and that cert's path."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path = directory / "cert.pem"
    key_path = directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_path, key_path)
    return context, cert_path


class PodsBackend:
    """The pods endpoints held in memory, as a :class:`ScriptedApi` script, for the hook's lifecycle tests.

    ``faults`` maps ``"METHOD path"`` (``"POST /api/v1/pods/"``) to what the next such request
    gets instead; a fault ``Reply(...)``/``Failure`` given as ``after_create`` makes the pod first
    (the create happened, the answer was lost). The simulator is the faithful API; this one lets a
    test stage exactly one odd answer.
    """

    def __init__(self, pods: Iterable[dict[str, Any]] = ()) -> None:
        self.pods: dict[str, dict[str, Any]] = {p["id"]: p for p in pods}
        self.faults: dict[str, list[Reply | Failure]] = {}
        self.lost_answers: list[Reply | Failure] = []
        self.created = 0

    def __call__(self, seen: Seen) -> Reply | Failure:
        key = f"{seen.method} {seen.path}"
        if self.faults.get(key):
            return self.faults[key].pop(0)
        if key == "POST /api/v1/pods/":
            self.created += 1
            made = pod_record(f"pod-{self.created:03d}", seen.body["pod"]["name"], "PROVISIONING")
            self.pods[made["id"]] = made
            return self.lost_answers.pop(0) if self.lost_answers else Reply(200, made)
        if key == "GET /api/v1/pods/":
            query = dict(seen.query)
            offset, limit = int(query["offset"]), int(query["limit"])
            listed = list(self.pods.values())
            return Reply(
                200,
                {
                    "total_count": len(listed),
                    "offset": offset,
                    "limit": limit,
                    "data": listed[offset : offset + limit],
                },
            )
        pod_id = seen.path.removeprefix("/api/v1/pods/")
        if pod_id not in self.pods:
            return Reply(404, {"detail": "Pod not found"})
        if seen.method == "DELETE":
            self.pods.pop(pod_id)
            return Reply(200, {"status": "TERMINATED"})
        return Reply(200, self.pods[pod_id])


def pod_record(pod_id: str, name: str, status: str = "ACTIVE") -> dict[str, Any]:
    """A pod as ``GET /pods/{id}`` answers (the keys LIFECYCLE.md calls required)."""
    return {
        "id": pod_id,
        "name": name,
        "gpuName": "H100_80GB",
        "gpuCount": 1,
        "status": status,
        "createdAt": "2026-01-01T00:00:00Z",
        "providerType": "runpod",
        "resources": {},
        "ip": None,
        "socket": "SXM5",
        "type": "HOSTED",
    }
