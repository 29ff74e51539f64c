"""Point Airflow at a simulator: the environment variable that defines a Prime connection."""

from __future__ import annotations

import json


def airflow_connection_env(base_url: str, api_key: str, conn_id: str = "prime_default") -> dict[str, str]:
    """``{"AIRFLOW_CONN_<ID>": <JSON connection>}`` for a Prime connection to ``base_url``.

    Merge it into ``os.environ`` (or a subprocess's ``env``) and ``PrimeHook(conn_id)`` talks to
    the simulator: the host field holds the base URL and the password field the API key.
    """
    connection = {"conn_type": "prime", "host": base_url, "password": api_key}
    return {f"AIRFLOW_CONN_{conn_id.upper()}": json.dumps(connection)}
