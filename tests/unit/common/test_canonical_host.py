"""One spelling per host: what the "is this us / our domain" checks compare."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sipedge._common.addr import canonical_host


@pytest.mark.parametrize(
    ("spelling", "canonical"),
    [
        ("127.0.0.1", "127.0.0.1"),
        ("127.0.0.1.", "127.0.0.1"),
        ("[::ffff:127.0.0.1]", "127.0.0.1"),
        ("::FFFF:7F00:1", "127.0.0.1"),
        ("[0:0:0:0:0:0:0:1]", "::1"),
        ("[2001:DB8::1]", "2001:db8::1"),
        ("Example.COM.", "example.com"),
        ("sip.example.com", "sip.example.com"),
        ("1example.com", "1example.com"),
    ],
)
def test_spellings_of_one_host_agree(spelling: str, canonical: str) -> None:
    assert canonical_host(spelling) == canonical


@given(st.ip_addresses())
def test_every_spelling_of_an_ip_is_its_compressed_form(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> None:
    expected = str(ip.ipv4_mapped) if ip.version == 6 and ip.ipv4_mapped else str(ip)
    spellings = [str(ip), ip.exploded.upper()] + ([f"[{ip.exploded}]", f"[{ip}]"] if ip.version == 6 else [f"{ip}."])
    assert {canonical_host(s) for s in spellings} == {expected}


@given(st.text(max_size=40))
def test_any_text_is_answered(text: str) -> None:
    assert isinstance(canonical_host(text), str)
