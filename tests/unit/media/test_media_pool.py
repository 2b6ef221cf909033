"""The media pool core (media/pool.py): selection by weight, stickiness, health, bounds;
and the ``media.remote`` config that feeds it."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sipedge.config import parse_config
from sipedge.errors import ConfigError
from sipedge.media.pool import MediaPool, NodeChanged, NodeSpec, NodeState


def pool(*weights: int, ping_interval: float = 5.0, max_calls: int = 100) -> MediaPool:
    return MediaPool([NodeSpec(f"127.0.0.{i + 1}", 2223, w) for i, w in enumerate(weights)],
                     ping_interval=ping_interval, max_calls=max_calls)


def test_new_calls_spread_by_weight_interleaved() -> None:
    p = pool(1, 2)
    picks = [p.pick() for _ in range(6)]
    names = [n.name if n else "" for n in picks]
    assert Counter(names) == {"127.0.0.1:2223": 2, "127.0.0.2:2223": 4}
    assert names[:3].count("127.0.0.2:2223") == 2  # interleaved, not in runs


def test_a_call_sticks_to_the_node_that_took_its_offer() -> None:
    p = pool(1, 1)
    first = p.offer_target("c1")
    assert first is not None
    p.offer_done("c1", first, 0.0)
    for _ in range(5):  # re-INVITEs keep to it although the round robin moves on
        assert p.offer_target("c1") is first
        p.offer_done("c1", first, 1.0)
    assert p.node_for("c1") is first and first.calls == 1
    p.call_ended("c1")
    assert p.node_for("c1") is None and first.calls == 0
    assert p.stats()["media_pool_calls"] == 0


def test_a_down_node_gets_no_new_call_and_comes_back_on_pong() -> None:
    p = pool(1, 1, ping_interval=2.0)
    a, b = p.nodes
    assert p.pings_due(0.0) == [a, b] and p.pings_due(1.0) == []
    p.ping_result(a, False, 0.1)
    assert p.events() == [NodeChanged(a.name, NodeState.DOWN, "no answer to ping")]
    assert {id(p.pick()) for _ in range(4)} == {id(b)}
    assert p.next_timer() == 2.0 and p.pings_due(2.0) == [a, b]
    p.ping_result(a, True, 2.1)
    assert a.state is NodeState.UP and p.events()[0].state is NodeState.UP
    assert p.stats()["media_pool_node_down"] == 1 and p.stats()["media_pool_node_up"] == 1


def test_a_timeout_takes_the_node_out_and_the_offer_moves_on() -> None:
    p = pool(1, 1)
    a = p.offer_target("c1")
    assert a is not None
    p.request_failed(a, 0.0, timeout=True)
    assert a.state is NodeState.DOWN and a.failures == 1
    b = p.offer_target("c1", {a})
    assert b is not None and b is not a
    p.offer_done("c1", b, 0.0)
    assert p.node_for("c1") is b and p.stats()["media_pool_retries"] == 1
    # an error reply (not a timeout) counts but leaves the node in
    p.request_failed(b, 0.0, timeout=False)
    assert b.state is NodeState.UP and b.failures == 1


def test_a_reoffer_whose_node_is_down_moves_to_a_live_one() -> None:
    p = pool(1, 1)
    a = p.offer_target("c1")
    assert a is not None
    p.offer_done("c1", a, 0.0)
    p.ping_result(a, False, 1.0)
    b = p.offer_target("c1")
    assert b is not None and b is not a
    p.offer_done("c1", b, 1.0)
    assert (a.calls, b.calls, p.stats()["media_pool_moved"]) == (0, 1, 1)


def test_with_every_node_down_an_offer_still_tries_each_once() -> None:
    p = pool(1, 1)
    a, b = p.nodes
    p.ping_result(a, False, 0.0)
    p.ping_result(b, False, 0.0)
    assert p.offer_target("c1") is a
    assert p.offer_target("c1", {a}) is b
    assert p.offer_target("c1", {a, b}) is None
    assert p.stats()["media_pool_no_node"] == 1
    p.offer_done("c1", b, 1.0)  # it answered after all: back in
    assert b.state is NodeState.UP


def test_the_sticky_table_is_bounded() -> None:
    p = pool(1, max_calls=3)
    (a,) = p.nodes
    for i in range(10):
        p.offer_done(f"c{i}", a, 0.0)
    assert a.calls == 3 and p.node_for("c0") is None and p.node_for("c9") is a
    assert p.stats()["media_pool_forgotten"] == 7


def test_describe_lists_each_node() -> None:
    p = pool(1, 3)
    a = p.nodes[0]
    p.offer_done("c1", a, 0.0)
    p.ping_result(p.nodes[1], False, 4.0)
    rows = p.describe(10.0)
    assert rows[0] == {"node": "127.0.0.1:2223", "state": "up", "weight": 1, "calls": 1, "offers": 1,
                       "failures": 0, "since": 10.0}
    assert rows[1]["state"] == "down" and rows[1]["weight"] == 3 and rows[1]["since"] == 6.0
    assert NodeSpec("::1", 2223).name == "[::1]:2223"
    with pytest.raises(ValueError):
        MediaPool([])


@given(
    weights=st.lists(st.integers(1, 5), min_size=1, max_size=5),
    down=st.sets(st.integers(0, 4)),
    rounds=st.integers(1, 4),
)
def test_selection_property(weights: list[int], down: set[int], rounds: int) -> None:
    """Over ``rounds`` times the live weights' sum, each live node is picked exactly
    ``rounds * weight`` times, never a down one; with none live, nothing is picked."""
    p = pool(*weights)
    for i in down & set(range(len(weights))):
        p.ping_result(p.nodes[i], False, 0.0)
    live = [n for n in p.nodes if n.state is NodeState.UP]
    total = sum(n.spec.weight for n in live)
    picks = Counter(id(p.pick()) for _ in range(rounds * total))
    assert picks == Counter({id(n): rounds * n.spec.weight for n in live})
    if not live:
        assert p.pick() is None


# -- config --------------------------------------------------------------------------
def test_remote_config_one_node_or_a_weighted_pool() -> None:
    assert parse_config({}).media.remote_nodes == []
    assert parse_config({"media": {"remote": "127.0.0.1:2223"}}).media.remote_nodes == [("127.0.0.1", 2223, 1)]
    m = parse_config({"media": {"remote": ["127.0.0.1:2223", "[::1]:2224;weight=3"], "ping_interval": 1}}).media
    assert m.remote_nodes == [("127.0.0.1", 2223, 1), ("::1", 2224, 3)] and m.ping_interval == 1.0


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("localhost:2223", "media.remote = 'localhost:2223': expected \"ip:port\""),
        (["127.0.0.1:2223;weight=0"], "weight 1..1000"),
        (["127.0.0.1:2223;wait=2"], "'127.0.0.1:2223;wait=2' is not"),
        (["127.0.0.1:2223", "127.0.0.1:2223;weight=2"], "appears twice"),
        ([], "a non-empty list of nodes"),
        (5, "expected string or a list of strings"),
    ],
)
def test_remote_config_errors(value: object, message: str) -> None:
    with pytest.raises(ConfigError, match=None) as info:
        parse_config({"media": {"remote": value}})
    assert message in str(info.value)
