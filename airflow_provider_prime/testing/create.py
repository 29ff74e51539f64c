"""``POST /api/v1/pods/``: the checks a create body goes through, as the simulator answers them.

The body is the one the official CLI sends (``LIFECYCLE.md``): ``{"pod": {...}, "provider":
{...}, "team": ...}``. Problems come back FastAPI-style, each naming its field by ``loc``
(``["body", "pod", "cloudId"]``), so a client can show which field was wrong. Required:
``pod`` with ``cloudId``, ``gpuType``, ``socket`` and ``gpuCount``, and ``provider`` (an object,
possibly empty); everything else may be null or absent. The offer named by ``cloudId`` must
exist, and what the body asks for must fit it (GPU type and count, socket, image, disk / vCPU /
memory within the offer's range).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from airflow_provider_prime.testing.offers import Offer, Resource

Problem = tuple[tuple[str, ...], str]

_REQUIRED_POD_FIELDS = {"cloudId": str, "gpuType": str, "socket": str, "gpuCount": int}
_SIZES = (("diskSize", "disk"), ("vcpus", "vcpu"), ("memory", "memory"))


@dataclass(frozen=True)
class CreateRequest:
    """A create body that passed every check: the offer and what the pod gets."""

    offer: Offer
    name: str | None
    image: str
    team_id: str | None
    env_vars: tuple[tuple[str, str], ...]


def check(body: Any, offers: Sequence[Offer]) -> CreateRequest | list[Problem]:
    """The request a body stands for, or the problems with it (each naming its field)."""
    if not isinstance(body, Mapping):
        return [(("body",), "the body must be a JSON object with a 'pod' and a 'provider'")]
    problems: list[Problem] = []
    pod = body.get("pod")
    if not isinstance(pod, Mapping):
        problems.append((("body", "pod"), "Field required" if pod is None else "must be an object"))
        pod = {}
    if not isinstance(body.get("provider"), Mapping):
        problems.append((("body", "provider"), "Field required"))
    for field, kind in _REQUIRED_POD_FIELDS.items():
        value = pod.get(field)
        if value is None:
            if pod or "pod" in body:
                problems.append((("body", "pod", field), "Field required"))
        elif not isinstance(value, kind) or isinstance(value, bool):
            problems.append((("body", "pod", field), f"must be a {kind.__name__}"))
    for field in ("name", "image", *(size for size, _ in _SIZES)):
        problems += _optional_type(pod, field)
    if problems:
        return problems
    cloud_id = pod["cloudId"]
    offer = next((offer for offer in offers if offer.cloud_id == cloud_id), None)
    if offer is None:
        return [(("body", "pod", "cloudId"), f"no offer with cloudId {cloud_id!r}")]
    problems = _fits(pod, offer)
    if problems:
        return problems
    team = body.get("team")
    env_vars = pod.get("envVars") or []
    return CreateRequest(
        offer=offer,
        name=pod.get("name"),
        image=pod.get("image") or offer.images[0],
        team_id=team.get("teamId") if isinstance(team, Mapping) else None,
        env_vars=tuple(
            (str(var.get("key")), str(var.get("value"))) for var in env_vars if isinstance(var, Mapping)
        ),
    )


def _optional_type(pod: Mapping[str, Any], field: str) -> list[Problem]:
    value = pod.get(field)
    kind = str if field in ("name", "image") else int
    if value is None or (isinstance(value, kind) and not isinstance(value, bool)):
        return []
    return [(("body", "pod", field), f"must be a {kind.__name__} or null")]


def _fits(pod: Mapping[str, Any], offer: Offer) -> list[Problem]:
    problems: list[Problem] = []
    if pod["gpuType"] != offer.gpu_type:
        problems.append(
            (("body", "pod", "gpuType"), f"offer {offer.cloud_id} has {offer.gpu_type}, not {pod['gpuType']}")
        )
    if pod["gpuCount"] != offer.gpu_count:
        problems.append(
            (
                ("body", "pod", "gpuCount"),
                f"offer {offer.cloud_id} has {offer.gpu_count} GPUs, not {pod['gpuCount']}",
            )
        )
    if pod["socket"] != offer.socket:
        problems.append(
            (
                ("body", "pod", "socket"),
                f"offer {offer.cloud_id} has socket {offer.socket}, not {pod['socket']}",
            )
        )
    image = pod.get("image")
    if image is not None and image not in offer.images:
        known = ", ".join(offer.images)
        problems.append(
            (("body", "pod", "image"), f"image {image!r} is not offered by {offer.cloud_id} ({known})")
        )
    for field, part in _SIZES:
        value = pod.get(field)
        resource: Resource = getattr(offer, part)
        if value is not None and not resource.min_count <= value <= resource.max_count:
            problems.append(
                (
                    ("body", "pod", field),
                    f"must be between {resource.min_count} and {resource.max_count}, not {value}",
                )
            )
    return problems
