"""Choosing the GPU offer to rent: pure, no I/O, so the rule is tested once and used everywhere.

A user says what they want (an :class:`OfferWish`: a GPU type and count, or a ``cloud_id``, plus
regions, socket, security and a price cap); the hook fetches the offers; :func:`choose_offer`
picks the cheapest that fits. Cheapest means the price a pod would bill (the community price
when an offer has one, else the on-demand price), then the on-demand price, then ``cloud_id`` and
the location, so the same offers always give the same choice.

When nothing fits, "no offer" alone would leave the user guessing which constraint to loosen, so
the :class:`~airflow_provider_prime.exceptions.PrimeNoOfferError` says what was asked, how many
offers were looked at, and lists the nearest few with the reason each was turned down.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from airflow_provider_prime.exceptions import PrimeConfigError, PrimeNoOfferError
from airflow_provider_prime.models import GpuOffer

#: Rejected offers listed in a "no offer" message, nearest first.
NEAREST_LIMIT = 5
#: ``stockStatus`` values (lower case, without spaces, ``_`` or ``-``) that mean "cannot be rented now".
OUT_OF_STOCK = frozenset({"unavailable", "outofstock", "soldout", "none"})

#: How offers are ordered: billed price, on-demand price, cloud_id, then the whole offer as JSON.
_RankKey = tuple[float, float, str, str]


@dataclass(frozen=True)
class OfferWish:
    """What to rent. Every constraint left at its default accepts anything.

    ``regions`` match an offer's region, country or data center, case-insensitively (a bare
    string is one region). ``max_price`` caps the hourly price used for ranking. ``multi_node``
    tells the caller to look in the multi-node availability list; it does not filter here.
    """

    gpu_type: str | None = None
    gpu_count: int | None = None
    cloud_id: str | None = None
    regions: tuple[str, ...] = field(default=())
    socket: str | None = None
    security: str | None = None
    max_price: float | None = None
    multi_node: bool = False

    def __post_init__(self) -> None:
        regions: object = self.regions
        if isinstance(regions, str):
            regions = (regions,)
        if not isinstance(regions, Iterable) or not all(isinstance(r, str) and r.strip() for r in regions):
            raise PrimeConfigError(f"regions must be region names, got {self.regions!r}")
        object.__setattr__(self, "regions", tuple(r.strip() for r in regions))
        if not (self.cloud_id or self.gpu_type):
            raise PrimeConfigError("an offer wish needs a gpu_type or a cloud_id")
        count = self.gpu_count
        if count is not None and (isinstance(count, bool) or not isinstance(count, int) or count < 1):
            raise PrimeConfigError(f"gpu_count must be a positive whole number, got {self.gpu_count!r}")
        price = self.max_price
        if price is not None and (
            isinstance(price, bool) or not isinstance(price, (int, float)) or price <= 0
        ):
            raise PrimeConfigError(f"max_price must be a positive price per hour, got {self.max_price!r}")

    def describe(self) -> str:
        """The wish in words, e.g. ``"H100_80GB x8 in US or EU, socket SXM5, at most $15/h"``."""
        what = self.gpu_type or "any GPU"
        if self.gpu_count is not None:
            what += f" x{self.gpu_count}"
        parts = [what]
        if self.cloud_id:
            parts.append(f"cloud_id {self.cloud_id}")
        if self.regions:
            parts[0] += " in " + " or ".join(self.regions)
        if self.socket:
            parts.append(f"socket {self.socket}")
        if self.security:
            parts.append(f"security {self.security}")
        if self.max_price is not None:
            parts.append(f"at most ${self.max_price:g}/h")
        if self.multi_node:
            parts.append("multi-node")
        return ", ".join(parts)


def describe_offer(offer: GpuOffer) -> str:
    """One offer in a log line: ``"H100_80GB x8 in US (US-CA-2), $19.92/h, runpod cloud_id=abc"``."""
    text = f"{offer.gpu_type} x{offer.gpu_count}"
    place = offer.country or offer.region
    if place and offer.data_center and offer.data_center != place:
        text += f" in {place} ({offer.data_center})"
    elif place or offer.data_center:
        text += f" in {place or offer.data_center}"
    price = offer.prices.price
    text += f", ${price:.2f}/h" if price is not None else ", no price"
    if offer.is_spot:
        text += " spot"
    return f"{text}, {offer.provider or 'unknown provider'} cloud_id={offer.cloud_id}"


def choose_offer(offers: Iterable[GpuOffer], wish: OfferWish) -> GpuOffer:
    """The cheapest offer that fits ``wish``; :class:`PrimeNoOfferError` listing the nearest if none."""
    seen = list(offers)
    judged = [(offer, _rejections(offer, wish)) for offer in seen]
    fitting = [offer for offer, reasons in judged if not reasons]
    if fitting:
        return min(fitting, key=_rank)
    raise PrimeNoOfferError(_no_offer_message(wish, judged))


def _rank(offer: GpuOffer) -> _RankKey:
    # Billed price, then on-demand, then cloud_id; the offer's JSON last, so that even offers alike
    # in all of these (the same cloud_id in two data centers, spot and not) order the same way
    # whatever order the API listed them in.
    inf = float("inf")
    price, on_demand = offer.prices.price, offer.prices.on_demand
    return (
        inf if price is None else price,
        inf if on_demand is None else on_demand,
        offer.cloud_id,
        offer.model_dump_json(),
    )


def _same(left: str | None, right: str) -> bool:
    return left is not None and left.strip().lower() == right.strip().lower()


def _in_stock(offer: GpuOffer) -> bool:
    status = (offer.stock_status or "").lower()
    return "".join(ch for ch in status if ch not in " _-") not in OUT_OF_STOCK


def _rejections(offer: GpuOffer, wish: OfferWish) -> list[str]:
    """Why ``offer`` does not fit ``wish``, one clause per unmet constraint (empty: it fits)."""
    return _identity_rejections(offer, wish) + _fit_rejections(offer, wish)


def _identity_rejections(offer: GpuOffer, wish: OfferWish) -> list[str]:
    """The offer is another thing altogether: a different cloud_id or GPU type."""
    reasons = []
    if wish.cloud_id and offer.cloud_id != wish.cloud_id:
        reasons.append(f"cloud_id is not {wish.cloud_id}")
    if wish.gpu_type and not _same(offer.gpu_type, wish.gpu_type):
        reasons.append(f"GPU type is not {wish.gpu_type}")
    return reasons


def _fit_rejections(offer: GpuOffer, wish: OfferWish) -> list[str]:
    """The right thing, but not as wished: count, place, socket, security, stock or price."""
    reasons = []
    if wish.gpu_count is not None and offer.gpu_count != wish.gpu_count:
        plural = "" if offer.gpu_count == 1 else "s"
        reasons.append(f"{offer.gpu_count} GPU{plural}, not {wish.gpu_count}")
    if wish.regions and not any(
        _same(place, region)
        for region in wish.regions
        for place in (offer.region, offer.country, offer.data_center)
    ):
        reasons.append(f"not in {' or '.join(wish.regions)}")
    if wish.socket and not _same(offer.socket, wish.socket):
        reasons.append(f"socket {offer.socket or 'unknown'}, not {wish.socket}")
    if wish.security and not _same(offer.security, wish.security):
        reasons.append(f"security {offer.security or 'unknown'}, not {wish.security}")
    if not _in_stock(offer):
        reasons.append(f"out of stock ({offer.stock_status})")
    price = offer.prices.price
    if wish.max_price is not None:
        if price is None:
            reasons.append(f"no price to compare with max_price {wish.max_price:g}")
        elif price > wish.max_price:
            reasons.append(f"price above max_price {wish.max_price:g}")
    return reasons


def _no_offer_message(wish: OfferWish, judged: list[tuple[GpuOffer, list[str]]]) -> str:
    head = f"No GPU offer matches {wish.describe()}; looked at {len(judged)} offers"
    if not judged:
        return head + " (the availability list was empty)."

    def nearness(item: tuple[GpuOffer, list[str]]) -> tuple[int, int, _RankKey]:
        # Offers of the wished GPU (or cloud_id) first, then those failing fewer constraints, then cheapest.
        offer, reasons = item
        return (len(_identity_rejections(offer, wish)), len(reasons), _rank(offer))

    nearest = sorted(judged, key=nearness)[:NEAREST_LIMIT]
    lines = [f"  - {describe_offer(offer)}: {'; '.join(reasons)}" for offer, reasons in nearest]
    return "\n".join([head + ". Nearest:", *lines])
