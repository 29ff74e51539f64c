"""GPU offers as the API sends them, for the tests of the models, the offer rule and the hook."""

from __future__ import annotations

from typing import Any

from airflow_provider_prime.models import GpuOffer


def offer_payload(**changes: Any) -> dict[str, Any]:
    """An availability item with every key LIFECYCLE.md calls required (camelCase, as on the wire)."""
    payload: dict[str, Any] = {
        "cloudId": "h100-sxm5-8",
        "gpuType": "H100_80GB",
        "socket": "SXM5",
        "provider": "runpod",
        "dataCenter": "US-CA-2",
        "country": "US",
        "region": "united_states",
        "gpuCount": 8,
        "gpuMemory": 80,
        "disk": {"minCount": 50, "defaultCount": 100, "maxCount": 1000, "step": 10, "pricePerUnit": 0.0001},
        "vcpu": {"minCount": 8, "defaultCount": 104, "maxCount": 208, "step": 8},
        "memory": {"minCount": 64, "defaultCount": 752, "maxCount": 1504, "step": None},
        "interconnect": 3200,
        "stockStatus": "Available",
        "security": "secure_cloud",
        "prices": {"onDemand": 21.52, "communityPrice": 19.92, "isVariable": False, "currency": "USD"},
        "images": ["ubuntu_22_cuda_12", "cuda_12_4_pytorch_2_5"],
        "isSpot": False,
    }
    payload.update(changes)
    return payload


def make_offer(**changes: Any) -> GpuOffer:
    """A parsed offer; ``changes`` use the wire names (``gpuCount``, ``prices``...)."""
    return GpuOffer.model_validate(offer_payload(**changes))
