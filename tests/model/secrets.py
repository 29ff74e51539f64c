"""Finding secrets in captured text: whole, escaped as HTTP libraries and JSON quote them, or in part."""

from __future__ import annotations

import json
from collections.abc import Iterable

#: Characters of a secret that, found together, count as a leak (a prefix cut at an error body's
#: 200-character limit leaks this much and more).
WINDOW = 12


class SecretScanner:
    """``find(text)``: the first form of a secret that ``text`` contains, or None."""

    def __init__(self, secrets: Iterable[str]) -> None:
        self._needles: list[tuple[str, str]] = []
        for secret in secrets:
            forms = {
                secret,
                json.dumps(secret)[1:-1],
                repr(secret)[1:-1],
                secret.encode("unicode_escape").decode(),
            }
            for form in forms:
                self._needles.append((form, f"the secret {secret[:4]}… in full"))
            for start in range(len(secret) - WINDOW + 1):
                self._needles.append(
                    (secret[start : start + WINDOW], f"{WINDOW} characters of the secret {secret[:4]}…")
                )

    def find(self, text: str) -> str | None:
        for needle, what in self._needles:
            if needle in text:
                return what
        return None
