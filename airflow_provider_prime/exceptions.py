"""The provider's errors: one small tree, so a caller catches exactly what it means.

::

    PrimeError                        every error this provider raises (an AirflowException)
    ├── PrimeConfigError              the connection or the arguments are unusable: fix them
    ├── PrimeAPIError                 talking to the API failed (.http_status, .details)
    │   ├── PrimeRejectedError        the API answered and said no: waiting will not help
    │   │   ├── PrimeAuthError        401/403: wrong or revoked key, or a missing permission
    │   │   ├── PrimeNotFoundError    404 saying that pod does not exist (or is not visible)
    │   │   └── PrimeRequestError     422 and other 4xx: the request was refused (.details)
    │   │       ├── PrimeBillingError 402: the account cannot pay for this
    │   │       └── PrimeSoldOutError a create refused as sold out: nothing was created
    │   ├── PrimeResponseError        an answer that could not be used: not JSON, the wrong shape,
    │   │                             too large, too many redirects, a TLS certificate failure,
    │   │                             a 404 from a path the API does not have (wrong base URL)
    │   └── PrimeTransientError       waiting may help: 408, 429, 5xx outlasting the retries
    │       └── PrimeConnectionError  no answer at all: DNS, refused, reset, timed out
    ├── PrimeNoOfferError             no GPU offer matches what was asked (lists the nearest ones)
    │   └── PrimeCapacityTimeoutError the capacity wait reached its deadline: it already waited
    ├── PrimePodFailedError           a pod can never become ready (also AirflowFailException)
    └── PrimeJobError                 a node's side of a job is unusable (no setsid, a garbled answer)
        └── PrimeJobFailedError       the job failed on a node (its exit code, killed, lost, unreachable)

Whether waiting can help follows from the class alone: a wait keeps going on a
:class:`PrimeTransientError` and stops on anything else (:func:`is_transient`). Every message is
written for the person reading the task log: it names the pod or the request, the cause and what
to do, and none of them ever contains the API key.
"""

from __future__ import annotations

from airflow_provider_prime._compat import AirflowException, AirflowFailException


class PrimeError(AirflowException):
    """Base class of every error this provider raises."""


class PrimeConfigError(PrimeError):
    """The connection or the arguments are unusable (no key, plain http to a remote host, bad ids)."""


class PrimeAPIError(PrimeError):
    """A call to the API failed.

    ``http_status`` is the HTTP status of the answer (``None`` when no answer arrived);
    ``details`` lists what the API said about the problem (field errors of a 422, say), scrubbed
    like the message.
    """

    def __init__(
        self, message: str, *, http_status: int | None = None, details: list[str] | None = None
    ) -> None:
        super().__init__(message)
        self.http_status = http_status
        self.details = list(details or [])


class PrimeRejectedError(PrimeAPIError):
    """The API answered and refused: the same request will get the same answer."""


class PrimeAuthError(PrimeRejectedError):
    """401/403: the key is wrong, revoked or lacks a permission ("Instances → Read", or "Read and write")."""


class PrimeNotFoundError(PrimeRejectedError):
    """404 whose body says that pod does not exist (or is not visible to the key).

    Only then: a router's bare "Not Found" (a wrong base URL or path) is a
    :class:`PrimeResponseError`, so "the pod is gone" is never concluded from it (docs/hook.md).
    """


class PrimeRequestError(PrimeRejectedError):
    """422 (or another 4xx): the API rejected the request; ``details`` lists what it said."""


class PrimeBillingError(PrimeRequestError):
    """402 Payment Required: the account behind the key has no credit or no payment method."""


class PrimeSoldOutError(PrimeRequestError):
    """A create refused (4xx) because the offer is sold out. The API has no code for it, so the
    answer's text decides (:mod:`.hooks._errors`). Refused means nothing was created: creating again
    once capacity is back is safe."""


class PrimeResponseError(PrimeAPIError):
    """An answer that could not be used: not JSON, the wrong shape, too large, or an untrusted certificate."""


class PrimeTransientError(PrimeAPIError):
    """429, 5xx and the like that outlasted the retries. Worth trying again later."""


class PrimeConnectionError(PrimeTransientError):
    """No answer arrived at all: the host does not resolve, refuses, resets, or did not answer in time."""


class PrimeNoOfferError(PrimeError):
    """No GPU offer matches the wish (type, count, region, price...); the message lists the nearest."""


class PrimeCapacityTimeoutError(PrimeNoOfferError):
    """The capacity wait (``wait_for_capacity``) reached its deadline with no offer that fits.

    Still a :class:`PrimeNoOfferError` (no capacity), but the user already said how long to wait:
    ``PRIME_RETRY_POLICY`` fails it rather than retrying it into another full wait (docs/retries.md).
    """


class PrimePodFailedError(PrimeError, AirflowFailException):
    """A pod reached a state no waiting can fix (ERROR, TERMINATED, installation failure, not found).

    Also an ``AirflowFailException``: Airflow then fails the task without using its retries (a retry
    would only wait for the same broken pod again), and a sensor with ``soft_fail`` skips instead.
    """


class PrimeJobError(PrimeError):
    """A node's side of a job could not be used: the script refused (no ``setsid``, a job directory
    that cannot be created) or answered something unreadable."""


class PrimeJobFailedError(PrimeJobError):
    """The job failed on a node (non-zero exit, killed, lost, unreachable). Airflow's retries apply:
    a retry launches the job again (see :mod:`.job_plan`)."""


def is_transient(error: BaseException) -> bool:
    """Whether waiting longer may get past ``error``: only the :class:`PrimeTransientError` subtree."""
    return isinstance(error, PrimeTransientError)


#: Every class above by name: the only place an error class is found from a name (trigger events).
ERROR_CLASSES: dict[str, type[PrimeError]] = {
    cls.__name__: cls
    for cls in (
        PrimeError,
        PrimeConfigError,
        PrimeAPIError,
        PrimeRejectedError,
        PrimeAuthError,
        PrimeNotFoundError,
        PrimeRequestError,
        PrimeBillingError,
        PrimeSoldOutError,
        PrimeJobError,
        PrimeJobFailedError,
        PrimeResponseError,
        PrimeTransientError,
        PrimeConnectionError,
        PrimeNoOfferError,
        PrimeCapacityTimeoutError,
        PrimePodFailedError,
    )
}
