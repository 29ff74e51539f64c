"""Named scenarios that ship with the simulator, and the lookup that turns a name or file into one.

``resolve_scenario`` accepts what the CLI's ``--scenario`` accepts: a built-in name, ``bulk:N``
(``N`` single-node pods ``pod-00000``… ready at 30 s, for benchmarks; ``bulk:N:SECONDS`` to choose
when), or the path of a JSON file.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from airflow_provider_prime.testing.lifecycles import (
    failing_pod,
    fixed_pod,
    install_failure_pod,
    ready_pod,
    stopped_pod,
    vanishing_pod,
)
from airflow_provider_prime.testing.scenario import Phase, PodScript, Scenario
from airflow_provider_prime.testing.shapes import SSH_PORT_MAPPING

#: Extra fields the live API is known to send beyond the documented schema (ports are strings).
LIVE_EXTRA_FIELDS: dict[str, Any] = {"priceHr": 2.49, "primePortMapping": [dict(SSH_PORT_MAPPING[0])]}


def _demo() -> Scenario:
    return Scenario.of(
        [
            ready_pod("pod-demo-single", ready_at=20.0, extra_fields=LIVE_EXTRA_FIELDS),
            ready_pod("pod-demo-cluster", ready_at=35.0, nodes=2, provider_type="dc_roan"),
        ],
        name="demo",
        description="A single-node pod ready at 20 s and a two-node pod ready at 35 s.",
    )


def _broken() -> Scenario:
    return Scenario.of(
        [
            install_failure_pod("pod-broken-install", fail_at=12.0),
            failing_pod("pod-broken-error", fail_at=8.0),
        ],
        name="broken",
        description="A pod whose installation fails at 12 s and a pod that turns ERROR at 8 s.",
    )


def _fast() -> Scenario:
    return Scenario.of(
        [ready_pod("pod-fast-single", ready_at=2.0), ready_pod("pod-fast-cluster", ready_at=3.0, nodes=2)],
        name="fast",
        description="A single-node pod ready at 2 s and a two-node pod ready at 3 s.",
    )


def _ready() -> Scenario:
    return Scenario.of(
        [fixed_pod("pod-ready-single"), fixed_pod("pod-ready-cluster", nodes=4)],
        name="ready",
        description="A single-node and a four-node pod, both ready from the start.",
    )


def _zoo() -> Scenario:
    unknown = Phase(
        status="HIBERNATING", installation_status="QUEUED", extra_fields={"futureField": {"a": 1}}
    )
    return Scenario.of(
        [
            ready_pod("pod-zoo-ready", ready_at=10.0, extra_fields=LIVE_EXTRA_FIELDS),
            ready_pod("pod-zoo-cluster", ready_at=20.0, nodes=3, provider_type="nebius"),
            failing_pod("pod-zoo-error", fail_at=6.0),
            install_failure_pod("pod-zoo-install-failure", fail_at=9.0),
            stopped_pod("pod-zoo-stopped", nodes=2),
            vanishing_pod("pod-zoo-vanishing", vanish_at=5.0),
            fixed_pod("pod-zoo-unknown-state", phase=unknown, provider_type="quantumcloud"),
            fixed_pod("pod-zoo-other-team", api_keys=("other-key",)),
            fixed_pod("pod-zoo-late", visible_from=4.0),
        ],
        name="zoo",
        description="One pod of every kind: ready, multi-node, ERROR, installation failure, STOPPED, "
        "vanishing, unknown enum values, visible to another key only, listed late.",
    )


def _lifecycle() -> Scenario:
    single: dict[str, Any] = {"gpu_name": "H100_80GB", "gpu_count": 1, "socket": "SXM5", "price_hr": 2.49}
    cluster: dict[str, Any] = {"gpu_name": "H100_80GB", "gpu_count": 16, "socket": "SXM5", "price_hr": 39.84}
    ports: dict[str, Any] = {"port_mapping": SSH_PORT_MAPPING}
    return Scenario.of(
        [
            fixed_pod(
                "pod-life-single", name="trainer-single", extra_fields=LIVE_EXTRA_FIELDS, **single, **ports
            ),
            fixed_pod(
                "pod-life-cluster", name="trainer-cluster", nodes=2, provider_type="dc_roan", **cluster
            ),
            ready_pod("pod-life-booting", name="trainer-booting", nodes=2, ready_at=600.0, **cluster),
            fixed_pod("pod-life-old", name="finished-run", deleted_at=0.0, **single),
        ],
        name="lifecycle",
        description="The built-in offers; a ready single-node pod, a ready two-node pod, a two-node pod "
        "booting for 10 minutes, and a terminated pod in the history.",
    )


#: Built-in scenario names and what builds them (fresh objects on every call).
BUILTIN_SCENARIOS: Mapping[str, Callable[[], Scenario]] = {
    "demo": _demo,
    "broken": _broken,
    "fast": _fast,
    "ready": _ready,
    "zoo": _zoo,
    "lifecycle": _lifecycle,
    "empty": lambda: Scenario(name="empty", description="No pods; add them at run time."),
}


def bulk_scenario(count: int, *, ready_at: float = 30.0, prefix: str = "pod-") -> Scenario:
    """``count`` single-node pods named ``{prefix}00000``… that all become ready at ``ready_at``."""
    width = max(5, len(str(count - 1)))
    pods = [ready_pod(f"{prefix}{i:0{width}d}", ready_at=ready_at) for i in range(count)]
    return Scenario.of(pods, name=f"bulk:{count}", description=f"{count} pods ready at {ready_at:g} s.")


def builtin_scenario(name: str) -> Scenario:
    """The built-in scenario called ``name`` (see :data:`BUILTIN_SCENARIOS`)."""
    try:
        return BUILTIN_SCENARIOS[name]()
    except KeyError:
        known = ", ".join(sorted(BUILTIN_SCENARIOS))
        raise ValueError(f"no built-in scenario {name!r}; known: {known}, bulk:N[:SECONDS]") from None


#: Whatever names a scenario: an object, plain data, pod scripts, a built-in name, bulk:N, a file.
ScenarioSpec = Scenario | Mapping[str, Any] | Sequence[PodScript] | str | Path | None


def resolve_scenario(spec: ScenarioSpec) -> Scenario:
    """A scenario from an object, plain data, pod scripts (the built-in offers), a built-in name,
    ``bulk:N[:SECONDS]`` or a JSON file path."""
    if spec is None:
        return builtin_scenario("empty")
    if isinstance(spec, Scenario):
        return spec
    if isinstance(spec, Sequence) and not isinstance(spec, str):
        return Scenario.of(spec)
    if isinstance(spec, Mapping):
        return Scenario.from_dict(spec)
    text = str(spec)
    if text in BUILTIN_SCENARIOS:
        return builtin_scenario(text)
    if text.startswith("bulk:"):
        parts = text.split(":")
        try:
            count = int(parts[1])
            ready_at = float(parts[2]) if len(parts) > 2 else 30.0
        except (IndexError, ValueError):
            raise ValueError(f"expected bulk:COUNT or bulk:COUNT:SECONDS, got {text!r}") from None
        return bulk_scenario(count, ready_at=ready_at)
    path = Path(text)
    if path.suffix == ".json" or path.exists():
        return Scenario.load(path)
    return builtin_scenario(text)
