"""This Airflow deployment's identity: the part of every pod name and ownership record that says whose.

Prime knows nothing about Airflow: two deployments sharing one API key (staging and prod, say)
see each other's pods. A pod name derived only from ``(dag_id, run_id, task_id, map_index)`` is
the same in both for the same DAG and the same ``scheduled__`` run, so one would adopt the other's
pod and one's reaper would judge the other's pods. The deployment identity goes into every derived
name (:mod:`.operators.pod_names`) and every ownership record (:mod:`.operators.ownership`), and
adoption and reaping touch only the pods of this deployment.

Where it comes from, in this order:

1. ``[prime] deployment_id`` in Airflow's configuration (environment variable
   ``AIRFLOW__PRIME__DEPLOYMENT_ID``): 1 to 32 characters of ``a-z``, ``0-9`` and ``-``. Set it
   explicitly whenever two deployments share a Prime key and could share the address below (two
   deployments both on ``localhost``, say), and keep it when the deployment moves.
2. Otherwise a short hash of the address of Airflow's Execution API: ``[core]
   execution_api_server_url``, or, when that is unset, ``[api] base_url`` + ``/execution/`` (Airflow's
   own default for it), ``http://localhost:8080`` when both are unset. Every worker and triggerer of a
   deployment must reach that one address, two deployments normally never share it, and it does
   not change when a process restarts. Changing it changes the identity: pods created before the
   change are then another deployment's to this one (the reaper ignores them; delete them by hand).
"""

from __future__ import annotations

import hashlib
import re

from airflow_provider_prime.exceptions import PrimeConfigError

#: The configuration section and option that set the identity explicitly.
SECTION, OPTION = "prime", "deployment_id"
#: What an explicit identity may look like (it goes into Variable keys and logs as is).
DEPLOYMENT_ID = re.compile(r"[a-z0-9-]{1,32}")
#: Airflow's own default when neither Execution API address is configured.
DEFAULT_BASE_URL = "http://localhost:8080"
_DERIVED_LENGTH = 12


def deployment_id() -> str:
    """This deployment's identity: ``[prime] deployment_id``, or a hash of the Execution API address."""
    from airflow.configuration import conf

    explicit = (conf.get(SECTION, OPTION, fallback="") or "").strip()
    if explicit:
        return validate_deployment_id(explicit)
    return derived_deployment_id(
        conf.get("core", "execution_api_server_url", fallback="") or "",
        conf.get("api", "base_url", fallback="") or "",
    )


def deployment_source() -> str:
    """Where :func:`deployment_id` comes from, as a log line says it (so mismatched workers show)."""
    from airflow.configuration import conf

    if (conf.get(SECTION, OPTION, fallback="") or "").strip():
        return f"[{SECTION}] {OPTION}"
    address = (conf.get("core", "execution_api_server_url", fallback="") or "").strip()
    if address:
        return f"derived from [core] execution_api_server_url {address!r}; set [{SECTION}] {OPTION}"
    base = (conf.get("api", "base_url", fallback="") or "").strip() or DEFAULT_BASE_URL
    return f"derived from [api] base_url {base!r}; set [{SECTION}] {OPTION}"


def validate_deployment_id(value: object) -> str:
    """``value`` if it is a valid explicit identity, else a :class:`PrimeConfigError` saying what to set."""
    if isinstance(value, str) and DEPLOYMENT_ID.fullmatch(value):
        return value
    raise PrimeConfigError(
        f"[{SECTION}] {OPTION} (AIRFLOW__PRIME__DEPLOYMENT_ID) must be 1 to 32 characters of a-z, 0-9 "
        f"and '-', not {value!r}: set it to a short name for this Airflow deployment, e.g. 'prod'"
    )


def derived_deployment_id(execution_api_server_url: str, base_url: str) -> str:
    """The default identity: 12 hex digits of a hash of the Execution API address (see the module)."""
    address = execution_api_server_url.strip()
    if not address:
        address = (base_url.strip() or DEFAULT_BASE_URL).rstrip("/") + "/execution/"
    normal = address.rstrip("/").lower()
    return hashlib.sha256(normal.encode()).hexdigest()[:_DERIVED_LENGTH]
