"""A small client for Airflow 3's REST API (``/api/v2``) and a watcher for one DAG run.

Only what the demo and the end-to-end tests read: health, DAGs, runs, task instances, XCom, logs,
jobs. Authentication: with ``[core] simple_auth_manager_all_admins`` the simple auth manager hands
out a token without credentials at ``GET /auth/token``; the client fetches it once and sends it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

import httpx

#: Task-instance states after which nothing changes any more.
FINISHED_TI_STATES = frozenset({"success", "failed", "skipped", "upstream_failed", "removed"})
#: DAG-run states after which nothing changes any more.
FINISHED_RUN_STATES = frozenset({"success", "failed"})


class AirflowApiError(RuntimeError):
    """The api-server answered with an error (``status_code``)."""

    def __init__(self, status_code: int, message: str) -> None:
        super().__init__(message)
        self.status_code = status_code


class AirflowApi:
    """REST calls against one api-server, e.g. ``AirflowApi("http://127.0.0.1:8080")``."""

    def __init__(self, base_url: str, *, timeout: float = 30.0) -> None:
        self.base_url = base_url.rstrip("/")
        self._http = httpx.Client(base_url=self.base_url, timeout=timeout)
        self._token: str | None = None

    def close(self) -> None:
        self._http.close()

    # -- plumbing --------------------------------------------------------------------------------

    def _headers(self) -> dict[str, str]:
        if self._token is None:
            response = self._http.get("/auth/token")
            self._check(response)
            self._token = response.json()["access_token"]
        return {"Authorization": f"Bearer {self._token}"}

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        """One call under ``/api/v2``; the decoded JSON body."""
        response = self._http.request(method, f"/api/v2{path}", headers=self._headers(), **kwargs)
        self._check(response)
        return response.json() if response.content else None

    @staticmethod
    def _check(response: httpx.Response) -> None:
        if response.is_error:
            raise AirflowApiError(
                response.status_code,
                f"{response.request.method} {response.request.url.path} -> "
                f"{response.status_code}: {response.text[:500]}",
            )

    # -- reads and writes ------------------------------------------------------------------------

    def health(self) -> dict[str, Any] | None:
        """``/monitor/health`` (no auth needed), or None while the api-server is not answering yet."""
        try:
            response = self._http.get("/api/v2/monitor/health", timeout=5)
        except httpx.TransportError:
            return None
        return response.json() if response.status_code == 200 else None

    def dag(self, dag_id: str) -> dict[str, Any] | None:
        """The DAG as the api-server knows it, or None until the dag-processor has stored it."""
        try:
            result: dict[str, Any] = self.request("GET", f"/dags/{dag_id}")
        except AirflowApiError as exc:
            if exc.status_code == 404:
                return None
            raise
        return result

    def import_errors(self) -> list[dict[str, Any]]:
        errors: list[dict[str, Any]] = self.request("GET", "/importErrors")["import_errors"]
        return errors

    def unpause(self, dag_id: str) -> None:
        self.request("PATCH", f"/dags/{dag_id}", json={"is_paused": False})

    def trigger(self, dag_id: str, conf: Mapping[str, Any] | None = None) -> str:
        """Start a manual run now; its run id."""
        body = {"logical_date": None, "conf": dict(conf or {})}
        run: dict[str, Any] = self.request("POST", f"/dags/{dag_id}/dagRuns", json=body)
        return str(run["dag_run_id"])

    def dag_run(self, dag_id: str, run_id: str) -> dict[str, Any]:
        run: dict[str, Any] = self.request("GET", f"/dags/{dag_id}/dagRuns/{run_id}")
        return run

    def task_instances(self, dag_id: str, run_id: str) -> dict[str, dict[str, Any]]:
        """The run's task instances by task id (unmapped tasks)."""
        body = self.request("GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances")
        return {ti["task_id"]: ti for ti in body["task_instances"]}

    def xcom(self, dag_id: str, run_id: str, task_id: str, key: str = "return_value") -> Any:
        path = f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/xcomEntries/{key}"
        return self.request("GET", path)["value"]

    def task_log_entries(self, dag_id: str, run_id: str, task_id: str, try_number: int = 1) -> list[Any]:
        """The task's log as the api-server merges it (worker and trigger parts): structured entries."""
        path = f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/logs/{try_number}"
        entries: list[Any] = self.request("GET", path, params={"full_content": "true"}).get("content") or []
        return entries

    def task_log(self, dag_id: str, run_id: str, task_id: str, try_number: int = 1) -> str:
        """The task's log as plain text, one line per entry."""
        return "\n".join(log_line(e) for e in self.task_log_entries(dag_id, run_id, task_id, try_number))

    def jobs(self, job_type: str, *, alive: bool | None = None) -> list[dict[str, Any]]:
        """Jobs of one type (``TriggererJob``, ``SchedulerJob``...), newest first."""
        params: dict[str, Any] = {"job_type": job_type, "order_by": "-id"}
        if alive is not None:
            params["is_alive"] = str(alive).lower()
        jobs: list[dict[str, Any]] = self.request("GET", "/jobs", params=params)["jobs"]
        return jobs


#: Fields of a structured log entry that repeat the task's identity or the source location.
_LOG_NOISE = frozenset(
    {"event", "timestamp", "level", "logger", "ti_id", "task_id", "dag_id", "run_id", "map_index"}
    | {"try_number", "filename", "lineno", "loc", "logger_name"}
)


def log_line(item: Any) -> str:
    """One entry of the log endpoint's ``content`` as text: level, event and its own fields."""
    if not isinstance(item, dict):
        return str(item)
    level = f"[{item['level']}] " if item.get("level") else ""
    extras = " ".join(f"{k}={v}" for k, v in item.items() if k not in _LOG_NOISE)
    return f"{level}{item.get('event', '')}{' ' + extras if extras else ''}"


#: Called on every task state change: (task id, new state, the task-instance payload).
OnChange = Callable[[str, str, Mapping[str, Any]], None]


#: Seconds a run just triggered may still answer 404: seen once on Airflow 3.1 in CI, the first poll
#: right after the trigger call did not find the run yet. Past this, a 404 is an error again.
NEW_RUN_GRACE = 10.0


class RunWatcher:
    """Follows one DAG run by polling: its state, every task's sequence of states, the TI payloads.

    Polling every half second sees even short states: a sensor's DEFERRED phase lasts at least one
    poll interval of its trigger. ``on_change`` is called on every task state change.
    """

    def __init__(self, api: AirflowApi, dag_id: str, run_id: str, on_change: OnChange | None = None) -> None:
        self.api, self.dag_id, self.run_id = api, dag_id, run_id
        self.on_change = on_change
        self.state = "queued"
        self._created_at = time.monotonic()
        self.history: dict[str, list[str]] = {}
        self.task_instances: dict[str, dict[str, Any]] = {}

    @property
    def finished(self) -> bool:
        return self.state in FINISHED_RUN_STATES

    def ti(self, task_id: str) -> dict[str, Any]:
        """The task instance as last polled."""
        return self.task_instances[task_id]

    def states(self, task_id: str) -> list[str]:
        """Every state the task was seen in, in order, without repeats."""
        return self.history.get(task_id, [])

    def poll(self) -> None:
        # The run's state first: if it is finished, the task states read next are final too.
        try:
            state = self.api.dag_run(self.dag_id, self.run_id)["state"]
        except AirflowApiError as error:
            young = time.monotonic() - self._created_at < NEW_RUN_GRACE
            if error.status_code == 404 and young and not self.history:
                return  # not visible yet: still "queued", polled again
            raise
        self.task_instances = self.api.task_instances(self.dag_id, self.run_id)
        for task_id, ti in self.task_instances.items():
            ti_state = ti["state"] or "none"
            seen = self.history.setdefault(task_id, [])
            if not seen or seen[-1] != ti_state:
                seen.append(ti_state)
                if self.on_change is not None:
                    self.on_change(task_id, ti_state, ti)
        self.state = state

    def wait(
        self,
        until: Callable[[RunWatcher], bool] | None = None,
        *,
        timeout: float,
        interval: float = 0.5,
        what: str = "",
    ) -> RunWatcher:
        """Poll until ``until(self)`` holds (by default: until the run finished).

        Raises TimeoutError after ``timeout`` seconds, and RuntimeError if the run finishes first
        while waiting for something else.
        """
        condition = until or (lambda watcher: watcher.finished)
        deadline = time.monotonic() + timeout
        while True:
            self.poll()
            if condition(self):
                return self
            if self.finished:
                raise RuntimeError(
                    f"run {self.run_id} ended {self.state} before {what or 'the condition'}; "
                    f"task states {self.history}"
                )
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"run {self.run_id} of {self.dag_id}: no {what or 'end'} after {timeout:.0f}s; "
                    f"task states {self.history}"
                )
            time.sleep(interval)
