"""Keeping the API key out of every message: which keys are accepted, and how text is scrubbed.

Two rules, one module:

* A key must be printable with no whitespace or control character inside (:func:`key_problem`).
  HTTP libraries refuse such a header and quote it in their error *escaped* (``'Bearer ab\\ncd'``),
  a form a search for the raw key never finds; real keys never contain one, so it is refused up
  front with a message that shows no part of the key.
* :func:`scrub` replaces the key in every form a library or a serialiser may have written it:
  raw, ``repr``-escaped, JSON-escaped and percent-encoded. Callers scrub the *whole* text before
  shortening or reflowing it, so a key straddling a cut cannot survive as a prefix.
"""

from __future__ import annotations

import json
import unicodedata
from collections.abc import Sequence
from urllib.parse import quote, quote_plus

#: What replaces the key in messages.
REDACTED = "***"


def key_problem(key: str) -> str | None:
    """Why ``key`` cannot be an API key (whitespace or a control character inside), or None.

    The answer never quotes the key, nor says where in it the problem is.
    """
    for char in key:
        if char.isspace():
            return "it contains whitespace (a space, tab or line break) inside it"
        if unicodedata.category(char).startswith("C"):
            return "it contains a control or non-printable character"
    return None


def secret_forms(secret: str) -> list[str]:
    """The spellings of ``secret`` that may appear in text, longest first (so none hides another)."""
    if not secret:
        return []
    forms = {
        secret,
        repr(secret)[1:-1],
        json.dumps(secret)[1:-1],
        json.dumps(secret, ensure_ascii=False)[1:-1],
        quote(secret, safe=""),
        quote_plus(secret, safe=""),
        repr(secret.encode("utf-8", "backslashreplace"))[2:-1],
    }
    return sorted((form for form in forms if form), key=len, reverse=True)


def scrub(text: str, secret: str | Sequence[str]) -> str:
    """``text`` with every spelling of ``secret`` (the key, or the key and a request's own secrets)
    replaced by ``***``; scrub before truncating."""
    secrets = (secret,) if isinstance(secret, str) else secret
    forms = sorted({form for one in secrets for form in secret_forms(one)}, key=len, reverse=True)
    for form in forms:
        text = text.replace(form, REDACTED)
    return text
