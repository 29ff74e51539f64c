"""The simulated pod log (``GET /api/v1/pods/{id}/log?tail=N``): lines told by a pod's timeline.

The live API's answer shape is not documented (FACTS.md "Pod log"). The simulator answers
``{"data": "<the lines, joined by newlines>", "status": "ok"}``: the platform's ``GenericResponse``
envelope that its other single-object reads (whoami, the status endpoint) use, around the text a
log endpoint most plausibly returns. The provider reads any of the plausible shapes
(``hooks._payloads.parse_pod_log``); a test that needs another one stages it with a ``json`` or
``raw`` fault on the log's path. What was assumed is written down in ``docs/lifecycle.md``
("The pod's log").

The log is a pure function of the pod's script and its pod time, so two reads at the same moment
agree and a test can predict every line: one line when the machine is asked for, one per change of
status or installation status, a few lines of installer output while installing, and the platform's
failure reason when the installation fails or the pod goes ``ERROR``. ``tail`` keeps the last lines
(the API's default is 100).
"""

from __future__ import annotations

from typing import Any

from airflow_provider_prime.testing.scenario import Phase, PodScript

#: Lines the endpoint returns when the request names no ``tail`` (FACTS.md).
DEFAULT_TAIL = 100
#: Largest ``tail`` accepted before a 422.
MAX_TAIL = 10_000
#: What the setup script prints while the image installs, one line per step (pip-like).
INSTALL_STEPS = (
    "Collecting torch==2.4.0",
    "Collecting transformers>=4.44",
    "Downloading torch-2.4.0-cp311-cp311-manylinux1_x86_64.whl (797.2 MB)",
    "Building wheels for collected packages",
    "Installing collected packages: torch, transformers",
)


def pod_log(script: PodScript, t: float, tail: int = DEFAULT_TAIL) -> list[str]:
    """The last ``tail`` lines the pod's log holds at pod time ``t`` (oldest first)."""
    lines = list(_lines(script, t))
    return lines[-tail:] if tail > 0 else []


def log_body(lines: list[str]) -> dict[str, Any]:
    """The answer's JSON: the lines as one text in the platform's envelope (see the module docs)."""
    return {"data": "\n".join(lines), "status": "ok"}


def _stamp(at: float) -> str:
    return f"[+{at:7.1f}s]"


def _lines(script: PodScript, t: float) -> list[str]:
    shape = f"{script.total_gpus}x {script.gpu_name} ({script.socket}) on {script.provider_type}"
    lines = [f"{_stamp(0.0)} Allocating {shape} for pod {script.display_name}"]
    previous: Phase | None = None
    for phase in script.timeline:
        if phase.at > t:
            break
        lines += _changes(script, previous, phase)
        previous = phase
    deleted = script.deleted_at
    if deleted is not None and deleted <= t:
        lines.append(f"{_stamp(deleted)} Pod deletion requested: stopping the machine")
        ended = script.terminated_at
        if ended is not None and ended <= t:
            lines.append(f"{_stamp(ended)} Pod terminated")
    return lines


def _changes(script: PodScript, before: Phase | None, phase: Phase) -> list[str]:
    """The lines a phase adds to the log: what changed since ``before``."""
    at, out = _stamp(phase.at), []
    status, install = phase.status, phase.installation_status
    if before is None or before.status != status:
        out.append(f"{at} Pod status {status}: {_STATUS_LINES.get(status, 'status changed')}")
        if status == "PENDING":
            out.append(f"{at} Pulling image {script.image}")
    if install != (before.installation_status if before else None) and install:
        out.append(f"{at} Installation {install}")
        if install == "ACTIVE":
            out += [f"{at} {step}" for step in INSTALL_STEPS]
    failure = (phase.installation_failure or "").strip()
    if failure and (before is None or (before.installation_failure or "").strip() != failure):
        out.append(f"{at} ERROR: {failure}")
    elif status == "ERROR" and (before is None or before.status != "ERROR") and not failure:
        out.append(f"{at} ERROR: the machine stopped responding; the pod cannot recover")
    return out


_STATUS_LINES = {
    "PROVISIONING": "waiting for the provider to hand over the machine",
    "PENDING": "machine allocated, booting",
    "ACTIVE": "machine up, network ready",
    "ERROR": "the pod failed",
    "STOPPED": "the machine was stopped",
    "DELETING": "stopping the machine",
    "TERMINATED": "machine released",
}
