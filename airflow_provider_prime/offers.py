"""Choosing the GPU offer to rent: pure, no I/O, so the rule is tested once and used everywhere.

A user says what they want (an :class:`OfferWish`: one GPU type or several in order of preference
and a count, or a ``cloud_id``, plus regions (also in order of preference), a spot preference,
socket, security and a price cap); the hook fetches the offers; :func:`choose_offer` picks one and
says why (a :class:`Choice`).

**The choice rule**, among the offers that fit every constraint:

1. the earliest GPU type of ``gpu_type`` (a fallback type is taken only when no earlier one fits);
2. then the earliest region of ``regions`` (an offer is in a region when its region, country or
   data center has that name);
3. then the spot preference: ``spot="prefer"`` puts spot offers first; ``"never"`` (the default)
   and ``"only"`` are filters, not orderings;
4. then the price a pod would bill (the community price when an offer has one, else the on-demand
   price), then the on-demand price, then ``cloud_id`` and the whole offer, so that the same
   offers always give the same choice.

``spot`` defaults to ``"never"``: a spot pod can be taken back at any moment, and a preempted
training is lost work (and money) unless it checkpoints and resumes; renting spot must be asked for.

When nothing fits, "no offer" alone would leave the user guessing which constraint to loosen, so
the :class:`~airflow_provider_prime.exceptions.PrimeNoOfferError` says what was asked, how many
offers were looked at, and lists the nearest few with the reason each was turned down.

:meth:`OfferWish.availability_query` is the one availability request that can hold every fitting
offer: the API filters by one GPU type, so a wish of several types asks without a type filter (one
request, all pages) and filters here, rather than once per type.
"""

from __future__ import annotations

import ast
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from airflow_provider_prime.exceptions import PrimeConfigError, PrimeNoOfferError
from airflow_provider_prime.models import GpuOffer
from airflow_provider_prime.triggers.availability import AvailabilityQuery

#: Rejected offers listed in a "no offer" message, nearest first.
NEAREST_LIMIT = 5
#: ``stockStatus`` values (lower case, without spaces, ``_`` or ``-``) that mean "cannot be rented now".
OUT_OF_STOCK = frozenset({"unavailable", "outofstock", "soldout", "none"})
#: What ``spot`` accepts: never rent a spot offer (default), rank spot offers first, only spot offers.
SpotPreference = Literal["never", "prefer", "only"]
SPOT_PREFERENCES: tuple[str, ...] = ("never", "prefer", "only")

#: How offers are ordered: billed price, on-demand price, cloud_id, then the whole offer as JSON.
_RankKey = tuple[float, float, str, str]


def names_in_order(value: object, argument: str) -> tuple[str, ...]:
    """``value`` as names in order of preference: a name, a list of names, or such a list as text.

    A templated argument renders to text: ``'["H100_80GB", "A100_80GB"]'`` (JSON, e.g. from
    ``params`` with ``tojson``) or ``"['H100_80GB', 'A100_80GB']"`` (what Jinja makes of a Python
    list) is read as that list, never as one oddly named GPU type. Any other text starting with
    ``[`` is refused. ``None`` and ``""`` mean no constraint.
    """
    if value is None:
        return ()
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return ()
        if not text.startswith("["):
            return (text,)
        value = _list_from_text(text, argument)
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise PrimeConfigError(f"{argument} must be a name or a list of names, got {value!r}")
    names = list(value)
    if not all(isinstance(name, str) and name.strip() for name in names):
        raise PrimeConfigError(f"{argument} must be non-empty names, got {names!r}")
    unique = tuple(dict.fromkeys(name.strip() for name in names))
    return unique


def _list_from_text(text: str, argument: str) -> object:
    for parse in (json.loads, ast.literal_eval):
        try:
            parsed = parse(text)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            continue
        if isinstance(parsed, list):
            return parsed
    raise PrimeConfigError(
        f"{argument} is the text {text!r}, which looks like a list but is neither JSON nor a Python list "
        "of names. Pass a list, or render it with | tojson."
    )


@dataclass(frozen=True)
class OfferWish:
    """What to rent. Every constraint left at its default accepts anything.

    ``gpu_type`` is one GPU type or several in order of preference (a list of one is that type;
    :attr:`gpu_types` is always the tuple). ``regions`` match an offer's region, country or data
    center, case-insensitively, in order of preference (a bare string is one region). ``spot``:
    ``"never"`` (default), ``"prefer"`` or ``"only"``. ``max_price`` caps the hourly price used
    for ranking. ``multi_node`` tells the caller to look in the multi-node availability list; it
    does not filter here.
    """

    gpu_type: str | tuple[str, ...] | None = None
    gpu_count: int | None = None
    cloud_id: str | None = None
    regions: tuple[str, ...] = field(default=())
    socket: str | None = None
    security: str | None = None
    max_price: float | None = None
    multi_node: bool = False
    spot: SpotPreference = "never"

    def __post_init__(self) -> None:
        regions: object = self.regions
        if isinstance(regions, str):
            regions = (regions,)
        if not isinstance(regions, Iterable) or not all(isinstance(r, str) and r.strip() for r in regions):
            raise PrimeConfigError(f"regions must be region names, got {self.regions!r}")
        object.__setattr__(self, "regions", tuple(dict.fromkeys(r.strip() for r in regions)))
        types = names_in_order(self.gpu_type, "gpu_type")
        object.__setattr__(self, "gpu_type", None if not types else types[0] if len(types) == 1 else types)
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
        if self.spot not in SPOT_PREFERENCES:
            raise PrimeConfigError(f"spot must be one of {', '.join(SPOT_PREFERENCES)}, not {self.spot!r}")

    @property
    def gpu_types(self) -> tuple[str, ...]:
        """The GPU types in order of preference (empty: any, for a wish by ``cloud_id``)."""
        if self.gpu_type is None:
            return ()
        return (self.gpu_type,) if isinstance(self.gpu_type, str) else tuple(self.gpu_type)

    def availability_query(self) -> AvailabilityQuery:
        """The one availability request whose answer holds every offer that can fit this wish.

        The API filters by a single GPU type: one type is sent as the filter; several are not (one
        request for all types, filtered here) rather than one request per type. The count,
        regions and list (single or multi-node) are the API's own filters, as before.
        """
        types = self.gpu_types
        return AvailabilityQuery(
            gpu_type=types[0] if len(types) == 1 else None,
            gpu_count=self.gpu_count,
            regions=self.regions,
            multi_node=self.multi_node,
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON data (trigger kwargs) that :meth:`from_dict` turns back into an equal wish."""
        return {
            "gpu_type": self.gpu_type if not isinstance(self.gpu_type, tuple) else list(self.gpu_type),
            "gpu_count": self.gpu_count,
            "cloud_id": self.cloud_id,
            "regions": list(self.regions),
            "socket": self.socket,
            "security": self.security,
            "max_price": self.max_price,
            "multi_node": self.multi_node,
            "spot": self.spot,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> OfferWish:
        known = {key: value for key, value in data.items() if key in cls.__dataclass_fields__}
        if isinstance(known.get("regions"), list):
            known["regions"] = tuple(known["regions"])
        return cls(**known)

    def describe(self) -> str:
        """The wish in words, e.g. ``"H100_80GB x8 in US or EU, socket SXM5, at most $15/h"``."""
        what = " or else ".join(self.gpu_types) or "any GPU"
        if self.gpu_count is not None:
            what += f" x{self.gpu_count}"
        parts = [what]
        if self.cloud_id:
            parts.append(f"cloud_id {self.cloud_id}")
        if self.regions:
            parts[0] += " in " + (" or else " if len(self.regions) > 1 else "").join(self.regions)
        if self.socket:
            parts.append(f"socket {self.socket}")
        if self.security:
            parts.append(f"security {self.security}")
        if self.max_price is not None:
            parts.append(f"at most ${self.max_price:g}/h")
        if self.spot != "never":
            parts.append("spot only" if self.spot == "only" else "spot preferred")
        if self.multi_node:
            parts.append("multi-node")
        return ", ".join(parts)


@dataclass(frozen=True)
class Choice:
    """The offer :func:`choose_offer` picked and why it won, for the log and the XCom."""

    offer: GpuOffer
    why: str

    def summary(self) -> dict[str, Any]:
        """The offer's essentials and the reason, as plain JSON (the create operator's XCom)."""
        offer = self.offer
        return {
            "cloud_id": offer.cloud_id,
            "gpu_type": offer.gpu_type,
            "gpu_count": offer.gpu_count,
            "provider": offer.provider,
            "region": offer.region,
            "country": offer.country,
            "data_center": offer.data_center,
            "price_hr": offer.prices.price,
            "is_spot": bool(offer.is_spot),
            "stock_status": offer.stock_status,
            "why": self.why,
        }


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


def choose_offer(offers: Iterable[GpuOffer], wish: OfferWish) -> Choice:
    """The offer the rule of the module docstring picks, and why; :class:`PrimeNoOfferError` if none fits."""
    seen = list(offers)
    judged = [(offer, _rejections(offer, wish)) for offer in seen]
    fitting = [offer for offer, reasons in judged if not reasons]
    if not fitting:
        raise PrimeNoOfferError(_no_offer_message(wish, judged))
    best = min(fitting, key=lambda offer: _preference(offer, wish))
    return Choice(best, _why(best, fitting, wish))


def _type_rank(offer: GpuOffer, wish: OfferWish) -> int:
    types = wish.gpu_types
    return next((i for i, name in enumerate(types) if _same(offer.gpu_type, name)), len(types))


def _region_rank(offer: GpuOffer, wish: OfferWish) -> int:
    places = (offer.region, offer.country, offer.data_center)
    return next(
        (i for i, name in enumerate(wish.regions) if any(_same(place, name) for place in places)),
        len(wish.regions),
    )


def _spot_rank(offer: GpuOffer, wish: OfferWish) -> int:
    return 0 if wish.spot != "prefer" or offer.is_spot else 1


def _preference(offer: GpuOffer, wish: OfferWish) -> tuple[int, int, int, _RankKey]:
    return (_type_rank(offer, wish), _region_rank(offer, wish), _spot_rank(offer, wish), _rank(offer))


def _why(best: GpuOffer, fitting: list[GpuOffer], wish: OfferWish) -> str:
    """Why ``best`` won, in the order of the rule: GPU type, region, spot, price."""
    parts: list[str] = []
    types, regions = wish.gpu_types, wish.regions
    if len(types) > 1:
        rank = _type_rank(best, wish)
        part = f"GPU type {types[rank]} is choice {rank + 1} of {len(types)}"
        parts.append(part + (f" (no offer of {', '.join(types[:rank])} fits)" if rank else ""))
    same_type = [o for o in fitting if _type_rank(o, wish) == _type_rank(best, wish)]
    if len(regions) > 1:
        rank = _region_rank(best, wish)
        part = f"region {regions[rank]} is choice {rank + 1} of {len(regions)}"
        parts.append(part + (f" (no offer in {', '.join(regions[:rank])} fits)" if rank else ""))
    same_place = [o for o in same_type if _region_rank(o, wish) == _region_rank(best, wish)]
    if wish.spot == "prefer":
        parts.append(_spot_why(best, fitting))
    elif wish.spot == "only":
        parts.append("spot only")
    same_spot = [o for o in same_place if _spot_rank(o, wish) == _spot_rank(best, wish)]
    price = best.prices.price
    cost = f"${price:.2f}/h" if price is not None else "no price"
    if len(same_spot) > 1:
        parts.append(f"the cheapest ({cost}) of {len(same_spot)} offers equal by type, region and spot")
    else:
        parts.append(f"the only such offer ({cost})")
    return "; ".join(parts) + f"; {len(fitting)} of the offers fit"


def _spot_why(best: GpuOffer, fitting: list[GpuOffer]) -> str:
    """The spot part of the reason with ``spot="prefer"``: true whichever offers fit.

    A spot offer of a later GPU type or region may fit while an on-demand offer of an earlier one
    wins (type and region outrank spot): "no spot offer fits" would then be false.
    """
    if best.is_spot:
        return "spot, as preferred"
    if any(offer.is_spot for offer in fitting):
        return "on-demand (no spot offer of this GPU type and region fits; type and region come before spot)"
    return "on-demand (no spot offer fits)"


def nearest_offers(offers: Iterable[GpuOffer], wish: OfferWish, limit: int = NEAREST_LIMIT) -> list[str]:
    """The offers nearest to ``wish``, one short line each (GPU type, place, price, stock, why not).

    For the log of a capacity wait: the same offers give the same lines, so a caller logs them
    only when they change.
    """
    judged = [(offer, _rejections(offer, wish)) for offer in offers]
    nearest = sorted(judged, key=lambda item: _nearness(wish, item))[:limit]
    return [
        f"{describe_offer(offer)}, stock {offer.stock_status or 'unknown'}"
        + (f": {'; '.join(reasons)}" if reasons else ": fits")
        for offer, reasons in nearest
    ]


def _nearness(wish: OfferWish, item: tuple[GpuOffer, list[str]]) -> tuple[int, int, int, int, _RankKey]:
    # Offers of the wished GPU (or cloud_id) first, then those failing fewer constraints, then by the rule.
    offer, reasons = item
    kind, region, _, rank = _preference(offer, wish)
    return (len(_identity_rejections(offer, wish)), len(reasons), kind, region, rank)


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
    types = wish.gpu_types
    if types and not any(_same(offer.gpu_type, name) for name in types):
        reasons.append(f"GPU type is not {' or '.join(types)}")
    return reasons


def _fit_rejections(offer: GpuOffer, wish: OfferWish) -> list[str]:
    """The right thing, but not as wished: count, place, socket, security, spot, stock or price."""
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
    if wish.spot == "never" and offer.is_spot:
        reasons.append("a spot offer (spot='never')")
    elif wish.spot == "only" and not offer.is_spot:
        reasons.append("not a spot offer (spot='only')")
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

    nearest = sorted(judged, key=lambda item: _nearness(wish, item))[:NEAREST_LIMIT]
    lines = [f"  - {describe_offer(offer)}: {'; '.join(reasons)}" for offer, reasons in nearest]
    return "\n".join([head + ". Nearest:", *lines])
