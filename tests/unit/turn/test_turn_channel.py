"""ChannelData (RFC 8656 §12) and the TCP/TLS stream framer."""

from __future__ import annotations

import pytest

from sipedge.errors import ParseError
from sipedge.stun import message as sm
from sipedge.turn.channel import ChannelData, Framer, encode, is_channel_data


def test_channel_data_padding() -> None:
    cd = ChannelData(0x4001, b"abcde")
    assert cd.serialize() == b"\x40\x01\x00\x05abcde"
    assert cd.serialize(pad=True) == b"\x40\x01\x00\x05abcde\0\0\0"
    assert encode(0x4001, b"abcde", True) == cd.serialize(pad=True)
    assert ChannelData.parse(cd.serialize(pad=True)) == cd  # padding accepted over UDP too
    assert ChannelData(0x7FFF, b"").serialize() == b"\x7f\xff\x00\x00"  # RFC 5766 range
    assert is_channel_data(b"\x40\x00\x00\x00") and not is_channel_data(b"\x00\x01\x00\x00")


@pytest.mark.parametrize(
    "data", [b"\x40", b"\x40\x00\x00\x05abc", b"\x40\x00\x00\x01abcdefgh", b"\x3f\xff\x00\x00", b"\x80\x00\x00\x00"]
)
def test_channel_data_errors(data: bytes) -> None:
    with pytest.raises(ParseError) as ei:
        ChannelData.parse(data)
    assert ei.value.hint is None
    with pytest.raises(ValueError):
        ChannelData(0x3FFF, b"")


def test_framer_splits_and_strips_padding() -> None:
    stun = sm.request(sm.Method.BINDING, bytes(12)).serialize()
    stream = ChannelData(0x4000, b"xyz").serialize(pad=True) + stun + ChannelData(0x4001, b"").serialize(pad=True)
    f = Framer()
    out: list[bytes] = []
    for b in stream:
        out += f.feed(bytes([b]))
    assert out == [b"\x40\x00\x00\x03xyz", stun, b"\x40\x01\x00\x00"]


def test_framer_rejects_garbage_and_oversize() -> None:
    with pytest.raises(ParseError):
        Framer().feed(b"\xff\x00\x00\x00")
    with pytest.raises(ParseError):
        Framer().feed(b"\x00\x01\x00\x03" + bytes(16))  # STUN length not a multiple of 4
    f = Framer(max_buffer=100)
    with pytest.raises(ParseError):
        f.feed(b"\x40\x00\xff\xff" + bytes(200))
