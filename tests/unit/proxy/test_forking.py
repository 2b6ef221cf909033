"""Forking and response selection of the stateful proxy (RFC 3261 §16.6-16.7), driven
through ProxyCore with bytes in and bytes out: no sockets, a fake clock."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from sipedge._common.clock import FakeClock
from sipedge.config import parse_config
from sipedge.proxy.core import ProxyCore
from sipedge.proxy.identity import Identity, Listener
from sipedge.proxy.location import Binding, MemoryLocationStore, MemorySubscriberStore
from sipedge.proxy.routing import load_router
from sipedge.sip import message as m
from sipedge.sip.flow import Flow, Target

ME = ("127.0.0.1", 5060)
CALLER = Flow("udp", ME, ("127.0.0.1", 6000))


def core_with(tmp_path: Path, contacts: dict[int, float], forking: str = "parallel") -> tuple[ProxyCore, FakeClock]:
    clock = FakeClock()
    config = parse_config({"auth": {"invite": False, "register": False}, "routing": {"forking": forking}})
    location = MemoryLocationStore()
    for port, q in contacts.items():
        location.put(Binding("sip:bob@127.0.0.1", f"sip:bob@127.0.0.1:{port}", clock.wall() + 600, q=q))
    core = ProxyCore(
        config, Identity([Listener("udp", *ME)]), location, MemorySubscriberStore(),
        load_router("sipedge.proxy.default_routing"), clock, secret=b"s" * 32,
    )
    return core, clock


INVITE = (
    b"INVITE sip:bob@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:6000;branch=z9hG4bKfork1\r\n"
    b"Max-Forwards: 70\r\nFrom: <sip:alice@127.0.0.1>;tag=a1\r\nTo: <sip:bob@127.0.0.1>\r\n"
    b"Call-ID: fork-1\r\nCSeq: 1 INVITE\r\nContact: <sip:alice@127.0.0.1:6000>\r\nContent-Length: 0\r\n\r\n"
)


def branches(core: ProxyCore) -> dict[int, m.Request]:
    """Requests the core sent (hop-by-hop ACKs aside), by destination port."""
    out: dict[int, m.Request] = {}
    for s in core.outgoing():
        msg = m.parse(s.data)
        if isinstance(msg, m.Request) and msg.method != "ACK" and isinstance(s.target, Target):
            out[s.target.port] = msg
    return out


def answer(core: ProxyCore, req: m.Request, port: int, status: int, now: float, headers: dict[str, str] | None = None) -> None:
    resp = m.make_response(req, status, to_tag=f"t{port}")
    for k, v in (headers or {}).items():
        resp.add(k, v)
    core.receive(resp.serialize(), Flow("udp", ME, ("127.0.0.1", port)), now)


def upstream(core: ProxyCore) -> list[m.Response]:
    return [r for r in (m.parse(s.data) for s in core.outgoing() if s.flow == CALLER) if isinstance(r, m.Response)]


def test_parallel_best_final_is_forwarded_once_all_branches_answer(tmp_path: Path) -> None:
    core, clock = core_with(tmp_path, {7001: 1.0, 7002: 1.0, 7003: 1.0})
    core.receive(INVITE, CALLER, clock.now)
    sent = branches(core)
    assert set(sent) == {7001, 7002, 7003}
    answer(core, sent[7001], 7001, 503, clock.now)
    answer(core, sent[7002], 7002, 486, clock.now)
    assert [r.status for r in upstream(core)] == []  # still waiting for 7003
    answer(core, sent[7003], 7003, 404, clock.now)
    assert [r.status for r in upstream(core)] == [404]  # 4xx beats 5xx; among 4xx the lowest code


def test_6xx_wins_and_cancels_the_other_branches(tmp_path: Path) -> None:
    core, clock = core_with(tmp_path, {7001: 1.0, 7002: 1.0})
    core.receive(INVITE, CALLER, clock.now)
    sent = branches(core)
    answer(core, sent[7002], 7002, 180, clock.now)
    upstream(core)
    answer(core, sent[7001], 7001, 603, clock.now)
    cancels = [r for r in branches(core).values() if r.method == "CANCEL"]
    assert len(cancels) == 1 and cancels[0].top_via.branch == sent[7002].top_via.branch
    answer(core, sent[7002], 7002, 487, clock.now)
    assert [r.status for r in upstream(core)] == [603]


def test_only_a_503_becomes_500(tmp_path: Path) -> None:
    core, clock = core_with(tmp_path, {7001: 1.0})
    core.receive(INVITE, CALLER, clock.now)
    sent = branches(core)
    answer(core, sent[7001], 7001, 503, clock.now)
    assert [r.status for r in upstream(core)] == [500]


def test_challenges_of_all_branches_are_merged(tmp_path: Path) -> None:
    core, clock = core_with(tmp_path, {7001: 1.0, 7002: 1.0})
    core.receive(INVITE, CALLER, clock.now)
    sent = branches(core)
    answer(core, sent[7001], 7001, 407, clock.now, {"Proxy-Authenticate": 'Digest realm="a", nonce="1"'})
    answer(core, sent[7002], 7002, 401, clock.now, {"WWW-Authenticate": 'Digest realm="b", nonce="2"'})
    (final,) = upstream(core)
    assert final.status in (401, 407)
    assert final.get_all("proxy-authenticate") and final.get_all("www-authenticate")


def test_2xx_is_forwarded_at_once_and_cancels_the_rest(tmp_path: Path) -> None:
    core, clock = core_with(tmp_path, {7001: 1.0, 7002: 1.0})
    core.receive(INVITE, CALLER, clock.now)
    sent = branches(core)
    answer(core, sent[7001], 7001, 180, clock.now)
    answer(core, sent[7002], 7002, 180, clock.now)
    assert [r.status for r in upstream(core)] == [180, 180]
    answer(core, sent[7001], 7001, 200, clock.now)
    out = [(s, m.parse(s.data)) for s in core.outgoing()]
    assert [r.status for s, r in out if isinstance(r, m.Response) and s.flow == CALLER] == [200]
    assert [(r.method, s.target.port) for s, r in out if isinstance(r, m.Request) and s.target] == [("CANCEL", 7002)]


def test_serial_forking_tries_q_groups_in_order(tmp_path: Path) -> None:
    core, clock = core_with(tmp_path, {7001: 0.5, 7002: 1.0, 7003: 1.0}, forking="serial")
    core.receive(INVITE, CALLER, clock.now)
    first = branches(core)
    assert set(first) == {7002, 7003}  # highest q first
    answer(core, first[7002], 7002, 486, clock.now)
    answer(core, first[7003], 7003, 480, clock.now)
    second = branches(core)
    assert set(second) == {7001}
    assert upstream(core) == []
    answer(core, second[7001], 7001, 200, clock.now)
    assert [r.status for r in upstream(core)] == [200]


def test_timeout_of_a_silent_branch_gives_408(tmp_path: Path) -> None:
    core, clock = core_with(tmp_path, {7001: 1.0})
    core.receive(INVITE, CALLER, clock.now)
    branches(core)
    for _ in range(200):
        when = core.get_timer()
        if when is None:
            break
        clock.now = when
        core.handle_timer(clock.now)
        finals = [r.status for r in upstream(core) if r.status >= 200]
        if finals:
            assert finals == [408]
            return
    raise AssertionError("no 408 after Timer B")


def test_contacts_registered_through_an_edge_proxy_follow_its_path(tmp_path: Path) -> None:
    """RFC 3327: the Path recorded at registration becomes the Route set, and the request
    goes to the first hop of it, not straight to the Contact."""
    core, clock = core_with(tmp_path, {})
    core.location.put(
        Binding(
            "sip:bob@127.0.0.1", "sip:bob@10.0.0.9:5062", clock.wall() + 600,
            path=("<sip:edge.example.net:5070;lr>",),
        )
    )
    core.receive(INVITE, CALLER, clock.now)
    sent = [(s.target, m.parse(s.data)) for s in core.outgoing() if s.target is not None]
    ((target, req),) = sent
    assert target == Target("udp", "edge.example.net", 5070)
    assert isinstance(req, m.Request)
    assert req.uri == "sip:bob@10.0.0.9:5062"
    assert req.get_all("route") == ["<sip:edge.example.net:5070;lr>"]


def test_refused_input_is_logged_at_info_at_most_once_a_second(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    core, _ = core_with(tmp_path, {})
    caplog.set_level(logging.INFO, logger="sipedge.proxy.core")
    for i in range(50):  # a garbage flood within one second: one line
        core.receive(b"\x00\xffgarbage\r\n\r\n", CALLER, 10.0 + i / 100)
    core.receive(b"\x00\xffgarbage\r\n\r\n", CALLER, 12.0)
    lines = [r.getMessage() for r in caplog.records if "unparseable" in r.getMessage()]
    assert len(lines) == 2
    assert "udp" in lines[0] and "49 more not logged" in lines[1]
    assert core.stats()["sip_parse_errors"] == 51
