"""Provider metadata returned through the ``apache_airflow_provider`` entry point.

Airflow calls this while discovering providers, so it imports nothing from Airflow and, from the
package, only the connection form data (standard library only).
"""

from __future__ import annotations

from typing import Any

from airflow_provider_prime import __version__
from airflow_provider_prime.hooks._form import CONNECTION_FIELDS as CONNECTION_FIELDS
from airflow_provider_prime.hooks._form import UI_FIELD_BEHAVIOUR as UI_FIELD_BEHAVIOUR


def get_provider_info() -> dict[str, Any]:
    """Describe the package, its hook, sensor and trigger modules and the ``prime`` connection type."""
    return {
        "package-name": "airflow-provider-prime",
        "name": "Prime Intellect",
        "description": "Rent Prime Intellect GPU pods, wait until they are ready for training, delete them.",
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
        "operators": [
            {
                "integration-name": "Prime Intellect",
                "python-modules": [
                    "airflow_provider_prime.operators.pod",
                    "airflow_provider_prime.operators.job",
                    "airflow_provider_prime.operators.reaper",
                ],
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
                "python-modules": [
                    "airflow_provider_prime.triggers.pod_status",
                    "airflow_provider_prime.triggers.pod_lifecycle",
                    "airflow_provider_prime.triggers.job",
                    "airflow_provider_prime.triggers.capacity",
                    "airflow_provider_prime.triggers.capacity_event",
                ],
            }
        ],
        "config": {
            "prime": {
                "description": "Options of the Prime Intellect provider.",
                "options": {
                    "deployment_id": {
                        "description": (
                            "This Airflow deployment's identity in the names of the pods it creates and in "
                            "their ownership records: pods of another deployment sharing the Prime API key "
                            "are never adopted or reaped. 1 to 32 characters of a-z, 0-9 and '-'. When "
                            "empty, a hash of [core] execution_api_server_url (or of [api] base_url when "
                            "that is unset). Set it explicitly when two deployments share a key and could "
                            "share that address (both on localhost, say), and keep it when the deployment "
                            "moves: pods created under another identity are not this deployment's.\n"
                        ),
                        "version_added": None,
                        "type": "string",
                        "example": "prod",
                        "default": "",
                    }
                },
            }
        },
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
