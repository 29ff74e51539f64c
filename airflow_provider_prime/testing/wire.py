"""A small HTTP/1.1 server on asyncio, written for speed: the simulator must serve thousands of polls.

Only what clients of a JSON API need: keep-alive, pipelined requests answered in order,
``Content-Length`` bodies (no chunked uploads), bounded heads and bodies. A handler turns a
:class:`Request` into a :class:`Reply`; a reply may also ask for a delay, a dropped connection, or
no answer at all (``hang``), which is how faults are staged on the wire.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from email.utils import formatdate
from http import HTTPStatus
from typing import Literal, cast
from urllib.parse import unquote, unquote_plus

#: Largest request head (request line + headers) accepted; beyond it the answer is 431.
MAX_HEAD_BYTES = 64 * 1024
#: Largest request body accepted (only control endpoints take bodies); beyond it the answer is 413.
MAX_BODY_BYTES = 8 * 1024 * 1024

Action = Literal["send", "drop", "hang"]


@dataclass(frozen=True, slots=True)
class Request:
    """One parsed HTTP request; header names are lower-case."""

    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes = b""

    def params(self) -> dict[str, list[str]]:
        """Query parameters, repeated keys kept in order, blank values kept (``?pod_ids=``).

        ``urllib.parse.parse_qs`` semantics, but only values that need it are unquoted: a poll
        carries up to 100 plain ids, and unquoting each was the largest cost of a request.
        """
        params: dict[str, list[str]] = {}
        for pair in self.query.split("&"):
            if not pair:
                continue
            name, _, value = pair.partition("=")
            if "%" in name or "+" in name:
                name = unquote_plus(name)
            if "%" in value or "+" in value:
                value = unquote_plus(value)
            params.setdefault(name, []).append(value)
        return params


@dataclass(frozen=True, slots=True)
class Reply:
    """What to do with a request: send a response (optionally late), drop the connection, or hang."""

    status: int = 200
    body: bytes = b""
    content_type: str | None = "application/json"
    headers: tuple[tuple[str, str], ...] = ()
    delay: float = 0.0
    action: Action = "send"
    #: A short label recorded in the stats (e.g. the fault that produced the reply).
    note: str | None = field(default=None, compare=False)


Handler = Callable[[Request], Reply]

_PHRASES = {status.value: status.phrase for status in HTTPStatus}
_date_cache: tuple[int, str] = (0, "")


def _http_date() -> str:
    """The ``Date`` header value, formatted at most once a second."""
    global _date_cache
    now = int(time.time())
    if _date_cache[0] != now:
        _date_cache = (now, formatdate(now, usegmt=True))
    return _date_cache[1]


def _encode(reply: Reply, close: bool) -> bytes:
    phrase = _PHRASES.get(reply.status, "Unknown")
    lines = [f"HTTP/1.1 {reply.status} {phrase}", f"date: {_http_date()}", "server: prime-api-simulator"]
    if reply.content_type is not None:
        lines.append(f"content-type: {reply.content_type}")
    lines.append(f"content-length: {len(reply.body)}")
    lines.extend(f"{name}: {value}" for name, value in reply.headers)
    if close:
        lines.append("connection: close")
    lines.append("\r\n")
    return "\r\n".join(lines).encode("latin-1")


class HttpProtocol(asyncio.Protocol):
    """One client connection: parses requests off the byte stream and writes the handler's replies."""

    def __init__(self, handler: Handler, connections: set[HttpProtocol]) -> None:
        self._handler = handler
        self._connections = connections
        self._buffer = bytearray()
        self._transport: asyncio.Transport | None = None
        self._busy = False  # a reply is pending (delayed or hanging): later requests wait in the buffer
        self._paused = False
        self._closed = False  # closing after a reply: buffered requests are never served
        self._timer: asyncio.TimerHandle | None = None

    # asyncio callbacks -------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but have its interface.
        self._transport = cast("asyncio.Transport", transport)
        self._connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._connections.discard(self)
        self._transport = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def data_received(self, data: bytes) -> None:
        if self._closed:
            return
        self._buffer += data
        if not self._busy:
            self._serve_buffered()
        elif len(self._buffer) > MAX_HEAD_BYTES + MAX_BODY_BYTES and self._transport is not None:
            # Reading goes on while a reply is pending, so that a client hanging up is noticed;
            # a client that floods meanwhile is throttled instead.
            self._transport.pause_reading()
            self._paused = True

    def abort(self) -> None:
        """Close at once (used when the server stops)."""
        if self._transport is not None:
            self._transport.abort()

    # request loop ------------------------------------------------------------------------------

    def _serve_buffered(self) -> None:
        while self._transport is not None and not self._busy and not self._closed:
            parsed = self._next_request()
            if parsed is None:
                return
            request, keep_alive = parsed
            reply = self._handler(request)
            if reply.delay > 0 or reply.action == "hang":
                self._defer(reply, keep_alive)
                return
            self._finish(reply, keep_alive)

    def _defer(self, reply: Reply, keep_alive: bool) -> None:
        self._busy = True
        if reply.action == "hang":
            return  # until the client gives up or the server stops
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(reply.delay, self._resume, reply, keep_alive)

    def _resume(self, reply: Reply, keep_alive: bool) -> None:
        self._timer = None
        self._busy = False
        if self._transport is None:
            return
        if self._paused:
            self._transport.resume_reading()
            self._paused = False
        self._finish(reply, keep_alive)
        self._serve_buffered()

    def _finish(self, reply: Reply, keep_alive: bool) -> None:
        transport = self._transport
        if transport is None or self._closed:
            return
        if reply.action == "drop":
            self._close()
            return
        transport.write(_encode(reply, close=not keep_alive))
        if reply.body:
            transport.write(reply.body)
        if not keep_alive:
            self._close()

    def _close(self) -> None:
        """Close after what was written; requests still buffered are never served."""
        self._closed = True
        if self._transport is not None:
            self._transport.close()

    def _reject(self, status: int, message: str) -> None:
        body = json.dumps({"detail": message}).encode()
        self._finish(Reply(status=status, body=body), keep_alive=False)

    def _next_request(self) -> tuple[Request, bool] | None:
        buffer = self._buffer
        while buffer.startswith(b"\r\n"):  # stray CRLFs between requests are allowed
            del buffer[:2]
        end = buffer.find(b"\r\n\r\n")
        if end < 0:
            if len(buffer) > MAX_HEAD_BYTES:
                self._reject(431, "Request header fields too large")
            return None
        if end > MAX_HEAD_BYTES:
            self._reject(431, "Request header fields too large")
            return None
        lines = bytes(buffer[:end]).decode("latin-1").split("\r\n")
        request_line = lines[0].split(" ")
        if len(request_line) != 3 or not request_line[2].startswith("HTTP/1."):
            self._reject(400, "Malformed request line")
            return None
        method, target, version = request_line
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if not sep:
                self._reject(400, "Malformed header line")
                return None
            headers[name.strip().lower()] = value.strip()
        if "transfer-encoding" in headers:
            self._reject(501, "Chunked request bodies are not supported")
            return None
        try:
            length = int(headers.get("content-length", "0"))
        except ValueError:
            length = -1
        if length < 0:
            self._reject(400, "Invalid Content-Length")
            return None
        if length > MAX_BODY_BYTES:
            self._reject(413, "Request body too large")
            return None
        start = end + 4
        if len(buffer) < start + length:
            return None
        body = bytes(buffer[start : start + length])
        del buffer[: start + length]
        path, _, query = target.partition("?")
        connection = headers.get("connection", "").lower()
        keep_alive = connection != "close" if version == "HTTP/1.1" else connection == "keep-alive"
        return Request(method, unquote(path), query, headers, body), keep_alive
