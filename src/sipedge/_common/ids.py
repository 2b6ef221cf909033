"""Random identifiers (branches, tags, nonces) from an injectable source."""

from __future__ import annotations

import secrets
from collections.abc import Callable

TokenSource = Callable[[int], bytes]

_ALPHABET = "0123456789abcdefghijklmnopqrstuvwxyz"


def token(nbytes: int = 8, source: TokenSource = secrets.token_bytes) -> str:
    """A short lowercase alphanumeric token with ``nbytes`` of entropy."""
    raw = int.from_bytes(source(nbytes), "big")
    out = []
    for _ in range((nbytes * 8 + 4) // 5):
        raw, digit = divmod(raw, 36)
        out.append(_ALPHABET[digit])
    return "".join(out)
