"""SIP/SIPS/TEL URI grammar edge cases (RFC 3261 §19.1, §25.1; RFC 3966; RFC 5118)."""

from __future__ import annotations

import pytest

from sipedge.errors import ParseError
from sipedge.sip.uri import AbsoluteUri, SipUri, parse_uri, unescape, valid_host


@pytest.mark.parametrize(
    ("text", "fields"),
    [
        ("sip:alice@atlanta.com", ("sip", "alice", "atlanta.com", None, None, {}, "")),
        ("SIP:Alice@ATLANTA.com:5060", ("sip", "Alice", "atlanta.com", 5060, None, {}, "")),
        ("sips:a:secret@h.example;transport=tcp;lr",
         ("sips", "a", "h.example", None, "secret", {"transport": "tcp", "lr": None}, "")),
        ("sip:a:@h", ("sip", "a", "h", None, "", {}, "")),
        ("sip:[2001:db8::1]:5070;maddr=[::1]", ("sip", None, "[2001:db8::1]", 5070, None, {"maddr": "[::1]"}, "")),
        ("sip:+1-212-555-1212:1234@gateway.com;user=phone",
         ("sip", "+1-212-555-1212", "gateway.com", None, "1234", {"user": "phone"}, "")),
        ("sip:atlanta.com;method=REGISTER?to=alice%40atlanta.com",
         ("sip", None, "atlanta.com", None, None, {"method": "REGISTER"}, "to=alice%40atlanta.com")),
        ("sip:alice;day=tuesday@atlanta.com", ("sip", "alice;day=tuesday", "atlanta.com", None, None, {}, "")),
        ("sip:*67#@example.com", ("sip", "*67#", "example.com", None, None, {}, "")),
        ("sip:my_host.example.com", ("sip", None, "my_host.example.com", None, None, {}, "")),
        ("sip:h;%6C%72;N%61me=v%61lue", ("sip", None, "h", None, None, {"%6c%72": None, "n%61me": "v%61lue"}, "")),
    ],
)
def test_sip_uris_parse(text: str, fields: tuple[object, ...]) -> None:
    u = SipUri.parse(text)
    assert (u.scheme, u.user, u.host, u.port, u.password, u.params, u.headers) == fields
    assert SipUri.parse(str(u)) == u


def test_tel_uri() -> None:
    u = SipUri.parse("tel:+1-201-555-0123;phone-context=example.com")
    assert (u.scheme, u.host, u.params) == ("tel", "+1-201-555-0123", {"phone-context": "example.com"})
    assert str(u) == "tel:+1-201-555-0123;phone-context=example.com"


@pytest.mark.parametrize(
    ("text", "hint"),
    [
        ("sip:", (400, "Bad Request-URI")),
        ("sip:@host", (400, "Bad Request-URI")),
        ("sip:a b@host", (400, "Bad Request-URI")),
        ("sip:a@ho st", (400, "Bad Request-URI")),
        ("sip:a@host:0", (400, "Bad Request-URI")),
        ("sip:a@host:65536", (400, "Bad Request-URI")),
        ("sip:a@host:5o60", (400, "Bad Request-URI")),
        ("sip:a@host:²", (400, "Bad Request-URI")),
        ("sip:a@host:" + "9" * 5000, (400, "Bad Request-URI")),
        ("sip:a@[::1", (400, "Bad Request-URI")),
        ("sip:a@[:::1]", (400, "Bad Request-URI")),
        ("sip:a@[::1]x", (400, "Bad Request-URI")),
        ("sip:a@1.2.3.256", (400, "Bad Request-URI")),
        ("sip:a@host;;lr", (400, "Bad Request-URI")),
        ("sip:a@host;lr=", (400, "Bad Request-URI")),
        ("sip:a@host;x=a b", (400, "Bad Request-URI")),
        ("sip:a%4@host", (400, "Bad Request-URI")),
        ("sip:a%zz@host", (400, "Bad Request-URI")),
        ("sip:a@host?", (400, "Bad Request-URI")),
        ("sip:a@host?x=<y>", (400, "Bad Request-URI")),
        ("sip:a<b@host", (400, "Bad Request-URI")),
        ("sip:a@b@host", (400, "Bad Request-URI")),
        ("tel:", (400, "Bad tel URI")),
        ("tel:12 34", (400, "Bad tel URI")),
        ("http://example.com", (416, "Unsupported URI Scheme")),
        ("nocolon", (416, "Unsupported URI Scheme")),
    ],
)
def test_bad_sip_uris(text: str, hint: tuple[int, str]) -> None:
    with pytest.raises(ParseError) as info:
        SipUri.parse(text)
    assert info.value.hint == hint


def test_other_schemes_are_kept_verbatim() -> None:
    for text in ("urn:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6", "http://www.example.com",
                 "soap.beep://192.0.2.103:3002", "isbn:2983792873", "name:John_Smith"):
        u = parse_uri(text)
        assert isinstance(u, AbsoluteUri) and str(u) == text
    for bad in ("<sip:a@b>", "x y:z", "1abc:x", ":x", "urn:", "urn:a\x00b", "urn:a>b", "urn:é"):
        with pytest.raises(ParseError):
            parse_uri(bad)
    with pytest.raises(ParseError):
        parse_uri("http://example.com", allow_other=False)


def test_unescape() -> None:
    assert unescape("sips%3Auser%40example.com") == "sips:user@example.com"
    assert unescape("null-%00-null") == "null-\x00-null"
    assert unescape("plain") == "plain"
    assert unescape("%E2%82%AC") == "€"
    assert unescape("%ff").encode("utf-8", "surrogateescape") == b"\xff"


@pytest.mark.parametrize(
    ("host", "ok"),
    [("example.com", True), ("example.com.", True), ("a-b.c", True), ("-a.com", False),
     ("a-.com", False), ("a..b", False), ("192.0.2.1", True), ("256.0.0.1", False),
     ("[::1]", True), ("[2001:db8::10:5070]", True), ("[2001:db8::10::5070]", False),
     ("[::ffff:192.0.2.1]", True), ("::1", False), ("", False), ("[]", False), ("a b", False)],
)
def test_valid_host(host: str, ok: bool) -> None:
    assert valid_host(host) is ok


def test_uri_helpers() -> None:
    u = SipUri.parse("sips:bob@biloxi.example.com;lr")
    assert u.transport == "tls" and u.aor == "sip:bob@biloxi.example.com"
    assert SipUri.parse("sip:b@h;transport=TCP").transport == "tcp"
    assert u.with_params(maddr="x").params == {"lr": None, "maddr": "x"}
    assert u.without_params("lr").params == {}
    assert SipUri.parse("sip:h").aor == "sip:h"


def test_ipv6_references_in_the_spirit_of_rfc5118() -> None:
    u = SipUri.parse("sip:[2001:db8::10:5070]")  # §4.3: no port, the 5070 is address
    assert (u.host, u.port) == ("[2001:db8::10:5070]", None)
    u = SipUri.parse("sip:user@[2001:db8::10]:5070")  # §4.4: unambiguous port
    assert (u.host, u.port) == ("[2001:db8::10]", 5070)
    for text in ("sip:[::ffff:192.0.2.10]", "sip:[2001:db8::192.0.2.1]"):  # §4.7, §4.8
        assert SipUri.parse(text).host == text[4:]
    with pytest.raises(ParseError):
        SipUri.parse("sip:2001:db8::10")  # §4.2: an IPv6 address needs brackets
    with pytest.raises(ParseError):
        SipUri.parse("sip:[2001:db8:0:0:1:0:5:1:5060]")  # nine groups: not an address
