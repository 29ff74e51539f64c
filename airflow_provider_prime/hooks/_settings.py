"""Where the hook gets the API base URL, the API key and the transport options from.

Sources, in order: the Airflow connection (host = base URL, password = API key, extra = options),
or, when that connection does not exist, the environment variables the official ``prime`` CLI reads
(``PRIME_API_KEY``, ``PRIME_API_BASE_URL`` then ``PRIME_BASE_URL``). Everything is validated here,
once, by :class:`PrimeApiSettings`, so the clients can trust it and every mistake is reported with
what to change instead of surfacing later as an obscure transport error. The options, their
defaults and bounds are the table of :mod:`._options`.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import os
import secrets
from collections.abc import Mapping
from dataclasses import astuple, dataclass, field
from typing import Any, Protocol
from urllib.parse import urlsplit, urlunsplit

from airflow_provider_prime.exceptions import PrimeConfigError
from airflow_provider_prime.hooks._options import OPTIONS_BY_NAME, extra_values
from airflow_provider_prime.hooks._secrets import key_problem

DEFAULT_BASE_URL = "https://api.primeintellect.ai"
API_PREFIX = "/api/v1"
ENV_API_KEY = "PRIME_API_KEY"
#: Base URL variables in the order the official CLI reads them.
ENV_BASE_URLS = ("PRIME_API_BASE_URL", "PRIME_BASE_URL")

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
    connect_timeout: float = OPTIONS_BY_NAME["connect_timeout"].default
    read_timeout: float = OPTIONS_BY_NAME["read_timeout"].default
    max_retries: int = int(OPTIONS_BY_NAME["max_retries"].default)
    backoff_base: float = OPTIONS_BY_NAME["backoff_base"].default
    backoff_max: float = OPTIONS_BY_NAME["backoff_max"].default
    retry_after_max: float = OPTIONS_BY_NAME["retry_after_max"].default
    verify: bool | str = bool(OPTIONS_BY_NAME["verify"].default)

    def __post_init__(self) -> None:
        if not isinstance(self.api_key, str) or not self.api_key.strip():
            raise PrimeConfigError("The Prime Intellect API key is empty.")
        problem = key_problem(self.api_key)
        if problem is not None:
            # Such a key cannot travel in a header, and the HTTP libraries would quote it escaped
            # in their errors, where scrubbing may miss it: refused, without showing any of it.
            raise PrimeConfigError(
                f"The Prime Intellect API key is unusable: {problem}. Copy the key again from the "
                "Prime Intellect dashboard, without line breaks or spaces."
            )
        object.__setattr__(self, "base_url", normalise_base_url(self.base_url))
        for name, option in OPTIONS_BY_NAME.items():
            try:
                object.__setattr__(self, name, option.parse(getattr(self, name)))
            except ValueError as exc:
                raise PrimeConfigError(str(exc)) from None

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
        return PrimeApiSettings(base_url=base_url, api_key=key, **extra_options(conn.extra))
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


def connection_env_var(conn_id: str) -> str:
    """The environment variable Airflow reads a connection from: ``AIRFLOW_CONN_<ID>``."""
    return f"AIRFLOW_CONN_{conn_id.upper()}"


def unparsable_connection_error(
    conn_id: str, environ: Mapping[str, str] | None = None
) -> PrimeConfigError | None:
    """The error for a connection Airflow reported as not defined although it is: None if truly absent.

    Airflow's lookup swallows a secrets backend's failure to parse a connection and then says the
    connection "isn't defined". Falling back to ``PRIME_API_KEY`` then would silently use another
    key, perhaps another account. The one source this can be told from is the environment: an
    ``AIRFLOW_CONN_<ID>`` that is set means the connection exists and could not be parsed. The
    message never shows the variable's value (it holds the key).
    """
    env = os.environ if environ is None else environ
    name = connection_env_var(conn_id)
    if not env.get(name, "").strip():
        return None
    return PrimeConfigError(
        f"The Airflow connection {conn_id!r} is defined in {name} but Airflow could not parse it, so it "
        f"was not used (nor {ENV_API_KEY} in its place). Fix {name}: a JSON object such as "
        '\'{"conn_type": "prime", "password": "<API key>", "extra": {...}}\' (valid JSON, a whole-number '
        "port) or a URI such as prime://:<API key>@api.primeintellect.ai."
    )


def missing_key_error(conn_id: str) -> PrimeConfigError:
    """The error for "no connection and no PRIME_API_KEY", saying every way to fix it."""
    return PrimeConfigError(
        f"No Prime Intellect API key: the Airflow connection {conn_id!r} is not defined and "
        f"{ENV_API_KEY} is not set. Create the connection (type 'Prime Intellect', API key in the password "
        f"field) in the UI, with `airflow connections add`, or as AIRFLOW_CONN_{conn_id.upper()}="
        '\'{"conn_type": "prime", "password": "<API key>"}\'; or export '
        f"{ENV_API_KEY} (and optionally {ENV_BASE_URLS[0]}) as for the prime CLI."
    )


def extra_options(extra: str | Mapping[str, Any] | None) -> dict[str, Any]:
    """The connection extra (JSON text or a mapping) as :class:`PrimeApiSettings` keyword arguments.

    Blank values (a form field left empty) mean "default"; keys may carry the ``extra__prime__``
    prefix of older forms; unknown keys are refused. The values are validated by the settings.
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
    try:
        return extra_values(dict(data))
    except ValueError as exc:
        raise PrimeConfigError(str(exc)) from None
