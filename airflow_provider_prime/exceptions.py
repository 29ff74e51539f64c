"""One small hierarchy of the provider's errors, so callers can catch exactly what they mean.

Every message is written for the person reading the task log: it names the pod or the request,
the cause, and what to do. None of them ever contains the API key.
"""

from __future__ import annotations

from airflow.sdk.exceptions import AirflowException

try:  # Airflow >= 3.2 moved the task-control exceptions into the Task SDK
    from airflow.sdk.exceptions import AirflowFailException
except ImportError:  # Airflow 3.1
    from airflow.exceptions import AirflowFailException  # type: ignore[no-redef]


class PrimeError(AirflowException):
    """Base class of every error this provider raises."""


class PrimeConfigError(PrimeError):
    """The connection or the arguments are unusable (no key, plain http to a remote host, bad ids)."""


class PrimeAPIError(PrimeError):
    """The API answered with an error, or with something that is not the documented payload.

    ``http_status`` is the HTTP status (``None`` when no response arrived at all).
    ``retryable`` tells whether trying again later might succeed (429, 5xx, transport errors).
    """

    retryable: bool = False

    def __init__(self, message: str, *, http_status: int | None = None, retryable: bool | None = None):
        super().__init__(message)
        self.http_status = http_status
        if retryable is not None:
            self.retryable = retryable


class PrimeAuthError(PrimeAPIError):
    """401/403: the key is wrong, revoked or lacks the "Instances → Read" permission. Never retried."""


class PrimeNotFoundError(PrimeAPIError):
    """404: the base URL or path is wrong (the status endpoint itself omits unknown pods instead)."""


class PrimeRequestError(PrimeAPIError):
    """422 (or another 4xx): the API rejected the request; ``details`` lists what it said."""

    def __init__(self, message: str, *, http_status: int | None = None, details: list[str] | None = None):
        super().__init__(message, http_status=http_status, retryable=False)
        self.details = details or []


class PrimeTransientError(PrimeAPIError):
    """429, 5xx, timeouts and dropped connections that outlasted the retries. Worth trying later."""

    retryable = True


class PrimePodFailedError(PrimeError, AirflowFailException):
    """A pod reached a state no waiting can fix (ERROR, TERMINATED, installation failure, not found).

    Also an ``AirflowFailException``: Airflow then fails the task without using its retries (a retry
    would only wait for the same broken pod again), and a sensor with ``soft_fail`` skips instead.
    """
