"""Parsed URIs and tag-less name-addrs are shared between messages (``uri.remember``):
the same text gives the same immutable value, the cache is bounded, and nothing that
would differ per dialog (a tag) or fail to parse is kept."""

from __future__ import annotations

import pytest

from sipedge.errors import ParseError
from sipedge.sip import headers, uri
from sipedge.sip.headers import NameAddr
from sipedge.sip.uri import SipUri


def test_the_same_uri_text_gives_the_same_value() -> None:
    a = SipUri.parse("sip:carol@192.0.2.7:5070;transport=udp")
    b = SipUri.parse("sip:carol@192.0.2.7:5070;transport=udp")
    assert a is b
    assert a == SipUri._parse_general("sip:carol@192.0.2.7:5070;transport=udp")


def test_the_caches_are_bounded() -> None:
    for i in range(uri.PARSED_MAX + 50):
        SipUri.parse(f"sip:u{i}@192.0.2.1")
        NameAddr.parse(f"<sip:u{i}@192.0.2.1>", "To")
    assert len(uri._PARSED) <= uri.PARSED_MAX
    assert len(headers._NAME_ADDRS) <= uri.PARSED_MAX


def test_tagged_name_addrs_are_not_kept() -> None:
    tagged = "<sip:alice@192.0.2.9>;tag=88sja8x"
    assert NameAddr.parse(tagged, "From") is not NameAddr.parse(tagged, "From")
    assert tagged not in headers._NAME_ADDRS
    plain = "Bob <sip:bob@192.0.2.9>"
    assert NameAddr.parse(plain, "To") is NameAddr.parse(plain, "To")


@pytest.mark.parametrize("text", ["sip:bob@999.1.1.1", "sip:bob@host:99999", "sip:@x"])
def test_bad_uris_raise_every_time(text: str) -> None:
    for _ in range(2):
        with pytest.raises(ParseError):
            SipUri.parse(text)
    assert text not in uri._PARSED
