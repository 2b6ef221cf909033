"""Hosts-file parsing."""

from __future__ import annotations

from sipedge.dns.hosts import parse_hosts


def test_parse_hosts() -> None:
    text = (
        "127.0.0.1\tlocalhost  LOCALHOST.\n"
        "::1 localhost ip6-localhost # comment\n"
        "fe80::1%eth0 linklocal\n"
        "# 10.0.0.1 commented\n"
        "10.0.0.5 pbx pbx.lan\n"
        "10.0.0.6 pbx\n"
        "nonsense here\n"
        "10.0.0.7\n"
        "10.0.0.8 bad/name\n"
    )
    t = parse_hosts(text)
    assert t[("localhost", "A")] == ("127.0.0.1",)
    assert t[("localhost", "AAAA")] == ("::1",)
    assert t[("ip6-localhost", "AAAA")] == ("::1",)
    assert t[("linklocal", "AAAA")] == ("fe80::1",)
    assert t[("pbx", "A")] == ("10.0.0.5", "10.0.0.6")
    assert t[("pbx.lan", "A")] == ("10.0.0.5",)
    assert ("bad/name", "A") not in t and len(t) == 6
    assert parse_hosts("") == {}
