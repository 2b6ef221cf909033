"""Topology hiding through a real ``sipedge serve`` with ``[sip] topology_hiding = true``
(docs/operations.md, "Topology hiding"): the caller sits behind an "inside" proxy on
127.0.0.50 (a UA on that address writing the proxy's Via and Record-Route itself), the
callee registers from 127.0.0.1. Nothing of 127.0.0.50 reaches the callee; the caller
gets its Vias and Record-Route back; ACK and BYE route both ways, after a restart too."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers.sipserver import Server, cli, restarted, running_server
from helpers.ua import UA
from sipedge.server.handoff import owner_of
from sipedge.sip import message as m

INSIDE = "127.0.0.50"
SDP = b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 40000 RTP/AVP 0\r\n"
CONFIG = "\n[media]\nenabled = false\n"
SIP = f'topology_hiding = true\ntrusted_peers = ["{INSIDE}"]\n'

pytestmark = pytest.mark.timeout(90)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    with running_server(tmp_path, users={"bob": "bob-pw"}, extra=CONFIG, sip=SIP, log_level="info") as s:
        yield s


def parties(server: Server) -> tuple[UA, UA]:
    inside = UA("udp", (server.host, server.udp), "alice", "127.0.0.1", host=INSIDE)
    bob = UA("udp", (server.host, server.udp), "bob", server.host, "bob-pw")
    assert bob.register().status == 200
    bob.call_id = inside.call_id  # bob's in-dialog requests are of the caller's call
    return inside, bob


def inside_rr(inside: UA) -> str:
    return f"<sip:{INSIDE}:{inside.port};lr>"


def call(inside: UA, bob: UA) -> tuple[m.Request, m.Response]:
    """INVITE from behind the inside proxy, 200, ACK: (what bob got, what the caller got)."""
    inv = inside.build("INVITE", bob.aor, body=SDP, headers={"Content-Type": "application/sdp"})
    inv.add("Via", f"SIP/2.0/UDP {INSIDE}:6000;branch=z9hG4bKcaller{inside.cseq}")  # the caller, below the proxy
    inv.add("Record-Route", inside_rr(inside))
    sent_vias = [(v.host, v.port, v.branch) for v in inv.vias]
    inside.send(inv)
    seen = bob.wait("INVITE")
    assert isinstance(seen, m.Request)
    head, _, body = seen.serialize().partition(b"\r\n\r\n")
    for line in head.decode().split("\r\n"):  # every header, one by one
        assert INSIDE not in line, line
    assert INSIDE.encode() not in body
    assert len(seen.get_all("via")) == 1
    bob.answer(seen, 200, body=SDP)
    ok = inside.expect(200)
    assert [(v.host, v.port, v.branch) for v in ok.vias] == sent_vias  # the caller's own Vias back
    rrs = ok.get_all("record-route")
    assert rrs[-1] == inside_rr(inside) and all(";th=" in r for r in rrs[:-1])
    assert "127.0.0.1:" + str(bob.port) not in (ok.get("contact") or "")  # bob's host:port hidden
    ack = hop_request(inside, "ACK", ok, cseq=ok.cseq.number)
    inside.send(ack)
    got = bob.wait("ACK")
    assert isinstance(got, m.Request) and INSIDE.encode() not in got.serialize()
    return seen, ok


def hop_request(inside: UA, method: str, ok: m.Response, cseq: int | None = None) -> m.Request:
    """An in-dialog request of the caller as the inside proxy forwards it: to the Contact
    of the 2xx, along its Record-Route reversed, minus the proxy's own entry."""
    contacts = ok.contacts
    assert isinstance(contacts, list)
    req = inside.build(method, str(contacts[0].uri), to=str(ok.to.uri), to_tag=ok.to.tag)
    if cseq is not None:
        req.set("CSeq", f"{cseq} {method}")
    for r in list(reversed(ok.get_all("record-route")))[1:]:
        req.add("Route", r)
    return req


def bob_request(bob: UA, method: str, seen: m.Request) -> m.Request:
    """An in-dialog request of the callee: to the Contact of the INVITE, along its
    Record-Route."""
    contacts = seen.contacts
    assert isinstance(contacts, list)
    req = bob.build(method, str(contacts[0].uri), to=str(seen.from_.uri), to_tag=seen.from_.tag)
    for r in seen.get_all("record-route"):
        req.add("Route", r)
    return req


def bye_through(sender: UA, bye: m.Request, receiver: UA) -> tuple[m.Request, m.Response]:
    """``sender``'s BYE as ``receiver`` gets it, and the 200 of ``receiver`` as
    ``sender`` gets it."""
    sender.send(bye)
    got = receiver.wait("BYE")
    assert isinstance(got, m.Request)
    receiver.answer(got, 200)
    done = sender.expect(200)
    assert done.cseq.method == "BYE"
    return got, done


def test_the_callee_sees_no_inside_address_and_a_bye_from_the_caller_routes(server: Server) -> None:
    inside, bob = parties(server)
    try:
        _, ok = call(inside, bob)
        bye, done = bye_through(inside, hop_request(inside, "BYE", ok), bob)
        assert INSIDE.encode() not in bye.serialize() and bye.uri.startswith(f"sip:bob@127.0.0.1:{bob.port}")
        assert len(done.get_all("via")) == 1
    finally:
        inside.close()
        bob.close()


def test_a_tampered_parameter_gets_403_and_is_counted(server: Server) -> None:
    inside, bob = parties(server)
    try:
        seen, _ = call(inside, bob)
        bye = bob_request(bob, "BYE", seen)
        bye.set_uri(bye.uri.replace(";th=", ";th=x"))
        bob.send(bye)
        refused = bob.expect(403)
        assert refused.reason == "Bad Topology Parameter"
        proc = cli(["ctl", "--config", str(server.config), "--json", "stats", "sip_topology"])
        assert json.loads(proc.stdout)["sip_topology_tampered"] == 1
        assert "Traceback" not in server.log_text()
    finally:
        inside.close()
        bob.close()


def test_after_a_restart_a_bye_from_the_callee_reaches_the_caller_behind_the_inside_proxy(server: Server,
                                                                                           tmp_path: Path) -> None:
    inside, bob = parties(server)
    try:
        seen, _ = call(inside, bob)
        with restarted(server, tmp_path / "again.log"):
            bye, _ = bye_through(bob, bob_request(bob, "BYE", seen), inside)
            assert bye.uri == f"sip:alice@{INSIDE}:{inside.port}"  # the caller's own Contact again
            assert bye.get_all("route") == [inside_rr(inside)]  # through the inside proxy
            assert len(bye.get_all("via")) == 1
    finally:
        inside.close()
        bob.close()


@pytest.mark.parametrize("workers", [1, 2], ids=["workers1", "workers2"])
def test_with_topology_mask_callid_the_callee_knows_the_call_by_a_masked_call_id(tmp_path: Path, workers: int) -> None:
    """With workers, the callee's answers and BYE carry the masked Call-ID: the worker
    of the call's own Call-ID handles them (docs/workers.md). Calls are made until one
    whose masked Call-ID another worker would own has passed."""
    sip = SIP + "topology_mask_callid = true\n"
    with running_server(tmp_path, users={"bob": "bob-pw"}, extra=CONFIG, sip=sip, log_level="info",
                        general=f"workers = {workers}") as server:
        crossed = False
        for _ in range(12):
            inside, bob = parties(server)
            try:
                seen, ok = call(inside, bob)
                masked = seen.get("call-id") or ""
                assert masked.startswith("thc-") and inside.call_id not in seen.serialize().decode()
                assert ok.get("call-id") == inside.call_id
                bob.call_id = masked
                bye, done = bye_through(bob, bob_request(bob, "BYE", seen), inside)
                assert bye.get("call-id") == inside.call_id and done.get("call-id") == masked
                crossed = owner_of(masked, workers) != owner_of(inside.call_id, workers)
            finally:
                inside.close()
                bob.close()
            if workers == 1 or crossed:
                break
        assert workers == 1 or crossed
