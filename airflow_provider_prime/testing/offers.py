"""GPU offers as a scenario declares them, and the availability answers built from them.

An :class:`Offer` is what ``GET /api/v1/availability/gpus`` (single node) or
``/availability/multi-node`` (``nodes`` > 1) lists: every required key of the API's ``GpuOffer``
is rendered, null where the scenario leaves it empty. The wire shape is written from the API
facts (``LIFECYCLE.md``), never from the provider's own models, so the simulator stays an
independent check of the client code.

Capacity comes and goes: an offer's ``stock_schedule`` lists ``(after_seconds, stock_status)``
changes on the simulator's clock (pod seconds since the scenario was loaded, so time-scaled and
hand-clocked runs work), and the control API pins a stock on command
(``POST /_sim/offers/{cloud_id}``). A sold-out offer is still listed, with its status, and a
create on it answers 400 "out of stock".
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

#: ``stockStatus`` of an offer that can be rented; anything else in :data:`SOLD_OUT` cannot.
IN_STOCK = "High"
#: ``stockStatus`` values for which a create answers 400 "out of stock".
SOLD_OUT = frozenset({"Unavailable", "Out of stock", "SOLD_OUT"})


class Resource(BaseModel):
    """A sizeable part of an offer (disk GB, vCPUs, memory GB): the range a create may ask for."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    min_count: int = Field(ge=0)
    default_count: int = Field(ge=0)
    max_count: int = Field(ge=0)
    price_per_unit: float | None = None
    step: int = 1

    def render(self) -> dict[str, Any]:
        return {
            "minCount": self.min_count,
            "defaultCount": self.default_count,
            "maxCount": self.max_count,
            "pricePerUnit": self.price_per_unit,
            "step": self.step,
            "defaultIncludedInPrice": True,
            "additionalInfo": None,
        }


class Offer(BaseModel):
    """One rentable configuration; ``nodes`` > 1 makes it a multi-node (cluster) offer."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    cloud_id: str = Field(min_length=1)
    gpu_type: str = Field(min_length=1)
    gpu_count: int = Field(ge=1)
    nodes: int = Field(default=1, ge=1, le=64)
    socket: str = "PCIe"
    provider: str = "runpod"
    country: str | None = "US"
    region: str | None = "united_states"
    data_center: str | None = None
    gpu_memory: int = 80
    interconnect: int | None = None
    interconnect_type: str | None = None
    security: str = "secure_cloud"
    stock_status: str = IN_STOCK
    on_demand: float | None = 2.0
    community_price: float | None = None
    currency: str = "USD"
    is_spot: bool = False
    images: tuple[str, ...] = ("ubuntu_22_cuda_12", "cuda_12_4_pytorch_2_5")
    disk: Resource = Resource(min_count=20, default_count=100, max_count=1000)
    vcpu: Resource = Resource(min_count=4, default_count=16, max_count=32)
    memory: Resource = Resource(min_count=16, default_count=128, max_count=256)
    provisioning_time: int | None = None
    #: Stock changes on the simulator's clock: ``(after_seconds, stock_status)``, from the load of
    #: the scenario; before the first one the offer has ``stock_status``. Not part of the wire shape.
    stock_schedule: tuple[tuple[float, str], ...] = ()

    @field_validator("stock_schedule")
    @classmethod
    def _schedule_in_order(cls, schedule: tuple[tuple[float, str], ...]) -> tuple[tuple[float, str], ...]:
        if any(after < 0 for after, _ in schedule):
            raise ValueError("stock_schedule times must not be negative")
        if any(not status for _, status in schedule):
            raise ValueError("stock_schedule statuses must not be empty")
        return tuple(sorted(schedule, key=lambda change: change[0]))

    def stock_at(self, seconds: float) -> str:
        """The stock status ``seconds`` (pod time) after the scenario was loaded, by the schedule."""
        status = self.stock_status
        for after, scheduled in self.stock_schedule:
            if after > seconds:
                break
            status = scheduled
        return status

    def with_stock(self, status: str) -> Offer:
        """This offer as listed with ``status`` (schedule dropped: the status is a fact now)."""
        return self.model_copy(update={"stock_status": status, "stock_schedule": ()})

    @property
    def multi_node(self) -> bool:
        return self.nodes > 1

    @property
    def sold_out(self) -> bool:
        return self.stock_status in SOLD_OUT

    @property
    def price_hr(self) -> float:
        """What a pod of this offer bills per hour: the community price, else the on-demand one."""
        price = self.community_price if self.community_price is not None else self.on_demand
        return float(price or 0.0)

    def render(self) -> dict[str, Any]:
        """The ``GpuOffer`` object of the availability endpoints (camelCase, required keys present)."""
        return {
            "cloudId": self.cloud_id,
            "gpuType": self.gpu_type,
            "socket": self.socket,
            "provider": self.provider,
            "dataCenter": self.data_center,
            "country": self.country,
            "region": self.region,
            "gpuCount": self.gpu_count,
            "gpuMemory": self.gpu_memory,
            "disk": self.disk.render(),
            "vcpu": self.vcpu.render(),
            "memory": self.memory.render(),
            "internetSpeed": None,
            "interconnect": self.interconnect,
            "interconnectType": self.interconnect_type,
            "provisioningTime": self.provisioning_time,
            "stockStatus": self.stock_status,
            "security": self.security,
            "prices": {
                "onDemand": self.on_demand,
                "communityPrice": self.community_price,
                "isVariable": False,
                "currency": self.currency,
            },
            "images": list(self.images),
            "isSpot": self.is_spot,
            "prepaidTime": None,
        }


def default_offers() -> tuple[Offer, ...]:
    """Built-in offers: one H100, one A100 (community-cheap), 8 H100, a 2-node cluster, a sold-out
    B200, and one L40S both on demand (Germany) and spot (cheaper, US)."""
    return (
        Offer(
            cloud_id="sim-h100-80gb-1x",
            gpu_type="H100_80GB",
            gpu_count=1,
            socket="SXM5",
            provider="runpod",
            data_center="US-CA-1",
            on_demand=2.49,
        ),
        Offer(
            cloud_id="sim-a100-80gb-1x-community",
            gpu_type="A100_80GB",
            gpu_count=1,
            socket="PCIe",
            provider="tensordock",
            country="CA",
            region="canada",
            security="community_cloud",
            on_demand=1.59,
            community_price=0.89,
            stock_status="Medium",
        ),
        Offer(
            cloud_id="sim-h100-80gb-8x",
            gpu_type="H100_80GB",
            gpu_count=8,
            socket="SXM5",
            provider="lambdalabs",
            data_center="US-TX-3",
            interconnect=900,
            interconnect_type="NVLink",
            on_demand=19.92,
            vcpu=Resource(min_count=104, default_count=208, max_count=208),
            memory=Resource(min_count=900, default_count=1800, max_count=1800),
        ),
        Offer(
            cloud_id="sim-h100-80gb-16x-cluster",
            gpu_type="H100_80GB",
            gpu_count=16,
            nodes=2,
            socket="SXM5",
            provider="dc_roan",
            country="DE",
            region="europe",
            data_center="EU-DE-1",
            interconnect=3200,
            interconnect_type="InfiniBand",
            on_demand=39.84,
            stock_status="Low",
            vcpu=Resource(min_count=416, default_count=416, max_count=416),
            memory=Resource(min_count=3600, default_count=3600, max_count=3600),
        ),
        Offer(
            cloud_id="sim-b200-8x-sold-out",
            gpu_type="B200_180GB",
            gpu_count=8,
            socket="SXM6",
            provider="nebius",
            gpu_memory=180,
            on_demand=44.0,
            stock_status="Unavailable",
        ),
        Offer(
            cloud_id="sim-l40s-1x",
            gpu_type="L40S_48GB",
            gpu_count=1,
            provider="datacrunch",
            country="DE",
            region="europe",
            data_center="EU-DE-2",
            gpu_memory=48,
            on_demand=0.99,
        ),
        Offer(
            cloud_id="sim-l40s-1x-spot",
            gpu_type="L40S_48GB",
            gpu_count=1,
            provider="runpod",
            data_center="US-GA-1",
            gpu_memory=48,
            on_demand=0.49,
            stock_status="Medium",
            is_spot=True,
        ),
    )


def matching(
    offers: Iterable[Offer],
    *,
    multi_node: bool,
    gpu_type: str | None = None,
    gpu_count: int | None = None,
    regions: Sequence[str] = (),
) -> list[Offer]:
    """The offers one availability endpoint lists for these filters, in scenario order."""
    return [
        offer
        for offer in offers
        if offer.multi_node == multi_node
        and (gpu_type is None or offer.gpu_type == gpu_type)
        and (gpu_count is None or offer.gpu_count == gpu_count)
        and (not regions or offer.region in regions)
    ]


def gpu_summary(offers: Iterable[Offer]) -> dict[str, dict[str, dict[str, dict[str, float | None]]]]:
    """``GET /availability/gpu-summary``: per GPU type and count, the prices per region and cheapest."""
    summary: dict[str, dict[str, dict[str, dict[str, float | None]]]] = {}
    for offer in offers:
        if offer.sold_out:
            continue
        prices = {"onDemand": offer.on_demand, "communityPrice": offer.community_price, "spotPrice": None}
        by_place = summary.setdefault(offer.gpu_type, {}).setdefault(str(offer.gpu_count), {})
        by_place.setdefault(offer.region or "unknown", prices)
        cheapest = by_place.get("cheapest")
        if cheapest is None or _price(prices) < _price(cheapest):
            by_place["cheapest"] = prices
    return summary


def _price(prices: dict[str, float | None]) -> float:
    value = prices["communityPrice"] if prices["communityPrice"] is not None else prices["onDemand"]
    return float("inf") if value is None else value
