"""Provider metadata returned through the ``apache_airflow_provider`` entry point.

Airflow calls this while discovering providers, so it imports nothing from Airflow or from the
rest of the package.
"""

from __future__ import annotations

from typing import Any

from airflow_provider_prime import __version__


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
                "connection-type": "prime",
            }
        ],
    }
