"""Rate-limit pipes (taildrop, red, network), per source and per destination, and the
toll-fraud guard (proxy/ratelimit.py): deterministic, time and randomness passed in."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sipedge.config.ratelimit import FraudConfig, RateLimitConfig, parse_pipe
from sipedge.proxy.ratelimit import FraudGuard, RateLimiter


def limiter(rand: float = 0.5, **kw: object) -> RateLimiter:
    return RateLimiter(RateLimitConfig(**kw), trusted=("10.0.0.0/8",), rand=lambda: rand)  # type: ignore[arg-type]


def test_taildrop_per_method_and_any_method() -> None:
    r = limiter(limits=["INVITE:3", "*:5"])
    assert [r.allow("INVITE", "192.0.2.1", 0.0) for _ in range(4)] == [None, None, None, "INVITE rate limit"]
    assert [r.allow("OPTIONS", "192.0.2.1", 0.1) for _ in range(6)][-1] == "OPTIONS rate limit"
    assert r.allow("INVITE", "192.0.2.1", 1.0) is None  # the next interval
    assert r.counters["sip_ratelimit_dropped"] == 2


def test_per_source_pipes_and_trusted_sources() -> None:
    r = limiter(per_source=["REGISTER:2"])
    assert [r.allow("REGISTER", "192.0.2.1", 0.0) for _ in range(3)][-1] == "REGISTER rate limit per source"
    assert r.allow("REGISTER", "192.0.2.2", 0.0) is None
    assert all(r.allow("REGISTER", "10.1.1.1", 0.0) is None for _ in range(10))  # trusted


def test_red_drops_with_a_probability_growing_from_half_the_rate() -> None:
    low, high = limiter(rand=0.99, algorithm="red", limits=["*:10"]), limiter(rand=0.01, algorithm="red", limits=["*:10"])
    assert [low.allow("X", "a", 0.0) for _ in range(11)].count(None) == 10  # p < 0.99 until the rate
    assert [high.allow("X", "a", 0.0) for _ in range(11)].count(None) == 5  # any p > 0.01 drops


def test_network_follows_the_measured_load() -> None:
    r = limiter(algorithm="network", limits=["*:100"])
    assert r.allow("X", "a", 0.0) is None
    r.set_network_load(150.0)
    assert r.allow("X", "a", 0.0) == "X rate limit"
    r.set_network_load(50.0)
    assert r.allow("X", "a", 0.0) is None


def test_destination_pipe() -> None:
    r = limiter(per_destination=2)
    assert [r.destination("Carrier.example", 0.0) for _ in range(3)] == [True, True, False]
    assert r.destination("other.example", 0.0)
    assert limiter().destination("x", 0.0)  # 0 = no limit


def test_pipes_are_bounded() -> None:
    r = RateLimiter(RateLimitConfig(per_source=["*:5"]), max_keys=4)
    for i in range(100):
        r.allow("X", f"192.0.2.{i}", 0.0)
    assert r.stats()["sip_ratelimit_pipes"] <= 4


def test_fraud_guard_per_user_and_window() -> None:
    g = FraudGuard(FraudConfig(max_foreign_calls=2, window=60.0))
    assert [g.foreign_call("alice", 0.0) for _ in range(3)] == [True, True, False]
    assert g.foreign_call("bob", 1.0)
    assert g.foreign_call("alice", 60.0)
    assert FraudGuard(FraudConfig()).foreign_call("alice", 0.0)


@pytest.mark.parametrize("bad", ["INVITE", "INVITE:", "INVITE:0", ":5", "IN VITE:5", "INVITE:x"])
def test_pipe_specs_are_checked(bad: str) -> None:
    with pytest.raises(ValueError):
        parse_pipe(bad)
    assert parse_pipe(" invite:7") == ("INVITE", 7) and parse_pipe("*:1") == ("*", 1)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["INVITE", "REGISTER", "X"]), st.sampled_from(["a", "b", "10.0.0.1"]),
                          st.floats(0, 10)), max_size=60), st.sampled_from(["taildrop", "red", "network"]))
def test_never_more_than_the_rate_pass_in_an_interval(reqs: list[tuple[str, str, float]], algorithm: str) -> None:
    r = RateLimiter(RateLimitConfig(algorithm=algorithm, interval=100.0, limits=["*:5"]), rand=lambda: 0.0)
    passed = sum(r.allow(method, src, 0.0) is None for method, src, _ in reqs)
    assert passed <= 5 or algorithm == "network"
