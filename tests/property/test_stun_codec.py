"""Hypothesis: STUN and ChannelData round-trip; arbitrary bytes raise only ParseError."""

from __future__ import annotations

import ipaddress

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sipedge.errors import ParseError
from sipedge.stun import attributes as at
from sipedge.stun.message import Class, Message
from sipedge.turn.channel import ChannelData, Framer

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

hosts = st.one_of(
    st.builds(lambda n: str(ipaddress.IPv4Address(n)), st.integers(0, 2**32 - 1)),
    st.builds(lambda n: str(ipaddress.IPv6Address(n)), st.integers(0, 2**128 - 1)),
)
ports = st.integers(0, 65535)
text = st.text(max_size=40)
u32 = st.integers(0, 2**32 - 1)

attrs = st.one_of(
    st.builds(at.XorMappedAddress, hosts, ports),
    st.builds(at.MappedAddress, hosts, ports),
    st.builds(at.XorPeerAddress, hosts, ports),
    st.builds(at.XorRelayedAddress, hosts, ports),
    st.builds(at.OtherAddress, hosts, ports),
    st.builds(at.Username, text),
    st.builds(at.Realm, text),
    st.builds(at.Nonce, text),
    st.builds(at.Software, text),
    st.builds(at.ErrorCode, st.integers(300, 699), text),
    st.builds(at.UnknownAttributes, st.lists(st.integers(0, 0xFFFF), max_size=5).map(tuple)),
    st.builds(at.Lifetime, u32),
    st.builds(at.ChannelNumber, st.integers(0, 0xFFFF)),
    st.builds(at.Data, st.binary(max_size=64)),
    st.builds(at.EvenPort, st.booleans()),
    st.builds(at.RequestedTransport, st.integers(0, 255)),
    st.builds(at.RequestedAddressFamily, st.sampled_from(at.Family)),
    st.builds(at.ReservationToken, st.binary(min_size=8, max_size=8)),
    st.builds(at.ChangeRequest, st.booleans(), st.booleans()),
    st.builds(at.ResponsePort, ports),
    st.builds(at.PasswordAlgorithms, st.lists(st.tuples(st.integers(0, 0xFFFF), st.binary(max_size=6)), max_size=3).map(tuple)),
    st.builds(at.DontFragment),
    st.builds(
        at.UnknownAttribute,
        st.integers(0, 0xFFFF).filter(lambda t: t not in at.ATTRIBUTES and t not in (0x0008, 0x001C, 0x8028)),
        st.binary(max_size=20),
    ),
)

messages = st.builds(
    Message,
    st.integers(0, 0xFFF),
    st.sampled_from(Class),
    st.binary(min_size=12, max_size=12),
    st.lists(attrs, max_size=6).map(tuple),
)


@SETTINGS
@given(messages)
def test_round_trip(m: Message) -> None:
    assert Message.parse(m.serialize()) == m


@SETTINGS
@given(messages, st.binary(min_size=1, max_size=32), st.booleans())
def test_round_trip_with_integrity(m: Message, key: bytes, sha256: bool) -> None:
    p = Message.parse(m.serialize(key, sha256=sha256, fingerprint=True))
    assert p.check_integrity(key)
    assert p.attributes[: len(m.attributes)] == m.attributes


@SETTINGS
@given(st.binary(max_size=200))
def test_random_bytes(data: bytes) -> None:
    try:
        Message.parse(data)
    except ParseError:
        pass


@SETTINGS
@given(st.binary(min_size=20, max_size=200))
def test_random_stun_like(data: bytes) -> None:
    data = b"\x00\x01" + len(data[20:]).to_bytes(2, "big") + b"\x21\x12\xa4\x42" + data[8:]
    try:
        Message.parse(data)
    except ParseError:
        pass


@SETTINGS
@given(st.integers(0x4000, 0x7FFF), st.binary(max_size=100), st.booleans())
def test_channel_data_round_trip(ch: int, payload: bytes, pad: bool) -> None:
    cd = ChannelData(ch, payload)
    assert ChannelData.parse(cd.serialize(pad=pad)) == cd


@SETTINGS
@given(st.binary(max_size=100))
def test_channel_data_random(data: bytes) -> None:
    try:
        ChannelData.parse(data)
    except ParseError:
        pass


@SETTINGS
@given(st.lists(messages, min_size=1, max_size=4), st.lists(st.integers(1, 30), max_size=20), st.data())
def test_framer_any_chunking(ms: list[Message], cuts: list[int], data: st.DataObject) -> None:
    frames: list[bytes] = []
    for m in ms:
        frames.append(m.serialize())
        payload = data.draw(st.binary(max_size=30))
        frames.append(ChannelData(0x4000, payload).serialize(pad=True))
    stream = b"".join(frames)
    f = Framer()
    out: list[bytes] = []
    i = 0
    for c in cuts:
        out.extend(f.feed(stream[i : i + c]))
        i += c
    out.extend(f.feed(stream[i:]))
    expected = [fr[: 4 + int.from_bytes(fr[2:4], "big")] if fr[0] & 0x40 else fr for fr in frames]
    assert out == expected


@SETTINGS
@given(st.binary(max_size=300))
def test_framer_random(data: bytes) -> None:
    f = Framer()
    try:
        f.feed(data)
    except ParseError:
        pass
