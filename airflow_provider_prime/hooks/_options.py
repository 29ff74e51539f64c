"""The connection-extra options of the ``prime`` connection: ONE table, and everything derived from it.

Each :class:`Option` holds a name, its default, the form label and description, its bounds and
how a value is read. From this table come the provider info's ``conn-fields`` (the Airflow 3.2+
form), the Airflow 3.1 form widgets, the parser of the connection extra, the
:class:`~._settings.PrimeApiSettings` defaults and the options table of ``docs/connection.md``.

It imports nothing beyond the standard library: ``get_provider_info`` builds the provider info
from it while Airflow discovers providers. Problems are raised as :class:`ValueError` with the
text for the user; :mod:`._settings` turns them into ``PrimeConfigError`` naming the connection.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

#: Prefix older connection forms put in front of extra keys.
EXTRA_PREFIX = "extra__prime__"


@dataclass(frozen=True)
class Option:
    """One connection-extra option.

    ``kind`` is ``"seconds"`` (a float, ``minimum`` and whether 0 is allowed by ``positive``),
    ``"count"`` (a whole number from ``minimum`` to ``maximum``) or ``"verify"`` (true, false or
    a CA bundle path; JSON extra only, no form field).
    """

    name: str
    default: float | int | bool
    label: str
    description: str
    kind: str
    positive: bool = False
    maximum: int | None = None

    def parse(self, value: Any) -> Any:
        """The value as the settings hold it; :class:`ValueError` with the user's message if unusable."""
        return _PARSERS[self.kind](self, value)

    @property
    def in_form(self) -> bool:
        return self.kind != "verify"

    def field(self) -> dict[str, Any]:
        """The provider-info ``conn-fields`` entry (JSON schema of the form field)."""
        schema: dict[str, Any] = {
            "type": ["integer" if self.kind == "count" else "number", "null"],
            "default": self.default,
            "minimum": 0,
        }
        if self.maximum is not None:
            schema["maximum"] = self.maximum
        return {"label": self.label, "description": self.description, "schema": schema}

    def doc_row(self) -> str:
        default = str(self.default).lower() if isinstance(self.default, bool) else f"{self.default:g}"
        bounds = f" 0 to {self.maximum}." if self.maximum is not None else ""
        return f"| `{self.name}` | `{default}` | {self.label}: {self.description}{bounds} |"


def _seconds(option: Option, value: Any) -> float:
    number = math.nan
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        number = float(value)
    elif isinstance(value, str):
        with contextlib.suppress(ValueError):
            number = float(value.strip())
    if not math.isfinite(number) or number < 0 or (option.positive and number == 0):
        kind = "a positive" if option.positive else "a non-negative"
        raise ValueError(f"{option.name} must be {kind} number of seconds, got {_shown(value)}.")
    return number


def _count(option: Option, value: Any) -> int:
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    top = option.maximum if option.maximum is not None else math.inf
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= top:
        raise ValueError(
            f"{option.name} must be a whole number from 0 to {option.maximum}, got {_shown(value)}."
        )
    return value


def _verify(option: Option, value: Any) -> bool | str:
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        lowered = value.strip().lower()
        if lowered in ("true", "1", "yes"):
            return True
        if lowered in ("false", "0", "no"):
            return False
        if os.path.exists(value.strip()):
            return value.strip()
        raise ValueError(
            f"{option.name} must be true, false or the path of a CA bundle file; "
            f"{_shown(value)} does not exist."
        )
    raise ValueError(f"{option.name} must be true, false or the path of a CA bundle, got {_shown(value)}.")


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


_PARSERS: dict[str, Callable[[Option, Any], Any]] = {"seconds": _seconds, "count": _count, "verify": _verify}

OPTIONS: tuple[Option, ...] = (
    Option(
        "connect_timeout",
        10,
        "Connect timeout (seconds)",
        "Time allowed to open a connection to the API (TCP and TLS).",
        "seconds",
        positive=True,
    ),
    Option(
        "read_timeout",
        30,
        "Read timeout (seconds)",
        "Time allowed for the API to answer.",
        "seconds",
        positive=True,
    ),
    Option(
        "max_retries",
        3,
        "Retries",
        "Retries after the first attempt on 429, 408, 5xx, timeouts and dropped or refused connections.",
        "count",
        maximum=100,
    ),
    Option(
        "backoff_base",
        1,
        "Backoff base (seconds)",
        "First backoff ceiling; doubles on each retry, with full jitter.",
        "seconds",
    ),
    Option("backoff_max", 30, "Backoff cap (seconds)", "Longest wait between two retries.", "seconds"),
    Option(
        "retry_after_max",
        60,
        "Retry-After cap (seconds)",
        "Longest wait honoured from the API's Retry-After header (seconds or HTTP date).",
        "seconds",
    ),
    Option(
        "verify",
        True,
        "TLS verification",
        "true, false, or the path of a CA bundle (a proxy with its own certificate authority); "
        "JSON extra only.",
        "verify",
    ),
)
OPTIONS_BY_NAME: dict[str, Option] = {option.name: option for option in OPTIONS}

#: The provider info's ``conn-fields``: the options a form shows.
CONNECTION_FIELDS: dict[str, dict[str, Any]] = {o.name: o.field() for o in OPTIONS if o.in_form}


def docs_table() -> str:
    """The options table of ``docs/connection.md`` (a test keeps the page equal to it)."""
    rows = "\n".join(option.doc_row() for option in OPTIONS)
    return f"| Extra key | Default | Meaning |\n|---|---|---|\n{rows}\n"


def extra_values(data: dict[str, Any]) -> dict[str, Any]:
    """The options named in a decoded extra (prefix dropped, blanks meaning "default" left out).

    Unknown keys are refused: a typo such as ``read_timout`` would otherwise silently keep the
    default. The values are checked once, by the settings they are given to.
    """
    values: dict[str, Any] = {}
    unknown = []
    for key, value in data.items():
        option = OPTIONS_BY_NAME.get(key.removeprefix(EXTRA_PREFIX))
        if option is None:
            unknown.append(key)
        elif value is not None and value != "":
            values[option.name] = value
    if unknown:
        raise ValueError(
            f"unknown extra field(s) {', '.join(sorted(map(repr, unknown)))}; "
            f"known: {', '.join(OPTIONS_BY_NAME)}."
        )
    return values
