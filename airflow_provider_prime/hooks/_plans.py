"""The pods API (LIFECYCLE.md) as plans: what each hook method sends, reads and decides, without I/O.

A plan is a generator: it yields an :class:`~._exchange.Exchange`, gets back that exchange's
result (or, thrown in, its error) and finally returns the method's result. The sync and async
clients run plans (``PrimeClient.run`` / ``AsyncPrimeClient.run``), so each ``PrimeHook`` method
and its async twin share one body: paging, adoption after an uncertain create, idempotent delete.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Generator
from typing import Any, TypeVar
from urllib.parse import quote

from airflow_provider_prime.exceptions import (
    PrimeConfigError,
    PrimeNotFoundError,
    PrimeRequestError,
    PrimeTransientError,
)
from airflow_provider_prime.hooks._exchange import (
    READ_WRITE,
    ApiRequest,
    DeliveryUnknown,
    Exchange,
    validated,
)
from airflow_provider_prime.hooks._settings import PrimeApiSettings
from airflow_provider_prime.models import GpuOffer, OfferPage, Pod, PodPage, PodRequest, PodState

log = logging.getLogger(__name__)

T = TypeVar("T")
#: Yields exchanges, is sent their results, returns a ``T``.
Plan = Generator[Exchange[Any], Any, T]

#: The list/create path with its trailing slash, as the docs call it (redirects are followed anyway).
PODS_PATH = "/api/v1/pods/"
OFFERS_PATHS = {False: "/api/v1/availability/gpus", True: "/api/v1/availability/multi-node"}
#: Items asked for per page of a list (the API's default and the CLI's); a list stops at MAX_PAGES.
PAGE_SIZE = 100
MAX_PAGES = 1000
#: Pods that are gone or going: deleting them again is done, adopting them is not.
GONE = frozenset({PodState.TERMINATED.value, PodState.DELETING.value})


def _pod_url(settings: PrimeApiSettings, pod_id: str) -> str:
    return settings.base_url + PODS_PATH + quote(pod_id, safe="")


def _no_such_pod(pod_id: str) -> str:
    return f"Pod {pod_id!r} does not exist or is not visible to this API key"


def pod_request(settings: PrimeApiSettings, pod_id: str) -> ApiRequest:
    """``GET /api/v1/pods/{id}``; a 404 names the pod."""
    return ApiRequest(
        "GET", _pod_url(settings, pod_id), f"reading pod {pod_id}", missing=_no_such_pod(pod_id)
    )


def pods_page_request(settings: PrimeApiSettings, page: int) -> ApiRequest:
    """Page ``page`` (from 0) of ``GET /api/v1/pods/?offset=&limit=``."""
    params = (("offset", str(page * PAGE_SIZE)), ("limit", str(PAGE_SIZE)))
    return ApiRequest("GET", settings.base_url + PODS_PATH, "listing pods", params=params)


def create_request(settings: PrimeApiSettings, pod: PodRequest) -> ApiRequest:
    """``POST /api/v1/pods/`` with the CLI's body; never resent once it may have arrived."""
    return ApiRequest(
        "POST",
        settings.base_url + PODS_PATH,
        f"creating pod {pod.name!r}",
        body=pod.to_body(),
        idempotent=False,
        permission=READ_WRITE,
    )


def delete_request(settings: PrimeApiSettings, pod_id: str) -> ApiRequest:
    """``DELETE /api/v1/pods/{id}``: safe to resend (a second delete finds the pod gone)."""
    return ApiRequest(
        "DELETE",
        _pod_url(settings, pod_id),
        f"deleting pod {pod_id}",
        permission=READ_WRITE,
        missing=_no_such_pod(pod_id),
    )


def offers_page_request(
    settings: PrimeApiSettings,
    page: int,
    gpu_type: str | None,
    gpu_count: int | None,
    regions: list[str],
    multi_node: bool,
) -> ApiRequest:
    """Page ``page`` (from 0) of ``GET /api/v1/availability/gpus`` (or ``/multi-node``)."""
    params = [("page", str(page + 1)), ("page_size", str(PAGE_SIZE))]
    if gpu_type is not None:
        params.append(("gpu_type", gpu_type))
    if gpu_count is not None:
        params.append(("gpu_count", str(gpu_count)))
    params += [("regions", region) for region in regions]
    return ApiRequest(
        "GET", settings.base_url + OFFERS_PATHS[multi_node], "listing GPU offers", params=tuple(params)
    )


def parse_pod(payload: Any) -> Pod:
    pod: Pod = validated(Pod, payload)
    return pod


def parse_pod_page(payload: Any) -> tuple[list[Pod], int | None]:
    page: PodPage = validated(PodPage, payload)
    return list(page.data), page.total_count


def parse_offer_page(payload: Any) -> tuple[list[GpuOffer], int | None]:
    page: OfferPage = validated(OfferPage, payload)
    return list(page.items), page.total_count


def parse_ignored(payload: Any) -> None:
    """The delete answer (``{"status": ...}``, anything, or no body): the CLI ignores it, so do we."""


def every_page(
    settings: PrimeApiSettings,
    request_for: Callable[[int], ApiRequest],
    parse: Callable[[Any], tuple[list[T], int | None]],
) -> Plan[list[T]]:
    """Every item of a paged list: it ends at an empty page, the announced total, or a short page."""
    items: list[T] = []
    for page in range(MAX_PAGES):
        got, total = yield Exchange(settings, request_for(page), parse)
        items += got
        if not got or (len(items) >= total if total is not None else len(got) < PAGE_SIZE):
            break
    return items


def get_pod(settings: PrimeApiSettings, pod_id: str, deadline: float | None = None) -> Plan[Pod]:
    pod: Pod = yield Exchange(settings, pod_request(settings, pod_id), parse_pod, deadline)
    return pod


def list_pods(settings: PrimeApiSettings) -> Plan[list[Pod]]:
    return (yield from every_page(settings, lambda page: pods_page_request(settings, page), parse_pod_page))


def find_pods_by_name(settings: PrimeApiSettings, name: str) -> Plan[list[Pod]]:
    return [pod for pod in (yield from list_pods(settings)) if pod.name == name]


def create_pod(settings: PrimeApiSettings, request: PodRequest) -> Plan[Pod]:
    """Create once; after an answer that leaves it unsure, adopt the one live pod of the name."""
    try:
        pod: Pod = yield Exchange(settings, create_request(settings, request), parse_pod)
        return pod
    except DeliveryUnknown as unsure:
        uncertain = unsure
    found = yield from find_pods_by_name(settings, request.name)
    adopted = adopt(request.name, found, uncertain)
    log.warning(
        "Creating pod %r got no usable answer (%s); adopted the pod of that name: %s.",
        request.name,
        uncertain.error,
        adopted.id,
    )
    return adopted


def delete_pod(settings: PrimeApiSettings, pod_id: str, deadline: float | None = None) -> Plan[None]:
    """Delete; a pod already gone (404), or refused and then found TERMINATED/DELETING, is done.

    ``deadline`` (epoch seconds) bounds both requests (the DELETE and the read after a refusal):
    no retry sleeps past it and each attempt's timeouts are cut to the time left.
    """
    try:
        yield Exchange(
            settings, delete_request(settings, pod_id), parse_ignored, deadline, parse_empty=_nothing
        )
        return
    except PrimeNotFoundError:
        return
    except PrimeRequestError as exc:
        refused = exc
    try:
        pod = yield from get_pod(settings, pod_id, deadline)
    except PrimeNotFoundError:
        return
    if pod.status not in GONE:
        raise refused


def list_gpu_offers(
    settings: PrimeApiSettings,
    gpu_type: str | None,
    gpu_count: int | None,
    regions: list[str],
    multi_node: bool,
) -> Plan[list[GpuOffer]]:
    return (
        yield from every_page(
            settings,
            lambda page: offers_page_request(settings, page, gpu_type, gpu_count, regions, multi_node),
            parse_offer_page,
        )
    )


def _nothing() -> None:
    """The result of a delete answered without a body (204)."""


def adopt(name: str, found: list[Pod], unsure: DeliveryUnknown) -> Pod:
    """After a create of ``name`` that may or may not have happened: the one live pod of that name.

    ``found`` is what a lookup by name returned. None: a transient error that says the create may
    not have happened (trying again is safe, a retry looks the name up first). Several: an error
    listing them; nothing is deleted, a person must choose.
    """
    live = [pod for pod in found if pod.status not in GONE]
    if len(live) == 1:
        return live[0]
    error = unsure.error
    if not live:
        raise PrimeTransientError(
            f"Creating pod {name!r} may not have happened: {error} No pod of that name exists, so none "
            "was adopted and none was created twice; trying again is safe (it looks the name up first).",
            http_status=error.http_status,
        ) from error
    raise PrimeConfigError(
        f"Creating pod {name!r} got no usable answer ({error}) and {len(live)} live pods have that name "
        f"({', '.join(pod.id for pod in live)}): none was adopted and none deleted. Delete the extra "
        "ones, or give each pod a unique name."
    ) from error
