"""The dispatcher (proxy/dispatcher.py): selection algorithms, the OPTIONS probing state
machine, and the core's failover to the next destination (or the next address a name
resolved to) in the same transaction; sans-I/O, a fake clock, bytes in and out."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from sipedge._common.clock import FakeClock
from sipedge.config import parse_config
from sipedge.errors import ConfigError
from sipedge.proxy.core import ProxyCore
from sipedge.proxy.dispatcher import DOWN, PROBING, UP, Dispatcher
from sipedge.proxy.identity import Identity, Listener
from sipedge.proxy.location import MemoryLocationStore, MemorySubscriberStore
from sipedge.proxy.routing import load_router
from sipedge.sip import message as m
from sipedge.sip.flow import Flow, Target

ME = ("127.0.0.1", 5060)
CALLER = Flow("udp", ME, ("127.0.0.1", 6000))
ROUTING = str(Path(__file__).parents[2] / "helpers" / "pbx_routing.py")
GW = ["sip:127.0.0.2:5070", "sip:127.0.0.3:5070", "sip:127.0.0.4:5070"]


def config(sets: list[dict[str, Any]], **ds: Any) -> Any:
    return parse_config({"auth": {"invite": False, "register": False}, "routing": {"module": ROUTING},
                         "sip": {"trusted_peers": ["127.0.0.3"], "domains": ["127.0.0.1"]}, "dispatcher": {"sets": sets, **ds}})


def dispatcher(algorithm: str = "round_robin", dests: list[Any] | None = None, **ds: Any) -> Dispatcher:
    cfg = config([{"id": 1, "algorithm": algorithm, "destinations": dests or GW}], **ds)
    return Dispatcher(cfg.dispatcher, Identity([Listener("udp", *ME)]))


def invite(call_id: str = "c1", user: str = "alice", ruri: str = "sip:+15551234@127.0.0.1") -> m.Request:
    req = m.parse(
        f"INVITE {ruri} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:6000;branch=z9hG4bK{call_id}\r\n"
        f"Max-Forwards: 70\r\nFrom: <sip:{user}@127.0.0.1>;tag=a1\r\nTo: <{ruri}>\r\n"
        f"Call-ID: {call_id}\r\nCSeq: 1 INVITE\r\nContact: <sip:alice@127.0.0.1:6000>\r\nContent-Length: 0\r\n\r\n".encode()
    )
    assert isinstance(req, m.Request)
    return req


def ports(order: list[Any]) -> list[str]:
    return [d.target.host for d in order]


# -- algorithms -----------------------------------------------------------------------
def test_round_robin_takes_turns_and_lists_the_others_as_failover() -> None:
    ds = dispatcher()
    firsts = [ds.select(1, invite())[0].target.host for _ in range(6)]
    assert firsts == ["127.0.0.2", "127.0.0.3", "127.0.0.4"] * 2
    assert ports(ds.select(1, invite())) == ["127.0.0.2", "127.0.0.3", "127.0.0.4"]
    assert ports(ds.select(1, invite())) == ["127.0.0.3", "127.0.0.4", "127.0.0.2"]


def test_down_destinations_are_skipped_and_none_up_selects_nothing() -> None:
    ds = dispatcher()
    ds.sets[1][1].state = DOWN
    assert {ds.select(1, invite())[0].target.host for _ in range(4)} == {"127.0.0.2", "127.0.0.4"}
    assert all("127.0.0.3" not in ports(ds.select(1, invite())) for _ in range(3))
    for d in ds.sets[1]:
        d.state = DOWN
    assert ds.select(1, invite()) == []
    assert ds.stats()["dispatcher_no_destination"] == 1


def test_hash_over_call_id_and_from_user_is_stable() -> None:
    ds = dispatcher("hash_call_id")
    assert len({ds.select(1, invite("same"))[0].target for _ in range(5)}) == 1
    assert len({ds.select(1, invite(f"c{i}"))[0].target for i in range(60)}) == 3  # spread
    ds = dispatcher("hash_from_user")
    picks = {ds.select(1, invite(f"c{i}", user="bob"))[0].target for i in range(10)}
    assert len(picks) == 1  # one caller, one PBX, whatever the Call-ID


def test_weighted_gives_each_its_share_spread_out() -> None:
    dests = [{"uri": GW[0], "weight": 3}, {"uri": GW[1], "weight": 1}, {"uri": GW[2], "weight": 0}]
    ds = dispatcher("weighted", dests)
    firsts = [ds.select(1, invite())[0].target.host for _ in range(8)]
    assert firsts.count("127.0.0.2") == 6 and firsts.count("127.0.0.3") == 2
    assert "127.0.0.4" not in firsts  # weight 0: failover only
    assert firsts[:4].count("127.0.0.3") == 1  # not three in a row to one, then one


def test_priority_picks_the_highest_live_one_and_an_explicit_algorithm_wins() -> None:
    dests = [{"uri": GW[0], "priority": 1}, {"uri": GW[1], "priority": 5}, GW[2]]
    ds = dispatcher("priority", dests)
    assert ports(ds.select(1, invite())) == ["127.0.0.3", "127.0.0.2", "127.0.0.4"]
    ds.sets[1][0].state = DOWN
    assert ds.select(1, invite())[0].target.host == "127.0.0.2"
    assert ds.select(1, invite(), "round_robin", limit=1)[0].target.host in ("127.0.0.2", "127.0.0.4")
    assert len(ds.select(1, invite(), limit=1)) == 1
    with pytest.raises(ValueError, match="set 9 is not configured"):
        ds.select(9, invite())
    with pytest.raises(ValueError, match="algorithm 'random'"):
        ds.select(1, invite(), "random")


def test_is_from_compares_the_source_address() -> None:
    ds = dispatcher()
    assert ds.is_from("127.0.0.3") and ds.is_from("127.0.0.3", 5070) and ds.is_from("127.0.0.3", set_id=1)
    assert not ds.is_from("127.0.0.3", 5071) and not ds.is_from("127.0.0.9") and not ds.is_from("127.0.0.3", set_id=2)


@pytest.mark.parametrize(("sets", "problem"), [
    ([{"id": 1, "destinations": []}], "non-empty list"),
    ([{"id": 1, "destinations": ["sip:bob@127.0.0.2"]}], "without a user"),
    ([{"id": 1, "destinations": ["http://x"]}], "SIP URI"),
    ([{"id": 1, "algorithm": "random", "destinations": GW}], "algorithm"),
    ([{"id": 1, "destinations": GW}, {"id": 1, "destinations": GW}], "another set"),
    ([{"id": 1, "destinations": [{"uri": GW[0], "weight": -1}]}], "weight"),
    ([{"id": 1, "destinations": [{"uri": GW[0], "port": 5}]}], "unknown key"),
    ([{"id": 1, "algorithm": "weighted", "destinations": [{"uri": GW[0], "weight": 0}]}], "weight above 0"),
])
def test_bad_sets_refuse_the_start_naming_the_key(sets: list[dict[str, Any]], problem: str) -> None:
    with pytest.raises(ConfigError, match=problem):
        config(sets)


def test_bad_failover_codes_are_refused() -> None:
    with pytest.raises(ConfigError, match=r"dispatcher\.failover_codes"):
        config([{"id": 1, "destinations": GW}], failover_codes=["5x"])


# -- probing --------------------------------------------------------------------------
def answer_probe(ds: Dispatcher, probe: Any, status: int, now: float, source: tuple[str, int] | None = None) -> bool:
    req = m.parse(probe.data)
    assert isinstance(req, m.Request) and req.method == "OPTIONS"
    resp = m.make_response(req, status)
    parsed = m.parse(resp.serialize())
    assert isinstance(parsed, m.Response)
    return ds.response_received(parsed, source or (probe.target.host, probe.target.port), now)


def test_probing_marks_down_after_the_threshold_and_up_when_it_answers() -> None:
    ds = dispatcher(dests=GW[:2], probe_interval=10.0, probe_timeout=2.0, failure_threshold=2, success_threshold=2)
    gw1, gw2 = ds.sets[1]
    assert ds.get_timer() == 0.0
    ds.handle_timer(0.0)
    probes = ds.outgoing()
    assert sorted(p.target.host for p in probes) == ["127.0.0.2", "127.0.0.3"]
    assert all(m.parse(p.data).uri == f"sip:{p.target.host}:5070" for p in probes)  # type: ignore[union-attr]
    answer_probe(ds, probes[1], 200, 0.1)
    assert ds.get_timer() == 2.0  # gw1's probe times out then
    ds.handle_timer(2.0)
    assert (gw1.state, gw2.state) == (PROBING, UP)  # one failure: suspect, still selected
    assert ds.select(1, invite())[0] in (gw1, gw2)
    ds.handle_timer(10.0)
    probes = ds.outgoing()
    assert sorted(p.target.host for p in probes) == ["127.0.0.2", "127.0.0.3"]
    for p in probes:
        answer_probe(ds, p, 503 if p.target.host == "127.0.0.2" else 200, 10.1)  # a 503 is a failure too
    assert gw1.state == DOWN and gw1.last_status == 503
    assert [e.new for e in ds.events()] == [DOWN]
    assert all(ds.select(1, invite())[0] is gw2 for _ in range(3))
    ds.handle_timer(20.0)
    for p in ds.outgoing():
        answer_probe(ds, p, 200, 20.1)
    assert gw1.state == DOWN  # success_threshold 2: one answer is not enough
    ds.handle_timer(30.0)
    for p in ds.outgoing():
        answer_probe(ds, p, 200, 30.1)
    assert gw1.state == UP and [e.new for e in ds.events()] == [UP]
    st = ds.stats()
    assert st["dispatcher_marked_down"] == 1 and st["dispatcher_marked_up"] == 1
    assert st["dispatcher_destinations_up"] == 2


def test_an_answer_from_elsewhere_is_refused_and_ok_codes_count() -> None:
    ds = dispatcher(dests=GW[:1], failure_threshold=1, probe_ok_codes=["405"])
    (gw,) = ds.sets[1]
    ds.handle_timer(0.0)
    (probe,) = ds.outgoing()
    assert answer_probe(ds, probe, 200, 0.1, source=("127.0.0.66", 5070))  # a spoofed 200
    assert answer_probe(ds, probe, 200, 0.1, source=("127.0.0.2", 5071))
    assert ds.stats()["dispatcher_probe_replies_refused"] == 2
    ds.handle_timer(5.0)
    assert gw.state == DOWN  # the spoofed answers did not count
    ds.handle_timer(10.0)
    (probe,) = ds.outgoing()
    assert answer_probe(ds, probe, 405, 10.1)  # "Method Not Allowed": alive
    assert gw.state == UP


def test_no_probing_with_interval_zero_and_others_responses_pass() -> None:
    ds = dispatcher(probe_interval=0.0)
    assert ds.get_timer() is None
    ds.handle_timer(100.0)
    assert ds.outgoing() == []
    resp = m.parse(b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKx\r\nFrom: <sip:a@b>;tag=1\r\n"
                   b"To: <sip:a@b>\r\nCall-ID: sipedge-ka-1\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n")
    assert isinstance(resp, m.Response) and not ds.response_received(resp, ("127.0.0.2", 5070), 1.0)


def test_send_failure_counts_as_a_failed_probe() -> None:
    ds = dispatcher(dests=GW[:1], failure_threshold=1)
    ds.handle_timer(0.0)
    (probe,) = ds.outgoing()
    ds.send_failed(probe.call_id, 0.0)
    assert ds.sets[1][0].state == DOWN


# -- failover in the core -------------------------------------------------------------
def make_core(**ds: Any) -> tuple[ProxyCore, FakeClock]:
    clock = FakeClock()
    cfg = config([{"id": 1, "algorithm": "priority", "destinations": [
        {"uri": GW[0], "priority": 2}, {"uri": GW[1], "priority": 1}]}], probe_interval=0.0, **ds)
    core = ProxyCore(cfg, Identity([Listener("udp", *ME)], ["127.0.0.1"]), MemoryLocationStore(), MemorySubscriberStore(),
                     load_router(cfg.routing.module), clock, secret=b"s" * 32)
    return core, clock


def sent(core: ProxyCore) -> tuple[list[tuple[Target, m.Request]], list[m.Response]]:
    """The requests the core sent (ACKs aside) with their targets, and the responses (no 100)."""
    requests, upstream = [], []
    for s in core.outgoing():
        msg = m.parse(s.data)
        if isinstance(msg, m.Request) and msg.method != "ACK" and s.target is not None:
            requests.append((s.target, msg))
        elif isinstance(msg, m.Response) and msg.status > 100:
            upstream.append(msg)
    return requests, upstream


def wait(core: ProxyCore, clock: FakeClock, seconds: float) -> tuple[list[tuple[Target, m.Request]], list[m.Response]]:
    """Let ``seconds`` pass in 100 ms steps: what the core sent meanwhile."""
    requests, upstream = [], []
    for _ in range(int(seconds * 10)):
        clock.advance(0.1)
        core.handle_timer(clock.now)
        more, up = sent(core)
        requests += more
        upstream += up
    return requests, upstream


def reply(core: ProxyCore, req: m.Request, target: Target, status: int, now: float) -> None:
    resp = m.make_response(req, status, to_tag="gw")
    core.receive(resp.serialize(), Flow("udp", ME, (target.host, target.port)), now)


def test_a_5xx_fails_over_to_the_next_destination_in_the_same_transaction() -> None:
    core, clock = make_core()
    core.receive(invite().serialize(), CALLER, clock.now)
    ((t1, r1),), _ = sent(core)
    assert t1 == Target("udp", "127.0.0.2", 5070) and r1.uri == "sip:+15551234@127.0.0.1"  # R-URI kept
    reply(core, r1, t1, 503, clock.now)
    ((t2, r2),), upstream = sent(core)
    assert t2.host == "127.0.0.3" and upstream == []
    assert r2.top_via.branch != r1.top_via.branch  # a new client transaction
    reply(core, r2, t2, 200, clock.now)
    _, upstream = sent(core)
    assert [r.status for r in upstream] == [200]
    assert core.stats()["sip_branch_failovers"] == 1


def test_a_timeout_fails_over_and_the_last_failure_is_the_answer() -> None:
    core, clock = make_core()
    core.receive(invite().serialize(), CALLER, clock.now)
    ((t1, _r1),), _ = sent(core)
    requests, upstream = wait(core, clock, 40.0)  # Timer B (64*T1): the INVITE retransmitted until then
    assert {t.host for t, _ in requests} == {"127.0.0.2", "127.0.0.3"} and upstream == []
    t2, r2 = requests[-1]
    assert t2.host == "127.0.0.3"
    reply(core, r2, t2, 502, clock.now)  # nothing left to try
    _, upstream = sent(core)
    assert [r.status for r in upstream] == [502]


def test_a_busy_destination_is_not_failed_over() -> None:
    core, clock = make_core(failover_codes=["503"])
    core.receive(invite().serialize(), CALLER, clock.now)
    ((t1, r1),), _ = sent(core)
    reply(core, r1, t1, 486, clock.now)
    requests, upstream = sent(core)
    assert requests == [] and [r.status for r in upstream] == [486]
    core.receive(invite("c2").serialize(), CALLER, clock.now)
    ((t1, r1),), _ = sent(core)
    reply(core, r1, t1, 500, clock.now)  # not in failover_codes
    requests, upstream = sent(core)
    assert requests == [] and [r.status for r in upstream] == [500]


def test_no_destination_up_is_answered_503_and_a_gateway_is_not_dispatched_back_to() -> None:
    core, clock = make_core()
    assert core.dispatcher is not None
    for d in core.dispatcher.sets[1]:
        d.state = DOWN
    core.receive(invite().serialize(), CALLER, clock.now)
    requests, upstream = sent(core)
    assert requests == [] and [(r.status, r.reason) for r in upstream] == [(503, "No PBX Available")]
    from_gw = Flow("udp", ME, ("127.0.0.3", 5999))
    core.receive(invite("c3").serialize(), from_gw, clock.now)
    out = [m.parse(s.data) for s in core.outgoing()]
    assert [(r.status, r.reason) for r in out if isinstance(r, m.Response) and r.status > 100] == \
        [(404, "No Such Local Number")]


def test_a_name_is_resolved_and_its_addresses_are_a_failover_list() -> None:
    """RFC 3263 §4.3 failover in the core: a 503 from the first address, then a timeout
    of the second, and the third answers; all in one transaction."""
    core, clock = make_core()
    core.resolve_names = True
    req = invite(ruri="sip:bob@gw.example.test")
    core.receive(req.serialize(), Flow("udp", ME, ("127.0.0.3", 5070)), clock.now)  # a trusted peer's call elsewhere
    (job,) = core.resolve_jobs()
    assert job.target == Target("udp", "gw.example.test", 5060) and job.uri is not None
    addresses = [Target("udp", f"127.0.0.{i}", 5060, name="gw.example.test") for i in (7, 8, 9)]
    core.resolved(job.token, addresses, clock.now)
    ((t1, r1),), _ = sent(core)
    assert t1.host == "127.0.0.7"
    reply(core, r1, t1, 503, clock.now)
    ((t2, _r2),), _ = sent(core)
    assert t2.host == "127.0.0.8"
    requests, _ = wait(core, clock, 40.0)
    t3, r3 = requests[-1]
    assert t3.host == "127.0.0.9" and core.resolve_jobs() == []  # resolved once
    reply(core, r3, t3, 200, clock.now)
    assert core.stats()["sip_branch_failovers"] == 2
    # the silent one (Timer B), not the one that answered 503, is for the resolver to list last
    assert core.silent_targets() == [Target("udp", "127.0.0.8", 5060)] and core.silent_targets() == []


def test_a_name_that_resolves_to_nothing_is_unreachable() -> None:
    core, clock = make_core()
    core.resolve_names = True
    core.receive(invite(ruri="sip:bob@nowhere.test").serialize(), Flow("udp", ME, ("127.0.0.3", 5070)), clock.now)
    (job,) = core.resolve_jobs()
    core.resolved(job.token, [], clock.now)
    out = [m.parse(s.data) for s in core.outgoing()]
    assert [r.status for r in out if isinstance(r, m.Response) and r.status > 100] == [503]

