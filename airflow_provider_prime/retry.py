"""A retry policy that knows a sold-out cloud from a wrong key: ``PRIME_RETRY_POLICY``.

Airflow 3.3+ lets a task decide, from the exception that failed it, whether and when it is retried
(``retry_policy=``, AIP-105). The provider's errors already say which kind of failure each is
(:mod:`airflow_provider_prime.exceptions`), so the policy is a table of them, first match wins:

===================================================  ==============================================
the task failed with                                 then
===================================================  ==============================================
``PrimeCapacityTimeoutError``: the wait for          fail at once: the task already waited as long
capacity (``wait_for_capacity``) reached its         as the user said; a retry would wait it all
deadline                                             again
``PrimeNoOfferError``, ``PrimeSoldOutError``         no capacity: retry after
                                                     :data:`NO_CAPACITY_RETRY_DELAY` (15 minutes;
                                                     :func:`prime_retry_policy` builds one with
                                                     another delay)
``PrimeAuthError``, ``PrimeBillingError``, any       fail at once, without burning retries: the
other ``PrimeRequestError``, ``PrimeConfigError``    same request would be refused again
``PrimeTransientError`` (5xx, 429, no answer:        retry after the task's own ``retry_delay``
``PrimeConnectionError``), ``TimeoutError``
anything else                                        Airflow's default (``retries``, ``retry_delay``)
===================================================  ==============================================

A retry is still bounded by the task's ``retries``: the policy can stop retries early, never add
any. ``PrimePodFailedError`` (an ``AirflowFailException``) always fails at once, policy or not.

Use it on every task of a DAG, the same way on every supported Airflow::

    from airflow_provider_prime.retry import PRIME_RETRY_POLICY

    with DAG(..., default_args={"retries": 3, "retry_policy": PRIME_RETRY_POLICY}): ...

On Airflow 3.1 and 3.2, which have no retry policies, importing works and both
``PRIME_RETRY_POLICY`` and :func:`prime_retry_policy` are ``None``: Airflow ignores a
``default_args`` key no operator takes, and ``retry_policy=None`` is no policy, so the task
retries as ``retries`` says (the switch is ``_compat.RETRY_POLICY``). Passing
``retry_policy=`` straight to an operator works on 3.3+ only (3.1 and 3.2 refuse the argument).
See ``docs/retries.md``.
"""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING

from airflow_provider_prime._compat import RETRY_POLICY
from airflow_provider_prime.exceptions import (
    PrimeAuthError,
    PrimeBillingError,
    PrimeCapacityTimeoutError,
    PrimeConfigError,
    PrimeNoOfferError,
    PrimeRequestError,
    PrimeSoldOutError,
    PrimeTransientError,
)

if TYPE_CHECKING:
    from airflow.sdk.definitions.retry_policy import RetryPolicy

__all__ = ["NO_CAPACITY_RETRY_DELAY", "PRIME_RETRY_POLICY", "prime_retry_policy"]

#: How long a task that found no capacity waits before its retry. GPU capacity comes back in
#: minutes to hours, not seconds; a retry every few minutes would start a worker process each time
#: for the same "sold out". Fifteen minutes is four tries an hour.
NO_CAPACITY_RETRY_DELAY = timedelta(minutes=15)

#: The errors that mean "waited for capacity as long as the user said, and none came": a retry would
#: only wait the whole ``wait_for_capacity`` again (each retry one more whole wait). Matched before
#: :data:`NO_CAPACITY`, whose ``PrimeNoOfferError`` it is a subclass of.
WAITED_ENOUGH = (PrimeCapacityTimeoutError,)
#: The errors that mean "no capacity now": nothing was created, trying again later may succeed.
NO_CAPACITY = (PrimeNoOfferError, PrimeSoldOutError)
#: The errors no retry can fix: the key, the account, the request or the arguments must change.
#: (``PrimeSoldOutError`` is a ``PrimeRequestError`` too; it is matched first, above.)
REFUSED = (PrimeAuthError, PrimeBillingError, PrimeRequestError, PrimeConfigError)
#: The errors that may pass by themselves: retried with the task's own delay.
TRANSIENT = (PrimeTransientError, TimeoutError)


def prime_retry_policy(no_capacity_delay: timedelta = NO_CAPACITY_RETRY_DELAY) -> RetryPolicy | None:
    """The policy of this module's table, retrying "no capacity" after ``no_capacity_delay``.

    ``None`` on Airflow without retry policies (3.1, 3.2): a no-op wherever it is passed.
    """
    if not isinstance(no_capacity_delay, timedelta) or no_capacity_delay < timedelta(0):
        raise PrimeConfigError(
            f"no_capacity_delay must be a timedelta of 0 or more, not {no_capacity_delay!r}"
        )
    if not RETRY_POLICY:
        return None
    from airflow.sdk.definitions.retry_policy import ExceptionRetryPolicy, RetryAction, RetryRule

    return ExceptionRetryPolicy(
        rules=[
            RetryRule(
                exception=list(WAITED_ENOUGH),
                action=RetryAction.FAIL,
                reason=(
                    "The wait for GPU capacity reached its deadline (wait_for_capacity): a retry would "
                    "wait all over again; lengthen wait_for_capacity or loosen the wish, then clear the "
                    "task (PRIME_RETRY_POLICY)"
                ),
            ),
            RetryRule(
                exception=list(NO_CAPACITY),
                action=RetryAction.RETRY,
                retry_delay=no_capacity_delay,
                reason=f"No GPU capacity: trying again in {no_capacity_delay} (PRIME_RETRY_POLICY)",
            ),
            RetryRule(
                exception=list(REFUSED),
                action=RetryAction.FAIL,
                reason=(
                    "Refused by the Prime API or unusable arguments (key, billing, request): a retry "
                    "would be refused the same way; fix the cause, then clear the task (PRIME_RETRY_POLICY)"
                ),
            ),
            RetryRule(
                exception=list(TRANSIENT),
                action=RetryAction.RETRY,
                reason="Transient trouble reaching the Prime API: retrying after the task's retry_delay",
            ),
        ],
        default=RetryAction.DEFAULT,
    )


#: The provider's retry policy (see the module docs); ``None`` on Airflow 3.1 and 3.2.
PRIME_RETRY_POLICY = prime_retry_policy()
