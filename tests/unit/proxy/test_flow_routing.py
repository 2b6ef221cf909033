"""Requests routed by flow: branches sent to a WebSocket peer are indexed by that peer
(its closed connection fails them at once with 480, and the index forgets every branch
when its transaction ends), and ``;alias=`` in a Request-URI is used only at the last hop."""

from __future__ import annotations

from pathlib import Path

from sipedge._common.clock import FakeClock
from sipedge.config import parse_config
from sipedge.proxy.core import ProxyCore
from sipedge.proxy.identity import Identity, Listener
from sipedge.proxy.location import Binding, MemoryLocationStore, MemorySubscriberStore
from sipedge.proxy.routing import load_router
from sipedge.sip import message as m
from sipedge.sip.flow import Flow

ME = ("127.0.0.1", 5060)
WS_ME = ("127.0.0.1", 8080)
CALLER = Flow("udp", ME, ("127.0.0.1", 6000))


def core_with_browser(n: int) -> tuple[ProxyCore, FakeClock, list[Flow]]:
    """``n`` browsers registered as bob over their own WebSocket connections."""
    clock = FakeClock()
    location = MemoryLocationStore()
    flows = [Flow("ws", WS_ME, ("127.0.0.1", 40000 + i), conn_id=i + 1) for i in range(n)]
    for i, flow in enumerate(flows):
        location.put(Binding(
            "sip:bob@127.0.0.1", f"sip:b{i}@df7jal23ls0d.invalid;transport=ws", clock.wall() + 600, flow=flow.token,
        ))
    core = ProxyCore(
        parse_config({"auth": {"invite": False, "register": False}}),
        Identity([Listener("udp", *ME), Listener("ws", *WS_ME)]), location, MemorySubscriberStore(),
        load_router("sipedge.proxy.default_routing"), clock, secret=b"s" * 32,
    )
    return core, clock, flows


def invite(n: int) -> bytes:
    return (
        f"INVITE sip:bob@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:6000;branch=z9hG4bKws{n}\r\n"
        f"Max-Forwards: 70\r\nFrom: <sip:alice@127.0.0.1>;tag=a{n}\r\nTo: <sip:bob@127.0.0.1>\r\n"
        f"Call-ID: ws-{n}\r\nCSeq: 1 INVITE\r\nContact: <sip:alice@127.0.0.1:6000>\r\nContent-Length: 0\r\n\r\n"
    ).encode()


def sent_on(core: ProxyCore) -> dict[Flow, m.Request]:
    out: dict[Flow, m.Request] = {}
    for s in core.outgoing():
        msg = m.parse(s.data)
        if isinstance(msg, m.Request) and s.flow is not None:
            out[s.flow] = msg
    return out


def finals_to_caller(core: ProxyCore) -> list[int]:
    return [
        r.status for r in (m.parse(s.data) for s in core.outgoing() if s.flow == CALLER)
        if isinstance(r, m.Response) and r.status >= 200
    ]


def test_a_closed_browser_fails_only_its_own_branch_and_the_index_empties(tmp_path: Path) -> None:
    core, clock, flows = core_with_browser(2)
    core.receive(invite(1), CALLER, clock.now)
    branches = sent_on(core)
    assert set(branches) == set(flows)  # forked to both browsers
    core.flow_closed(flows[0], clock.now)
    assert finals_to_caller(core) == []  # the other browser still rings
    core.flow_closed(flows[1], clock.now)
    assert finals_to_caller(core) == [480]  # nothing else can reach a browser
    clock.advance(40)
    core.handle_timer(clock.now)
    core.outgoing()
    assert core._ws_branches == {} and core._branch_of == {}


def test_answered_calls_leave_nothing_in_the_index(tmp_path: Path) -> None:
    core, clock, flows = core_with_browser(1)
    for n in range(20):
        core.receive(invite(n), CALLER, clock.now)
        req = sent_on(core)[flows[0]]
        core.receive(m.make_response(req, 200, to_tag=f"b{n}").serialize(), flows[0], clock.now)
        assert finals_to_caller(core) == [200]
    # answered, every branch final: settled at once, only the 2xx's client keys wait for Timer M
    assert core._ws_branches == {} and core._branch_of == {} and len(core._accepted) == 20
    for _ in range(8):
        clock.advance(5)
        core.handle_timer(clock.now)
        core.outgoing()
    assert core._accepted == {}


def test_an_alias_for_the_next_proxy_is_left_to_it() -> None:
    """An in-dialog request whose Route set goes on to another proxy keeps the alias in
    its Request-URI: it is that proxy's, for its own NATed user (Kamailio calls
    handle_ruri_alias only when no destination is set)."""
    core, clock, _ = core_with_browser(0)
    uri = "sip:carol@192.168.1.9:5060;alias=198.51.100.7~40123~1"
    stamp = core.route_stamp.stamp("d-1", "a1")  # the Record-Route we wrote for this dialog
    bye = (
        f"BYE {uri} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:6000;branch=z9hG4bKbye1\r\n"
        f"Route: <sip:127.0.0.1:5060;lr;sg={stamp}>, <sip:192.0.2.80:5060;lr>\r\nMax-Forwards: 70\r\n"
        "From: <sip:alice@127.0.0.1>;tag=a1\r\nTo: <sip:carol@example.net>;tag=c1\r\nCall-ID: d-1\r\n"
        "CSeq: 2 BYE\r\nContent-Length: 0\r\n\r\n"
    ).encode()
    core.receive(bye, CALLER, clock.now)
    (out,) = [s for s in core.outgoing() if isinstance(m.parse(s.data), m.Request)]
    relayed = m.parse(out.data)
    assert isinstance(relayed, m.Request) and relayed.uri == uri
    assert out.flow is not None and out.flow.remote == ("192.0.2.80", 5060)  # from the listener in the Route
