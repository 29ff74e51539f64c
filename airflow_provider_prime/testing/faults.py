"""Faults on demand: what a bad day of the API looks like, staged on the next requests.

A :class:`Fault` says *what* goes wrong (``kind`` and its shaping fields) and *when*: the next
``times`` matching requests (None: all of them), with a ``probability``, inside a time window
(``after`` / ``duration`` seconds on the simulator's clock, i.e. pod seconds: the clock times
``time_scale``, counted from injection), optionally only for one ``method``, ``path`` (``*``
matches any run of characters: ``/api/v1/pods/*``), ``api_key`` or requested ``pod_id`` (a
``pod_ids`` query value, or the id of ``/pods/{id}``: GET and DELETE). Faults never touch
``/_sim/`` control requests. When several match, the one injected first wins.

A fault strikes before the request is carried out (as a gateway in front of the API would), unless
``after_effect`` is set: then the API does its work (the pod is created, the delete happens) and
the fault replaces the answer, which is how "the create succeeded but the answer never came" is
staged. Build them with the class methods::

    Fault.rate_limited(retry_after=2)             # 429 + "Retry-After: 2"
    Fault.rate_limited(retry_after=2, http_date=True)
    Fault.server_error(502, html=True, times=3)   # an nginx-style HTML page, three times
    Fault.http_error(422, body_shape="detail")    # {"detail": "..."} instead of {"errors": [...]}
    Fault.slow(5.0)  Fault.drop()  Fault.hang()
    Fault.malformed_json()  Fault.wrong_shape()  Fault.null_data()
    Fault.unknown_enums()  Fault.extra_fields()  Fault.oversized(32 * 1024 * 1024)
    Fault.answer_lost()                           # POST /pods/ creates the pod, then drops the line
    Fault.answer_lost(hang=True)                  # ... or never answers (past the client's timeout)
    Fault.server_error(502, method="POST", path=PODS_PATH, after_effect=True)
    Fault.pod_deleted("pod-3")                    # after the next list page is read, pod-3 goes
    Fault.node_dies("pod-3", rank=1, after=30)    # 30 s on, node 1 of pod-3 dies (the pod: ERROR)

or as JSON (``POST /_sim/faults``): ``{"kind": "http_error", "status": 503, "times": 2}``.
"""

from __future__ import annotations

import fnmatch
import itertools
import json
import random
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from email.utils import formatdate
from enum import Enum
from functools import lru_cache
from http import HTTPStatus
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from airflow_provider_prime.testing.paths import PODS_PATH
from airflow_provider_prime.testing.wire import Reply

BodyShape = Literal["errors", "detail", "detail_list", "html", "text", "empty"]

#: Default size of :meth:`Fault.oversized` bodies.
OVERSIZED_DEFAULT_BYTES = 16 * 1024 * 1024
#: A reply body that stops in the middle of a JSON document.
MALFORMED_JSON_BODY = b'{"data": [{"podId": "pod-1", "providerType": "runpod", "status": "ACT'
#: ``data`` holding an object where the schema wants a list.
WRONG_SHAPE_BODY: dict[str, Any] = {"data": {"podId": "pod-1", "status": "ACTIVE"}, "status": "ok"}

_DEFAULT_MESSAGES = {
    401: "Authorization failed",
    402: "Payment required: the account's balance is exhausted",
    403: "Forbidden: this API key lacks the permission needed (Instances → Read)",
    404: "Not Found",
    422: "Invalid request data",
    429: "Too many requests, slow down",
}


class FaultKind(str, Enum):
    """What goes wrong."""

    HTTP_ERROR = "http_error"  # an error status with a body of ``body_shape``
    SLOW = "slow"  # the normal answer, ``delay`` seconds late
    DROP = "drop"  # the connection closed without an answer (after ``delay``)
    HANG = "hang"  # no answer at all until the client gives up
    MALFORMED_JSON = "malformed_json"  # 200 with a truncated JSON document
    JSON = "json"  # ``status`` with ``body`` as JSON (wrong shapes, ``data: null``...)
    RAW = "raw"  # ``status`` with ``text`` as a body of ``content_type``
    PODS = "pods"  # the normal answer with ``pod_fields`` set and ``drop_fields`` removed per pod
    OVERSIZED = "oversized"  # a valid 200 JSON body of ``size`` bytes
    DELETE_POD = "delete_pod"  # the normal answer, and pod ``target`` is deleted (a concurrent delete)
    NODE_DIES = "node_dies"  # before the normal answer, node ``rank`` of pod ``target`` dies: pod ERROR


class Fault(BaseModel):
    """One staged failure; see the module docs for the fields and the class methods that build it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: FaultKind
    # when it applies
    times: int | None = Field(default=1, ge=1)
    probability: float = Field(default=1.0, ge=0.0, le=1.0)
    after: float = Field(default=0.0, ge=0.0)
    duration: float | None = Field(default=None, gt=0.0)
    method: str | None = None
    path: str | None = None
    api_key: str | None = None
    pod_id: str | None = None
    #: Strike after the request took effect (the answer is lost, the work is done).
    after_effect: bool = False
    # what the reply looks like
    status: int | None = Field(default=None, ge=100, le=599)
    body_shape: BodyShape = "errors"
    message: str | None = None
    retry_after: float | None = Field(default=None, ge=0.0)
    retry_after_format: Literal["seconds", "http-date"] = "seconds"
    delay: float = Field(default=0.0, ge=0.0)
    body: Any = None
    text: str = ""
    content_type: str = "text/plain"
    headers: dict[str, str] = Field(default_factory=dict)
    pod_fields: dict[str, Any] = Field(default_factory=dict)
    drop_fields: tuple[str, ...] = ()
    size: int = Field(default=OVERSIZED_DEFAULT_BYTES, ge=0)
    #: delete_pod: the pod deleted, and whether it leaves the list at once (else DELETING first).
    target: str | None = None
    unlisted: bool = True
    #: node_dies: the node (0-based rank) that dies; None: every node of the pod.
    rank: int | None = Field(default=None, ge=0)

    @model_validator(mode="after")
    def _complete(self) -> Fault:
        if self.kind is FaultKind.HTTP_ERROR and self.status is None:
            raise ValueError("an http_error fault needs a status")
        if self.kind in (FaultKind.DELETE_POD, FaultKind.NODE_DIES) and not self.target:
            raise ValueError(f"a {self.kind.value} fault needs a target pod id")
        return self

    # builders ------------------------------------------------------------------------------------

    @classmethod
    def http_error(
        cls,
        status: int,
        *,
        body_shape: BodyShape = "errors",
        message: str | None = None,
        retry_after: float | None = None,
        http_date: bool = False,
        **when: Any,
    ) -> Fault:
        """``status`` with a body shaped ``{"errors": [...]}``, ``{"detail": ...}``, HTML, text or empty."""
        return cls(
            kind=FaultKind.HTTP_ERROR,
            status=status,
            body_shape=body_shape,
            message=message,
            retry_after=retry_after,
            retry_after_format="http-date" if http_date else "seconds",
            **when,
        )

    @classmethod
    def rate_limited(cls, retry_after: float | None = None, *, http_date: bool = False, **when: Any) -> Fault:
        """429, with ``Retry-After`` in seconds, as an HTTP date, or absent (``retry_after=None``)."""
        return cls.http_error(429, body_shape="detail", retry_after=retry_after, http_date=http_date, **when)

    @classmethod
    def server_error(cls, status: int = 500, *, html: bool = False, **when: Any) -> Fault:
        """A 5xx with a JSON ``{"detail": ...}`` body, or the HTML page a proxy in front would send."""
        return cls.http_error(status, body_shape="html" if html else "detail", **when)

    @classmethod
    def slow(cls, delay: float, **when: Any) -> Fault:
        """The normal answer, ``delay`` seconds late (a read timeout shorter than that fires)."""
        return cls(kind=FaultKind.SLOW, delay=delay, **when)

    @classmethod
    def drop(cls, *, delay: float = 0.0, **when: Any) -> Fault:
        """Close the connection without answering, optionally after ``delay`` seconds."""
        return cls(kind=FaultKind.DROP, delay=delay, **when)

    @classmethod
    def hang(cls, **when: Any) -> Fault:
        """Never answer; the connection stays open until the client gives up or the server stops."""
        return cls(kind=FaultKind.HANG, **when)

    @classmethod
    def answer_lost(
        cls, *, hang: bool = False, method: str = "POST", path: str = PODS_PATH, **when: Any
    ) -> Fault:
        """The request takes effect (by default: a create), then the connection drops or stalls."""
        kind = FaultKind.HANG if hang else FaultKind.DROP
        return cls(kind=kind, method=method, path=path, after_effect=True, **when)

    @classmethod
    def pod_deleted(
        cls,
        target: str,
        *,
        unlisted: bool = True,
        method: str = "GET",
        path: str = PODS_PATH,
        after_effect: bool = True,
        **when: Any,
    ) -> Fault:
        """Someone else deletes pod ``target`` while this request is served; the answer is normal.

        By default after the next ``GET /pods/`` page has been read, so the list shifts between
        pages; ``unlisted`` (default) makes the pod TERMINATED and gone from the list at once
        (False: DELETING for the lifecycle's ``deleting_for`` first). ``after_effect=False``: the
        pod goes before this answer is built.
        """
        return cls(
            kind=FaultKind.DELETE_POD,
            target=target,
            unlisted=unlisted,
            method=method,
            path=path,
            after_effect=after_effect,
            **when,
        )

    @classmethod
    def node_dies(cls, target: str, *, rank: int | None = None, **when: Any) -> Fault:
        """Node ``rank`` of pod ``target`` dies (every node: None) when the next matching request comes.

        By default that is the next API request of any kind (``after=30``: the first one 30 pod
        seconds on). The pod is pinned ERROR, so that request's answer already says so; with SSH
        nodes (``ssh_keys``) the node's SSH drops and its processes are SIGKILLed first, for good
        (:meth:`SimulatorState.kill_node`). A target without nodes or of unknown id: nothing dies.
        """
        return cls(kind=FaultKind.NODE_DIES, target=target, rank=rank, **when)

    @classmethod
    def malformed_json(cls, **when: Any) -> Fault:
        """200 ``application/json`` whose body is cut off mid-document."""
        return cls(kind=FaultKind.MALFORMED_JSON, **when)

    @classmethod
    def json_reply(cls, body: Any, *, status: int = 200, **when: Any) -> Fault:
        """``status`` with ``body`` serialised as JSON."""
        return cls(kind=FaultKind.JSON, body=body, status=status, **when)

    @classmethod
    def wrong_shape(cls, body: Any = None, **when: Any) -> Fault:
        """200 with valid JSON of the wrong shape (by default ``data`` is an object, not a list)."""
        return cls.json_reply(WRONG_SHAPE_BODY if body is None else body, **when)

    @classmethod
    def null_data(cls, **when: Any) -> Fault:
        """200 ``{"data": null, "status": "ok"}`` (allowed by the schema: no pods)."""
        return cls.json_reply({"data": None, "status": "ok"}, **when)

    @classmethod
    def raw(cls, text: str, *, status: int = 200, content_type: str = "text/plain", **when: Any) -> Fault:
        """``status`` with ``text`` as the body, of any content type."""
        return cls(kind=FaultKind.RAW, status=status, text=text, content_type=content_type, **when)

    @classmethod
    def pods(
        cls, pod_fields: dict[str, Any] | None = None, drop_fields: Iterable[str] = (), **when: Any
    ) -> Fault:
        """The normal answer with ``pod_fields`` set on, and ``drop_fields`` removed from, every pod."""
        return cls(kind=FaultKind.PODS, pod_fields=pod_fields or {}, drop_fields=tuple(drop_fields), **when)

    @classmethod
    def unknown_enums(
        cls,
        *,
        status: str | None = "HIBERNATING",
        provider_type: str | None = "quantumcloud",
        installation_status: str | None = "QUEUED",
        **when: Any,
    ) -> Fault:
        """Every pod reports enum values this version has never heard of (None: keep that field)."""
        changes = {"status": status, "providerType": provider_type, "installationStatus": installation_status}
        return cls.pods({name: value for name, value in changes.items() if value is not None}, **when)

    @classmethod
    def extra_fields(cls, fields: dict[str, Any] | None = None, **when: Any) -> Fault:
        """Every pod carries fields beyond the schema (by default some the live API sends, and more)."""
        port = {"internal": "22", "external": "2222", "protocol": "TCP", "description": None}
        default = {"priceHr": 1.99, "primePortMapping": [port], "newThing": {}}
        return cls.pods(default if fields is None else fields, **when)

    @classmethod
    def oversized(cls, size: int = OVERSIZED_DEFAULT_BYTES, **when: Any) -> Fault:
        """200 with a valid JSON body of ``size`` bytes (no pods, a long padding field)."""
        return cls(kind=FaultKind.OVERSIZED, size=size, **when)

    # rendering -----------------------------------------------------------------------------------

    def reply(self) -> Reply | None:
        """The reply this fault stands for, or None when it only shapes the normal answer (slow, pods)."""
        kind, note = self.kind, self.kind.value
        if kind is FaultKind.HTTP_ERROR:
            assert self.status is not None
            body, content_type = error_body(self.status, self.body_shape, self.message)
            return Reply(self.status, body, content_type, self._headers(), self.delay, note=note)
        if kind is FaultKind.DROP:
            return Reply(delay=self.delay, action="drop", note=note)
        if kind is FaultKind.HANG:
            return Reply(action="hang", note=note)
        if kind is FaultKind.MALFORMED_JSON:
            return Reply(200, MALFORMED_JSON_BODY, headers=self._headers(), delay=self.delay, note=note)
        if kind is FaultKind.JSON:
            body = json.dumps(self.body).encode()
            return Reply(self.status or 200, body, headers=self._headers(), delay=self.delay, note=note)
        if kind is FaultKind.RAW:
            body = self.text.encode()
            return Reply(self.status or 200, body, self.content_type, self._headers(), self.delay, note=note)
        if kind is FaultKind.OVERSIZED:
            return Reply(
                200, _oversized_body(self.size), headers=self._headers(), delay=self.delay, note=note
            )
        return None

    def reshape(self, pods: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Apply a ``pods`` fault to the pod objects of a normal answer."""
        changed = []
        for pod in pods:
            pod = {name: value for name, value in pod.items() if name not in self.drop_fields}
            pod.update(self.pod_fields)
            changed.append(pod)
        return changed

    def _headers(self) -> tuple[tuple[str, str], ...]:
        headers = list(self.headers.items())
        if self.retry_after is not None:
            if self.retry_after_format == "http-date":
                value = formatdate(time.time() + self.retry_after, usegmt=True)
            else:
                value = f"{self.retry_after:g}"
            headers.append(("retry-after", value))
        return tuple(headers)


def error_body(status: int, shape: BodyShape, message: str | None = None) -> tuple[bytes, str | None]:
    """An error body of the given shape, and its content type."""
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "Error"
    text = message or _DEFAULT_MESSAGES.get(status, phrase)
    if shape == "errors":
        return json.dumps({"errors": [{"param": "request", "details": text}]}).encode(), "application/json"
    if shape == "detail":
        return json.dumps({"detail": text}).encode(), "application/json"
    if shape == "detail_list":
        detail = [{"loc": ["query", "pod_ids"], "msg": text, "type": "value_error"}]
        return json.dumps({"detail": detail}).encode(), "application/json"
    if shape == "html":
        title = f"{status} {phrase}"
        page = (
            f"<html>\r\n<head><title>{title}</title></head>\r\n<body>\r\n"
            f"<center><h1>{title}</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
        )
        return page.encode(), "text/html"
    if shape == "text":
        return text.encode(), "text/plain; charset=utf-8"
    return b"", None


def _path_matches(pattern: str, path: str) -> bool:
    """Whether a fault's ``path`` covers ``path`` (trailing slashes ignored, ``*`` a wildcard)."""
    pattern, path = pattern.rstrip("/"), path.rstrip("/")
    return fnmatch.fnmatchcase(path, pattern) if "*" in pattern else pattern == path


@lru_cache(maxsize=4)
def _oversized_body(size: int) -> bytes:
    head, tail = b'{"data": [], "status": "ok", "padding": "', b'"}'
    return head + b"x" * max(size - len(head) - len(tail), 0) + tail


@dataclass
class _Armed:
    """A fault in the book, with its bookkeeping."""

    id: int
    fault: Fault
    armed_at: float
    remaining: int | None
    hits: int = 0

    def describe(self) -> dict[str, Any]:
        data = self.fault.model_dump(mode="json", exclude_defaults=True)
        return {"id": self.id, "remaining": self.remaining, "hits": self.hits, **data}


class FaultBook:
    """The faults waiting to strike; thread-safe, consulted once per API request."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._armed: list[_Armed] = []
        self._ids = itertools.count(1)

    def arm(self, fault: Fault, now: float) -> int:
        """Add ``fault`` (its window starts at ``now``); returns its id."""
        with self._lock:
            armed = _Armed(next(self._ids), fault, now, fault.times)
            self._armed.append(armed)
            return armed.id

    def disarm(self, fault_id: int | None = None) -> None:
        """Remove one fault by id, or all of them."""
        with self._lock:
            self._armed = [] if fault_id is None else [a for a in self._armed if a.id != fault_id]

    def describe(self) -> list[dict[str, Any]]:
        """The armed faults with how many times each may still strike and has struck."""
        with self._lock:
            return [armed.describe() for armed in self._armed]

    def __bool__(self) -> bool:
        return bool(self._armed)  # a racy read is fine: it only skips the lock when empty

    def strike(
        self,
        path: str,
        api_key: str,
        pod_ids: Iterable[str],
        now: float,
        *,
        method: str = "GET",
        after_effect: bool = False,
    ) -> Fault | None:
        """The fault that applies to this request at this stage, if any (its count is consumed)."""
        if not self._armed:
            return None
        wanted = set(pod_ids)
        with self._lock:
            for armed in self._armed:
                fault = armed.fault
                if fault.after_effect != after_effect:
                    continue
                start = armed.armed_at + fault.after
                if now < start:
                    continue
                if fault.duration is not None and now >= start + fault.duration:
                    continue
                if fault.method is not None and fault.method.upper() != method:
                    continue
                if fault.path is not None and not _path_matches(fault.path, path):
                    continue
                if fault.api_key is not None and fault.api_key != api_key:
                    continue
                if fault.pod_id is not None and fault.pod_id not in wanted:
                    continue
                if fault.probability < 1.0 and random.random() >= fault.probability:
                    continue
                armed.hits += 1
                if armed.remaining is not None:
                    armed.remaining -= 1
                    if armed.remaining <= 0:
                        self._armed.remove(armed)
                return fault
            self._armed = [a for a in self._armed if not self._expired(a, now)]
        return None

    @staticmethod
    def _expired(armed: _Armed, now: float) -> bool:
        duration = armed.fault.duration
        return duration is not None and now >= armed.armed_at + armed.fault.after + duration
