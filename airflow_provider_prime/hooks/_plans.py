"""The pods API (LIFECYCLE.md) as plans: what each hook method sends, reads and decides, without I/O.

A plan is a generator: it yields an :class:`~._exchange.Exchange`, gets back that exchange's
result (or, thrown in, its error), or yields a :class:`Pause` (the client sleeps), and finally
returns the method's result. The sync and async clients run plans (``PrimeClient.run`` /
``AsyncPrimeClient.run``), so each ``PrimeHook`` method and its async twin share one body: paging,
adoption after an uncertain create, idempotent delete.

Two rules about the pod list (FACTS.md: "paging is not a promise", "eventual consistency"):

* Paging advances the offset by the pods received, never by the page size asked for, so a server
  that caps ``limit`` loses nothing; a pod seen twice (the list shifted) is kept once.
* Absence is never concluded from one read: :func:`find_pods_by_name` reads the whole list until
  two consecutive reads agree on the pods of the name (at most :data:`FIND_READS`), and after a
  create whose answer was lost the lookup is repeated for :data:`ADOPTION_PAUSES` (about 30 s)
  before saying the create may not have happened.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any, TypeVar

from airflow_provider_prime.exceptions import (
    PrimeConfigError,
    PrimeNotFoundError,
    PrimeRequestError,
    PrimeTransientError,
)
from airflow_provider_prime.hooks._endpoints import (
    PAGE_SIZE,
    ApiRequest,
    create_request,
    delete_request,
    offers_page_request,
    pod_log_request,
    pod_request,
    pods_page_request,
)
from airflow_provider_prime.hooks._exchange import DeliveryUnknown, Exchange
from airflow_provider_prime.hooks._payloads import (
    parse_ignored,
    parse_offer_page,
    parse_pod,
    parse_pod_log,
    parse_pod_page,
    tidy_log_lines,
)
from airflow_provider_prime.hooks._settings import PrimeApiSettings
from airflow_provider_prime.models import GONE_STATES, GpuOffer, Pod, PodRequest

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True)
class Pause:
    """A plan step: the client sleeps ``seconds`` (with its injectable sleep), then sends back None."""

    seconds: float


#: Yields exchanges (is sent their results) and pauses, returns a ``T``.
Plan = Generator[Exchange[Any] | Pause, Any, T]

#: Most pages a list reads (a server that never ends a list cannot keep a call going forever).
MAX_PAGES = 1000
#: Most whole-list reads :func:`find_pods_by_name` makes waiting for two consecutive ones to agree.
FIND_READS = 4
#: After a create whose answer was lost and a lookup that found no pod of the name: the pauses
#: (seconds) before each further lookup. The pod list may lag a create (FACTS.md); one empty
#: lookup does not mean "not created". Five lookups over about 30 s, then the create is reported
#: as one that may not have happened.
ADOPTION_PAUSES = (2.0, 4.0, 8.0, 16.0)
#: Seconds a created pod may take to show in the pod list: what the lookups above allow for.
LIST_LAG_BOUND = sum(ADOPTION_PAUSES)


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


def get_pod_log(
    settings: PrimeApiSettings,
    pod_id: str,
    tail: int,
    deadline: float | None = None,
    secrets: tuple[str, ...] = (),
) -> Plan[list[str]]:
    """The last ``tail`` lines of the pod's log, tidied (:func:`~._payloads.tidy_log_lines`): the
    key and ``secrets`` (the pod's env values) scrubbed from every line, long lines cut. An empty
    answer is an empty log."""
    lines: list[str] = yield Exchange(
        settings, pod_log_request(settings, pod_id, tail), parse_pod_log, deadline, parse_empty=list
    )
    return tidy_log_lines(lines, tail, (settings.api_key, *secrets))


def list_pods(settings: PrimeApiSettings) -> Plan[list[Pod]]:
    """One read of the whole list, page by page; each pod once (the first time it was seen).

    The offset advances by the pods received: a server answering fewer than asked (a capped
    ``limit``) loses nothing. It ends at an empty page, at the announced total, or (no total) at a
    page shorter than the ``limit`` the server says it applied. One read of a list that changes
    while it is read can still miss a pod: :func:`find_pods_by_name` reads until two agree.
    """
    pods: dict[str, Pod] = {}
    offset = 0
    for _ in range(MAX_PAGES):
        got, total, limit = yield Exchange(settings, pods_page_request(settings, offset), parse_pod_page)
        for pod in got:
            pods.setdefault(pod.id, pod)
        offset += len(got)
        if not got:
            break
        if total is not None:
            if offset >= total:
                break
        elif len(got) < min(PAGE_SIZE, limit or PAGE_SIZE):
            break
    return list(pods.values())


def find_pods_by_name(settings: PrimeApiSettings, name: str) -> Plan[list[Pod]]:
    """The pods named ``name``, from two consecutive whole-list reads that agree on them.

    The list can change between pages (a pod deleted shifts the rest), so one read may miss a pod;
    concluding "absent" from it would create a duplicate. After :data:`FIND_READS` reads without two
    consecutive ones agreeing, ``PrimeTransientError``: nothing is concluded.
    """
    previous: list[str] | None = None
    for _ in range(FIND_READS):
        found = [pod for pod in (yield from list_pods(settings)) if pod.name == name]
        ids = sorted(pod.id for pod in found)
        if ids == previous:
            return found
        previous = ids
    raise PrimeTransientError(
        f"The pod list kept changing while looking for pods named {name!r}: {FIND_READS} reads in a "
        "row disagreed on them, so whether one exists is unknown and nothing was concluded. Trying "
        "again is safe."
    )


def create_pod(settings: PrimeApiSettings, request: PodRequest) -> Plan[Pod]:
    """Create once; after an answer that leaves it unsure, adopt the one live pod of the name.

    The list may show a new pod late: a lookup that finds no live pod of the name is repeated
    after each of :data:`ADOPTION_PAUSES` before the create is reported as one that may not have
    happened.
    """
    try:
        pod: Pod = yield Exchange(settings, create_request(settings, request), parse_pod)
        return pod
    except DeliveryUnknown as unsure:
        uncertain = unsure
    found = yield from find_pods_by_name(settings, request.name)
    for pause in ADOPTION_PAUSES:
        if any(pod.status not in GONE_STATES for pod in found):
            break
        log.info(
            "Creating pod %r got no usable answer and no live pod of that name is listed yet; "
            "looking again in %g s (the list may lag a create).",
            request.name,
            pause,
        )
        yield Pause(pause)
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
    if pod.status not in GONE_STATES:
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
    live = [pod for pod in found if pod.status not in GONE_STATES]
    if len(live) == 1:
        return live[0]
    error = unsure.error
    if not live:
        waited = sum(ADOPTION_PAUSES)
        raise PrimeTransientError(
            f"Creating pod {name!r} may not have happened: {error} No pod of that name was listed in "
            f"{waited:g} s of looking, so none was adopted and none was created twice; trying again is "
            "safe (it looks the name up first).",
            http_status=error.http_status,
        ) from error
    raise PrimeConfigError(
        f"Creating pod {name!r} got no usable answer ({error}) and {len(live)} live pods have that name "
        f"({', '.join(pod.id for pod in live)}): none was adopted and none deleted. Delete the extra "
        "ones, or give each pod a unique name."
    ) from error
