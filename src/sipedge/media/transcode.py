"""Transcoding on the packet path, sans-I/O: one RTP packet in, at most one out.

A :class:`Transcoder` converts what one party sends into what the other party takes, per
direction of a media section whose answer chose a codec the offerer did not offer
(:mod:`.codecs`): it decodes the payload to PCM at the output codec's rate (the codec
library resamples), buffers it, and encodes whole frames of the receiving side's packet
time (20 ms unless its ``a=ptime`` says otherwise; G.711 and G.722 packets may carry
several frames, up to ``a=maxptime``; an Opus packet carries one, at least as long as the
sender's packets, :func:`frame_ms`). The RTP timestamp is
converted between the two clocks (48 kHz Opus, 8 kHz G.711 and G.722), sequence numbers
are the transcoder's own, counting up by one per packet sent, and the SSRC stays the
sender's. ``telephone-event`` packets (RFC 4733) pass through renumbered, with their
timestamp and duration converted to the other clock.

The codecs themselves are a :class:`CodecFactory` the adapter supplies
(``sipedge.server.codecs`` over PyAV's libopus and G.711/G.722 codecs), as
:mod:`.secure` does for DTLS. A payload the codec refuses (``ValueError``), a truncated
packet or an unknown payload type is dropped and counted, never raised.
"""

from __future__ import annotations

import struct
from dataclasses import replace
from typing import Protocol

from ..errors import ParseError
from .codecs import Codec, Format, TranscodeChoice
from .rtp import RtpPacket

COUNTERS = ("media_transcoders", "media_transcoded_packets", "media_transcoded_events",
            "media_transcode_errors", "media_transcode_dropped")
"""The relay's transcoding counters (in /metrics): transcoders made, packets and
telephone-events sent transcoded, payloads the decoder refused or that were not RTP, and
packets dropped (unknown payload type, comfort noise, backlog beyond two frames)."""

OPUS_FRAMES_MS = (10, 20, 40, 60)  # (2.5 and 5 ms are not for RTP telephony)
OPUS_INPUT_RATES = (8000, 12000, 16000, 24000, 48000)  # what an Opus encoder takes (RFC 6716 §2)
MAX_BACKLOG_FRAMES = 2
_HEADER = struct.Struct("!BBHII")
_MASK = 0xFFFFFFFF


class AudioDecoder(Protocol):
    def decode(self, payload: bytes) -> bytes:
        """One RTP payload to signed 16-bit little-endian mono PCM at the rate the decoder
        was made for (b"" when it yields nothing yet); ``ValueError`` for garbage."""
        ...


class AudioEncoder(Protocol):
    def encode(self, pcm: bytes) -> bytes:
        """Whole frames of s16le mono PCM at the codec's sample rate to one RTP payload
        (b"" while the codec holds them back)."""
        ...


class CodecFactory(Protocol):
    """The codec library, as the relay sees it."""

    def supports(self, codec: Codec) -> bool:
        """Can this codec be both decoded and encoded?"""
        ...

    def decoder(self, codec: Codec, rate: int) -> AudioDecoder:
        """A decoder of ``codec`` giving PCM at ``rate`` Hz."""
        ...

    def encoder(self, codec: Codec, frame: int) -> AudioEncoder:
        """An encoder of ``codec`` fed ``frame`` samples (or, for G.711/G.722, multiples)."""
        ...


def frame_ms(codec: Codec, ptime: int, sent_ptime: int = 20) -> int:
    """The frame length towards a party asking for ``ptime`` ms packets, from a sender of
    ``sent_ptime`` ms packets: an Opus packet carries one frame, so it is at least as
    long as the sender's packets (or the backlog would grow); G.711 and G.722 packets
    carry as many frames as have come."""
    if codec.name.lower() == "opus":
        want = max(ptime if ptime in OPUS_FRAMES_MS else 20, sent_ptime)
        return next((ms for ms in OPUS_FRAMES_MS if ms >= want), OPUS_FRAMES_MS[-1])
    return ptime if 10 <= ptime <= 100 and ptime % 10 == 0 else 20


class Transcoder:
    """One direction of a transcoded media section; ``transcoder(packet) -> packet | None``."""

    __slots__ = (
        "_buf", "_buf_ts", "_counters", "_decoder", "_encoder", "_event_in", "_event_out", "_frame",
        "_frame_ticks", "_fresh", "_in_pt", "_in_rate", "_last_in", "_last_out", "_marker", "_max_frames", "_out",
        "_seq", "_ssrc", "_ssrc_in", "choice",
    )

    def __init__(self, in_pt: int, in_rate: int, decoder: AudioDecoder, out: Codec, out_pt: int,
                 encoder: AudioEncoder, frame: int, max_frames: int, events: tuple[int, int] | None,
                 counters: dict[str, int]) -> None:
        self._in_pt, self._in_rate, self._decoder = in_pt, in_rate, decoder
        self._out, self._encoder = (out, out_pt), encoder
        self._frame = frame  # samples at the output codec's sample rate
        self._frame_ticks = frame * out.clock_rate // out.sample_rate
        self._max_frames = max_frames
        self._event_in, self._event_out = events if events is not None else (-1, -1)
        self._counters = counters
        self._buf = bytearray()
        self._buf_ts = 0
        self._marker = True
        self._fresh = True  # nothing buffered yet: the next audio starts the buffer's clock
        self._last_in: int | None = None
        self._last_out = 0
        self._seq: int | None = None
        self._ssrc: int | None = None
        self._ssrc_in: int | None = None
        self.choice: TranscodeChoice | None = None  # the answer that made it (TranscodeSetup.pair)

    @property
    def target(self) -> Codec:
        """The codec it sends."""
        return self._out[0]

    def __call__(self, data: bytes) -> bytes | None:
        try:
            pkt = RtpPacket.parse(data)
        except ParseError:
            self._counters["media_transcode_errors"] += 1
            return None
        pt = pkt.payload_type
        if pt != self._in_pt and pt != self._event_in:
            self._counters["media_transcode_dropped"] += 1  # comfort noise, a codec not agreed
            return None
        if self._ssrc_in != pkt.ssrc:
            self._restart(pkt)
        ts = self._map(pkt.timestamp)
        if pt == self._event_in:
            return self._event(pkt, ts)
        try:
            pcm = self._decoder.decode(pkt.payload)
        except ValueError:
            self._counters["media_transcode_errors"] += 1
            return None
        return self._audio(pcm, ts)

    def _restart(self, pkt: RtpPacket) -> None:
        """A new sending source: its clock starts where the old one's left off."""
        if self._ssrc is None:
            self._ssrc, self._seq = pkt.ssrc, pkt.sequence
            self._last_out = pkt.timestamp * self._out[0].clock_rate // self._in_rate & _MASK
        else:
            self._last_out = (self._last_out + self._frame_ticks) & _MASK
        self._ssrc_in = pkt.ssrc
        self._last_in = pkt.timestamp
        self._buf.clear()
        self._marker = self._fresh = True

    def _map(self, ts: int) -> int:
        """An input timestamp on the output clock (moving forward with the input)."""
        last = self._last_in if self._last_in is not None else ts
        d = (ts - last) & _MASK
        if d >= 1 << 31:
            d -= 1 << 32
        out = (self._last_out + d * self._out[0].clock_rate // self._in_rate) & _MASK
        if d > 0:
            self._last_in, self._last_out = ts, out
        return out

    def _header(self, marker: bool, pt: int, ts: int) -> bytes:
        seq = self._seq or 0
        self._seq = (seq + 1) & 0xFFFF
        return _HEADER.pack(0x80, pt | (0x80 if marker else 0), seq, ts, self._ssrc or 0)

    def _event(self, pkt: RtpPacket, ts: int) -> bytes | None:
        payload = pkt.payload
        if len(payload) < 4:
            self._counters["media_transcode_errors"] += 1
            return None
        duration = int.from_bytes(payload[2:4], "big") * self._out[0].clock_rate // self._in_rate
        payload = payload[:2] + min(duration, 0xFFFF).to_bytes(2, "big") + payload[4:]
        self._counters["media_transcoded_events"] += 1
        return self._header(pkt.marker, self._event_out, ts) + payload

    def _audio(self, pcm: bytes, ts: int) -> bytes | None:
        if not pcm:
            return None
        buf = self._buf
        codec, pt = self._out
        end = (self._buf_ts + len(buf) // 2 * codec.clock_rate // codec.sample_rate) & _MASK
        gap = (ts - end) & _MASK
        if self._fresh or min(gap, (1 << 32) - gap) > self._frame_ticks:
            buf.clear()  # the start, or a jump (loss, silence suppression): start again here
            self._buf_ts = ts
            self._marker = True
            self._fresh = False
        buf += pcm[: len(pcm) & ~1]
        frames = min(len(buf) // 2 // self._frame, self._max_frames)
        if not frames:
            return None
        take = frames * self._frame * 2
        chunk = bytes(buf[:take])
        del buf[:take]
        out_ts = self._buf_ts
        self._buf_ts = (out_ts + frames * self._frame_ticks) & _MASK
        excess = len(buf) // 2 - MAX_BACKLOG_FRAMES * self._frame
        if excess > 0:  # the sender's packets are longer than ours: keep latency bounded
            del buf[: excess * 2]
            self._buf_ts = (self._buf_ts + excess * codec.clock_rate // codec.sample_rate) & _MASK
            self._counters["media_transcode_dropped"] += 1
        try:
            payload = self._encoder.encode(chunk)
        except ValueError:
            self._counters["media_transcode_errors"] += 1
            return None
        if not payload:
            return None
        marker, self._marker = self._marker, False
        self._counters["media_transcoded_packets"] += 1
        return self._header(marker, pt, out_ts) + payload


class TranscodeSetup:
    """Makes the two transcoders of an answer that needs them (the relay holds one)."""

    def __init__(self, factory: CodecFactory, counters: dict[str, int]) -> None:
        self.factory = factory
        self.counters = counters

    def supports(self, codec: Codec) -> bool:
        return self.factory.supports(codec)

    def one_way(self, src: Format, dst: Format, events: tuple[int, int] | None, ptime: int,
                maxptime: int | None, sent_ptime: int = 20) -> Transcoder:
        """Packets in ``src`` (of about ``sent_ptime`` ms) to packets in ``dst`` at the
        receiver's ``ptime``."""
        sc, dc = src.codec, dst.codec
        assert sc is not None and dc is not None  # (plan_answer chose transcodable ones)
        if dc.name.lower() == "opus" and sc.sample_rate in OPUS_INPUT_RATES:
            dc = replace(dc, sample_rate=sc.sample_rate)  # (narrowband in: no resampling at all)
        ms = frame_ms(dc, ptime, sent_ptime)
        frame = dc.sample_rate * ms // 1000
        opus = dc.name.lower() == "opus"
        max_frames = 1 if opus else max(1, (maxptime or 3 * ms) // ms)
        self.counters["media_transcoders"] += 1
        return Transcoder(src.pt, sc.clock_rate, self.factory.decoder(sc, dc.sample_rate), dc, dst.pt,
                          self.factory.encoder(dc, frame), frame, max_frames, events, self.counters)

    def pair(self, choice: TranscodeChoice) -> tuple[Transcoder, Transcoder]:
        """(offerer → answerer, answerer → offerer)."""
        oe, ae = choice.offerer_event, choice.answerer_event
        events = (oe, ae) if oe is not None and ae is not None else None
        fwd = self.one_way(choice.offerer, choice.answerer, events, choice.answerer_ptime, choice.answerer_maxptime,
                           choice.offerer_ptime)
        back = self.one_way(choice.answerer, choice.offerer, (events[1], events[0]) if events else None,
                            choice.offerer_ptime, choice.offerer_maxptime, choice.answerer_ptime)
        fwd.choice = back.choice = choice
        return fwd, back
