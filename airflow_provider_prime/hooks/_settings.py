"""Where the hook gets the API base URL, the API key and the transport options from.

Sources, in order: the Airflow connection (host = base URL, password = API key, extra = options),
or, when that connection does not exist, the environment variables the official ``prime`` CLI reads
(``PRIME_API_KEY``, ``PRIME_API_BASE_URL`` then ``PRIME_BASE_URL``). Everything is validated here,
once, so the clients can trust a :class:`PrimeApiSettings` and every mistake is reported with what
to change instead of surfacing later as an obscure transport error.

Connection extra (JSON), every key optional; a key may also carry the ``extra__prime__`` prefix
that older Airflow forms write:

=================  ==========  ============================================================
key                default     meaning
=================  ==========  ============================================================
connect_timeout    10          seconds to establish a connection (TCP + TLS)
read_timeout       30          seconds to wait for response bytes
max_retries        3           retries after the first attempt (429, 5xx, timeouts, drops)
backoff_base       1           first backoff ceiling in seconds; doubles per retry (full jitter)
backoff_max        30          cap of the backoff ceiling in seconds
retry_after_max    60          cap in seconds on a server's ``Retry-After``
verify             true        TLS verification: true, false, or the path of a CA bundle
=================  ==========  ============================================================
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import json
import math
import os
import secrets
from collections.abc import Callable, Mapping
from dataclasses import astuple, dataclass, field
from typing import Any, Protocol
from urllib.parse import urlsplit, urlunsplit

from airflow_provider_prime.exceptions import PrimeConfigError

DEFAULT_BASE_URL = "https://api.primeintellect.ai"
API_PREFIX = "/api/v1"
ENV_API_KEY = "PRIME_API_KEY"
#: Base URL variables in the order the official CLI reads them.
ENV_BASE_URLS = ("PRIME_API_BASE_URL", "PRIME_BASE_URL")
#: Prefix older connection forms put in front of extra keys.
EXTRA_PREFIX = "extra__prime__"
MAX_RETRIES_LIMIT = 100

# A per-process key: fingerprints can be compared inside one triggerer but are useless for
# guessing the API key they cover, even when printed.
_FINGERPRINT_KEY = secrets.token_bytes(16)


class ConnectionLike(Protocol):
    """The attributes read from an Airflow connection (SDK and core models both have them)."""

    @property
    def conn_id(self) -> str | None: ...
    @property
    def host(self) -> str | None: ...
    @property
    def port(self) -> int | None: ...
    @property
    def password(self) -> str | None: ...
    @property
    def extra(self) -> str | None: ...


@dataclass(frozen=True)
class PrimeApiSettings:
    """Everything needed to talk to the API, validated and normalised on construction.

    ``api_key`` is left out of the repr; ``base_url`` is normalised (no trailing ``/`` nor
    ``/api/v1``) and must be https unless it points at a loopback host.
    """

    base_url: str
    api_key: str = field(repr=False)
    connect_timeout: float = 10.0
    read_timeout: float = 30.0
    max_retries: int = 3
    backoff_base: float = 1.0
    backoff_max: float = 30.0
    retry_after_max: float = 60.0
    verify: bool | str = True

    def __post_init__(self) -> None:
        if not isinstance(self.api_key, str) or not self.api_key.strip():
            raise PrimeConfigError("The Prime Intellect API key is empty.")
        object.__setattr__(self, "base_url", normalise_base_url(self.base_url))
        for name in ("connect_timeout", "read_timeout"):
            object.__setattr__(self, name, _number(name, getattr(self, name), positive=True))
        for name in ("backoff_base", "backoff_max", "retry_after_max"):
            object.__setattr__(self, name, _number(name, getattr(self, name), positive=False))
        object.__setattr__(self, "max_retries", _retries("max_retries", self.max_retries))
        object.__setattr__(self, "verify", _verify("verify", self.verify))

    @property
    def fingerprint(self) -> str:
        """A short keyed hash of every field, equal for equal settings within this process.

        Used to share one poller per (base URL, key, options); it never reveals the key.
        """
        material = json.dumps(astuple(self), default=str).encode()
        return hashlib.blake2b(material, key=_FINGERPRINT_KEY, digest_size=8).hexdigest()


def normalise_base_url(raw: str | None, port: int | None = None) -> str:
    """Return the API root as ``scheme://host[:port][/prefix]`` without ``/api/v1`` or trailing ``/``.

    A value without a scheme is taken as https (``api.primeintellect.ai`` works). Plain http is
    accepted only for loopback hosts (a local simulator or tunnel); the key must not cross a
    network in clear text. ``port`` (the connection's port field) is used when the URL has none.
    """
    text = (raw or "").strip()
    if not text:
        text = DEFAULT_BASE_URL
    if "://" not in text:
        text = f"https://{text}"
    try:
        parts = urlsplit(text)
        url_port = parts.port
    except ValueError as exc:
        raise PrimeConfigError(f"The API base URL {text!r} is not a valid URL: {exc}.") from None
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    if scheme not in ("http", "https") or not host:
        raise PrimeConfigError(
            f"The API base URL {text!r} must look like {DEFAULT_BASE_URL} (http or https, with a host)."
        )
    if parts.username is not None or parts.password is not None:
        raise PrimeConfigError(
            "The API base URL must not contain credentials; put the API key in the connection password."
        )
    if parts.query or parts.fragment:
        raise PrimeConfigError(f"The API base URL {text!r} must not have a query or fragment.")
    if scheme == "http" and not is_loopback(host):
        raise PrimeConfigError(
            f"The API base URL {text!r} uses plain http to a non-loopback host; the API key would travel "
            "unencrypted. Use https (plain http is allowed only for 127.0.0.0/8, ::1 and localhost)."
        )
    path = parts.path.rstrip("/")
    if path.endswith(API_PREFIX):
        path = path[: -len(API_PREFIX)].rstrip("/")
    final_port = url_port if url_port is not None else port
    netloc = f"[{host}]" if ":" in host else host
    if final_port is not None:
        netloc = f"{netloc}:{final_port}"
    return urlunsplit((scheme, netloc, path, "", ""))


def is_loopback(host: str) -> bool:
    """Whether ``host`` names this machine: ``localhost``, 127.0.0.0/8 or ::1."""
    if host.strip("[]").lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def settings_from_connection(conn: ConnectionLike) -> PrimeApiSettings:
    """Build settings from an Airflow connection: host, password (API key) and extra options."""
    name = conn.conn_id or "(unnamed)"
    key = (conn.password or "").strip()
    if not key:
        raise PrimeConfigError(
            f"Connection {name!r} has no API key: put your Prime Intellect API key in its password "
            '("API key") field.'
        )
    try:
        base_url = normalise_base_url(conn.host, conn.port)
        return PrimeApiSettings(base_url=base_url, api_key=key, **options_from_extra(conn.extra))
    except PrimeConfigError as exc:
        raise PrimeConfigError(f"Connection {name!r}: {exc}") from None


def settings_from_environment(environ: Mapping[str, str] | None = None) -> PrimeApiSettings | None:
    """Settings from ``PRIME_API_KEY`` / ``PRIME_API_BASE_URL`` / ``PRIME_BASE_URL``; None without a key."""
    env = os.environ if environ is None else environ
    key = env.get(ENV_API_KEY, "").strip()
    if not key:
        return None
    base_url = next((env[v] for v in ENV_BASE_URLS if env.get(v, "").strip()), DEFAULT_BASE_URL)
    try:
        return PrimeApiSettings(base_url=base_url, api_key=key)
    except PrimeConfigError as exc:
        raise PrimeConfigError(f"From the environment ({ENV_API_KEY} and its base URL): {exc}") from None


def missing_key_error(conn_id: str) -> PrimeConfigError:
    """The error for "no connection and no PRIME_API_KEY", saying every way to fix it."""
    return PrimeConfigError(
        f"No Prime Intellect API key: the Airflow connection {conn_id!r} is not defined and "
        f"{ENV_API_KEY} is not set. Create the connection (type 'Prime Intellect', API key in the password "
        f"field) in the UI, with `airflow connections add`, or as AIRFLOW_CONN_{conn_id.upper()}="
        '\'{"conn_type": "prime", "password": "<API key>"}\'; or export '
        f"{ENV_API_KEY} (and optionally {ENV_BASE_URLS[0]}) as for the prime CLI."
    )


def options_from_extra(extra: str | Mapping[str, Any] | None) -> dict[str, Any]:
    """Parse and validate the connection extra into :class:`PrimeApiSettings` keyword arguments.

    Empty values (a form field left blank) mean "default". Unknown keys are an error: a typo such as
    ``read_timout`` would otherwise silently keep the default.
    """
    if extra is None or extra == "":
        return {}
    if isinstance(extra, str):
        try:
            data = json.loads(extra)
        except ValueError:
            raise PrimeConfigError("the extra field is not valid JSON.") from None
    else:
        data = extra
    if not isinstance(data, Mapping):
        raise PrimeConfigError("the extra field must be a JSON object.")
    options: dict[str, Any] = {}
    unknown = []
    for key, value in data.items():
        name = key[len(EXTRA_PREFIX) :] if key.startswith(EXTRA_PREFIX) else key
        parser = _OPTION_PARSERS.get(name)
        if parser is None:
            unknown.append(key)
        elif value is not None and value != "":
            options[name] = parser(name, value)
    if unknown:
        raise PrimeConfigError(
            f"unknown extra field(s) {', '.join(sorted(map(repr, unknown)))}; "
            f"known: {', '.join(OPTION_NAMES)}."
        )
    return options


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _number(name: str, value: Any, *, positive: bool) -> float:
    number = math.nan
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        number = float(value)
    elif isinstance(value, str):
        with contextlib.suppress(ValueError):
            number = float(value.strip())
    if not math.isfinite(number) or number < 0 or (positive and number == 0):
        kind = "a positive" if positive else "a non-negative"
        raise PrimeConfigError(f"{name} must be {kind} number of seconds, got {_shown(value)}.")
    return number


def _retries(name: str, value: Any) -> int:
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_RETRIES_LIMIT:
        raise PrimeConfigError(
            f"{name} must be a whole number from 0 to {MAX_RETRIES_LIMIT}, got {_shown(value)}."
        )
    return value


def _verify(name: str, value: Any) -> bool | str:
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
        raise PrimeConfigError(
            f"{name} must be true, false or the path of a CA bundle file; {_shown(value)} does not exist."
        )
    raise PrimeConfigError(f"{name} must be true, false or the path of a CA bundle, got {_shown(value)}.")


def _positive(name: str, value: Any) -> float:
    return _number(name, value, positive=True)


def _non_negative(name: str, value: Any) -> float:
    return _number(name, value, positive=False)


_OPTION_PARSERS: dict[str, Callable[[str, Any], Any]] = {
    "connect_timeout": _positive,
    "read_timeout": _positive,
    "max_retries": _retries,
    "backoff_base": _non_negative,
    "backoff_max": _non_negative,
    "retry_after_max": _non_negative,
    "verify": _verify,
}
#: The connection extra keys the hook understands.
OPTION_NAMES = tuple(_OPTION_PARSERS)
