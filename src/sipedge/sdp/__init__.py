"""SDP (RFC 8866), sans-I/O: parse, typed views, rewrite, serialize byte-exact."""

from __future__ import annotations

from .attributes import (
    TYPE_PREFERENCE,
    Candidate,
    Connection,
    Crypto,
    Fingerprint,
    Fmtp,
    Group,
    MediaLine,
    Origin,
    Rtcp,
    RtpMap,
    Ssrc,
    candidate_priority,
)
from .model import Line, MediaSection, SessionDescription, parse

__all__ = [
    "TYPE_PREFERENCE",
    "Candidate",
    "Connection",
    "Crypto",
    "Fingerprint",
    "Fmtp",
    "Group",
    "Line",
    "MediaLine",
    "MediaSection",
    "Origin",
    "RtpMap",
    "Rtcp",
    "SessionDescription",
    "Ssrc",
    "candidate_priority",
    "parse",
]
