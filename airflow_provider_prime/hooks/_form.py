"""The "prime" connection form, as data, beside the options table it shows.

Airflow 3.2+ reads it from the provider info without importing the hook; :class:`~.prime.PrimeHook`
derives the form methods Airflow 3.1 calls from the same data. Standard library only: the provider
info imports it while Airflow discovers providers.
"""

from __future__ import annotations

from typing import Any

from airflow_provider_prime.hooks._options import CONNECTION_FIELDS as CONNECTION_FIELDS

UI_FIELD_BEHAVIOUR: dict[str, Any] = {
    "hidden-fields": ["schema", "login", "port"],
    "relabeling": {"host": "API base URL", "password": "API key"},
    "placeholders": {
        "host": "https://api.primeintellect.ai",
        "password": "Prime Intellect API key (Instances → Read to wait; Read and write to create or delete)",
        "extra": '{"read_timeout": 30, "max_retries": 3, "verify": true}',
    },
}
