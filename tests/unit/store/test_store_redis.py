"""Redis backends against a real redis-server (the location store contract runs on it in
test_store_contract.py): the store against the memory model, two nodes sharing one
Redis, the shared bans and nonce key, and an outage with its back-off."""

from __future__ import annotations

import importlib.util
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
from hypothesis import HealthCheck, given, settings

from helpers.redisserver import RedisServer
from sipedge.config.flood import FloodConfig
from sipedge.config.ratelimit import RateLimitConfig
from sipedge.config.redis import RedisConfig
from sipedge.errors import StorageError
from sipedge.proxy import pike
from sipedge.proxy.location import Binding, MemoryLocationStore
from sipedge.proxy.ratelimit import RateLimiter
from sipedge.store.redis import (
    RedisAllocationQuota,
    RedisBanStore,
    RedisLink,
    RedisLocationStore,
    RedisPipeCounter,
    shared_secret,
)

NOW = 1_700_000_000.0
AOR = "sip:alice@example.com"


def _load(name: str, path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


HERE = Path(__file__).resolve().parent
MODEL = _load("_location_model_redis", HERE / "test_store_model.py")


@pytest.fixture
def link(redis_url: str) -> Iterator[RedisLink]:
    lk = RedisLink(RedisConfig(url=redis_url, retry_min=0.05, retry_max=0.2))
    yield lk
    lk.close()


def node(url: str, **kw: object) -> RedisLink:
    return RedisLink(RedisConfig(url=url, **kw))  # type: ignore[arg-type]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(MODEL.st.lists(MODEL.op, max_size=25))
def test_redis_matches_memory(link: RedisLink, redis_server: RedisServer, ops: list[tuple[object, ...]]) -> None:
    redis_server.flush()
    mem, red = MemoryLocationStore(), RedisLocationStore(link)
    for o in ops:
        name = o[0]
        if name == "purge":
            assert mem.purge_expired(o[1]) == red.purge_expired(o[1])  # type: ignore[arg-type]
        else:
            for store in (mem, red):
                getattr(store, {"put": "put", "remove": "remove", "remove_aor": "remove_aor"}[name])(*o[1:])  # type: ignore[index]
        assert MODEL.snapshot(mem) == MODEL.snapshot(red)  # type: ignore[arg-type]


def test_every_field_and_text_that_is_not_utf8_round_trip(link: RedisLink) -> None:
    b = Binding(
        AOR, "sip:a@192.0.2.1:5060;ob", NOW + 3600, q=0.7, call_id="cid@h", cseq=42,
        received="sip:203.0.113.1:5070", path=("<sip:e1;lr>", "<sip:e2;lr;ob>"),
        instance="<urn:uuid:1>", reg_id=1, flow="udp~x", user_agent="Phone \udce9", socket="udp:127.0.0.1:5060",
    )
    store = RedisLocationStore(link)
    store.put(b)
    assert store.lookup(AOR, NOW) == [b]
    assert store.on_flow("udp~x") == [b]


def test_two_nodes_see_each_others_bindings_and_interleaved_puts_lose_none(redis_url: str) -> None:
    a, b = RedisLocationStore(node(redis_url)), RedisLocationStore(node(redis_url))
    a.put(Binding(AOR, "sip:a@192.0.2.1", NOW + 60))
    assert [x.contact for x in b.lookup(AOR, NOW)] == ["sip:a@192.0.2.1"]
    for i in range(20):  # alternate writers on one AoR: every put lands
        (a if i % 2 else b).put(Binding(AOR, f"sip:a@192.0.2.{i + 10}", NOW + 60))
    assert a.count(AOR, NOW) == 21 and b.count(AOR, NOW) == 21
    b.remove_aor(AOR)
    assert a.lookup(AOR, NOW) == []


def test_garbage_in_a_hash_is_ignored_not_a_crash(link: RedisLink) -> None:
    store = RedisLocationStore(link)
    store.put(Binding(AOR, "sip:a@192.0.2.1", NOW + 60))
    link.client.hset(link.key("loc", "aor", AOR), "sip:evil@x", "not json")
    assert [x.contact for x in store.lookup(AOR, NOW)] == ["sip:a@192.0.2.1"]
    store.remove(AOR, "sip:evil@x")
    assert link.client.hlen(link.key("loc", "aor", AOR)) == 1


def test_prefix_keeps_two_clusters_apart(redis_url: str) -> None:
    a = RedisLocationStore(node(redis_url, prefix="one:"))
    b = RedisLocationStore(node(redis_url, prefix="two:"))
    a.put(Binding(AOR, "sip:a@192.0.2.1", NOW + 60))
    assert b.lookup(AOR, NOW) == [] and len(a.lookup(AOR, NOW)) == 1


def test_bans_are_shared_and_lifted_everywhere(redis_url: str) -> None:
    cfg = FloodConfig(max_requests=3, trusted=[])
    da = pike.FloodDetector(cfg, shared=RedisBanStore(node(redis_url), cfg.max_sources))
    db = pike.FloodDetector(cfg, shared=RedisBanStore(node(redis_url), cfg.max_sources))
    t = 1000.0
    assert all(da.request("198.51.100.7", t) for _ in range(3))
    assert not da.request("198.51.100.7", t)  # banned on A
    assert not db.banned("198.51.100.7")  # B has not synced yet: its packet path never waits
    db.sync(t)
    assert db.banned("198.51.100.7")
    assert db.counters["sip_flood_bans_adopted"] == 1 and db.counters["sip_flood_bans"] == 0
    ev = db.events()
    assert isinstance(ev[0], pike.SourceBanned) and ev[0].reason == pike.SHARED
    left = db.bans(t)[0][1]
    assert cfg.ban_time - 2 < left <= cfg.ban_time
    db.sync(t)  # nothing new
    assert db.events() == []
    db.lift("198.51.100.7")  # ctl ban rm on B lifts it on A at A's next sync
    da.sync(t)
    assert not da.banned("198.51.100.7")
    assert [type(e) for e in da.events()] == [pike.SourceBanned, pike.SourceUnbanned]
    da.ban("203.0.113.5", 30, t)  # an operator's ban travels too
    db.sync(t)
    assert [s for s, _, _ in db.bans(t)] == ["203.0.113.5"]


def test_ban_set_is_bounded_and_ends_with_its_bans(link: RedisLink) -> None:
    store = RedisBanStore(link, max_bans=5)
    for i in range(20):
        store.publish(f"192.0.2.{i}", 60 + i)
    assert len(store.active()) == 5 and "192.0.2.19" in store.active()
    store.publish("192.0.2.100", 0.2)
    time.sleep(0.3)
    assert "192.0.2.100" not in store.active()


def test_nonce_key_is_the_first_nodes(redis_url: str) -> None:
    first, second = b"a" * 32, b"b" * 32
    assert shared_secret(node(redis_url), first) == first
    assert shared_secret(node(redis_url), second) == first
    lk = node(redis_url)
    lk.client.set(lk.key("nonce-key"), b"short")
    with pytest.raises(StorageError, match="not a nonce key"):
        shared_secret(lk, second)


def test_outage_fails_fast_then_recovers_by_itself(redis_server: RedisServer, link: RedisLink,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    store = RedisLocationStore(link)
    store.put(Binding(AOR, "sip:a@192.0.2.1", NOW + 60))
    redis_server.stop()
    try:
        with pytest.raises(StorageError, match="location lookup failed"):
            store.lookup(AOR, NOW)
        t0 = time.monotonic()
        with pytest.raises(StorageError, match="unavailable"):
            store.put(Binding(AOR, "sip:a@192.0.2.2", NOW + 60))  # within the back-off: no try
        assert time.monotonic() - t0 < 0.05
        assert link.counters["redis_outages"] == 1 and link.stats()["redis_up"] == 0
        assert "x redis redis://127.0.0.1" in caplog.text
    finally:
        redis_server.start()
    deadline = time.monotonic() + 5
    while True:
        try:
            assert store.lookup(AOR, NOW) == []  # an empty Redis came back (no persistence)
            break
        except StorageError:
            assert time.monotonic() < deadline
            time.sleep(0.05)
    assert link.stats()["redis_up"] == 1 and "reachable again" in caplog.text


def _align_to_a_window(link: RedisLink, interval: float, room: float) -> None:
    """Wait until Redis's clock is at least ``room`` seconds from its window's end."""
    sec, usec = link.client.time()
    left = interval - (sec + usec / 1e6) % interval
    if left < room:
        time.sleep(left + 0.01)


def test_rate_limit_pipes_are_counted_over_every_node(redis_url: str, redis_server: RedisServer) -> None:
    """``[redis] ratelimit``: two nodes' limiters fill one pipe per source; a new window
    starts afresh; with Redis away each counts its own (fails open, counted)."""
    cfg = RateLimitConfig(per_source=["REGISTER:4"], interval=0.5)
    links = [node(redis_url, retry_min=0.05, retry_max=0.1) for _ in range(2)]
    a, b = (RateLimiter(cfg, shared=RedisPipeCounter(lk)) for lk in links)
    _align_to_a_window(links[0], 0.5, 0.3)
    got = [a.allow("REGISTER", "192.0.2.1", 0.0), b.allow("REGISTER", "192.0.2.1", 0.0),
           a.allow("REGISTER", "192.0.2.1", 0.0), b.allow("REGISTER", "192.0.2.1", 0.0),
           b.allow("REGISTER", "192.0.2.1", 0.0), a.allow("REGISTER", "192.0.2.2", 0.0)]
    assert got == [None] * 4 + ["REGISTER rate limit per source", None]  # the 5th on either node
    time.sleep(0.5)  # the next window of Redis's clock (the local one did not move: now = 0)
    assert b.allow("REGISTER", "192.0.2.1", 0.0) is None
    keys = links[0].client.keys("sipedge:rl:s|REGISTER|192.0.2.1:*")  # one per window, expiring
    assert keys and all(0 < links[0].client.pttl(k) <= 1500 for k in keys)
    redis_server.stop()
    try:
        assert [a.allow("REGISTER", "192.0.2.3", 0.0) for _ in range(5)][-1] == "REGISTER rate limit per source"
        assert a.counters["sip_ratelimit_share_errors"] == 5
    finally:
        redis_server.start()
    for lk in links:
        lk.close()


def test_bad_url_is_a_clear_error() -> None:
    with pytest.raises(StorageError, match=r"redis\.url"):
        RedisLink(RedisConfig(url="redis://127.0.0.1:notaport/0"))


def test_turn_quota_counts_every_node_and_frees_what_ends(redis_url: str) -> None:
    a = RedisAllocationQuota(node(redis_url), "node-a")
    b = RedisAllocationQuota(node(redis_url), "node-b")
    assert a.acquire("alice", "flow1", 2, 600)
    assert b.acquire("alice", "flow1", 2, 600)  # same flow name on another node: its own slot
    assert not a.acquire("alice", "flow2", 2, 600) and not b.acquire("alice", "flow2", 2, 600)
    assert a.acquire("alice", "flow1", 2, 600)  # the same allocation again (a retransmission)
    assert a.acquire("bob", "flow2", 2, 600)  # per account
    assert a.in_use("alice") == 2
    b.release("alice", "flow1")
    assert a.acquire("alice", "flow2", 2, 0.3)
    a.refresh("alice", "flow9", 600)  # a refresh never creates a slot
    assert a.in_use("alice") == 2
    time.sleep(0.4)  # flow2 lapsed (its node died, say): the slot is free
    assert b.acquire("alice", "flow3", 2, 600)
    a.refresh("alice", "flow1", 0.2)
    time.sleep(0.3)
    assert a.in_use("alice") == 1


def test_turn_allocations_on_two_cores_share_one_quota(redis_url: str) -> None:
    quota_tests = _load("_turn_quota_tests_redis", HERE.parent / "turn" / "test_turn_quota.py")
    quota_tests.allocate_on_two_cores(lambda name: RedisAllocationQuota(node(redis_url), name))


def test_a_url_that_is_not_redis_is_refused_at_load() -> None:
    from sipedge.config import parse_config
    from sipedge.errors import ConfigError

    with pytest.raises(ConfigError, match=r"redis\.url = 'http://x'"):
        parse_config({"redis": {"url": "http://x"}})
    assert parse_config({"redis": {"url": "unix:///run/redis.sock"}}).redis.url.startswith("unix://")
