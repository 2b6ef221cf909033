"""Topology hiding (proxy/topology.py) through ProxyCore, bytes in and bytes out: an
"inside" proxy on 127.0.0.50 in front of the caller, the callee at 127.0.0.1:7001."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sipedge._common.clock import FakeClock
from sipedge.config import parse_config
from sipedge.proxy import topology
from sipedge.proxy.core import ProxyCore
from sipedge.proxy.identity import Identity, Listener
from sipedge.proxy.location import Binding, MemoryLocationStore, MemorySubscriberStore
from sipedge.proxy.routing import load_router
from sipedge.sip import message as m
from sipedge.sip.flow import Flow, Target

ME = ("127.0.0.1", 5060)
INSIDE = Flow("udp", ME, ("127.0.0.50", 5070))
CALLEE = Flow("udp", ME, ("127.0.0.1", 7001))
SECRET = b"k" * 32
INSIDE_RR = "<sip:127.0.0.50:5070;lr>"
CALLER_CONTACT = "sip:alice@127.0.0.50:6000"


def make_core(hiding: bool = True, mask: bool = False) -> ProxyCore:
    clock = FakeClock()
    config = parse_config({"auth": {"invite": False, "register": False},
                           "sip": {"topology_hiding": hiding, "topology_mask_callid": mask}})
    location = MemoryLocationStore()
    location.put(Binding("sip:bob@127.0.0.1", "sip:bob@127.0.0.1:7001", clock.wall() + 6000))
    return ProxyCore(config, Identity([Listener("udp", *ME)]), location, MemorySubscriberStore(),
                     load_router("sipedge.proxy.default_routing"), clock, secret=SECRET)


def invite() -> bytes:
    return (
        "INVITE sip:bob@127.0.0.1 SIP/2.0\r\n"
        "Via: SIP/2.0/UDP 127.0.0.50:5070;branch=z9hG4bKinside1\r\n"
        "Via: SIP/2.0/UDP 127.0.0.50:6000;branch=z9hG4bKcaller1\r\n"
        f"Record-Route: {INSIDE_RR}\r\n"
        "Max-Forwards: 69\r\nFrom: <sip:alice@127.0.0.1>;tag=a1\r\nTo: <sip:bob@127.0.0.1>\r\n"
        f"Call-ID: topo-1\r\nCSeq: 1 INVITE\r\nContact: <{CALLER_CONTACT}>;+sip.instance=\"x\"\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()


def sent(core: ProxyCore) -> list[tuple[Any, m.Request | m.Response]]:
    return [(s.target or s.flow, m.parse(s.data)) for s in core.outgoing()]


def address(dest: Flow | Target) -> tuple[str, int]:
    return (dest.host, dest.port) if isinstance(dest, Target) else dest.remote


def only(out: list[tuple[Any, m.Request | m.Response]], kind: type, what: str | int) -> tuple[Any, Any]:
    found = [(d, x) for d, x in out if isinstance(x, kind)
             and (x.method == what if isinstance(x, m.Request) else x.status == what)]
    assert len(found) == 1, out
    return found[0]


def call(core: ProxyCore) -> tuple[m.Request, m.Response]:
    """INVITE from the inside, 200 from the callee: (the INVITE the callee got, the 200
    the inside got)."""
    core.receive(invite(), INSIDE, 0.0)
    _, branch = only(sent(core), m.Request, "INVITE")
    ok = m.make_response(branch, 200, to_tag="b1")
    for rr in ["<sip:10.9.9.9;lr>", *branch.get_all("record-route")]:  # a proxy on the callee's side, on top
        ok.add("Record-Route", rr)
    ok.add("Contact", "<sip:bob@127.0.0.1:7001>")
    core.receive(ok.serialize(), CALLEE, 0.0)
    dest, back = only(sent(core), m.Response, 200)
    assert address(dest) == ("127.0.0.50", 5070)
    return branch, back


def test_the_callee_sees_nothing_of_the_inside_and_the_caller_gets_its_vias_back() -> None:
    core = make_core()
    branch, back = call(core)
    text = branch.serialize().decode()
    assert "127.0.0.50" not in text and "alice@" not in (branch.get("contact") or "")
    assert len(branch.get_all("via")) == 1
    (rr,) = branch.get_all("record-route")
    assert ";th=" in rr and ";sg=" in rr
    assert [v.host for v in back.vias] == ["127.0.0.50", "127.0.0.50"]
    rrs = back.get_all("record-route")
    assert rrs[-1] == INSIDE_RR and len(rrs) == 2 and "10.9.9.9" not in back.serialize().decode()
    assert back.contacts[0].uri.user == "th"  # type: ignore[union-attr]


def test_without_the_switch_nothing_is_hidden() -> None:
    core = make_core(hiding=False)
    core.receive(invite(), INSIDE, 0.0)
    _, branch = only(sent(core), m.Request, "INVITE")
    assert len(branch.get_all("via")) == 3 and INSIDE_RR in branch.get_all("record-route")


def in_dialog(method: str, ruri: str, routes: list[str], from_callee: bool, cseq: int = 2,
              call_id: str = "topo-1") -> bytes:
    via = "127.0.0.1:7001" if from_callee else "127.0.0.50:5070"
    tags = ("b1", "a1") if from_callee else ("a1", "b1")
    route = "".join(f"Route: {r}\r\n" for r in routes)
    return (f"{method} {ruri} SIP/2.0\r\nVia: SIP/2.0/UDP {via};branch=z9hG4bKd{method}{cseq}\r\n"
            f"Max-Forwards: 70\r\nFrom: <sip:x@127.0.0.1>;tag={tags[0]}\r\nTo: <sip:y@127.0.0.1>;tag={tags[1]}\r\n"
            f"Call-ID: {call_id}\r\nCSeq: {cseq} {method}\r\n{route}Content-Length: 0\r\n\r\n").encode()


def test_a_bye_from_the_callee_reaches_the_inside_with_the_callers_contact_even_after_a_restart() -> None:
    core = make_core()
    branch, _ = call(core)
    again = make_core()  # a restart: nothing but the secret survives
    again.receive(in_dialog("BYE", str(branch.contacts[0].uri), branch.get_all("record-route"), True),  # type: ignore[union-attr]
                  CALLEE, 0.0)
    dest, bye = only(sent(again), m.Request, "BYE")
    assert address(dest) == ("127.0.0.50", 5070)
    assert bye.uri.startswith(CALLER_CONTACT) and bye.get_all("route") == [INSIDE_RR]
    assert len(bye.get_all("via")) == 1


def test_a_bye_and_ack_from_the_caller_reach_the_callee_past_its_own_proxy() -> None:
    core = make_core()
    _, back = call(core)
    routes = list(reversed(back.get_all("record-route")))[1:]  # the inside consumed its own
    ruri = str(back.contacts[0].uri)  # type: ignore[union-attr]
    core.receive(in_dialog("ACK", ruri, routes, False, cseq=1), INSIDE, 0.0)
    dest, ack = only(sent(core), m.Request, "ACK")
    assert address(dest) == ("10.9.9.9", 5060) and ack.get_all("route") == ["<sip:10.9.9.9;lr>"]
    assert ack.uri == "sip:bob@127.0.0.1:7001" and len(ack.get_all("via")) == 1
    core.receive(in_dialog("BYE", ruri, routes, False), INSIDE, 0.0)
    _, bye = only(sent(core), m.Request, "BYE")
    assert "127.0.0.50" not in bye.serialize().decode()


@pytest.mark.parametrize("where", ["ruri", "route"])
def test_a_tampered_parameter_is_refused_and_counted(where: str) -> None:
    core = make_core()
    branch, _ = call(core)
    ruri = str(branch.contacts[0].uri)  # type: ignore[union-attr]
    routes = branch.get_all("record-route")
    if where == "ruri":
        ruri = ruri.replace(";th=", ";th=A")
    else:
        routes = [r.replace(";th=", ";th=A") for r in routes]
    core.receive(in_dialog("BYE", ruri, routes, True), CALLEE, 0.0)
    _, refused = only(sent(core), m.Response, 403)
    assert refused.reason == "Bad Topology Parameter"
    assert core.counters["sip_topology_tampered"] == 1


def test_a_parameter_of_another_call_does_not_open() -> None:
    codec = topology.TopologyCodec(SECRET)
    sealed = codec.seal(b"contact", ["sip:a@b"], "call-1")
    assert codec.open(b"contact", sealed, "call-1") == ["sip:a@b"]
    for kind, call_id in ((b"contact", "call-2"), (b"routes", "call-1")):
        with pytest.raises(topology.TopologyError):
            codec.open(kind, sealed, call_id)
    with pytest.raises(topology.TopologyError):
        topology.TopologyCodec(b"other" * 8).open(b"contact", sealed, "call-1")


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_garbage_never_opens(value: str) -> None:
    with pytest.raises(topology.TopologyError):
        topology.TopologyCodec(SECRET).open(b"routes", value, "c")


URI_SAFE = st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.!~*'()%", max_size=120)


@settings(max_examples=100, deadline=None)
@given(URI_SAFE)
def test_a_garbage_parameter_in_a_request_gets_an_answer_never_a_crash(value: str) -> None:
    core = make_core()
    branch, _ = call(core)
    routes = branch.get_all("record-route")
    core.receive(in_dialog("BYE", f"sip:th@127.0.0.1:5060;th={value}", routes, True), CALLEE, 0.0)
    statuses = [x.status for _, x in sent(core) if isinstance(x, m.Response)]
    assert statuses in ([403], [400])


def test_a_re_invite_of_the_callee_and_its_answer_hide_the_new_contacts() -> None:
    core = make_core()
    branch, _ = call(core)
    reinvite = m.parse(in_dialog("INVITE", str(branch.contacts[0].uri), branch.get_all("record-route"), True))  # type: ignore[union-attr]
    reinvite.add("Contact", "<sip:bob@127.0.0.1:7002>")
    core.receive(reinvite.serialize(), CALLEE, 0.0)
    dest, out = only(sent(core), m.Request, "INVITE")
    assert address(dest) == ("127.0.0.50", 5070) and "7002" not in out.serialize().decode()
    assert out.contacts[0].uri.user == "th"  # type: ignore[union-attr]
    ok = m.make_response(out, 200, to_tag="a1")
    ok.add("Contact", "<sip:alice@127.0.0.50:6001>")
    core.receive(ok.serialize(), INSIDE, 0.0)
    dest, back = only(sent(core), m.Response, 200)
    assert address(dest) == ("127.0.0.1", 7001) and "127.0.0.50" not in back.serialize().decode()
    assert [v.port for v in back.vias] == [7001]


def test_ending_a_hidden_call_from_the_server_sends_each_side_a_bye_along_its_own_route() -> None:
    core = make_core()
    call(core)
    assert core.end_dialog("topo-1", "ended by control", 1.0)
    byes = {address(d): r for d, r in sent(core) if isinstance(r, m.Request) and r.method == "BYE"}
    to_callee, to_caller = byes[("10.9.9.9", 5060)], byes[("127.0.0.50", 5070)]
    assert "127.0.0.50" not in to_callee.serialize().decode() and to_callee.uri == "sip:bob@127.0.0.1:7001"
    assert to_caller.uri.startswith(CALLER_CONTACT) and to_caller.get_all("route") == [INSIDE_RR]


def test_a_masked_call_id_is_all_the_callee_side_sees_of_it_both_ways_and_after_a_restart() -> None:
    core = make_core(mask=True)
    branch, back = call(core)
    masked = branch.get("call-id") or ""
    assert masked.startswith(topology.CALL_ID_PREFIX) and "topo-1" not in branch.serialize().decode()
    assert back.get("call-id") == "topo-1"
    # the caller's ACK and BYE reach the callee under the masked Call-ID
    routes = list(reversed(back.get_all("record-route")))[1:]
    ruri = str(back.contacts[0].uri)  # type: ignore[union-attr]
    core.receive(in_dialog("ACK", ruri, routes, False, cseq=1), INSIDE, 0.0)
    _, ack = only(sent(core), m.Request, "ACK")
    assert ack.get("call-id") == masked
    # after a restart, the callee's BYE (masked) reaches the caller under the call's own,
    # and the caller's 200 goes back masked
    again = make_core(mask=True)
    again.receive(in_dialog("BYE", str(branch.contacts[0].uri), branch.get_all("record-route"), True,  # type: ignore[union-attr]
                            call_id=masked), CALLEE, 0.0)
    _, bye = only(sent(again), m.Request, "BYE")
    assert bye.get("call-id") == "topo-1" and bye.uri.startswith(CALLER_CONTACT)
    again.receive(m.make_response(bye, 200).serialize(), INSIDE, 0.0)
    dest, ok = only(sent(again), m.Response, 200)
    assert address(dest) == ("127.0.0.1", 7001) and ok.get("call-id") == masked


def test_ending_a_masked_call_from_the_server_gives_the_callee_the_masked_call_id() -> None:
    core = make_core(mask=True)
    branch, _ = call(core)
    assert core.end_dialog("topo-1", "ended by control", 1.0)
    ids = {address(d)[0]: r.get("call-id") for d, r in sent(core) if isinstance(r, m.Request)}
    assert ids == {"10.9.9.9": branch.get("call-id"), "127.0.0.50": "topo-1"}


def test_a_local_reply_to_a_masked_request_is_masked_too() -> None:
    core = make_core(mask=True)
    branch, _ = call(core)
    masked = branch.get("call-id") or ""
    ruri = str(branch.contacts[0].uri).replace(";th=", ";th=A")  # type: ignore[union-attr]
    core.receive(in_dialog("BYE", ruri, branch.get_all("record-route"), True, call_id=masked), CALLEE, 0.0)
    _, refused = only(sent(core), m.Response, 403)
    assert refused.get("call-id") == masked


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=100))
def test_a_call_id_that_only_looks_masked_stays_what_it_is(value: str) -> None:
    assert topology.unmask_call_id(topology.TopologyCodec(SECRET), topology.CALL_ID_PREFIX + value) is None
