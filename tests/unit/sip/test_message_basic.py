"""SIP message basics: parse, typed access, mutation, serialize (RFC 3261 §7, §8.2.6)."""

from __future__ import annotations

import pytest

from sipedge.errors import ParseError
from sipedge.sip import message as m
from sipedge.sip.framing import StreamFramer

INVITE = (
    b"INVITE sip:bob@biloxi.com SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP pc33.atlanta.com;branch=z9hG4bK776asdhds, SIP/2.0/TCP [::1]:5070;branch=z9hG4bKx\r\n"
    b"Max-Forwards: 70\r\n"
    b"t: Bob <sip:bob@biloxi.com>\r\n"
    b'From: "Alice, A." <sip:alice@atlanta.com>;tag=1928301774\r\n'
    b"i: a84b4c76e66710@pc33.atlanta.com\r\n"
    b"CSeq: 314159 INVITE\r\n"
    b"Contact: <sip:alice@pc33.atlanta.com>\r\n"
    b"Subject: folded\r\n  line\r\n"
    b"Content-Type: application/sdp\r\n"
    b"Content-Length: 5\r\n\r\nv=0\r\n"
)


def test_typed_access() -> None:
    r = m.parse(INVITE)
    assert isinstance(r, m.Request)
    m.check_request(r)
    assert r.method == "INVITE"
    assert [v.host for v in r.vias] == ["pc33.atlanta.com", "[::1]"]
    assert r.top_via.branch == "z9hG4bK776asdhds"
    assert r.from_.display == "Alice, A."
    assert r.from_.tag == "1928301774"
    assert r.to.tag is None
    assert r.call_id == "a84b4c76e66710@pc33.atlanta.com"
    assert (r.cseq.number, r.cseq.method) == (314159, "INVITE")
    assert r.max_forwards == 70
    assert r.get("subject") == "folded line"
    assert r.body == b"v=0\r\n"


def test_mutation_and_serialize_round_trip() -> None:
    r = m.parse(INVITE)
    assert isinstance(r, m.Request)
    r.add("Via", "SIP/2.0/UDP proxy.example;branch=z9hG4bKnew", first=True)
    assert r.top_via.host == "proxy.example"
    assert r.pop_first("via") == "SIP/2.0/UDP proxy.example;branch=z9hG4bKnew"
    r.set("Max-Forwards", "69")
    again = m.parse(r.serialize())
    assert isinstance(again, m.Request)
    assert again.max_forwards == 69
    assert again.get_all("via") == r.get_all("via")
    assert again.serialize() == r.serialize()


def test_make_response_copies_dialog_headers() -> None:
    r = m.parse(INVITE)
    assert isinstance(r, m.Request)
    resp = m.make_response(r, 180, to_tag="xyz")
    assert resp.to.tag == "xyz"
    assert resp.get_all("via") == r.get_all("via")
    assert resp.cseq == r.cseq
    parsed = m.parse(resp.serialize())
    assert isinstance(parsed, m.Response) and parsed.status == 180


@pytest.mark.parametrize(
    ("data", "hint"),
    [
        (INVITE.replace(b"CSeq: 314159 INVITE", b"CSeq: 314159 BYE"), (400, "CSeq method mismatch")),
        (INVITE.replace(b"Content-Length: 5", b"Content-Length: 40"), (400, "Content-Length mismatch")),
        (INVITE.replace(b"SIP/2.0\r\nVia", b"SIP/7.0\r\nVia"), (505, "Version Not Supported")),
        (INVITE.replace(b"i: a84b", b"X: a84b"), (400, "Missing Call-ID header")),
    ],
)
def test_bad_requests_carry_a_reply_hint(data: bytes, hint: tuple[int, str]) -> None:
    with pytest.raises(ParseError) as info:
        r = m.parse(data)
        assert isinstance(r, m.Request)
        m.check_request(r)
    assert info.value.hint == hint


def test_stream_framer_any_chunking() -> None:
    stream = b"\r\n\r\n" + INVITE + INVITE
    for size in (1, 7, 100, len(stream)):
        f = StreamFramer()
        frames = []
        for i in range(0, len(stream), size):
            frames.extend(f.feed(stream[i : i + size]))
        msgs = [fr.data for fr in frames if fr.data]
        assert msgs == [INVITE, INVITE]
        assert any(fr.ping for fr in frames)


def test_stream_framer_limits() -> None:
    f = StreamFramer(max_size=100)
    with pytest.raises(ParseError) as info:
        f.feed(INVITE)
    assert info.value.hint == (513, "Message Too Large")
