"""Point Airflow at a simulator: the environment variables that define a Prime connection and the
SSH connection its nodes accept."""

from __future__ import annotations

import json
from collections.abc import Mapping
from os import PathLike
from typing import Any


def airflow_connection_env(
    base_url: str, api_key: str, conn_id: str = "prime_default", *, extra: Mapping[str, Any] | None = None
) -> dict[str, str]:
    """``{"AIRFLOW_CONN_<ID>": <JSON connection>}`` for a Prime connection to ``base_url``.

    Merge it into ``os.environ`` (or a subprocess's ``env``) and ``PrimeHook(conn_id)`` talks to
    the simulator: the host field holds the base URL, the password field the API key, and
    ``extra`` (transport options such as ``read_timeout``) goes into the connection's extra.
    """
    connection: dict[str, Any] = {"conn_type": "prime", "host": base_url, "password": api_key}
    if extra:
        connection["extra"] = dict(extra)
    return {f"AIRFLOW_CONN_{conn_id.upper()}": json.dumps(connection)}


def ssh_connection_env(key_file: str | PathLike[str], conn_id: str = "prime_ssh") -> dict[str, str]:
    """``{"AIRFLOW_CONN_<ID>": <JSON connection>}`` for an Airflow SSH connection that logs in with
    the private key in ``key_file`` (the SSH provider's ``key_file`` extra). Host, port and user
    come from the pods, so the connection names none. ``prime_ssh`` is what the example DAGs use."""
    connection = {"conn_type": "ssh", "extra": {"key_file": str(key_file)}}
    return {f"AIRFLOW_CONN_{conn_id.upper()}": json.dumps(connection)}
