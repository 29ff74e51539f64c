"""What the API's answers mean: each endpoint's 2xx body parsed into the provider's models.

A body of the wrong shape is a :class:`PayloadError` whose text says what is wrong (never the body
itself: it is whatever the server sent); the exchange turns it into a ``PrimeResponseError``.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, ValidationError

from airflow_provider_prime.models import GpuOffer, OfferPage, Pod, PodPage, PodStatus, PodStatusPage, WhoAmI


class PayloadError(ValueError):
    """A 2xx body whose JSON is not what the endpoint documents; the text says what is wrong."""


def validated(model: type[BaseModel], payload: Any) -> Any:
    """``payload`` validated as ``model``, or :class:`PayloadError` saying what is wrong.

    The error is raised after the ``except`` block, not in it: pydantic's error quotes the input,
    which is whatever the server sent, and must not stay reachable as ``__context__``.
    """
    try:
        return model.model_validate(payload)
    except ValidationError as exc:
        problem = _summarise_validation(exc)
    raise PayloadError(problem)


def parse_pod_statuses(payload: Any) -> list[PodStatus]:
    """The ``GenericResponse[List[APIPodStatusResponse]]`` envelope as pod statuses (``data: null`` → [])."""
    page: PodStatusPage = validated(PodStatusPage, payload)
    return page.pods


def parse_identity(payload: Any) -> str | None:
    """Who the key belongs to and the scopes it grants, from a whoami body, if it says; never fails."""
    try:
        who = WhoAmI.model_validate(payload)
    except ValidationError:
        return None
    name = f"{who.name} <{who.email}>" if who.name and who.email else who.identity
    scopes = who.scope_summary()
    if scopes:
        return f"{name or 'this key'} (scopes: {scopes})"
    return name


def parse_pod(payload: Any) -> Pod:
    pod: Pod = validated(Pod, payload)
    return pod


def parse_pod_page(payload: Any) -> tuple[list[Pod], int | None, int | None]:
    """(pods, announced total, the ``limit`` the server says it applied)."""
    page: PodPage = validated(PodPage, payload)
    return list(page.data), page.total_count, page.limit


def parse_offer_page(payload: Any) -> tuple[list[GpuOffer], int | None]:
    page: OfferPage = validated(OfferPage, payload)
    return list(page.items), page.total_count


def parse_ignored(payload: Any) -> None:
    """The delete answer (``{"status": ...}``, anything, or no body): the CLI ignores it, so do we."""


NOT_JSON = object()


def decode_json(body: bytes) -> Any:
    """The JSON document in ``body``, or :data:`NOT_JSON`."""
    try:
        return json.loads(body)
    except (ValueError, RecursionError):
        return NOT_JSON


def _summarise_validation(exc: ValidationError) -> str:
    errors = exc.errors(include_url=False)
    parts = []
    for error in errors[:3]:
        where = ".".join(str(p) for p in error["loc"]) or "body"
        parts.append(f"{where}: {error['msg']}")
    more = len(errors) - 3
    return "; ".join(parts) + (f" (and {more} more problems)" if more > 0 else "")
