"""A codec library (``media.transcode.CodecFactory``) that claims every codec and decodes
and encodes to nothing, for tests of the SDP side of codec flags and transcoding, which
send no media."""

from __future__ import annotations

from sipedge.media.codecs import Codec
from sipedge.media.transcode import AudioDecoder, AudioEncoder


class Silence:
    def decode(self, payload: bytes) -> bytes:
        return b""

    def encode(self, pcm: bytes) -> bytes:
        return b""


class SilentCodecs:
    def supports(self, codec: Codec) -> bool:
        return True

    def decoder(self, codec: Codec, rate: int) -> AudioDecoder:
        return Silence()

    def encoder(self, codec: Codec, frame: int) -> AudioEncoder:
        return Silence()
