"""BUNDLE demultiplexing across the WebRTC bridge (RFC 8843): a DTLS party (a browser)
sends every media section of a BUNDLE group on one 5-tuple, and the relay hands each
packet to the stream of its own section, whose peer faces a plain party with a port per
``m=`` line.

A :class:`Bundle` hangs off every stream facing the DTLS party that is in the group
(``stream.bundle``); the first member, the BUNDLE-tag section, is the ``leader``: it owns
the shared port, the ICE credentials, the DTLS association and the latched address, and
the other members borrow them (:mod:`.packets` routes what a member sends out of the
leader).

Incoming RTP (already SRTP-unprotected) is assigned, in this order:

1. by the RTP header extension ``urn:ietf:params:rtp-hdrext:sdes:mid`` (RFC 8843 §15.2,
   RFC 8285 one- and two-byte forms) when the party negotiated it;
2. by its SSRC, once a packet of that SSRC was assigned;
3. by its payload type, when exactly one section lists it (RFC 8843 §9.2).

RTCP compounds go to the section they report on: the first report block or feedback
media SSRC that a section's plain party sends with, else a sender SSRC learned from the
party's RTP (a compound about several sections goes whole to the first). A packet that matches no section is dropped (and counted by the caller as
``media_bundle_unmatched``): guessing would hand one phone another section's media.
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING

from .rtcp import PSFB, RR, RTPFB, SR

if TYPE_CHECKING:
    from .model import Stream

MID_URI = "urn:ietf:params:rtp-hdrext:sdes:mid"
MAX_SSRCS = 64  # SSRCs learned per group: a browser sends a few (RTX, simulcast), never many
_HDR = struct.Struct("!HH")
_RTCP_HDR = struct.Struct("!BBH")


class Bundle:
    """One BUNDLE group facing a DTLS party: its members in group order, and what tells
    their packets apart."""

    __slots__ = ("by_mid", "by_pt", "by_ssrc", "members", "mid_ids")

    def __init__(self, members: list[Stream], mids: list[str], payload_types: list[set[int]],
                 mid_ids: set[int]) -> None:
        self.members = members
        self.by_mid = {mid.encode(): s for mid, s in zip(mids, members, strict=True)}
        counts: dict[int, int] = {}
        for pts in payload_types:
            for pt in pts:
                counts[pt] = counts.get(pt, 0) + 1
        self.by_pt = {pt: s for pts, s in zip(payload_types, members, strict=True) for pt in pts
                      if counts[pt] == 1}
        self.by_ssrc: dict[int, Stream] = {}
        self.mid_ids = frozenset(i for i in mid_ids if 1 <= i <= 255)

    @property
    def leader(self) -> Stream:
        return self.members[0]

    def route_rtp(self, data: bytes) -> Stream | None:
        """The member an RTP packet belongs to, or None (too short, or no section's)."""
        if len(data) < 12:
            return None
        ssrc = int.from_bytes(data[8:12], "big")
        if self.mid_ids and data[0] & 0x10:
            mid = mid_of(data, self.mid_ids)
            found = self.by_mid.get(mid) if mid is not None else None
            if found is not None:
                self._learn(ssrc, found)
                return found
        found = self.by_ssrc.get(ssrc)
        if found is not None:
            return found
        found = self.by_pt.get(data[1] & 0x7F)
        if found is not None:
            self._learn(ssrc, found)
        return found

    def route_rtcp(self, data: bytes) -> Stream | None:
        """The member an RTCP compound is about: the first report block or feedback media
        SSRC that a member's plain party sends with (what the report tells that party),
        else a sender SSRC learned from the party's RTP."""
        senders: list[int] = []
        pos = 0
        while pos + 8 <= len(data):
            b0, pt, words = _RTCP_HDR.unpack_from(data, pos)
            end = pos + 4 * (words + 1)
            if b0 >> 6 != 2 or end > len(data):
                break
            senders.append(int.from_bytes(data[pos + 4 : pos + 8], "big"))
            about: list[int] = []
            if pt in (SR, RR):
                first = pos + (28 if pt == SR else 8)
                about = [int.from_bytes(data[at : at + 4], "big")
                         for at in range(first, first + 24 * (b0 & 0x1F), 24) if at + 4 <= end]
            elif pt in (RTPFB, PSFB) and pos + 12 <= end:
                about = [int.from_bytes(data[pos + 8 : pos + 12], "big")]
            for ssrc in about:
                for s in self.members:
                    if s.peer is not None and s.peer.rtp_stats.ssrc == ssrc:
                        return s
            pos = end
        for ssrc in senders:
            found = self.by_ssrc.get(ssrc)
            if found is not None:
                return found
        return None

    def _learn(self, ssrc: int, s: Stream) -> None:
        if ssrc not in self.by_ssrc and len(self.by_ssrc) < MAX_SSRCS:
            self.by_ssrc[ssrc] = s


def mid_of(data: bytes, ids: frozenset[int]) -> bytes | None:
    """The value of the MID header extension element (an id in ``ids``) of an RTP packet,
    or None. RFC 8285: one-byte (0xBEDE) and two-byte (0x100x) forms; anything that does
    not add up is no MID."""
    if len(data) < 16:
        return None
    pos = 12 + 4 * (data[0] & 0x0F)
    if pos + 4 > len(data):
        return None
    profile, words = _HDR.unpack_from(data, pos)
    pos += 4
    end = pos + 4 * words
    if end > len(data):
        return None
    one_byte = profile == 0xBEDE
    if not one_byte and profile & 0xFFF0 != 0x1000:
        return None
    while pos < end:
        b = data[pos]
        if b == 0:  # padding
            pos += 1
            continue
        if one_byte:
            ident, length, pos = b >> 4, (b & 0x0F) + 1, pos + 1
            if ident == 15:
                return None  # reserved: stop (RFC 8285 §4.2)
        else:
            if pos + 2 > end:
                return None
            ident, length, pos = b, data[pos + 1], pos + 2
        if pos + length > end:
            return None
        if ident in ids:
            return data[pos : pos + length]
        pos += length
    return None
