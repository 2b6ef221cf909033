"""The flood detector's core (proxy/pike.py): thresholds, bans that end, trusted
networks, and a source table that stays bounded whatever the sources."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from sipedge.config.flood import FloodConfig
from sipedge.proxy.pike import FloodDetector, SourceBanned, SourceUnbanned


def detector(**kw: object) -> FloodDetector:
    base: dict[str, object] = {"window": 2.0, "max_requests": 10, "max_challenges": 3, "ban_time": 30.0,
                               "trusted": ["10.0.0.0/8", "2001:db8::1"], "max_sources": 8}
    base.update(kw)
    return FloodDetector(FloodConfig(**base))  # type: ignore[arg-type]


def test_one_more_than_max_requests_in_a_window_bans_until_ban_time() -> None:
    d = detector()
    assert all(d.request("192.0.2.1", 100.0 + i * 0.01) for i in range(10))
    assert not d.request("192.0.2.1", 100.5)
    assert d.events() == [SourceBanned("192.0.2.1", "requests", 130.5)]
    assert d.banned("192.0.2.1") and not d.request("192.0.2.1", 101.0)
    assert d.get_timer() == 130.5
    d.handle_timer(130.4)
    assert d.banned("192.0.2.1")
    d.handle_timer(130.5)
    assert d.events() == [SourceUnbanned("192.0.2.1", 4)]  # the one that crossed the line too
    assert not d.banned("192.0.2.1") and d.request("192.0.2.1", 130.6)
    assert d.stats()["sip_flood_bans"] == 1 and d.stats()["sip_banned_dropped"] == 4
    assert d.get_timer() is None


def test_the_count_starts_again_each_window() -> None:
    d = detector()
    for w in range(5):
        assert all(d.request("192.0.2.1", 100.0 + 2.0 * w + i * 0.1) for i in range(10))
    assert d.stats()["sip_flood_bans"] == 0


def test_challenges_have_their_own_limit_and_ban() -> None:
    d = detector()
    assert all(d.challenge("192.0.2.9", 5.0) for _ in range(3))
    assert not d.challenge("192.0.2.9", 5.1)
    assert d.banned("192.0.2.9")
    assert d.stats()["sip_flood_challenges_refused"] == 1
    assert [type(e) for e in d.events()] == [SourceBanned]


def test_trusted_networks_are_never_banned() -> None:
    d = detector()
    for ip in ("10.1.2.3", "2001:db8::1"):
        assert all(d.request(ip, 1.0) for _ in range(100))
        assert all(d.challenge(ip, 1.0) for _ in range(100))
    assert d.stats()["sip_flood_bans"] == 0


def test_zero_turns_a_limit_off() -> None:
    d = detector(max_requests=0, max_challenges=0)
    assert all(d.request("192.0.2.1", 1.0) and d.challenge("192.0.2.1", 1.0) for _ in range(1000))
    assert d.stats()["sip_flood_tracked_sources"] == 0


def test_a_flooder_stays_counted_under_a_spoofed_flood() -> None:
    """Least recently seen first: sources seen once each cannot push out a busy one."""
    d = detector(max_requests=50)
    for i in range(51):
        d.request(f"198.51.100.{i % 250}", 1.0)
        assert d.request("192.0.2.66", 1.0) == (i < 50)
    assert d.stats()["sip_flood_tracked_sources"] <= 8


def test_the_table_shrinks_back_once_windows_are_over() -> None:
    d = detector()
    for i in range(8):
        d.request(f"198.51.100.{i}", 1.0)
    for i in range(8):
        d.request(f"203.0.113.{i}", 10.0 + i)
    assert d.stats()["sip_flood_tracked_sources"] <= 2


ips = st.one_of(
    st.integers(0, 40).map(lambda i: f"192.0.2.{i}"),  # a few busy sources
    st.integers(0, 2**24).map(lambda i: f"10.{i >> 16}.{(i >> 8) & 255}.{i & 255}"),  # trusted
    st.integers(0, 2**32 - 1).map(lambda i: f"{i >> 24}.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}"),
)
steps = st.lists(st.tuples(ips, st.floats(0, 5), st.booleans()), max_size=400)


@settings(max_examples=150, deadline=None)
@given(steps)
def test_memory_bounded_trusted_never_banned_bans_expire(seq: list[tuple[str, float, bool]]) -> None:
    d = detector()
    now = 0.0
    for ip, dt, challenge in seq:
        now += dt
        d.handle_timer(now)
        ok = d.challenge(ip, now) if challenge else d.request(ip, now)
        if ip.startswith("10."):
            assert ok and not d.banned(ip)
        stats = d.stats()
        assert stats["sip_flood_tracked_sources"] <= 8 and stats["sip_flood_banned_sources"] <= 8
    banned = {e.source for e in d.events() if isinstance(e, SourceBanned)}
    assert not any(ip.startswith("10.") for ip in banned)
    d.handle_timer(now + 30.0)  # ban_time later every ban is over
    assert d.stats()["sip_flood_banned_sources"] == 0 and d.get_timer() is None
    assert not any(d.banned(ip) for ip in banned)


def test_operator_bans_list_lift_and_end_in_order_whatever_their_length() -> None:
    d = detector()
    d.ban("192.0.2.7", 300.0, 100.0)
    d.ban("10.1.2.3", 5.0, 100.0)  # a trusted network is no protection from the operator
    d.ban("192.0.2.8", 30.0, 100.0)
    assert [(s, left) for s, left, _ in d.bans(101.0)] == [("10.1.2.3", 4.0), ("192.0.2.8", 29.0), ("192.0.2.7", 299.0)]
    assert d.get_timer() == 105.0
    assert d.banned("10.1.2.3") and not d.request("192.0.2.7", 101.0)
    d.handle_timer(105.0)
    assert [s for s, _, _ in d.bans(105.0)] == ["192.0.2.8", "192.0.2.7"]
    assert d.lift("192.0.2.7") and not d.lift("192.0.2.7")
    assert d.request("192.0.2.7", 106.0)
    events = d.events()
    assert SourceBanned("10.1.2.3", "operator", 105.0) in events
    assert SourceUnbanned("10.1.2.3", 1) in events and SourceUnbanned("192.0.2.7", 1) in events
    d.ban("192.0.2.8", 1.0, 106.0)  # a new ban replaces the one in place
    assert d.bans(106.0) == [("192.0.2.8", 1.0, 0)]


def test_auth_failures_ban_a_source_and_a_hot_user_bans_each_guessing_source() -> None:
    d = detector(max_auth_failures=3, max_user_auth_failures=5, auth_window=60.0)
    assert [d.auth_failed("192.0.2.1", "alice", 0.0) for _ in range(4)] == [False, False, False, True]
    assert d.banned("192.0.2.1")
    assert not d.auth_failed("192.0.2.2", "alice", 1.0)  # alice's 5th failure
    assert d.auth_failed("192.0.2.3", "alice", 1.0)  # past it: banned at once
    assert not d.auth_failed("10.9.9.9", "alice", 1.0)  # trusted, never
    assert not d.auth_failed("192.0.2.4", "bob", 1.0)
    assert not d.auth_failed("192.0.2.5", "alice", 61.0)  # a new window
    assert d.counters["sip_auth_failure_bans"] == 2
    assert [e.reason for e in d.events() if isinstance(e, SourceBanned)] == ["auth-failures"] * 2


def test_scanners_are_recognised_and_banned_unless_trusted() -> None:
    d = detector()
    assert d.is_scanner("192.0.2.9", "Friendly-Scanner 1.0", 0.0) and d.banned("192.0.2.9")
    assert d.is_scanner("10.0.0.5", "sipvicious", 0.0) and not d.banned("10.0.0.5")
    assert not d.is_scanner("192.0.2.8", "Linphone/5.2", 0.0) and not d.is_scanner("192.0.2.8", "", 0.0)
    assert not detector(scanners=[]).is_scanner("192.0.2.9", "friendly-scanner", 0.0)
    assert d.counters["sip_scanners_dropped"] == 2
