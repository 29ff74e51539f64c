"""The simulated Prime API: every endpoint of ``LIFECYCLE.md``'s table, and the pod log.

Behaviour, where the published contract leaves room (see ``docs/simulator.md``):

* Order of checks: armed fault, trailing-slash redirect, unknown path (404), method (405),
  bearer key (401), write permission (403), validation (422), answer, then faults that strike
  after the work was done (``after_effect``). This is the order of a FastAPI app behind a
  gateway: the gateway's 429/5xx come first, authentication before validation.
* Each path has one canonical spelling, the one of ``LIFECYCLE.md``'s table (``/pods/`` with a
  slash, ``/pods/status`` and ``/pods/{id}`` without); the other spelling answers ``307`` to it,
  query kept, as FastAPI does. Clients that follow redirects (requests, the official CLI) end up
  served; a 307 keeps the method and body, so ``POST /api/v1/pods`` creates too.
* 401 bodies are ``{"detail": "Not authenticated"}`` (no or non-bearer ``Authorization``) and
  ``{"detail": "Authorization failed"}`` (unknown key), with ``WWW-Authenticate: Bearer``.
  A read-only key creating or deleting gets 403, its body saying the key lacks write permission.
* The status endpoint's 422 is the documented ``{"errors": [{"param", "details"}]}``; the other
  endpoints' 422 is FastAPI's ``{"detail": [{"loc", "msg", "type"}]}``, naming the field.
* The pod log (``GET /pods/{id}/log?tail=N``) is ``{"data": "<lines>", "status": "ok"}``, lines
  told by the pod's timeline (:mod:`.pod_logs`); 404 like ``GET /pods/{id}`` for a pod the key
  does not see; ``tail`` (default 100) must be a whole number from 0 to 10000, else 422.
* Status: known ids are answered once each, in the order first asked; unknown, foreign and
  terminated ids are left out; no ``pod_ids`` at all gives ``data: []``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
from collections.abc import Callable
from typing import Any

from airflow_provider_prime.testing.control import ControlApi
from airflow_provider_prime.testing.create import check
from airflow_provider_prime.testing.faults import Fault, FaultKind
from airflow_provider_prime.testing.offers import gpu_summary, matching
from airflow_provider_prime.testing.paths import (
    GPU_SUMMARY_PATH,
    GPUS_PATH,
    HISTORY_PATH,
    MULTI_NODE_PATH,
    PODS_PATH,
    STATUS_PATH,
    WHOAMI_PATH,
)
from airflow_provider_prime.testing.pod_logs import DEFAULT_TAIL, MAX_TAIL, log_body, pod_log
from airflow_provider_prime.testing.shapes import user_object, validation_error
from airflow_provider_prime.testing.state import SimulatorState
from airflow_provider_prime.testing.stats import NO_KEY, NO_RESPONSE
from airflow_provider_prime.testing.wire import Reply, Request

CONTROL_PREFIX = "/_sim"
#: Longest pod id accepted before a 422.
MAX_POD_ID_LENGTH = 256
#: The message of a 403 to a read-only key (the hook's error names the permission too).
WRITE_PERMISSION_DETAIL = (
    'This API key lacks write permission: creating or deleting pods needs "Instances → Read and write"'
)
#: The message of a 402 when the scenario says the account cannot pay.
PAYMENT_REQUIRED_DETAIL = "Payment required: the account's balance is too low to create this pod"
#: Largest ``limit`` / ``page_size`` accepted.
MAX_PAGE = 1000

#: Canonical paths and the methods each takes (pod by id is ``PODS_PATH + id``: GET, DELETE).
_FIXED: dict[str, tuple[str, ...]] = {
    STATUS_PATH: ("GET",),
    WHOAMI_PATH: ("GET",),
    PODS_PATH: ("GET", "POST"),
    HISTORY_PATH: ("GET",),
    GPUS_PATH: ("GET",),
    MULTI_NODE_PATH: ("GET",),
    GPU_SUMMARY_PATH: ("GET",),
}
_POD_METHODS = ("GET", "DELETE")
#: The pod log's path below a pod's, and its route.
_LOG_SUFFIX = "/log"
POD_LOG_ROUTE = PODS_PATH + "{id}" + _LOG_SUFFIX
_WRITES = frozenset({("POST", PODS_PATH), ("DELETE", None)})
_ENVELOPE_HEAD = b'{"data": ['
_ENVELOPE_TAIL = b'], "status": "ok"}'


@dataclasses.dataclass(frozen=True, slots=True)
class _Call:
    """One authenticated API request as a route handler gets it (query parsed once)."""

    request: Request
    api_key: str
    pod_id: str  # the id of ``/pods/{id}`` ("" elsewhere)
    pod_ids: list[str]


_RouteHandler = Callable[[_Call], Reply]


class _Invalid(Exception):
    """A query parameter that does not validate: answered 422 naming it."""

    def __init__(self, name: str, message: str) -> None:
        super().__init__(message)
        self.name = name


def json_reply(status: int, data: Any, *headers: tuple[str, str], note: str | None = None) -> Reply:
    return Reply(status, json.dumps(data).encode(), headers=headers, note=note)


def _detail(status: int, detail: Any, *headers: tuple[str, str]) -> Reply:
    return json_reply(status, {"detail": detail}, *headers)


def resolve(path: str) -> tuple[str | None, str | None, str | None]:
    """(canonical route, pod id, redirect target) of a path; (None, None, None) if unknown.

    The route of a pod by id is ``PODS_PATH`` with the id apart; a path in its non-canonical
    spelling (trailing slash or not) has only a redirect target.
    """
    if path in _FIXED:
        return path, None, None
    other = path[:-1] if path.endswith("/") else path + "/"
    if other in _FIXED:
        return None, None, other
    if path.startswith(PODS_PATH):
        rest = path[len(PODS_PATH) :]
        if rest and "/" not in rest:
            return PODS_PATH + "{id}", rest, None
        log_of = rest[: -len(_LOG_SUFFIX)] if rest.endswith(_LOG_SUFFIX) else ""
        if log_of and "/" not in log_of:
            return POD_LOG_ROUTE, log_of, None
        if rest.endswith("/") and rest[:-1] and "/" not in rest[:-1]:
            return None, None, path[:-1]
    return None, None, None


class PrimeApi:
    """The request handler of a simulator: API routes, with ``/_sim/...`` handed to the control API."""

    def __init__(self, state: SimulatorState) -> None:
        self._state = state
        self._control = ControlApi(state)
        self._keys = frozenset(state.api_keys)
        self._handlers: dict[tuple[str, str], _RouteHandler] = {
            ("GET", STATUS_PATH): self._status,
            ("GET", WHOAMI_PATH): self._whoami,
            ("GET", PODS_PATH): self._list,
            ("POST", PODS_PATH): self._create,
            ("GET", HISTORY_PATH): self._history,
            ("GET", GPUS_PATH): lambda call: self._offers(call.request, multi_node=False),
            ("GET", MULTI_NODE_PATH): lambda call: self._offers(call.request, multi_node=True),
            ("GET", GPU_SUMMARY_PATH): lambda _call: json_reply(200, gpu_summary(self._state.offers())),
            ("GET", PODS_PATH + "{id}"): self._get,
            ("DELETE", PODS_PATH + "{id}"): self._delete,
            ("GET", POD_LOG_ROUTE): self._log,
        }

    def __call__(self, request: Request) -> Reply:
        if request.path == CONTROL_PREFIX or request.path.startswith(CONTROL_PREFIX + "/"):
            return self._control(request)
        pod_ids = request.params().get("pod_ids", []) if request.query else []
        api_key = _bearer(request) or NO_KEY
        state = self._state
        strike = state.fault_book.strike
        # A fault's pod_id filters the requests that ask for that pod: by query, or by path.
        path_pod = resolve(request.path)[1]
        asked = [*pod_ids, path_pod] if path_pod else pod_ids
        fault = strike(request.path, api_key, asked, state.sim_time(), method=request.method)
        reply = fault.reply() if fault is not None else None
        if reply is None:
            self._side_effect(fault)
            reply = self._route(request, api_key, pod_ids, fault)
            if 200 <= reply.status < 300 and state.fault_book:
                late = strike(
                    request.path, api_key, asked, state.sim_time(), method=request.method, after_effect=True
                )
                if late is not None:
                    self._side_effect(late)
                    reply = late.reply() or dataclasses.replace(reply, delay=late.delay, note=late.kind.value)
        if state.ssh_nodes is not None:
            reply = self._sync_nodes(reply)
        status = NO_RESPONSE if reply.action != "send" else reply.status
        state.stats.record(request.method, request.path, pod_ids, api_key, status, reply.note)
        return reply

    def _side_effect(self, fault: Fault | None) -> None:
        """What a fault does besides the answer: ``delete_pod`` deletes, ``node_dies`` kills a node."""
        if fault is None or not fault.target:
            return
        if fault.kind is FaultKind.DELETE_POD:
            self._state.delete_pod(fault.target, deleting_for=0.0 if fault.unlisted else None)
        elif fault.kind is FaultKind.NODE_DIES:
            with contextlib.suppress(KeyError, ValueError):  # no such pod or node: nothing dies
                self._state.kill_node(fault.target, fault.rank)

    def _sync_nodes(self, reply: Reply) -> Reply:
        """SSH nodes in step with the pods before the answer goes: a node reported ready accepts."""
        try:
            self._state.sync_nodes()
        except Exception as error:  # a 500 naming the cause, rather than a connection left hanging
            return _detail(500, f"the simulator's SSH nodes failed: {error}")
        return reply

    def _route(self, request: Request, api_key: str, pod_ids: list[str], fault: Fault | None) -> Reply:
        route, pod_id, redirect = resolve(request.path)
        if redirect is not None:
            return _redirect(request, redirect)
        if route is None:
            return _detail(404, "Not Found")
        if route == POD_LOG_ROUTE:
            methods: tuple[str, ...] = ("GET",)
        else:
            methods = _POD_METHODS if pod_id is not None else _FIXED[route]
        if request.method not in methods:
            return _detail(405, "Method Not Allowed", ("allow", ", ".join(methods)))
        if not api_key:
            return _detail(401, "Not authenticated", ("www-authenticate", "Bearer"))
        if api_key not in self._keys:
            return _detail(401, "Authorization failed", ("www-authenticate", "Bearer"))
        writes = (request.method, None if pod_id is not None else route) in _WRITES
        if writes and api_key in self._state.read_only_keys:
            return _detail(403, WRITE_PERMISSION_DETAIL)
        try:
            reply = self._handlers[request.method, route](_Call(request, api_key, pod_id or "", pod_ids))
        except _Invalid as invalid:
            return json_reply(422, validation_error((("query", invalid.name), str(invalid))))
        if fault is not None and fault.kind is FaultKind.SLOW:
            reply = dataclasses.replace(reply, delay=fault.delay, note=fault.kind.value)
        if fault is not None and fault.kind is FaultKind.PODS:
            reply = self._reshaped(reply, fault)
        return reply

    # pods ----------------------------------------------------------------------------------------

    def _status(self, call: _Call) -> Reply:
        problems = self._invalid(call.pod_ids)
        if problems:
            return json_reply(422, {"errors": [{"param": "pod_ids", "details": p} for p in problems]})
        fragments = self._state.pods.report_json(call.pod_ids, call.api_key)
        return Reply(200, _ENVELOPE_HEAD + b", ".join(fragments) + _ENVELOPE_TAIL)

    def _list(self, call: _Call) -> Reply:
        return _page(call.request, self._state.pods.listed(call.api_key), self._state.page_cap)

    def _history(self, call: _Call) -> Reply:
        params = call.request.params()
        sort_by = params.get("sort_by", ["terminatedAt"])[-1]
        order = params.get("sort_order", ["desc"])[-1].lower()
        if sort_by not in ("terminatedAt", "createdAt"):
            raise _Invalid("sort_by", "must be terminatedAt or createdAt")
        if order not in ("asc", "desc"):
            raise _Invalid("sort_order", "must be asc or desc")
        items = self._state.pods.history(call.api_key)
        ordered = sorted(items, key=lambda item: item[sort_by], reverse=order == "desc")
        return _page(call.request, ordered, self._state.page_cap)

    def _get(self, call: _Call) -> Reply:
        pod_id = call.pod_id
        state = self._state
        pod = state.pods.pod(pod_id, call.api_key, terminated=state.scenario.deleted_pods == "terminated")
        return json_reply(200, pod) if pod is not None else _detail(404, f"Pod {pod_id} not found")

    def _log(self, call: _Call) -> Reply:
        """The pod's log as its timeline tells it (:mod:`.pod_logs`), to the keys that see the pod."""
        pod_id, state = call.pod_id, self._state
        text = call.request.params().get("tail", [str(DEFAULT_TAIL)])[-1]
        if not text.isdigit() or int(text) > MAX_TAIL:
            raise _Invalid("tail", f"must be a whole number from 0 to {MAX_TAIL}, not {text!r}")
        terminated = state.scenario.deleted_pods == "terminated"
        script = next((s for s in state.pods.scripts() if s.pod_id == pod_id), None)
        if script is None or state.pods.pod(pod_id, call.api_key, terminated=terminated) is None:
            return _detail(404, f"Pod {pod_id} not found")
        try:
            lines = pod_log(script, state.pods.pod_time(pod_id), int(text))
        except KeyError:  # removed meanwhile
            return _detail(404, f"Pod {pod_id} not found")
        return json_reply(200, log_body(lines))

    def _delete(self, call: _Call) -> Reply:
        pod_id = call.pod_id
        status = self._state.delete_pod(pod_id, call.api_key)
        return (
            json_reply(200, {"status": status})
            if status is not None
            else _detail(404, f"Pod {pod_id} not found")
        )

    def _create(self, call: _Call) -> Reply:
        state = self._state
        try:
            body = json.loads(call.request.body) if call.request.body else None
        except ValueError:
            return json_reply(422, validation_error((("body",), "JSON decode error")))
        checked = check(body, state.offers())
        if isinstance(checked, list):
            return json_reply(422, validation_error(*checked))
        if checked.offer.sold_out:
            return _detail(400, f"Offer {checked.offer.cloud_id} is out of stock")
        if state.payment_required:
            return _detail(402, PAYMENT_REQUIRED_DETAIL)
        return json_reply(200, state.create_pod(checked, call.api_key))

    # offers and the user -------------------------------------------------------------------------

    def _offers(self, request: Request, *, multi_node: bool) -> Reply:
        page, size = _paging(request, "page", 1, "page_size", 100, start=1)
        params = request.params()
        count = params.get("gpu_count", [None])[-1]
        if count is not None and not count.isdigit():
            raise _Invalid("gpu_count", "must be an integer")
        offers = matching(
            self._state.offers(),
            multi_node=multi_node,
            gpu_type=params.get("gpu_type", [None])[-1],
            gpu_count=None if count is None else int(count),
            regions=params.get("regions", []),
        )
        items = [offer.render() for offer in offers[(page - 1) * size : page * size]]
        return json_reply(200, {"items": items, "totalCount": len(offers)})

    def _whoami(self, call: _Call) -> Reply:
        # Identified by the key's position, never the key itself (it must not leak into any output).
        state = self._state
        number = state.user_number(call.api_key)
        user = user_object(number, writable=call.api_key not in state.read_only_keys)
        return json_reply(200, {"data": user, "status": "ok"})

    # helpers -------------------------------------------------------------------------------------

    def _reshaped(self, reply: Reply, fault: Fault) -> Reply:
        """A PODS fault applied to the pods of an answer (status and list ``data``, a single Pod)."""
        try:
            body = json.loads(reply.body)
        except ValueError:
            return reply
        if isinstance(body, dict) and isinstance(body.get("data"), list):
            body["data"] = fault.reshape(body["data"])
        elif isinstance(body, dict) and "id" in body:
            body = fault.reshape([body])[0]
        return json_reply(reply.status, body, note=fault.kind.value)

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


def _page(request: Request, items: list[dict[str, Any]], cap: int | None = None) -> Reply:
    """One page of the pod list or history, in their snake_case envelope.

    ``cap``: a server that honours at most that many items a page, whatever ``limit`` asked; the
    envelope's ``limit`` says what was applied.
    """
    offset, limit = _paging(request, "offset", 0, "limit", 100, start=0)
    if cap is not None:
        limit = min(limit, cap)
    page = {
        "total_count": len(items),
        "offset": offset,
        "limit": limit,
        "data": items[offset : offset + limit],
    }
    return json_reply(200, page)


def _paging(
    request: Request, first: str, first_default: int, size: str, size_default: int, *, start: int
) -> tuple[int, int]:
    """Validated (offset or page, limit or page size) from the query."""
    params = request.params()
    values = []
    for name, default, low in ((first, first_default, start), (size, size_default, 1)):
        text = params.get(name, [str(default)])[-1]
        try:
            value = int(text)
        except ValueError:
            raise _Invalid(name, f"must be an integer, not {text!r}") from None
        if value < low or (name == size and value > MAX_PAGE):
            bound = f"between {low} and {MAX_PAGE}" if name == size else f"at least {low}"
            raise _Invalid(name, f"must be {bound}, not {value}")
        values.append(value)
    return values[0], values[1]


def _bearer(request: Request) -> str | None:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def _redirect(request: Request, path: str) -> Reply:
    host = request.headers.get("host")
    location = f"http://{host}{path}" if host else path
    if request.query:
        location += "?" + request.query
    return Reply(307, b"", None, (("location", location),))
