"""Properties of the dispatcher's selection (proxy/dispatcher.py): hashes are stable and a
destination going down moves only its own calls; weights are honoured exactly over each
cycle and never drift far within one; every answer lists live destinations only, once."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from sipedge.config import parse_config
from sipedge.proxy.dispatcher import DOWN, UP, Dispatcher
from sipedge.proxy.identity import Identity, Listener
from sipedge.sip import message as m


def make(algorithm: str, dests: list[Any]) -> Dispatcher:
    cfg = parse_config({"dispatcher": {"sets": [{"id": 1, "algorithm": algorithm, "destinations": dests}]}})
    return Dispatcher(cfg.dispatcher, Identity([Listener("udp", "127.0.0.1", 5060)]))


def request(call_id: str, user: str = "alice") -> m.Request:
    req = m.parse(
        f"INVITE sip:100@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:6000;branch=z9hG4bKp\r\n"
        f"From: <sip:{user}@127.0.0.1>;tag=a\r\nTo: <sip:100@127.0.0.1>\r\nCall-ID: {call_id}\r\n"
        "CSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n".encode()
    )
    assert isinstance(req, m.Request)
    return req


call_ids = st.lists(st.text("abcdefghijklmnopqrstuvwxyz0123456789-.@", min_size=1, max_size=30),
                    min_size=1, max_size=30)


@settings(max_examples=60, deadline=None)
@given(n=st.integers(2, 6), keys=call_ids, down=st.sets(st.integers(0, 5)))
def test_hash_is_stable_and_a_destination_down_moves_only_its_calls(n: int, keys: list[str], down: set[int]) -> None:
    ds = make("hash_call_id", [f"sip:127.0.1.{i}:5060" for i in range(n)])
    dests = ds.sets[1]
    before = {k: ds.select(1, request(k))[0] for k in keys}
    assert before == {k: ds.select(1, request(k))[0] for k in keys}  # the same every time
    for i in down:
        if i < n:
            dests[i].state = DOWN
    for k in keys:
        order = ds.select(1, request(k))
        assert all(d.state == UP for d in order) and len(set(map(id, order))) == len(order)
        if before[k].state == UP:
            assert order[0] is before[k]  # its destination is up: it did not move
        assert len(order) == sum(1 for d in dests if d.state == UP)


@settings(max_examples=60, deadline=None)
@given(weights=st.lists(st.integers(0, 10), min_size=1, max_size=5).filter(any), cycles=st.integers(1, 4))
def test_weights_are_exact_per_cycle_and_bounded_within(weights: list[int], cycles: int) -> None:
    ds = make("weighted", [{"uri": f"sip:127.0.1.{i}:5060", "weight": w} for i, w in enumerate(weights)])
    dests = ds.sets[1]
    total = sum(weights)
    counts = [0] * len(weights)
    for n in range(1, cycles * total + 1):
        first = ds.select(1, request(f"c{n}"))[0]
        counts[dests.index(first)] += 1
        for i, w in enumerate(weights):
            assert abs(counts[i] - n * w / total) < len(weights)  # never far from its share
    assert counts == [cycles * w for w in weights]


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 6), down=st.sets(st.integers(0, 5)), rounds=st.integers(1, 5))
def test_round_robin_shares_evenly_among_the_live(n: int, down: set[int], rounds: int) -> None:
    ds = make("round_robin", [f"sip:127.0.1.{i}:5060" for i in range(n)])
    dests = ds.sets[1]
    for i in down:
        if i < n:
            dests[i].state = DOWN
    live = [d for d in dests if d.state == UP]
    picks = [ds.select(1, request("x")) for _ in range(rounds * n)]
    if not live:
        assert all(p == [] for p in picks)
        return
    counts = [sum(1 for p in picks if p[0] is d) for d in live]
    assert sum(counts) == rounds * n  # only live ones picked
    assert max(counts) - min(counts) <= 1  # in turns: the down ones' share spread evenly
