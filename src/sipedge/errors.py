"""The error families of sipedge (STYLE.md B5).

Every codec raises only :class:`ParseError`, which carries the reply the protocol wants
(``hint``): a SIP ``(status, reason)``, a STUN error code, a WebSocket close code.
"""

from __future__ import annotations


class Error(Exception):
    """Base of every error sipedge raises on purpose."""


class ParseError(Error, ValueError):
    """The peer sent malformed bytes.

    ``hint`` is the reply the protocol wants, e.g. ``(400, "Bad Via")`` for SIP or
    ``400`` for STUN. ``None`` means the input is unanswerable: drop it.
    """

    def __init__(self, message: str, hint: tuple[int, str] | int | None = (400, "Bad Request")):
        super().__init__(message)
        self.hint = hint

    def sip_reply(self, default: tuple[int, str] = (400, "Bad Request")) -> tuple[int, str]:
        """The SIP ``(status, reason)`` to answer with: the hint when it is one, else
        ``default`` (a codec of another protocol raised it, or it is unanswerable)."""
        return self.hint if isinstance(self.hint, tuple) else default


class UsageError(Error):
    """Our own code misused an API (a bug on our side, never the peer's)."""


class ConfigError(Error):
    """A configuration problem found at start-up; the message names key, value and fix."""


class StorageError(Error):
    """A backend (SQLite, PostgreSQL, Redis) failed; the request fails with 500/503."""
