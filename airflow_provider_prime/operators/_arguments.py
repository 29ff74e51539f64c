"""The operators' arguments read as the values they stand for: durations, whole numbers, prices,
flags, API timestamps, and the secret values in a pod request that must be masked in logs."""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Mapping
from datetime import datetime, timedelta, timezone

from airflow_provider_prime.exceptions import PrimeConfigError
from airflow_provider_prime.models import PodRequest


def seconds(value: timedelta | float) -> float:
    """A duration argument (seconds or a timedelta) as seconds."""
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


def timestamp(text: str | None) -> datetime | None:
    """An API timestamp as an aware datetime (``Z`` accepted on Python 3.10 too); None if unusable."""
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def whole_number(value: object, argument: str) -> int | None:
    """A positive whole-number argument (an int, or its text from a template); None when not given.

    A bad value is the user's to fix, so it is a ``PrimeConfigError`` naming the argument, never
    the bare ``ValueError``/``TypeError`` that ``int()`` would give.
    """
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    number: int | None = None
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, float) and value.is_integer():
        number = int(value)
    elif isinstance(value, str) and value.strip().lstrip("+").isdigit():
        number = int(value.strip())
    if number is None or number < 1:
        raise PrimeConfigError(f"{argument} must be a positive whole number, not {value!r}")
    return number


def env_values(value: object) -> list[str]:
    """Every value of an environment given as a mapping or in the API's ``[{"key", "value"}]`` form.

    What the create operator hands to Airflow's secret masker: pod environments carry tokens
    (``HF_TOKEN``, ``WANDB_API_KEY``). Anything else (None, a malformed entry) gives no values.
    """
    if isinstance(value, Mapping):
        return [text for text in value.values() if isinstance(text, str) and text]
    if isinstance(value, (list, tuple)):
        return [
            item["value"]
            for item in value
            if isinstance(item, Mapping) and isinstance(item.get("value"), str) and item["value"]
        ]
    return []


def request_secrets(request: object) -> list[str]:
    """The secret values of a pod request (a :class:`PodRequest`, its fields as a dict, or their JSON).

    The environment's values (``envVars``/``env_vars``, either form) and the Jupyter password.
    """
    if isinstance(request, str):
        try:
            request = json.loads(request)
        except ValueError:
            return []
    if isinstance(request, PodRequest):
        found = env_values(request.env_vars)
        return [*found, request.jupyter_password] if request.jupyter_password else found
    if not isinstance(request, Mapping):
        return []
    found = [*env_values(request.get("envVars")), *env_values(request.get("env_vars"))]
    for key in ("jupyterPassword", "jupyter_password"):
        if isinstance(request.get(key), str) and request[key]:
            found.append(request[key])
    return found


def price(value: object, argument: str) -> float | None:
    """A positive, finite price argument (a number or its text); None when not given."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    number: float | None = None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        number = float(value)
    elif isinstance(value, str):
        with contextlib.suppress(ValueError):
            number = float(value.strip())
    if number is None or not math.isfinite(number) or number <= 0:
        raise PrimeConfigError(f"{argument} must be a positive finite number (per hour), not {value!r}")
    return number


def flag(value: object, argument: str) -> bool:
    """A yes/no argument: a bool, or its text from a template (``"True"``, ``"false"``, ``"1"``...).

    Plain ``bool()`` would read the rendered text ``"False"`` as true, so text is read by its
    meaning, and anything else is a ``PrimeConfigError`` naming the argument.
    """
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower() if isinstance(value, (str, int)) else None
    if text in ("true", "1", "yes", "on"):
        return True
    if text in ("false", "0", "no", "off", ""):
        return False
    raise PrimeConfigError(f"{argument} must be true or false, not {value!r}")
