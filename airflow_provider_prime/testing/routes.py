"""The simulated Prime API: ``GET /api/v1/pods/status`` and ``GET /api/v1/user/whoami``.

Behaviour, where the published contract leaves room (see ``docs/simulator.md``):

* Order of checks: armed fault, trailing-slash redirect, unknown path (404), method (405),
  bearer key (401), query validation (422), answer. This is the order of a FastAPI app behind a
  gateway: the gateway's 429/5xx come first, authentication before validation.
* ``/api/v1/pods/status/`` (trailing slash) answers ``307`` to the canonical path, query kept, as
  FastAPI does; clients that follow redirects (requests, the official CLI) end up served.
* 401 bodies are ``{"detail": "Not authenticated"}`` (no or non-bearer ``Authorization``) and
  ``{"detail": "Authorization failed"}`` (unknown key), with ``WWW-Authenticate: Bearer``.
* 422 (body ``{"errors": [{"param": "pod_ids", "details": ...}]}``) for an empty or blank id, an id
  longer than 256 characters, or more than ``max_pod_ids`` ids (100; counted as sent, duplicates
  included).
* Known ids are answered once each, in the order first asked; unknown and foreign ids are left
  out; no ``pod_ids`` at all gives ``data: []``. The envelope's ``status`` is ``"ok"``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any

from airflow_provider_prime.testing.control import ControlApi
from airflow_provider_prime.testing.faults import Fault, FaultKind
from airflow_provider_prime.testing.state import SimulatorState
from airflow_provider_prime.testing.stats import NO_KEY, NO_RESPONSE
from airflow_provider_prime.testing.wire import Reply, Request

STATUS_PATH = "/api/v1/pods/status"
WHOAMI_PATH = "/api/v1/user/whoami"
CONTROL_PREFIX = "/_sim"
#: Longest pod id accepted before a 422.
MAX_POD_ID_LENGTH = 256

_ROUTES = frozenset({STATUS_PATH, WHOAMI_PATH})
_ENVELOPE_HEAD = b'{"data": ['
_ENVELOPE_TAIL = b'], "status": "ok"}'


def json_reply(status: int, data: Any, *headers: tuple[str, str], note: str | None = None) -> Reply:
    return Reply(status, json.dumps(data).encode(), headers=headers, note=note)


class PrimeApi:
    """The request handler of a simulator: API routes, with ``/_sim/...`` handed to the control API."""

    def __init__(self, state: SimulatorState) -> None:
        self._state = state
        self._control = ControlApi(state)
        self._keys = frozenset(state.api_keys)

    def __call__(self, request: Request) -> Reply:
        if request.path == CONTROL_PREFIX or request.path.startswith(CONTROL_PREFIX + "/"):
            return self._control(request)
        pod_ids = request.params().get("pod_ids", []) if request.query else []
        api_key = _bearer(request) or NO_KEY
        state = self._state
        fault = state.fault_book.strike(request.path, api_key, pod_ids, state.clock())
        reply = fault.reply() if fault is not None else None
        if reply is None:
            reply = self._route(request, api_key, pod_ids, fault)
        status = NO_RESPONSE if reply.action != "send" else reply.status
        state.stats.record(request.method, request.path, pod_ids, api_key, status, reply.note)
        return reply

    def _route(self, request: Request, api_key: str, pod_ids: list[str], fault: Fault | None) -> Reply:
        path = request.path
        if path not in _ROUTES:
            if path.rstrip("/") in _ROUTES:
                return _redirect(request, path.rstrip("/"))
            return json_reply(404, {"detail": "Not Found"})
        if request.method != "GET":
            return json_reply(405, {"detail": "Method Not Allowed"}, ("allow", "GET"))
        if not api_key:
            return json_reply(401, {"detail": "Not authenticated"}, ("www-authenticate", "Bearer"))
        if api_key not in self._keys:
            return json_reply(401, {"detail": "Authorization failed"}, ("www-authenticate", "Bearer"))
        if path == WHOAMI_PATH:
            return json_reply(200, {"data": self._user(api_key), "status": "ok"})
        problems = self._invalid(pod_ids)
        if problems:
            return json_reply(422, {"errors": [{"param": "pod_ids", "details": p} for p in problems]})
        reply = self._pods(pod_ids, api_key, fault)
        if fault is not None and fault.kind is FaultKind.SLOW:
            reply = dataclasses.replace(reply, delay=fault.delay, note=fault.kind.value)
        return reply

    def _pods(self, pod_ids: list[str], api_key: str, fault: Fault | None) -> Reply:
        fragments = self._state.pods.report_json(pod_ids, api_key)
        if fault is not None and fault.kind is FaultKind.PODS:
            pods = fault.reshape([json.loads(fragment) for fragment in fragments])
            return json_reply(200, {"data": pods, "status": "ok"}, note=fault.kind.value)
        return Reply(200, _ENVELOPE_HEAD + b", ".join(fragments) + _ENVELOPE_TAIL)

    def _invalid(self, pod_ids: list[str]) -> list[str]:
        problems = []
        limit = self._state.max_pod_ids
        if limit is not None and len(pod_ids) > limit:
            problems.append(f"at most {limit} pod ids per request, got {len(pod_ids)}")
        if any(not pod_id.strip() for pod_id in pod_ids):
            problems.append("pod ids must not be empty")
        if any(len(pod_id) > MAX_POD_ID_LENGTH for pod_id in pod_ids):
            problems.append(f"pod ids must be at most {MAX_POD_ID_LENGTH} characters")
        return problems

    def _user(self, api_key: str) -> dict[str, Any]:
        # Identified by the key's position, never the key itself (it must not leak into any output).
        number = self._state.api_keys.index(api_key) + 1
        digest = hashlib.sha256(f"simulated-user-{number}".encode()).hexdigest()[:12]
        return {
            "id": f"usr_{digest}",
            "name": f"Simulated User {number}",
            "email": f"user{number}@simulator.invalid",
            "scope": ["instances:read"],
        }


def _bearer(request: Request) -> str | None:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def _redirect(request: Request, path: str) -> Reply:
    host = request.headers.get("host")
    location = f"http://{host}{path}" if host else path
    if request.query:
        location += "?" + request.query
    return Reply(307, b"", None, (("location", location),))
