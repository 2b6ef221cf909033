"""IP literal helpers: the cached and fast-path answers equal ipaddress's own."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sipedge._common.addr import is_ip, is_ipv6, is_private

HOSTS = st.one_of(
    st.ip_addresses().map(str),
    st.ip_addresses(v=6).map(lambda a: f"[{a}]"),
    st.from_regex(r"[a-z0-9.:\-\[\]]{0,30}", fullmatch=True),
)


def _reference(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


@given(HOSTS)
def test_answers_match_ipaddress(host: str) -> None:
    ip = _reference(host)
    assert is_ip(host) == (ip is not None)
    assert is_ipv6(host) == (ip is not None and ip.version == 6)
    assert is_ipv6(host) == is_ipv6(host)  # a cached answer is the same answer


@pytest.mark.parametrize(
    ("host", "private"),
    [("10.1.2.3", True), ("192.168.0.1", True), ("172.16.5.4", True), ("100.64.0.1", True),
     ("100.127.255.254", True), ("100.128.0.1", False), ("127.0.0.1", True), ("169.254.1.1", True),
     ("fd00::1", True), ("[fe80::1]", True), ("::1", True), ("8.8.8.8", False), ("2001:4860::8888", False),
     ("example.com", False), ("", False)],
)
def test_private_addresses(host: str, private: bool) -> None:
    assert is_private(host) is private
