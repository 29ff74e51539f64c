"""The simulator in its own process, steered over HTTP: for benchmarks, end-to-end runs and demos.

A separate process keeps the server's CPU and GIL away from the code under measurement, and lets
real Airflow components (scheduler, triggerer) share one simulator. :class:`SimulatorClient`
speaks the ``/_sim/`` control API of any running simulator; :class:`PrimeSimulatorProcess` starts
one with the CLI and stops it again.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from airflow_provider_prime.testing.faults import Fault
from airflow_provider_prime.testing.scenario import PodScript, Scenario
from airflow_provider_prime.testing.state import DEFAULT_API_KEY, DEFAULT_MAX_POD_IDS

if TYPE_CHECKING:
    import httpx


class SimulatorClient:
    """Steer a running simulator at ``base_url`` through its ``/_sim/`` endpoints."""

    def __init__(self, base_url: str, api_key: str = DEFAULT_API_KEY, *, timeout: float = 10.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key
        self._timeout = timeout
        self._http: httpx.Client | None = None

    def _call(self, method: str, path: str, body: Any = None, **params: Any) -> Any:
        if self._http is None:
            import httpx  # here, not at the top: the CLI imports this package and needs no client

            self._http = httpx.Client(base_url=self.base_url, timeout=self._timeout)
        content = None if body is None else json.dumps(body)
        response = self._http.request(method, f"/_sim/{path}", content=content, params=params or None)
        if response.status_code >= 400:
            raise RuntimeError(
                f"simulator control {method} /_sim/{path}: {response.status_code} {response.text}"
            )
        return response.json()

    def health(self) -> dict[str, Any]:
        result: dict[str, Any] = self._call("GET", "health")
        return result

    def stats_snapshot(self, log: int | None = 0) -> dict[str, Any]:
        """Counters and billing as plain data (``by_status`` keys are strings), last ``log`` entries."""
        result: dict[str, Any] = self._call("GET", "stats", log="all" if log is None else log)
        return result

    def billing(self) -> dict[str, Any]:
        """Pods created, deleted and still billing, and what they cost (``SimulatorState.billing``)."""
        result: dict[str, Any] = self._call("GET", "billing")
        return result

    def reset(self, *, stats: bool = True, faults: bool = True, scenario: bool = False) -> None:
        self._call("POST", "reset", {"stats": stats, "faults": faults, "scenario": scenario})

    def inject(self, *faults: Fault | Mapping[str, Any]) -> list[int]:
        body = [
            fault.model_dump(mode="json", exclude_defaults=True) if isinstance(fault, Fault) else dict(fault)
            for fault in faults
        ]
        ids: list[int] = self._call("POST", "faults", body)["ids"]
        return ids

    def clear_faults(self, fault_id: int | None = None) -> None:
        self._call("DELETE", "faults" if fault_id is None else f"faults/{fault_id}")

    @property
    def faults(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._call("GET", "faults")
        return result

    def add_pod(self, *scripts: PodScript) -> None:
        self._call("POST", "pods", [script.model_dump(mode="json", exclude_unset=True) for script in scripts])

    def remove_pod(self, pod_id: str) -> bool:
        try:
            self._call("DELETE", f"pods/{pod_id}")
        except RuntimeError:
            return False
        return True

    def set_pod_state(self, pod_id: str, status: str | None = None, **fields: Any) -> dict[str, Any]:
        if status is not None:
            fields["status"] = status
        result: dict[str, Any] = self._call("POST", f"pods/{pod_id}/state", fields)
        return result

    def kill_node(self, pod_id: str, rank: int | None = None) -> dict[str, Any]:
        """A node of the pod dies (every node: ``rank`` None) and the pod goes ERROR."""
        result: dict[str, Any] = self._call("POST", f"pods/{pod_id}/die", {"rank": rank})
        return result

    def node_stats(self) -> dict[str, Any] | None:
        """The SSH nodes' counters (``launches``, ``processes_alive``, per pod and node), or None."""
        nodes: dict[str, Any] | None = self.stats_snapshot().get("ssh_nodes")
        return nodes

    def pods(self) -> list[dict[str, Any]]:
        """Every pod as the API reports it now, whichever key may see it."""
        result: list[dict[str, Any]] = self._call("GET", "pods")["data"]
        return result

    def configure(self, **changes: Any) -> dict[str, Any]:
        """``SimulatorState.configure``: ``page_cap``, ``payment_required``, CreateLifecycle fields."""
        result: dict[str, Any] = self._call("POST", "settings", changes)
        return result

    def settings(self) -> dict[str, Any]:
        result: dict[str, Any] = self._call("GET", "settings")
        return result

    def set_scenario(self, scenario: Scenario | Mapping[str, Any] | str) -> dict[str, Any]:
        """Serve another scenario: an object, plain data, or a name / ``bulk:N`` / server-side path."""
        body = scenario.to_dict() if isinstance(scenario, Scenario) else scenario
        result: dict[str, Any] = self._call("POST", "scenario", body)
        return result

    def offers(self) -> list[dict[str, Any]]:
        """Every offer as the availability endpoints list it now (camelCase), current stock included."""
        result: list[dict[str, Any]] = self._call("GET", "offers")["data"]
        return result

    def set_stock(self, cloud_id: str, stock_status: str) -> dict[str, Any]:
        """Pin an offer's stock from now on (e.g. ``"Unavailable"``, then ``"High"``); the offer as listed."""
        result: dict[str, Any] = self._call("POST", f"offers/{cloud_id}", {"stock_status": stock_status})
        return result

    def close(self) -> None:
        if self._http is not None:
            self._http.close()
            self._http = None


class PrimeSimulatorProcess(SimulatorClient):
    """``prime-api-simulator`` in a child process; a context manager that starts and stops it."""

    def __init__(
        self,
        scenario: Scenario | Mapping[str, Any] | str | Path | None = None,
        *,
        api_keys: Sequence[str] = (DEFAULT_API_KEY,),
        read_only_keys: Sequence[str] = (),
        host: str = "127.0.0.1",
        port: int = 0,
        time_scale: float = 1.0,
        max_pod_ids: int | None = DEFAULT_MAX_POD_IDS,
        python: str = sys.executable,
        env: Mapping[str, str] | None = None,
        startup_timeout: float = 30.0,
        prefer_uvloop: bool = True,
        ssh_keys: Sequence[str] = (),
    ) -> None:
        super().__init__("http://unstarted", api_keys[0])
        self._scenario = scenario
        self._api_keys = tuple(api_keys)
        self._read_only_keys = tuple(read_only_keys)
        self._host, self._port = host, port
        self._time_scale, self._max_pod_ids = time_scale, max_pod_ids
        self._python, self._env, self._startup_timeout = python, env, startup_timeout
        self._prefer_uvloop = prefer_uvloop
        self._ssh_keys = tuple(ssh_keys)
        self._ssh_key_file: Path | None = None
        self._process: subprocess.Popen[str] | None = None
        self._scenario_file: Path | None = None

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    def command(self) -> list[str]:
        """The command line that starts the simulator (scenario objects go through a temporary file)."""
        scenario = self._scenario
        if isinstance(scenario, (Scenario, Mapping)):
            data = scenario.to_dict() if isinstance(scenario, Scenario) else dict(scenario)
            if self._scenario_file is None:
                handle, name = tempfile.mkstemp(prefix="prime-scenario-", suffix=".json")
                with os.fdopen(handle, "w", encoding="utf-8") as out:
                    json.dump(data, out)
                self._scenario_file = Path(name)
            scenario = self._scenario_file
        command = [self._python, "-m", "airflow_provider_prime.testing", "--host", self._host]
        command += ["--port", str(self._port), "--time-scale", str(self._time_scale)]
        command += ["--max-pod-ids", str(self._max_pod_ids or 0)]
        command += ["--scenario", str(scenario or "empty")]
        for key in self._api_keys:
            command += ["--api-key", key]
        for key in self._read_only_keys:
            command += ["--read-only-key", key]
        if self._ssh_keys:
            if self._ssh_key_file is None:
                handle, name = tempfile.mkstemp(prefix="prime-ssh-keys-", suffix=".pub")
                with os.fdopen(handle, "w", encoding="utf-8") as out:
                    out.write("".join(f"{key.strip()}\n" for key in self._ssh_keys))
                self._ssh_key_file = Path(name)
            command += ["--ssh-key", str(self._ssh_key_file)]
        return command if self._prefer_uvloop else [*command, "--no-uvloop"]

    def start(self) -> PrimeSimulatorProcess:
        """Start the process and wait for its base URL (RuntimeError if it does not come up)."""
        if self._process is not None:
            return self
        env = dict(os.environ if self._env is None else self._env)
        self._process = subprocess.Popen(self.command(), stdout=subprocess.PIPE, text=True, env=env)
        assert self._process.stdout is not None
        readable, _, _ = select.select([self._process.stdout], [], [], self._startup_timeout)
        line = self._process.stdout.readline().strip() if readable else ""
        if not line.startswith("http://"):
            code = self._process.poll()
            self.stop()
            raise RuntimeError(f"the simulator did not start (exit status {code}, first line {line!r})")
        self.base_url = line
        return self

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM, then SIGKILL after ``timeout``; returns the exit status (None if never started)."""
        self.close()
        process, self._process = self._process, None
        code = None
        if process is not None:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
            if process.stdout is not None:
                process.stdout.close()
            code = process.returncode
        for handed_over in (self._scenario_file, self._ssh_key_file):
            if handed_over is not None:
                handed_over.unlink(missing_ok=True)
        self._scenario_file = self._ssh_key_file = None
        return code

    def __enter__(self) -> PrimeSimulatorProcess:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
