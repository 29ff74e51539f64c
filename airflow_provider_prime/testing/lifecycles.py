"""Builders for the pod lifecycles tests and demos need most, each ready (or broken) at a chosen time.

Every builder returns a :class:`PodScript` whose timeline is ordinary data, so a test can inspect
it, dump it to JSON, or tweak it with ``model_copy``. Times are pod seconds (see the simulator's
``time_scale`` to run them faster). Keyword options common to all builders (``provider_type``,
``api_keys``, ``visible_from``, ``vanish_at``, ``node_ips``, ``extra_fields``) go straight to
:class:`PodScript`.
"""

from __future__ import annotations

from typing import Any

from airflow_provider_prime.testing.scenario import CreateLifecycle, Phase, PodScript

#: The ``installationFailure`` text of :func:`install_failure_pod` unless one is given.
DEFAULT_INSTALLATION_FAILURE = (
    "Installation failed: the image's setup script exited with code 1 "
    "(pip could not build flash-attn: CUDA toolkit not found)"
)

# The API's enum values, spelled out here: the simulator does not borrow the provider's models.
_PROVISIONING = "PROVISIONING"
_PENDING = "PENDING"
_ACTIVE = "ACTIVE"
_ERROR = "ERROR"
_STOPPED = "STOPPED"
_INSTALL_PENDING = "PENDING"
_INSTALL_ACTIVE = "ACTIVE"
_INSTALL_FINISHED = "FINISHED"
_INSTALL_ERROR = "ERROR"


def _booting(at: float, span: float, nodes: int) -> dict[float, Phase]:
    """PROVISIONING at ``at``, PENDING after a fifth of ``span``, ACTIVE (IPs, no SSH) after two fifths."""
    return {
        at: Phase(at=at, status=_PROVISIONING, installation_status=_INSTALL_PENDING),
        at + 0.2 * span: Phase(at=at + 0.2 * span, status=_PENDING, installation_status=_INSTALL_PENDING),
        at + 0.4 * span: Phase(
            at=at + 0.4 * span,
            status=_ACTIVE,
            installation_status=_INSTALL_PENDING,
            installation_progress=0,
            ip_nodes=nodes,
            ssh_nodes=0,
        ),
    }


def _installing(start: float, end: float, nodes: int, ssh_times: list[float], until: float) -> list[Phase]:
    """ACTIVE with installation ACTIVE from ``start``, progress rising 0 → 100 at ``end``.

    One phase per breakpoint before ``until`` (SSH appearing on node after node), each carrying the
    progress of its instant so the linear rise between phases stays continuous.
    """
    points = sorted({start, *(t for t in ssh_times if start <= t < until)})
    phases = []
    for t in points:
        if t >= until:
            break
        progress = int(100 * (t - start) / (end - start)) if end > start else 100
        phases.append(
            Phase(
                at=t,
                status=_ACTIVE,
                installation_status=_INSTALL_ACTIVE,
                installation_progress=min(progress, 99),
                ip_nodes=nodes,
                ssh_nodes=sum(ssh_t <= t for ssh_t in ssh_times),
            )
        )
    return phases


def _ssh_times(ready_at: float, nodes: int) -> list[float]:
    """SSH comes up after ACTIVE, node by node, the last one before installation finishes."""
    return [ready_at * (0.6 + 0.3 * node / nodes) for node in range(nodes)]


def ready_pod(pod_id: str, *, ready_at: float = 15.0, nodes: int = 1, **options: Any) -> PodScript:
    """A pod that becomes fully ready (ACTIVE, installation FINISHED, SSH on every node) at ``ready_at``.

    Before that it goes PROVISIONING (0) → PENDING (20 %) → ACTIVE with installation PENDING and IPs
    but no SSH (40 %) → installation ACTIVE with progress rising (50 %) while SSH appears node by
    node (60 to 90 %). Not ready one instant earlier, ready from ``ready_at`` on.
    """
    if ready_at <= 0:
        return fixed_pod(pod_id, nodes=nodes, **options)
    phases = dict(_booting(0.0, ready_at, nodes))
    for phase in _installing(0.5 * ready_at, ready_at, nodes, _ssh_times(ready_at, nodes), ready_at):
        phases[phase.at] = phase
    phases[ready_at] = _ready_phase(ready_at, nodes)
    return PodScript(pod_id=pod_id, nodes=nodes, timeline=tuple(phases.values()), **options)


def fixed_pod(
    pod_id: str,
    status: str = _ACTIVE,
    *,
    nodes: int = 1,
    phase: Phase | None = None,
    **options: Any,
) -> PodScript:
    """A pod that never changes: by default ready (ACTIVE, FINISHED, SSH everywhere) from the start.

    Any other ``status`` gives a pod stuck in it with no installation, IP or SSH; pass ``phase``
    for full control.
    """
    if phase is None:
        phase = _ready_phase(0.0, nodes) if status == _ACTIVE else Phase(status=status)
    return PodScript(pod_id=pod_id, nodes=nodes, timeline=(phase,), **options)


def failing_pod(pod_id: str, *, fail_at: float = 8.0, nodes: int = 1, **options: Any) -> PodScript:
    """A pod that never becomes ACTIVE: PROVISIONING → PENDING → ERROR at ``fail_at``."""
    timeline = (
        Phase(at=0.0, status=_PROVISIONING, installation_status=_INSTALL_PENDING),
        Phase(at=0.5 * fail_at, status=_PENDING, installation_status=_INSTALL_PENDING),
        Phase(at=fail_at, status=_ERROR),
    )
    return PodScript(pod_id=pod_id, nodes=nodes, timeline=timeline, **options)


def install_failure_pod(
    pod_id: str,
    *,
    fail_at: float = 12.0,
    failure: str = DEFAULT_INSTALLATION_FAILURE,
    nodes: int = 1,
    **options: Any,
) -> PodScript:
    """A pod that boots and starts installing, then its installation fails at ``fail_at``.

    The pod stays ACTIVE (as on the platform); installation turns ERROR with ``failure`` as the
    ``installationFailure`` text and the progress frozen where it stopped.
    """
    phases = dict(_booting(0.0, fail_at, nodes))
    ssh_times = _ssh_times(fail_at, nodes)
    installing = _installing(0.5 * fail_at, 1.5 * fail_at, nodes, ssh_times, fail_at)
    for phase in installing:
        phases[phase.at] = phase
    stuck_at = int(100 * (0.5 * fail_at) / fail_at)
    phases[fail_at] = Phase(
        at=fail_at,
        status=_ACTIVE,
        installation_status=_INSTALL_ERROR,
        installation_progress=stuck_at,
        installation_failure=failure,
        ip_nodes=nodes,
        ssh_nodes=sum(t <= fail_at for t in ssh_times),
    )
    return PodScript(pod_id=pod_id, nodes=nodes, timeline=tuple(phases.values()), **options)


def stopped_pod(pod_id: str, *, stop_at: float = 0.0, nodes: int = 1, **options: Any) -> PodScript:
    """A pod that is (or, from ``stop_at``, becomes) STOPPED, reporting ``[null]`` per node for SSH/IP."""
    stopped = Phase(
        at=stop_at,
        status=_STOPPED,
        installation_status=_INSTALL_FINISHED,
        installation_progress=100,
        ssh_connection=[None] * nodes,
        ip=[None] * nodes,
    )
    timeline = (stopped,) if stop_at <= 0 else (_ready_phase(0.0, nodes), stopped)
    return PodScript(pod_id=pod_id, nodes=nodes, timeline=timeline, **options)


def vanishing_pod(pod_id: str, *, vanish_at: float = 5.0, **options: Any) -> PodScript:
    """A pod seen PROVISIONING that disappears from every answer at ``vanish_at`` (deleted elsewhere)."""
    timeline = (Phase(at=0.0, status=_PROVISIONING, installation_status=_INSTALL_PENDING),)
    return PodScript(pod_id=pod_id, timeline=timeline, vanish_at=vanish_at, **options)


def _ready_phase(at: float, nodes: int) -> Phase:
    return Phase(
        at=at,
        status=_ACTIVE,
        installation_status=_INSTALL_FINISHED,
        installation_progress=100,
        ip_nodes=nodes,
        ssh_nodes=nodes,
    )


def provisioned_pod(
    pod_id: str, lifecycle: CreateLifecycle | None = None, *, nodes: int = 1, **options: Any
) -> PodScript:
    """A pod that unfolds as ``lifecycle`` says (what ``POST /pods/`` creates), times from now.

    PROVISIONING with installation PENDING, then ACTIVE with every IP at ``active_after``, the
    installation progress rising to ``installed_after`` where it is FINISHED (or ERROR with the
    lifecycle's ``installation_failure``), and each node's SSH at its ``ssh_after`` time.
    """
    lifecycle = lifecycle or CreateLifecycle()
    active, installed = lifecycle.active_after, lifecycle.installed_after
    ssh_times = [lifecycle.ssh_time(node) for node in range(nodes)]
    failure = lifecycle.installation_failure

    def progress(t: float) -> int:
        if installed <= active or t >= installed:
            return 100
        return int(100 * (t - active) / (installed - active))

    def phase(t: float) -> Phase:
        if t < installed:
            state, done = _INSTALL_ACTIVE, min(progress(t), 99)
        elif failure is not None:
            state, done = _INSTALL_ERROR, 99  # frozen where it stopped
        else:
            state, done = _INSTALL_FINISHED, 100
        return Phase(
            at=t,
            status=_ACTIVE,
            installation_status=state,
            installation_progress=done,
            installation_failure=failure if state == _INSTALL_ERROR else None,
            ip_nodes=nodes,
            ssh_nodes=sum(ssh_t <= t for ssh_t in ssh_times),
        )

    breakpoints = sorted({active, installed, *ssh_times})
    phases = [phase(t) for t in breakpoints]
    if active > 0.0:
        phases.insert(0, Phase(at=0.0, status=_PROVISIONING, installation_status=_INSTALL_PENDING))
    options.setdefault("listed_from", lifecycle.list_lag)
    return PodScript(pod_id=pod_id, nodes=nodes, timeline=tuple(phases), **options)
