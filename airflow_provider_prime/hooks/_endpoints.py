"""The endpoints of the Prime API the hook uses: their paths, and the request each hook call sends.

Everything the provider knows about a URL, a query parameter or a request body is here, so a change
of the API (FACTS.md) is a change of this module. A request is an :class:`ApiRequest`: what to send,
whether it may be sent twice, and what the messages about it must say; the exchange sends it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from airflow_provider_prime.hooks._settings import PrimeApiSettings
from airflow_provider_prime.models import PodRequest

STATUS_PATH = "/api/v1/pods/status"
WHOAMI_PATH = "/api/v1/user/whoami"
#: The list/create path with its trailing slash, as the docs call it (redirects are followed anyway).
PODS_PATH = "/api/v1/pods/"
OFFERS_PATHS = {False: "/api/v1/availability/gpus", True: "/api/v1/availability/multi-node"}
#: Most pod ids sent in one status request (the platform's batch endpoints cap at 100).
CHUNK_SIZE = 100
#: The pod log's path below a pod's (``GET /api/v1/pods/{id}/log?tail=N``).
POD_LOG_SUFFIX = "/log"
#: Items asked for per page of a list (the API's default and the CLI's).
PAGE_SIZE = 100
#: The API key permissions a 401/403 names.
READ = "Instances → Read"
READ_WRITE = "Instances → Read and write"
_IDS_SHOWN = 5


@dataclass(frozen=True)
class ApiRequest:
    """One request to send, and what the messages about it must say.

    ``idempotent`` is False for a request that must not be sent twice (create): when it may have
    reached the server without an answer coming back, the exchange says so (:class:`DeliveryUnknown`)
    instead of resending it. ``permission`` is what a 401/403 names. ``missing`` is what a 404
    means when the API itself says ``pod_id`` was not found (:func:`says_pod_not_found`); any other
    404 (``missing`` None, or a router's bare "Not Found", HTML, no JSON) means the base URL or
    path is wrong. ``answer_ignored``: any 2xx is success whatever its body (a delete).
    ``text_answer``: a 2xx body that is not JSON is handed to the parser as text (decoded, errors
    replaced) instead of being an error: the pod log's shape is not documented (FACTS.md).
    ``secrets``: values of the request that no message may show (a create's env values and Jupyter
    password: an API that echoes them in an error body must not put them in the task log), scrubbed
    like the key.
    """

    method: str
    url: str
    action: str
    params: tuple[tuple[str, str], ...] = ()
    body: Any = None
    idempotent: bool = True
    permission: str = READ
    missing: str | None = None
    pod_id: str | None = None
    answer_ignored: bool = False
    secrets: tuple[str, ...] = ()
    #: A 2xx body that is not JSON is the answer itself, as text (the pod log may be plain text).
    text_answer: bool = False


def chunk_pod_ids(pod_ids: list[str], size: int = CHUNK_SIZE) -> list[list[str]]:
    """Validated ids in chunks of at most ``size`` (one status request each)."""
    return [pod_ids[start : start + size] for start in range(0, len(pod_ids), size)]


def describe_pods(pod_ids: list[str]) -> str:
    """``"pods a, b, c and 97 more"`` for messages: enough to recognise, never a wall of ids."""
    shown = ", ".join(pod_ids[:_IDS_SHOWN])
    more = len(pod_ids) - _IDS_SHOWN
    noun = "pod" if len(pod_ids) == 1 else "pods"
    return f"{noun} {shown}" + (f" and {more} more" if more > 0 else "")


def status_request(settings: PrimeApiSettings, pod_ids: list[str]) -> ApiRequest:
    """``GET /api/v1/pods/status?pod_ids=a&pod_ids=b`` (repeated keys, as the API documents)."""
    return ApiRequest(
        "GET",
        settings.base_url + STATUS_PATH,
        f"reading the status of {describe_pods(pod_ids)}",
        params=tuple(("pod_ids", pod_id) for pod_id in pod_ids),
    )


def whoami_request(settings: PrimeApiSettings) -> ApiRequest:
    """``GET /api/v1/user/whoami``: the cheap authenticated call behind the connection test."""
    return ApiRequest("GET", settings.base_url + WHOAMI_PATH, "checking the API key")


def _pod_url(settings: PrimeApiSettings, pod_id: str) -> str:
    return settings.base_url + PODS_PATH + quote(pod_id, safe="")


def _no_such_pod(pod_id: str) -> str:
    return f"Pod {pod_id!r} does not exist or is not visible to this API key"


def pod_request(settings: PrimeApiSettings, pod_id: str) -> ApiRequest:
    """``GET /api/v1/pods/{id}``; a 404 is "no such pod" only when the API says so (docs/hook.md)."""
    return ApiRequest(
        "GET",
        _pod_url(settings, pod_id),
        f"reading pod {pod_id}",
        missing=_no_such_pod(pod_id),
        pod_id=pod_id,
    )


def pods_page_request(settings: PrimeApiSettings, offset: int) -> ApiRequest:
    """The page of ``GET /api/v1/pods/?offset=&limit=`` starting at ``offset`` (pods received so far)."""
    params = (("offset", str(offset)), ("limit", str(PAGE_SIZE)))
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
        secrets=pod.secret_values(),
    )


def delete_request(settings: PrimeApiSettings, pod_id: str) -> ApiRequest:
    """``DELETE /api/v1/pods/{id}``: safe to resend (a second delete finds the pod gone).

    Any 2xx is success whatever its body (JSON, none, or a proxy's text): nobody reads it.
    """
    return ApiRequest(
        "DELETE",
        _pod_url(settings, pod_id),
        f"deleting pod {pod_id}",
        permission=READ_WRITE,
        missing=_no_such_pod(pod_id),
        pod_id=pod_id,
        answer_ignored=True,
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


def pod_log_request(settings: PrimeApiSettings, pod_id: str, tail: int) -> ApiRequest:
    """``GET /api/v1/pods/{id}/log?tail=N``: the last ``tail`` lines of the pod's own log.

    Its answer's shape is not documented (FACTS.md "Pod log"): text is accepted as well as JSON.
    """
    return ApiRequest(
        "GET",
        _pod_url(settings, pod_id) + POD_LOG_SUFFIX,
        f"reading the log of pod {pod_id}",
        params=(("tail", str(tail)),),
        missing=_no_such_pod(pod_id),
        pod_id=pod_id,
        text_answer=True,
    )
