"""Provider metadata returned through the ``apache_airflow_provider`` entry point.

Airflow calls this while discovering providers, so it imports nothing from Airflow or from the
rest of the package.
"""

from __future__ import annotations

from typing import Any

from airflow_provider_prime import __version__

#: The "prime" connection form, as data: Airflow >= 3.2 reads it from the provider info without
#: importing the hook; ``PrimeHook`` derives the hook methods Airflow 3.1 calls from the same dicts.
#: The keys are the connection-extra options of ``airflow_provider_prime.hooks._settings``.
CONNECTION_FIELDS: dict[str, dict[str, Any]] = {
    "connect_timeout": {
        "label": "Connect timeout (seconds)",
        "description": "Time allowed to open a connection to the API.",
        "schema": {"type": ["number", "null"], "default": 10, "minimum": 0},
    },
    "read_timeout": {
        "label": "Read timeout (seconds)",
        "description": "Time allowed for the API to answer.",
        "schema": {"type": ["number", "null"], "default": 30, "minimum": 0},
    },
    "max_retries": {
        "label": "Retries",
        "description": "Retries after the first attempt on 429, 5xx, timeouts and dropped connections.",
        "schema": {"type": ["integer", "null"], "default": 3, "minimum": 0, "maximum": 100},
    },
    "backoff_base": {
        "label": "Backoff base (seconds)",
        "description": "First backoff ceiling; doubles on each retry, with full jitter.",
        "schema": {"type": ["number", "null"], "default": 1, "minimum": 0},
    },
    "backoff_max": {
        "label": "Backoff cap (seconds)",
        "description": "Longest wait between two retries.",
        "schema": {"type": ["number", "null"], "default": 30, "minimum": 0},
    },
    "retry_after_max": {
        "label": "Retry-After cap (seconds)",
        "description": "Longest wait honoured from the API's Retry-After header.",
        "schema": {"type": ["number", "null"], "default": 60, "minimum": 0},
    },
}
UI_FIELD_BEHAVIOUR: dict[str, Any] = {
    "hidden-fields": ["schema", "login", "port"],
    "relabeling": {"host": "API base URL", "password": "API key"},
    "placeholders": {
        "host": "https://api.primeintellect.ai",
        "password": "Prime Intellect API key (Instances → Read is enough)",
        "extra": '{"read_timeout": 30, "max_retries": 3, "verify": true}',
    },
}


def get_provider_info() -> dict[str, Any]:
    """Describe the package, its hook, sensor and trigger modules and the ``prime`` connection type."""
    return {
        "package-name": "airflow-provider-prime",
        "name": "Prime Intellect",
        "description": "Wait for Prime Intellect GPU pods to be ACTIVE and installed before training.",
        "versions": [__version__],
        "integrations": [
            {
                "integration-name": "Prime Intellect",
                "external-doc-url": "https://docs.primeintellect.ai/",
                "tags": ["service"],
            }
        ],
        "hooks": [
            {
                "integration-name": "Prime Intellect",
                "python-modules": ["airflow_provider_prime.hooks.prime"],
            }
        ],
        "sensors": [
            {
                "integration-name": "Prime Intellect",
                "python-modules": ["airflow_provider_prime.sensors.pod_status"],
            }
        ],
        "triggers": [
            {
                "integration-name": "Prime Intellect",
                "python-modules": ["airflow_provider_prime.triggers.pod_status"],
            }
        ],
        "connection-types": [
            {
                "hook-class-name": "airflow_provider_prime.hooks.prime.PrimeHook",
                "hook-name": "Prime Intellect",
                "connection-type": "prime",
                "conn-fields": CONNECTION_FIELDS,
                "ui-field-behaviour": UI_FIELD_BEHAVIOUR,
            }
        ],
    }
