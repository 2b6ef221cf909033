"""SDP property tests: built descriptions round-trip; arbitrary bytes parse or raise ParseError."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from sipedge import sdp
from sipedge.errors import ParseError

token = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=12)
text = st.text(
    alphabet=st.characters(blacklist_characters="\r\n\x00", blacklist_categories=("Cs",)),
    max_size=30,
)
eol = st.sampled_from(["\r\n", "\n"])
ip4 = st.tuples(*[st.integers(0, 255)] * 4).map(lambda t: ".".join(map(str, t)))

candidate = st.builds(
    sdp.Candidate,
    foundation=token,
    component=st.integers(1, 256),
    transport=st.sampled_from(["udp", "UDP", "tcp"]),
    priority=st.integers(0, 2**32 - 1),
    address=ip4,
    port=st.integers(0, 65535),
    type=st.sampled_from(["host", "srflx", "prflx", "relay"]),
    related_address=st.none() | ip4,
    related_port=st.none() | st.integers(0, 65535),
    extensions=st.lists(st.tuples(token, token), max_size=3).map(tuple),
)
attr_line = st.one_of(
    st.builds(lambda c: f"a=candidate:{c}", candidate),
    st.builds(lambda pt, n, r: f"a=rtpmap:{pt} {n}/{r}", st.integers(0, 127), token, st.integers(1, 96000)),
    st.builds(lambda p: f"a=rtcp:{p}", st.integers(0, 65535)),
    st.builds(lambda n, v: f"a=x-{n}:{v}", token, text),
    st.sampled_from(["a=rtcp-mux", "a=sendrecv", "a=inactive", "a=ice-lite", "a=end-of-candidates"]),
    st.builds(lambda v: f"i={v}", text),
    st.builds(lambda a: f"c=IN IP4 {a}", ip4),
)


@st.composite
def descriptions(draw: st.DrawFn) -> bytes:
    e = draw(eol)
    lines = ["v=0", f"o={draw(token)} {draw(st.integers(0, 2**40))} 0 IN IP4 {draw(ip4)}", f"s={draw(text)}"]
    if draw(st.booleans()):
        lines.append("t=0 0")
    lines += draw(st.lists(attr_line, max_size=4))
    for _ in range(draw(st.integers(0, 3))):
        lines.append(
            f"m={draw(st.sampled_from(['audio', 'video', 'application']))} "
            f"{draw(st.integers(0, 65535))} {draw(st.sampled_from(['RTP/AVP', 'UDP/TLS/RTP/SAVPF']))} "
            + " ".join(draw(st.lists(st.integers(0, 127).map(str), min_size=1, max_size=4)))
        )
        lines += draw(st.lists(attr_line, max_size=6))
    body = e.join(lines)
    if draw(st.booleans()):
        body += e
    return body.encode("utf-8")


@settings(max_examples=200, deadline=None)
@given(descriptions())
def test_round_trip_byte_exact(data: bytes) -> None:
    s = sdp.parse(data)
    assert s.serialize() == data
    again = sdp.parse(s.serialize())
    assert [m.port for m in again.media] == [m.port for m in s.media]
    for m in s.media:
        for c in m.candidates:
            assert sdp.Candidate.parse(str(c)) == c


@settings(max_examples=100, deadline=None)
@given(descriptions(), st.integers(1, 65535))
def test_port_rewrite_reparses(data: bytes, port: int) -> None:
    s = sdp.parse(data)
    for m in s.media:
        m.port = port
        m.set_attr("rtcp", str(port))
    again = sdp.parse(s.serialize())
    assert all(m.port == port and m.rtcp == sdp.Rtcp(port) for m in again.media)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_garbage_raises_only_parse_error(data: bytes) -> None:
    try:
        s = sdp.parse(data)
    except ParseError as exc:
        assert exc.hint is not None
        return
    assert s.serialize() == data


@settings(max_examples=300, deadline=None)
@given(descriptions(), st.integers(0, 400), st.binary(min_size=1, max_size=4))
def test_mutated_descriptions_never_crash(data: bytes, pos: int, junk: bytes) -> None:
    pos = min(pos, len(data))
    mutated = data[:pos] + junk + data[pos:]
    try:
        s = sdp.parse(mutated)
    except ParseError:
        return
    assert s.serialize() == mutated
    for i, m in enumerate(s.media):
        m.rtpmaps, m.candidates, m.rtcp, m.ssrcs, m.crypto, m.fingerprints  # noqa: B018
        s.media_connection(i)
