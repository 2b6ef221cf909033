"""Per-stream receive statistics: packets, bytes, loss and jitter (RFC 3550 §6.4.1, A.3, A.8).

One mutable object per stream, updated in place: no allocation per packet.
"""

from __future__ import annotations

import struct

_SEQ_TS_SSRC = struct.Struct("!HII")
_MAX_DROPOUT = 3000
_MAX_MISORDER = 100


class StreamStats:
    """Receive-side counters of one stream (one party, one m= line, one component)."""

    __slots__ = (
        "_arrival",
        "_bad_seq",
        "_ts",
        "base_seq",
        "bytes",
        "clock_rate",
        "cycles",
        "jitter",
        "last_packet",
        "max_seq",
        "packets",
        "rtp_packets",
        "ssrc",
    )

    def __init__(self, clock_rate: int = 8000) -> None:
        self.packets = 0
        self.bytes = 0
        self.rtp_packets = 0
        self.last_packet = 0.0
        self.clock_rate = clock_rate
        self.ssrc: int | None = None
        self.base_seq = 0
        self.max_seq = 0
        self.cycles = 0
        self.jitter = 0.0
        self._arrival: float | None = None  # of the last packet, in timestamp units
        self._ts = 0
        self._bad_seq = -1  # after a big jump, the number that would confirm it (A.1)

    def count(self, size: int, now: float) -> None:
        self.packets += 1
        self.bytes += size
        self.last_packet = now

    def rtp(self, data: bytes, now: float) -> None:
        """Update from one RTP packet already known to be at least 12 bytes long."""
        self.packets += 1
        self.bytes += len(data)
        self.last_packet = now
        seq, ts, ssrc = _SEQ_TS_SSRC.unpack_from(data, 2)
        arrival = now * self.clock_rate
        if ssrc != self.ssrc:  # new source: restart sequence and jitter state (A.1)
            self.ssrc = ssrc
            self.base_seq = self.max_seq = seq
            self.cycles = 0
            self.rtp_packets = 1
            self._bad_seq = -1
            self._arrival, self._ts = arrival, ts
            return
        delta = (seq - self.max_seq) & 0xFFFF
        if delta < _MAX_DROPOUT:
            if seq < self.max_seq:
                self.cycles += 1 << 16
            self.max_seq = seq
        elif delta > 0xFFFF - _MAX_MISORDER:
            pass  # a late or duplicate packet
        elif seq == self._bad_seq:  # the jump goes on: the source restarted its numbering
            self.base_seq = self.max_seq = seq
            self.cycles = 0
            self.rtp_packets = 0
            self._bad_seq = -1
        else:  # one stray number: not counted until the next packet confirms it
            self._bad_seq = (seq + 1) & 0xFFFF
            return
        self.rtp_packets += 1
        if self._arrival is not None:
            # D(i-1, i) of A.8, with the timestamp difference taken modulo 2^32 (signed)
            dts = ((ts - self._ts + 0x80000000) & 0xFFFFFFFF) - 0x80000000
            d = abs((arrival - self._arrival) - dts)
            self.jitter += (d - self.jitter) / 16.0
        self._arrival, self._ts = arrival, ts

    def timestamp_at(self, now: float) -> int:
        """The RTP timestamp of this source at ``now``: its last one, advanced by the time
        since that packet arrived (for a sender report, RFC 3550 §6.4.1)."""
        if self._arrival is None:
            return self._ts
        return int(self._ts + now * self.clock_rate - self._arrival) & 0xFFFFFFFF

    @property
    def expected(self) -> int:
        if self.ssrc is None:
            return 0
        return self.cycles + self.max_seq - self.base_seq + 1

    @property
    def lost(self) -> int:
        """Cumulative packets lost (RFC 3550 A.3; negative with duplicates, clamped at 0)."""
        return max(0, self.expected - self.rtp_packets)

    @property
    def jitter_ms(self) -> float:
        return self.jitter * 1000.0 / self.clock_rate

    def as_dict(self) -> dict[str, int | float]:
        return {
            "packets": self.packets,
            "bytes": self.bytes,
            "lost": self.lost,
            "jitter_ms": round(self.jitter_ms, 3),
            "last_packet": self.last_packet,
        }
