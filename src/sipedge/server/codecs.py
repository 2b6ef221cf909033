"""The relay's codec library (``media.transcode.CodecFactory``) over PyAV: FFmpeg's
libopus, pcm_mulaw, pcm_alaw and g722 codecs, and its resampler (swresample).

PyAV is the library aiortc itself decodes and encodes with, so it is already on every
machine that runs the WebRTC tests, it is kept up to date with FFmpeg, and one package
gives Opus, G.711 and G.722 and the resampling between 48, 16 and 8 kHz (opuslib would
give Opus alone and leave the rest to us). Its errors (``av.FFmpegError``) are
``ValueError``s, which the core counts and drops.
"""

from __future__ import annotations

from typing import Any

import av

from ..media.codecs import Codec

_DECODERS = {"pcmu": "pcm_mulaw", "pcma": "pcm_alaw", "g722": "g722", "opus": "libopus"}
_ENCODERS = dict(_DECODERS)
OPUS_BITRATE = 32000


def available() -> bool:
    """Are all the codecs there (an FFmpeg built without libopus has none of Opus)?"""
    try:
        for name in _DECODERS.values():
            av.codec.Codec(name, "r")
            av.codec.Codec(name, "w")
    except (ValueError, av.FFmpegError):
        return False
    return True


class _Decoder:
    __slots__ = ("_ctx", "_rate", "_resampler")

    def __init__(self, codec: Codec, rate: int) -> None:
        ctx: Any = av.CodecContext.create(_DECODERS[codec.name.lower()], "r")
        ctx.sample_rate = codec.sample_rate
        ctx.layout = "mono"  # (libopus downmixes a stereo stream itself, at half the cost)
        self._ctx = ctx
        self._rate = rate
        self._resampler = av.AudioResampler(format="s16", layout="mono", rate=rate)

    def decode(self, payload: bytes) -> bytes:
        if not payload:
            return b""
        out: list[bytes] = []
        try:
            for frame in self._ctx.decode(av.Packet(payload)):
                if frame.sample_rate == self._rate and frame.format.name == "s16" and frame.layout.name == "mono":
                    out.append(bytes(frame.planes[0])[: frame.samples * 2])  # (G.711 and G.722: as it is)
                    continue
                for f in self._resampler.resample(frame):
                    out.append(bytes(f.planes[0])[: f.samples * 2])
        except av.FFmpegError as exc:  # (not all of them are ValueErrors)
            raise ValueError(str(exc)) from exc
        return b"".join(out)


class _Encoder:
    __slots__ = ("_chunk", "_ctx", "_pts", "_rate")

    def __init__(self, codec: Codec, frame: int) -> None:
        ctx: Any = av.CodecContext.create(_ENCODERS[codec.name.lower()], "w")
        ctx.sample_rate = codec.sample_rate
        ctx.layout = "mono"
        ctx.format = "s16"
        if codec.name.lower() == "opus":
            ctx.bit_rate = OPUS_BITRATE
            ctx.options = {"frame_duration": str(frame * 1000 // codec.sample_rate), "application": "voip"}
        ctx.open()
        self._ctx = ctx
        self._rate = codec.sample_rate
        self._chunk = ctx.frame_size or frame  # (g722 takes fixed frames, G.711 any size)
        self._pts = 0

    def encode(self, pcm: bytes) -> bytes:
        out: list[bytes] = []
        step = self._chunk * 2
        for i in range(0, len(pcm) - step + 1, step):
            f = av.AudioFrame(format="s16", layout="mono", samples=self._chunk)
            f.planes[0].update(pcm[i : i + step])
            f.sample_rate = self._rate
            f.pts = self._pts
            self._pts += self._chunk
            try:
                out.extend(bytes(p) for p in self._ctx.encode(f))
            except av.FFmpegError as exc:
                raise ValueError(str(exc)) from exc
        return b"".join(out)


class PyAvCodecs:
    """The :class:`~sipedge.media.transcode.CodecFactory` the media server gives its relay."""

    def supports(self, codec: Codec) -> bool:
        return codec.name.lower() in _DECODERS

    def decoder(self, codec: Codec, rate: int) -> _Decoder:
        return _Decoder(codec, rate)

    def encoder(self, codec: Codec, frame: int) -> _Encoder:
        return _Encoder(codec, frame)
