"""TTL cache: clamps, negative entries, expiry and bounds on a FakeClock."""

from __future__ import annotations

import pytest

from sipedge._common.clock import FakeClock
from sipedge.config.dns import DnsConfig, parse_nameserver
from sipedge.dns.cache import TtlCache


def test_positive_ttl_is_clamped() -> None:
    clock = FakeClock()
    c: TtlCache[str, tuple[str, ...]] = TtlCache(10, min_ttl=5, max_ttl=100)
    assert c.put("tiny", ("1.2.3.4",), 0, clock.now) == 5
    assert c.put("huge", ("1.2.3.5",), 10**6, clock.now) == 100
    assert c.put("mid", ("1.2.3.6",), 30, clock.now) == 30
    clock.advance(4.9)
    assert c.get("tiny", clock.now) == (("1.2.3.4",), False)
    clock.advance(0.1)
    assert c.get("tiny", clock.now) is None
    clock.advance(25)
    assert c.get("mid", clock.now) is None
    assert c.get("huge", clock.now) is not None
    clock.advance(70)
    assert c.get("huge", clock.now) is None
    s = c.stats()
    assert s["dns_cache_hits"] == 2 and s["dns_cache_misses"] == 3 and s["dns_cache_expired"] == 3


def test_negative_ttl_floor_ceiling_and_default() -> None:
    clock = FakeClock()
    c: TtlCache[str, tuple[str, ...]] = TtlCache(10, negative_min_ttl=2, negative_ttl=30)
    assert c.put_negative("a", (), clock.now, ttl=0) == 2
    assert c.put_negative("b", (), clock.now, ttl=3600) == 30
    assert c.put_negative("c", (), clock.now) == 30
    assert c.get("a", clock.now) == ((), True)
    clock.advance(2)
    assert c.get("a", clock.now) is None
    assert c.get("b", clock.now) == ((), True)
    assert c.stats()["dns_cache_negative_hits"] == 2
    clock.advance(28)
    assert c.get("b", clock.now) is None and c.get("c", clock.now) is None


def test_negative_ttl_zero_disables_negative_caching() -> None:
    c: TtlCache[str, tuple[str, ...]] = TtlCache(10, negative_ttl=0)
    c.put_negative("a", (), 0.0, ttl=60)
    assert c.get("a", 0.0) is None and len(c) == 0


def test_bounded_lru_eviction_prefers_expired() -> None:
    clock = FakeClock()
    c: TtlCache[int, int] = TtlCache(3)
    c.put(1, 1, 10, clock.now)
    c.put(2, 2, 100, clock.now)
    c.put(3, 3, 100, clock.now)
    clock.advance(20)  # 1 expired
    c.put(4, 4, 100, clock.now)
    assert len(c) == 3 and c.evictions == 0
    assert c.get(2, clock.now) == (2, False)  # 2 becomes most recently used
    c.put(5, 5, 100, clock.now)  # evicts 3, the least recently used
    assert c.evictions == 1
    assert c.get(3, clock.now) is None
    assert [c.get(k, clock.now) is not None for k in (2, 4, 5)] == [True, True, True]


def test_many_puts_stay_bounded() -> None:
    c: TtlCache[int, int] = TtlCache(50)
    for i in range(1000):
        c.put(i, i, 60, float(i) / 100)
    assert len(c) == 50
    assert c.purge(10_000.0) == 50 and len(c) == 0


def test_refresh_replaces_entry() -> None:
    c: TtlCache[str, int] = TtlCache(4)
    c.put("k", 1, 10, 0.0)
    c.put("k", 2, 10, 5.0)
    assert c.get("k", 12.0) == (2, False)
    assert c.ttl_left("k", 12.0) == pytest.approx(3.0)


def test_rejects_empty_cache() -> None:
    with pytest.raises(ValueError):
        TtlCache(0)


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        ("192.0.2.53", ("192.0.2.53", 53)),
        ("127.0.0.1:5353", ("127.0.0.1", 5353)),
        ("::1", ("::1", 53)),
        ("[::1]:5353", ("::1", 5353)),
        ("[2001:db8::1]", ("2001:db8::1", 53)),
        ("dns.example", None),
        ("127.0.0.1:0", None),
        ("127.0.0.1:x", None),
        ("[::1", None),
        ("[::1]x", None),
    ],
)
def test_parse_nameserver(text: str, parsed: tuple[str, int] | None) -> None:
    assert parse_nameserver(text) == parsed


def test_config_defaults_are_sane() -> None:
    cfg = DnsConfig()
    assert cfg.nameservers == [] and cfg.timeout > 0 and cfg.min_ttl <= cfg.max_ttl


def test_config_builds_from_toml_table_and_renders() -> None:
    import tomllib

    from sipedge.config._schema import build, render
    from sipedge.errors import ConfigError

    cfg = build(DnsConfig, {"nameservers": ["127.0.0.1:5353", "::1"], "timeout": 2, "ipv6": False}, "dns")
    assert cfg.nameservers == ["127.0.0.1:5353", "::1"] and cfg.timeout == 2.0 and cfg.ipv6 is False
    with pytest.raises(ConfigError, match=r"dns\.nameservers"):
        build(DnsConfig, {"nameservers": ["dns.example"]}, "dns")
    with pytest.raises(ConfigError, match=r"dns\.timeout"):
        build(DnsConfig, {"timeout": 0}, "dns")
    text = "\n".join(render(DnsConfig, "dns"))
    assert "nameservers" in text and "negative_ttl" in text
    tomllib.loads(text)
