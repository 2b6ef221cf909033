"""Header grammar edge cases (RFC 3261 §7.3, §20, §25): name-addr, Via, CSeq, lists,
message framing corner cases, typed-header caching."""

from __future__ import annotations

import pytest

from sipedge.errors import ParseError
from sipedge.sip import message as m
from sipedge.sip.headers import CSeq, NameAddr, Via, canonical, quote, split_list
from sipedge.sip.uri import AbsoluteUri, SipUri

BASE = (
    b"OPTIONS sip:bob@example.com SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP pc.example.com;branch=z9hG4bK1\r\n"
    b"From: <sip:alice@example.com>;tag=a\r\n"
    b"To: <sip:bob@example.com>\r\n"
    b"Call-ID: c1@pc\r\n"
    b"CSeq: 1 OPTIONS\r\n"
    b"Max-Forwards: 70\r\n"
    b"Content-Length: 0\r\n\r\n"
)


def request(data: bytes = BASE) -> m.Request:
    r = m.parse(data)
    assert isinstance(r, m.Request)
    return r


# --- name-addr --------------------------------------------------------------------


def test_name_addr_forms() -> None:
    na = NameAddr.parse('"A \\"B\\" \\\\ C" <sip:a@h>;tag=x;q=0.5;ob')
    assert na.display == 'A "B" \\ C' and na.tag == "x" and na.params == {"tag": "x", "q": "0.5", "ob": None}
    assert NameAddr.parse(str(na)) == na
    na = NameAddr.parse("sip:a@h;tag=x")
    assert not na.angle and na.params == {"tag": "x"} and isinstance(na.uri, SipUri) and na.uri.params == {}
    assert str(na) == "sip:a@h;tag=x"
    na = NameAddr.parse('sip:a@h;+sip.instance="<urn:uuid:1>";reg-id=1')
    assert not na.angle and na.params["+sip.instance"] == '"<urn:uuid:1>"'
    na = NameAddr.parse("<sip:a@h;lr>")
    assert na.display is None and isinstance(na.uri, SipUri) and na.uri.params == {"lr": None}
    assert NameAddr.parse("Alice  Smith<sip:a@h>").display == "Alice  Smith"
    assert NameAddr.parse('""<sip:a@h>').display == ""
    na = NameAddr.parse("<urn:service:sos>")
    assert isinstance(na.uri, AbsoluteUri)
    assert NameAddr.parse("<sip:a@h> ;  tag =  x ").tag == "x"
    assert NameAddr.parse("sip:a@h ; received=2001:db8::1").params["received"] == "2001:db8::1"
    odd = NameAddr.parse("<sip:a@h>;did=a1/b2;x=k@v==;gr=urn:uuid:1")  # tolerated values
    assert odd.params == {"did": "a1/b2", "x": "k@v==", "gr": "urn:uuid:1"}
    assert NameAddr.parse(str(odd)) == odd
    na = NameAddr.parse("Jürgen Müller <sip:j@h>")  # unquoted UTF-8: tolerated
    assert na.display == "Jürgen Müller" and str(na) == '"Jürgen Müller" <sip:j@h>'


@pytest.mark.parametrize(
    "text",
    [
        "", '"unterminated <sip:a@h>', '"x" sip:a@h', "Bell, Alexander <sip:a@h>",
        "< sip:a@h>", "<sip:a@h >", "<>", "<sip:a@h", "<sip:a@h> junk", "<sip:a@h>;;tag=1",
        "<sip:a@h>;tag=", "<sip:a@h>;tag=a b", "<sip:a@h>;t@g=1", "sip:a@h?x=y",
        "sip:a@h,sip:b@h", '"\x01" <sip:a@h>', "<sip:a@ho st>", '<sip:a@h>;x="unterminated',
        "x <urn:a>b>", '<sip:a@h>;x="a"b',
    ],
)
def test_bad_name_addrs(text: str) -> None:
    with pytest.raises(ParseError) as info:
        NameAddr.parse(text, "To")
    assert info.value.hint == (400, "Bad To header")


def test_display_names_never_inject_headers() -> None:
    na = NameAddr(SipUri("sip", "a", "h"), "evil\r\nVia: x")
    assert "\r" not in str(na) and "\n" not in str(na)
    assert NameAddr.parse(str(na)).display == "evil  Via: x"
    assert quote('a"b\\c\x00') == '"a\\"b\\\\c\\\x00"'


# --- Via, CSeq, lists -------------------------------------------------------------


def test_via_forms() -> None:
    v = Via.parse("SIP / 2.0 / UDP  host.example.com : 5060 ; branch = z9hG4bKx ; rport ; received=2001:db8::9")
    assert (v.protocol, v.transport, v.host, v.port) == ("SIP/2.0", "UDP", "host.example.com", 5060)
    assert v.params == {"branch": "z9hG4bKx", "rport": None, "received": "2001:db8::9"}
    assert Via.parse(str(v)) == v
    v = Via.parse("SIP/2.0/TCP [2001:db8::1]:5061;branch=z9hG4bKy")
    assert v.sent_by == ("[2001:db8::1]", 5061)
    assert Via.parse("sip/2.0/ws df7jal23ls0d.invalid;branch=z9hG4bKz").transport == "WS"


@pytest.mark.parametrize(
    "text",
    ["", "SIP/2.0/UDP", "SIP/2.0 UDP host", "SIP/2.0/UDP host junk", "SIP/2.0/UDP ho<st",
     "SIP/2.0/UDP host:0", "SIP/2.0/UDP host:99999", "SIP/2.0/UDP host:²", "SIP/2.0/UDP [::1",
     "SIP/2.0/UDP [::1]x", "SIP/2.0/UDP host;;", "SIP/2.0/UDP host;branch=", "SIP//UDP host",
     "SIP/2.0/UDP 2001:db8::1"],
)
def test_bad_vias(text: str) -> None:
    with pytest.raises(ParseError) as info:
        Via.parse(text)
    assert info.value.hint == (400, "Bad Via header")


def test_cseq() -> None:
    assert CSeq.parse("0009\t INVITE") == CSeq(9, "INVITE")
    assert CSeq.parse(str(CSeq(2**31 - 1, "BYE"))) == CSeq(2**31 - 1, "BYE")
    for bad in ("", "1", "INVITE 1", "1 INVITE x", "-1 INVITE", "²² INVITE", "2147483648 INVITE",
                "9" * 5000 + " INVITE", "1 IN<VITE"):
        with pytest.raises(ParseError) as info:
            CSeq.parse(bad)
        assert info.value.hint == (400, "Bad CSeq header")


def test_split_list() -> None:
    assert split_list('"a, b" <sip:x@h>, <sip:y@h;p=1,2>, sip:z@h') == [
        '"a, b" <sip:x@h>', "<sip:y@h;p=1,2>", "sip:z@h"]
    assert split_list("a, , b,") == ["a", "b"]
    assert split_list('"a\\", b", c') == ['"a\\", b"', "c"]
    with pytest.raises(ParseError) as info:
        split_list('"a, b', "Contact")
    assert info.value.hint == (400, "Bad Contact header")


def test_canonical_names() -> None:
    assert canonical("v") == "via" and canonical("Call-ID") == "call-id" and canonical(" T ") == "to"
    assert canonical("X-Custom") == "x-custom"


# --- message-level corner cases ---------------------------------------------------


@pytest.mark.parametrize(
    ("data", "hint"),
    [
        (b"", None),
        (b"\r\n\r\n", None),
        (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", None),
        (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", None),
        (b"INVITE sip:a@b SIP/2.0x\r\n\r\n", (400, "Bad Request-Line")),
        (b"INVITE sip:a@b\r\n\r\n", None),
        (b"INV<ITE sip:a@b SIP/2.0\r\n\r\n", None),
        (b"INVITE sip:a@b\x01 SIP/2.0\r\n\r\n", (400, "Bad Request-URI")),
        (BASE.replace(b"Max-Forwards: 70", b"Max-Forwards\x01: 70"), (400, "Bad header line")),
        (BASE.replace(b"Max-Forwards: 70", b"Max-Forwards 70"), (400, "Bad header line")),
        (BASE.replace(b"Max-Forwards: 70", b": 70"), (400, "Bad header line")),
        (BASE.replace(b"Max-Forwards: 70", b"Max-Forwards: 7\r0"), (400, "Bad header line")),
        (BASE.replace(b"Via:", b" Via:", 1).replace(b"OPTIONS sip:bob@example.com SIP/2.0\r\n", b"OPTIONS sip:bob@example.com SIP/2.0\r\n"), (400, "Bad header line")),
        (BASE.replace(b"Content-Length: 0", b"Content-Length: \xd9\xa3"), (400, "Bad Content-Length header")),
        (BASE.replace(b"Content-Length: 0", b"Content-Length: " + b"9" * 5000), (400, "Content-Length mismatch")),
        (b"SIP/2.0 200 OK\r\nVia x\r\n\r\n", None),
        (b"SIP/2.0 200 OK\r\nContent-Length: 5\r\n\r\n", None),
        (b"SIP/2.0 20 OK\r\n\r\n", None),
        (b"SIP/2.0 099 OK\r\n\r\n", None),
        (b"SIP/3.0 200 OK\r\n\r\n", None),
    ],
)
def test_parse_errors_and_hints(data: bytes, hint: tuple[int, str] | None) -> None:
    with pytest.raises(ParseError) as info:
        m.parse(data)
    assert info.value.hint == hint


def test_leading_crlf_and_bare_lf_are_tolerated() -> None:
    r = request(b"\r\n\r\n" + BASE)
    assert r.call_id == "c1@pc"
    lf = request(BASE.replace(b"\r\n", b"\n"))
    assert lf.call_id == "c1@pc" and lf.cseq == CSeq(1, "OPTIONS")
    mixed = request(BASE.replace(b"Call-ID: c1@pc\r\n", b"Call-ID: c1@pc\n"))
    assert mixed.call_id == "c1@pc"
    body = m.parse(BASE.replace(b"Content-Length: 0", b"Content-Length: 3") + b"abcdef")
    assert body.body == b"abc"
    folded = request(BASE.replace(b"Call-ID: c1@pc", b"Subject:\r\n  hello\r\n\tworld\r\nCall-ID: c1@pc"))
    assert folded.get("subject") == "hello world"


def test_typed_scalars_never_raise_value_error() -> None:
    for value, attr in ((b"Max-Forwards: \xc2\xb2", "max_forwards"), (b"Max-Forwards: 256", "max_forwards"),
                        (b"Expires: \xc2\xb2", "expires"), (b"Max-Forwards: " + b"9" * 5000, "max_forwards")):
        r = request(BASE.replace(b"Max-Forwards: 70", value))
        with pytest.raises(ParseError):
            getattr(r, attr)
    r = request(BASE.replace(b"Max-Forwards: 70", b"Expires: " + b"9" * 5000))
    assert r.expires == 2**32 - 1
    assert request(BASE.replace(b"Max-Forwards: 70", b"Max-Forwards: 0068")).max_forwards == 68


def test_call_id_grammar() -> None:
    r = request(BASE.replace(b"c1@pc", b'word`~)(><:\\/"][?}{@x'))
    assert r.call_id == 'word`~)(><:\\/"][?}{@x'
    for bad in (b"a b", b"a\x00b", b"\xc3\xa9"):
        r = request(BASE.replace(b"c1@pc", bad))
        with pytest.raises(ParseError) as info:
            r.call_id  # noqa: B018
        assert info.value.hint == (400, "Bad Call-ID header")


def test_check_request_duplicates_and_responses() -> None:
    dup = request(BASE.replace(b"Call-ID: c1@pc\r\n", b"Call-ID: c1@pc\r\ni: c2@pc\r\n"))
    with pytest.raises(ParseError) as info:
        m.check_request(dup)
    assert info.value.hint == (400, "Multiple Call-ID headers")
    resp = m.parse(b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nCSeq: x\r\nCall-ID: a\r\n\r\n")
    assert isinstance(resp, m.Response)
    with pytest.raises(ParseError) as info:
        m.check_response(resp)
    assert info.value.hint is None
    resp = m.parse(b"SIP/2.0 200 OK\r\nCSeq: 1 INVITE\r\nCall-ID: a\r\n\r\n")
    assert isinstance(resp, m.Response)
    with pytest.raises(ParseError) as info:
        m.check_response(resp)
    assert info.value.hint is None


def test_star_contact() -> None:
    r = request(BASE.replace(b"Max-Forwards: 70", b"Contact: *\r\nExpires: 0"))
    assert r.contacts == "*"
    r = request(BASE.replace(b"Max-Forwards: 70", b"Contact: *, <sip:a@h>"))
    with pytest.raises(ParseError):
        r.contacts  # noqa: B018


# --- typed-header cache -----------------------------------------------------------


def test_cache_follows_every_mutation() -> None:
    r = request()
    assert r.top_via.host == "pc.example.com"
    assert r.top_via is r.top_via  # cached
    r.add("Via", "SIP/2.0/TCP proxy.example.com;branch=z9hG4bK2", first=True)
    assert r.top_via.host == "proxy.example.com"
    assert [v.host for v in r.vias] == ["proxy.example.com", "pc.example.com"]
    r.pop_first("via")
    assert r.top_via.host == "pc.example.com" and len(r.vias) == 1
    r.replace_first("via", "SIP/2.0/UDP other.example.com;branch=z9hG4bK3")
    assert r.top_via.host == "other.example.com"
    r._headers[0][2] = "SIP/2.0/UDP direct.example.com;branch=z9hG4bK4"  # even direct edits
    assert r.top_via.host == "direct.example.com" and r.vias[0].host == "direct.example.com"
    vias = r.vias
    vias.clear()  # callers get a copy of the list
    assert len(r.vias) == 1
    assert r.from_.tag == "a"
    r.set("From", "<sip:alice@example.com>;tag=b")
    assert r.from_.tag == "b"
    r.set("To", "<sip:bob@example.com>;tag=t")
    assert r.to.tag == "t"
    r.set("CSeq", "2 OPTIONS")
    assert r.cseq.number == 2
    r.set("Contact", "<sip:a@h>")
    assert len(r.contacts) == 1
    r.add("Contact", "<sip:b@h>")
    assert len(r.contacts) == 2
    r.remove("Via")
    assert r.vias == []
    with pytest.raises(ParseError):
        r.top_via  # noqa: B018
    c = r.copy()
    c.set("CSeq", "3 OPTIONS")
    assert (c.cseq.number, r.cseq.number) == (3, 2)


def test_ruri_follows_uri_assignment() -> None:
    r = request()
    assert isinstance(r.ruri, SipUri) and r.ruri.user == "bob"
    r.uri = "sip:carol@example.com"
    assert isinstance(r.ruri, SipUri) and r.ruri.user == "carol"
    r.set_uri(SipUri.parse("sip:dave@example.com"))
    assert r.uri == "sip:dave@example.com" and isinstance(r.ruri, SipUri) and r.ruri.user == "dave"
    r.set_uri("sip:erin@example.com")
    assert isinstance(r.ruri, SipUri) and r.ruri.user == "erin"


def test_serialize_never_lets_a_value_inject_lines() -> None:
    r = request()
    r.set("Subject", "hi\r\nVia: SIP/2.0/UDP evil.example.com\r\n\r\nBODY")
    r.add("X-Lf", "a\nb\rc")
    wire = r.serialize()
    again = m.parse(wire)
    assert isinstance(again, m.Request)
    assert len(again.vias) == 1 and again.body == b""
    assert again.get("subject") == "hi Via: SIP/2.0/UDP evil.example.com  BODY"
    assert again.get("x-lf") == "a b c"
    resp = m.make_response(r, 400, "Bad\r\nX-Injected: 1")
    assert m.parse(resp.serialize()).get("x-injected") is None
    r.uri = "sip:bob@example.com\r\nX: y"
    assert b"\r\nX: y" not in r.serialize()
