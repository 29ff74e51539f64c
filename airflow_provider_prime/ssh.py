"""SSH targets of a pod's nodes: parsed from the platform's text, and Airflow SSH hooks built from them.

The API gives each node's SSH target as text meant for a shell (``"root@203.0.113.10 -p 22"``).
Airflow's SSH provider (``SSHHook``, ``SSHOperator``) wants a host, a user and a port. So the
handover carries both: the text as the platform gave it, and the fields parsed here
(:func:`node_entry`). :func:`ssh_hook` builds an ``SSHHook`` for one node.

The SSH provider (``apache-airflow-providers-ssh``) is not a dependency of this provider: it is
imported only by :func:`ssh_hook`, which says how to install it when it is missing.
"""

from __future__ import annotations

import inspect
import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from airflow_provider_prime.exceptions import PrimeConfigError

if TYPE_CHECKING:
    from airflow.providers.ssh.hooks.ssh import SSHHook

#: The port when the text names none, as for ``ssh`` itself.
DEFAULT_SSH_PORT = 22
#: ``ssh`` options that take a value (``ssh -i key -o Opt=v user@host``), so the value is not
#: mistaken for the destination.
_OPTIONS_WITH_VALUE = frozenset(f"-{letter}" for letter in "BbcDEeFIiJLlmOopQRSWw")


@dataclass(frozen=True)
class SshTarget:
    """Where to reach one node: ``user`` is ``None`` when the text names no user."""

    user: str | None
    host: str
    port: int


def parse_ssh_target(text: str | None) -> SshTarget | None:
    """The target in the platform's SSH text, or ``None`` when there is none (or it is unreadable).

    Tolerant of the forms seen in the wild: ``root@h -p 22``, ``ssh root@h -p 2222``, ``root@h``
    (port 22), ``-p2222``, ``-l user h``, ``h:2222``, ``ssh://root@h:2222``, and IPv6 hosts bare
    (``root@2001:db8::1 -p 22``) or in brackets (``root@[2001:db8::1]:2222``).
    """
    if not text or not text.strip():
        return None
    try:
        words = shlex.split(text)
    except ValueError:  # an unbalanced quote: read it word by word
        words = text.split()
    if words and words[0] == "ssh":
        words = words[1:]
    user: str | None = None
    port: str | None = None
    destination: str | None = None
    index = 0
    while index < len(words):
        word = words[index]
        if word in _OPTIONS_WITH_VALUE:
            value = words[index + 1] if index + 1 < len(words) else None
            port = value if word == "-p" else port
            user = value if word == "-l" else user
            index += 2
            continue
        if word.startswith("-p") and word[2:].isdigit():
            port = word[2:]
        elif word.startswith("-l") and len(word) > 2:
            user = word[2:]
        elif not word.startswith("-") and destination is None:
            destination = word
        index += 1
    if destination is None:
        return None
    host, named_user, named_port = _split_destination(destination)
    port = port or named_port
    if not host or (port is not None and not port.isdigit()):
        return None
    return SshTarget(named_user or user, host, int(port) if port else DEFAULT_SSH_PORT)


def _split_destination(destination: str) -> tuple[str, str | None, str | None]:
    """``(host, user, port)`` of ``[user@]host[:port]`` or ``ssh://[user@]host[:port]``."""
    if destination.startswith("ssh://"):
        parts = urlsplit(destination)
        try:
            number = parts.port
        except ValueError:
            return "", None, None
        return parts.hostname or "", parts.username, None if number is None else str(number)
    user, _, host = destination.rpartition("@")
    port: str | None = None
    if host.startswith("["):  # [v6] or [v6]:port
        inside, _, rest = host[1:].partition("]")
        host, port = inside, rest[1:] if rest.startswith(":") else None
    elif host.count(":") == 1:  # host:port (a bare IPv6 address has several colons)
        host, port = host.split(":")
    return host, user or None, port


def node_entry(ssh_connection: str | None, ip: str | None) -> dict[str, Any]:
    """One node of the handover: the platform's text as given, and the parsed target (or ``None``s)."""
    target = parse_ssh_target(ssh_connection)
    return {
        "ssh_connection": ssh_connection,
        "ip": ip,
        "user": target.user if target else None,
        "host": target.host if target else None,
        "port": target.port if target else None,
    }


def ssh_hook_kwargs(node: Mapping[str, Any], **overrides: Any) -> dict[str, Any]:
    """The ``SSHHook`` arguments for one node of the handover (``overrides`` win).

    Host key checking is off by default: every pod is a new machine whose key cannot be known in
    advance, and the platform does not publish it. Pass ``no_host_key_check=False`` with an SSH
    connection that pins ``host_key`` to check it. The key to log in with comes from that
    connection (``ssh_conn_id``) or ``key_file``.
    """
    host = node.get("host")
    if not host:
        shown = node.get("ssh_connection")
        raise PrimeConfigError(
            f"This node has no SSH target (the platform said {shown!r}): nothing to connect to"
        )
    kwargs: dict[str, Any] = {
        "remote_host": host,
        "username": node.get("user"),
        "port": node.get("port") or DEFAULT_SSH_PORT,
        "no_host_key_check": True,
    }
    kwargs.update(overrides)
    return kwargs


def ssh_hook(node: Mapping[str, Any], **overrides: Any) -> SSHHook:
    """An Airflow ``SSHHook`` for one node of the handover, e.g. ``ssh_hook(node, ssh_conn_id="my_key")``.

    ``overrides`` are passed to ``SSHHook`` as they are (``ssh_conn_id``, ``key_file``,
    ``conn_timeout``...); the node's host, user and port win over the connection's.
    """
    try:
        from airflow.providers.ssh.hooks.ssh import SSHHook
    except ImportError as exc:
        raise PrimeConfigError(
            "ssh_hook needs Airflow's SSH provider, which is not installed: "
            "pip install apache-airflow-providers-ssh"
        ) from exc
    kwargs = ssh_hook_kwargs(node, **overrides)
    if "no_host_key_check" not in inspect.signature(SSHHook.__init__).parameters:
        # Older SSH providers read it only from the connection's extra; set it on the hook instead.
        no_check = kwargs.pop("no_host_key_check")
        hook = SSHHook(**kwargs)
        hook.no_host_key_check = no_check
        return hook
    return SSHHook(**kwargs)


__all__ = ["DEFAULT_SSH_PORT", "SshTarget", "node_entry", "parse_ssh_target", "ssh_hook", "ssh_hook_kwargs"]
