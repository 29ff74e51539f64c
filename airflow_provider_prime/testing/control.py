"""Steering a simulator over HTTP (``/_sim/...``), for a simulator running in another process.

No authentication (the simulator is a loopback test tool), never counted in the statistics,
never hit by faults. Every endpoint maps onto a :class:`SimulatorState` method:

=======================================  ==========================================================
``GET /_sim/health``                     ``{"status": "ok", "pods": N}``
``GET /_sim/stats?log=N``                counters, billing, SSH nodes; the last N log entries (``log=all``)
``GET /_sim/billing``                    created / deleted / still billing pods, pod-seconds, cost
``POST /_sim/reset``                     body ``{"stats": true, "faults": true, "scenario": false}``
``GET /_sim/faults``                     armed faults
``POST /_sim/faults``                    a fault or a list of faults (JSON) → ``{"ids": [...]}``
``DELETE /_sim/faults[/ID]``             disarm all faults, or one
``GET /_sim/pods``                       every pod as the API reports it now (key visibility ignored)
``POST /_sim/pods``                      a pod script or a list of them; timelines start now
``DELETE /_sim/pods/ID``                 the pod vanishes
``POST /_sim/pods/ID/state``             pin the pod's state: ``{"status": "ERROR", ...}``
``POST /_sim/pods/ID/die``               a node dies, the pod goes ERROR: ``{"rank": 1}`` (none: every node)
``GET /_sim/settings``                   page cap, payment_required, the create lifecycle
``POST /_sim/settings``                  change them, pods kept: ``{"page_cap": 50, "list_lag": 5}``
``GET /_sim/scenario``                   the scenario last loaded
``GET /_sim/offers``                     every offer as listed now (rendered), with its current stock
``POST /_sim/offers/CLOUD_ID``           pin its stock from now on: ``{"stock_status": "Unavailable"}``
``POST /_sim/scenario``                  a scenario object, or a string: built-in name, bulk:N, file
=======================================  ==========================================================
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote

from pydantic import TypeAdapter, ValidationError

from airflow_provider_prime.testing.scenario import PodScript
from airflow_provider_prime.testing.state import SimulatorState
from airflow_provider_prime.testing.wire import Reply, Request

_SCRIPTS: TypeAdapter[PodScript | list[PodScript]] = TypeAdapter(PodScript | list[PodScript])


class _Problem(Exception):
    def __init__(self, status: int, detail: Any) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


def _reply(status: int, data: Any) -> Reply:
    return Reply(status, json.dumps(data).encode())


class ControlApi:
    """Request handler for ``/_sim/...``."""

    def __init__(self, state: SimulatorState) -> None:
        self._state = state

    def __call__(self, request: Request) -> Reply:
        parts = [unquote(part) for part in request.path.split("/")[2:] if part]
        try:
            handler = self._handler(request.method, parts)
            return _reply(200, handler(request, parts))
        except _Problem as problem:
            return _reply(problem.status, {"detail": problem.detail})
        except ValidationError as error:
            return _reply(400, {"detail": json.loads(error.json(include_url=False))})
        except (ValueError, OSError) as error:
            return _reply(400, {"detail": str(error)})

    def _handler(self, method: str, parts: list[str]) -> Callable[[Request, list[str]], Any]:
        routes: dict[tuple[str, ...], Callable[[Request, list[str]], Any]] = {
            ("GET", "health"): self._health,
            ("GET", "stats"): self._stats,
            ("GET", "billing"): lambda _r, _p: self._state.billing(),
            ("POST", "reset"): self._reset,
            ("GET", "faults"): lambda _r, _p: self._state.faults,
            ("POST", "faults"): self._inject,
            ("DELETE", "faults"): self._disarm,
            ("GET", "pods"): self._pods,
            ("POST", "pods"): self._add_pods,
            ("DELETE", "pods"): self._remove_pod,
            ("POST", "pods", "state"): self._pin,
            ("POST", "pods", "die"): self._kill_node,
            ("GET", "settings"): lambda _r, _p: self._state.settings(),
            ("POST", "settings"): self._configure,
            ("GET", "scenario"): lambda _r, _p: self._state.scenario.to_dict(),
            ("POST", "scenario"): self._set_scenario,
            ("GET", "offers"): lambda _r, _p: {"data": [offer.render() for offer in self._state.offers()]},
            ("POST", "offers"): self._set_stock,
        }
        if not parts:
            raise _Problem(404, "Not Found")
        key = (method, parts[0], *parts[2:3])
        if key not in routes:
            known = any(route[1] == parts[0] for route in routes)
            raise _Problem(405 if known else 404, "Method Not Allowed" if known else "Not Found")
        return routes[key]

    @staticmethod
    def _body(request: Request) -> Any:
        if not request.body:
            return None
        try:
            return json.loads(request.body)
        except ValueError as error:
            raise _Problem(400, f"request body is not JSON: {error}") from None

    def _health(self, _request: Request, _parts: list[str]) -> Any:
        return {"status": "ok", "pods": len(self._state.pods.scripts())}

    def _stats(self, request: Request, _parts: list[str]) -> Any:
        wanted = request.params().get("log", ["0"])[-1]
        return self._state.stats_snapshot(log=None if wanted == "all" else int(wanted))

    def _reset(self, request: Request, _parts: list[str]) -> Any:
        options = self._body(request) or {}
        self._state.reset(
            stats=bool(options.get("stats", True)),
            faults=bool(options.get("faults", True)),
            scenario=bool(options.get("scenario", False)),
        )
        return {"status": "ok"}

    def _inject(self, request: Request, _parts: list[str]) -> Any:
        body = self._body(request)
        faults = body if isinstance(body, list) else [body]
        return {"ids": self._state.inject(*faults)}

    def _disarm(self, _request: Request, parts: list[str]) -> Any:
        self._state.clear_faults(int(parts[1]) if len(parts) > 1 else None)
        return {"status": "ok"}

    def _pods(self, _request: Request, _parts: list[str]) -> Any:
        state = self._state
        return {"data": state.pods.report(state.pod_ids()), "status": "ok"}

    def _add_pods(self, request: Request, parts: list[str]) -> Any:
        if len(parts) > 1:
            raise _Problem(404, "Not Found")
        scripts = _SCRIPTS.validate_python(self._body(request))
        scripts = scripts if isinstance(scripts, list) else [scripts]
        self._state.add_pod(*scripts)
        return {"added": [script.pod_id for script in scripts]}

    def _remove_pod(self, _request: Request, parts: list[str]) -> Any:
        if len(parts) != 2 or not self._state.remove_pod(parts[1]):
            raise _Problem(404, "no such pod")
        return {"status": "ok"}

    def _pin(self, request: Request, parts: list[str]) -> Any:
        fields = self._body(request)
        if not isinstance(fields, dict):
            raise _Problem(400, "expected an object of phase fields")
        try:
            phase = self._state.set_pod_state(parts[1], **fields)
        except KeyError:
            raise _Problem(404, "no such pod") from None
        return phase.model_dump(mode="json", exclude_unset=True)

    def _kill_node(self, request: Request, parts: list[str]) -> Any:
        options = self._body(request) or {}
        rank = options.get("rank") if isinstance(options, dict) else None
        if rank is not None and (not isinstance(rank, int) or isinstance(rank, bool)):
            raise _Problem(400, "rank must be a whole number or null")
        try:
            phase = self._state.kill_node(parts[1], rank)
        except KeyError:
            raise _Problem(404, "no such pod") from None
        return phase.model_dump(mode="json", exclude_unset=True)

    def _configure(self, request: Request, _parts: list[str]) -> Any:
        changes = self._body(request)
        if not isinstance(changes, dict):
            raise _Problem(400, "expected an object of settings")
        lifecycle = changes.pop("lifecycle", None) or {}
        if not isinstance(lifecycle, dict):
            raise _Problem(400, "lifecycle must be an object of CreateLifecycle fields")
        return self._state.configure(**changes, **lifecycle)

    def _set_stock(self, request: Request, parts: list[str]) -> Any:
        body = self._body(request)
        if len(parts) != 2:
            raise _Problem(404, "give the offer: POST /_sim/offers/{cloud_id}")
        if not isinstance(body, dict) or not isinstance(body.get("stock_status"), str):
            raise _Problem(400, 'expected {"stock_status": "..."}')
        try:
            offer = self._state.set_stock(parts[1], body["stock_status"])
        except KeyError:
            raise _Problem(404, f"no offer with cloud_id {parts[1]!r}") from None
        return offer.render()

    def _set_scenario(self, request: Request, _parts: list[str]) -> Any:
        scenario = self._state.set_scenario(self._body(request))
        return {"name": scenario.name, "pods": scenario.pod_ids}
