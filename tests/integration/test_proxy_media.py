"""The proxy engages the media relay (rtpengine_manage): a call whose caller is behind a
NAT (private address in its SDP) gets both SDPs pointed at the relay, RTP flows both
ways through it after latching, and BYE removes the session and frees its ports."""

from __future__ import annotations

import socket
import struct
import subprocess
import time
from collections.abc import Iterator

import pytest

from helpers.ports import free_port
from helpers.rtpengine import INSTALLED as RTPENGINE_INSTALLED
from helpers.rtpengine import running_rtpengine, wait_pong
from helpers.sipserver import SIPEDGE, Server, running_server
from helpers.ua import UA
from sipedge.sdp.model import SessionDescription
from sipedge.sip import message as m

USERS = {name: f"{name}-pw" for name in ("alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan", "judy", "mallory", "oscar", "peggy")}


@pytest.fixture(scope="module", params=["built-in relay", "remote relay over ng", "rtpengine over ng"])
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """sipedge serve with its own relay, or driving a separate `sipedge media serve` node
    over the ng protocol (the first step of media scale-out), or a real rtpengine."""
    tmp = tmp_path_factory.mktemp("media")
    low = free_port() & ~1
    ports = f"port_min = {low}\nport_max = {low + 40}\n"
    if request.param == "built-in relay":
        with running_server(tmp, users=USERS, extra=f'\n[media]\n{ports}ng_listen = ""\n') as s:
            yield s
        return
    if request.param == "rtpengine over ng":
        if not RTPENGINE_INSTALLED:
            pytest.skip("rtpengine not installed (rtpengine-daemon)")
        with running_rtpengine(tmp, low, low + 40) as ng, \
                running_server(tmp / "proxy", users=USERS, extra=f'\n[media]\nremote = "127.0.0.1:{ng}"\n') as s:
            yield s
        return
    ng = free_port()
    node_cfg = tmp / "media-node.toml"
    node_cfg.write_text(f"[media]\n{ports}")
    node = subprocess.Popen(
        [SIPEDGE, "media", "serve", "--config", str(node_cfg), "--ng-listen", f"127.0.0.1:{ng}"],
        stdout=subprocess.DEVNULL, stderr=(tmp / "media-node.log").open("wb"),
    )
    try:
        wait_pong(ng, node, tmp / "media-node.log")
        with running_server(tmp / "proxy", users=USERS, extra=f'\n[media]\nremote = "127.0.0.1:{ng}"\n') as s:
            yield s
    finally:
        node.terminate()
        node.wait(10)


def sdp(ip: str, port: int) -> bytes:
    return (
        f"v=0\r\no=- 1 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\n"
        f"m=audio {port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=sendrecv\r\n"
    ).encode()


def media_of(body: bytes) -> tuple[str, int]:
    desc = SessionDescription.parse(body)
    media = desc.media[0]
    conn = media.connection or desc.connection
    assert conn is not None
    return conn.address, media.port


def rtp(seq: int) -> bytes:
    return struct.pack("!BBHII", 0x80, 0, seq, seq * 160, 0x1234) + b"\xff" * 160


def udp_socket() -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    s.settimeout(1.0)
    return s


def natted_invite(caller: UA, callee: UA) -> tuple[m.Request, m.Request]:
    """The caller "behind a NAT" (its SDP names a private address nobody can reach) calls
    the callee, who registers first; digest included. Returns the INVITE the caller sent
    last (with credentials) and the one the callee got."""
    assert callee.register().status == 200
    inv = caller.build("INVITE", callee.aor, body=sdp("192.168.77.2", 4000), headers={"Content-Type": "application/sdp"})
    caller.send(inv)
    inv = caller.authorize(inv, caller.expect(407))
    caller.send(inv)
    seen = callee.wait("INVITE")
    assert isinstance(seen, m.Request)
    return inv, seen


def relayed_call(caller: UA, callee: UA, a_rtp: socket.socket, b_rtp: socket.socket) -> tuple[m.Response, int, int]:
    """A call from a NATed caller to a registered callee: both SDPs point at the relay.
    Returns the 200 and the relay ports for the caller and for the callee."""
    _, seen = natted_invite(caller, callee)
    relay_for_callee = media_of(seen.body)
    assert relay_for_callee[0] == "127.0.0.1" and relay_for_callee[1] != 4000
    callee.answer(seen, 200, body=sdp("127.0.0.1", b_rtp.getsockname()[1]))
    ok = caller.expect(200)
    relay_for_caller = media_of(ok.body)
    assert relay_for_caller[0] == "127.0.0.1"
    assert relay_for_caller[1] != b_rtp.getsockname()[1]
    return ok, relay_for_caller[1], relay_for_callee[1]


def talk(a_rtp: socket.socket, b_rtp: socket.socket, to_a: int, to_b: int, first: int) -> None:
    """The caller speaks first (the relay latches her real address), the callee answers."""
    for seq in range(first, first + 5):
        a_rtp.sendto(rtp(seq), ("127.0.0.1", to_a))
    got_b = [b_rtp.recvfrom(2048)[0] for _ in range(5)]
    # (sorted: rtpengine's worker threads may reorder a burst)
    assert sorted(struct.unpack("!H", p[2:4])[0] for p in got_b) == list(range(first, first + 5))
    for seq in range(first + 100, first + 105):
        b_rtp.sendto(rtp(seq), ("127.0.0.1", to_b))
    got_a = [a_rtp.recvfrom(2048)[0] for _ in range(5)]
    assert sorted(struct.unpack("!H", p[2:4])[0] for p in got_a) == list(range(first + 100, first + 105))


def in_dialog(caller: UA, method: str, ok: m.Response, body: bytes = b"") -> m.Request:
    contacts = ok.contacts
    assert isinstance(contacts, list)
    req = caller.build(method, str(contacts[0].uri), to=str(ok.to.uri), to_tag=ok.to.tag, body=body,
                       headers={"Content-Type": "application/sdp"} if body else None)
    for r in reversed(ok.get_all("record-route")):
        req.add("Route", r)
    return req


def test_natted_caller_gets_relayed_media_both_ways(server: Server) -> None:
    alice = UA("udp", (server.host, server.udp), "alice", server.host, USERS["alice"])
    bob = UA("udp", (server.host, server.udp), "bob", server.host, USERS["bob"])
    a_rtp, b_rtp = udp_socket(), udp_socket()
    try:
        ok, relay_for_alice, relay_for_bob = relayed_call(alice, bob, a_rtp, b_rtp)
        talk(a_rtp, b_rtp, relay_for_alice, relay_for_bob, 0)

        # BYE ends the call and the relayed media with it
        alice.send(in_dialog(alice, "BYE", ok))
        got = bob.wait("BYE")
        assert isinstance(got, m.Request)
        bob.answer(got, 200)
        alice.expect(200)
        time.sleep(0.3)
        a_rtp.sendto(rtp(9), ("127.0.0.1", relay_for_alice))
        b_rtp.settimeout(0.5)
        with pytest.raises(TimeoutError):
            b_rtp.recvfrom(2048)
    finally:
        for s in (a_rtp, b_rtp):
            s.close()
        alice.close()
        bob.close()


def test_refused_reinvite_keeps_the_call_media(server: Server) -> None:
    """A re-INVITE the callee refuses (488) changes nothing (RFC 3261 §14.1): the relayed
    media of the established call keeps flowing."""
    erin = UA("udp", (server.host, server.udp), "erin", server.host, USERS["erin"])
    frank = UA("udp", (server.host, server.udp), "frank", server.host, USERS["frank"])
    a_rtp, b_rtp = udp_socket(), udp_socket()
    try:
        ok, to_erin, to_frank = relayed_call(erin, frank, a_rtp, b_rtp)
        talk(a_rtp, b_rtp, to_erin, to_frank, 0)
        reinvite = in_dialog(erin, "INVITE", ok, body=sdp("192.168.77.2", 4000))
        erin.send(reinvite)
        seen = frank.wait("INVITE")
        assert isinstance(seen, m.Request)
        frank.answer(seen, 488)
        refused = erin.wait(lambda x: isinstance(x, m.Response) and x.status == 488, 3)
        assert isinstance(refused, m.Response)
        ack = in_dialog(erin, "ACK", ok)
        ack.set("CSeq", f"{reinvite.cseq.number} ACK")
        erin.send(ack)
        time.sleep(0.3)
        talk(a_rtp, b_rtp, to_erin, to_frank, 20)
    finally:
        for s in (a_rtp, b_rtp):
            s.close()
        erin.close()
        frank.close()


def test_malformed_sdp_is_refused_488_with_the_reason(server: Server, request: pytest.FixtureRequest) -> None:
    """An offer the relay cannot parse is answered 488 by the proxy, saying what is wrong
    (rtpengine says only that it failed to parse the SDP); the callee never sees it."""
    alice = UA("udp", (server.host, server.udp), "alice", server.host, USERS["alice"])
    grace = UA("udp", (server.host, server.udp), "grace", server.host, USERS["grace"])
    try:
        assert grace.register().status == 200
        bad = sdp("192.168.77.2", 4000).replace(b"m=audio 4000 RTP/AVP 0", b"m=audio many RTP/AVP 0")
        inv = alice.build("INVITE", grace.aor, body=bad, headers={"Content-Type": "application/sdp"})
        alice.send(inv)
        alice.send(alice.authorize(inv, alice.expect(407)))
        refused = alice.expect_final()
        assert refused.status == 488 and refused.reason.startswith("Bad SDP")
        if request.node.callspec.params["server"] != "rtpengine over ng":
            assert "port" in refused.reason
        assert not [x for x in grace.inbox if isinstance(x, m.Request)]
    finally:
        alice.close()
        grace.close()


def cancel_of(inv: m.Request) -> m.Request:
    cancel = m.Request("CANCEL", inv.uri)
    for name in ("via", "from", "to", "call-id"):
        cancel.add(name, inv.get(name) or "")
    cancel.add("CSeq", f"{inv.cseq.number} CANCEL")
    cancel.add("Max-Forwards", "70")
    return cancel


def test_a_cancel_that_crosses_the_200_leaves_the_call_media(server: Server) -> None:
    """A CANCEL that arrives after the INVITE was answered has no effect on it (RFC 3261
    §9.2): it gets its 200, the callee sees nothing, and the relayed media of the call
    keeps flowing."""
    oscar = UA("udp", (server.host, server.udp), "oscar", server.host, USERS["oscar"])
    peggy = UA("udp", (server.host, server.udp), "peggy", server.host, USERS["peggy"])
    a_rtp, b_rtp = udp_socket(), udp_socket()
    try:
        inv, seen = natted_invite(oscar, peggy)
        peggy.answer(seen, 200, body=sdp("127.0.0.1", b_rtp.getsockname()[1]))
        ok = oscar.expect(200)
        oscar.send(cancel_of(inv))
        assert oscar.wait(lambda x: isinstance(x, m.Response) and x.status == 200 and x.cseq.method == "CANCEL")
        oscar.send(in_dialog(oscar, "ACK", ok))
        time.sleep(0.3)
        assert not [x for x in peggy.inbox if isinstance(x, m.Request) and x.method == "CANCEL"]
        talk(a_rtp, b_rtp, media_of(ok.body)[1], media_of(seen.body)[1], 0)
    finally:
        for sock in (a_rtp, b_rtp):
            sock.close()
        oscar.close()
        peggy.close()


def port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


@pytest.mark.parametrize("end", ["callee refuses", "caller cancels"])
def test_a_call_that_fails_or_is_cancelled_frees_its_relay_ports(server: Server, end: str) -> None:
    caller_name, callee_name = ("heidi", "ivan") if end == "callee refuses" else ("ivan", "heidi")
    caller = UA("udp", (server.host, server.udp), caller_name, server.host, USERS[caller_name])
    callee = UA("udp", (server.host, server.udp), callee_name, server.host, USERS[callee_name])
    try:
        inv, seen = natted_invite(caller, callee)
        relay_port = media_of(seen.body)[1]
        assert not port_is_free(relay_port)
        if end == "callee refuses":
            callee.answer(seen, 486)
            assert caller.expect_final().status == 486
        else:
            callee.answer(seen, 180)
            caller.expect(180)
            caller.send(cancel_of(inv))
            got = callee.wait("CANCEL")
            assert isinstance(got, m.Request)
            callee.answer(got, 200)
            callee.answer(seen, 487)
            assert caller.wait(lambda x: isinstance(x, m.Response) and x.status == 487, 3)
        deadline = time.monotonic() + 2
        while not port_is_free(relay_port) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert port_is_free(relay_port)
    finally:
        caller.close()
        callee.close()


def test_call_without_nat_leaves_media_alone(server: Server) -> None:
    carol = UA("udp", (server.host, server.udp), "carol", server.host, USERS["carol"])
    dave = UA("udp", (server.host, server.udp), "dave", server.host, USERS["dave"])
    try:
        assert dave.register().status == 200
        body = sdp("127.0.0.1", 4002)
        inv = carol.build("INVITE", dave.aor, body=body, headers={"Content-Type": "application/sdp"})
        carol.send(inv)
        carol.send(carol.authorize(inv, carol.expect(407)))
        seen = dave.wait("INVITE")
        assert isinstance(seen, m.Request)
        assert seen.body == body
        dave.answer(seen, 486)
        assert carol.expect(486).status == 486
    finally:
        carol.close()
        dave.close()


def test_late_offer_sdp_in_200_answer_in_ack(server: Server) -> None:
    """An INVITE without SDP (a late offer, as many phones and PBXs send): the callee's
    offer in the 200 and the caller's answer in the ACK both go through the relay, and
    RTP flows both ways; BYE ends it."""
    judy = UA("udp", (server.host, server.udp), "judy", server.host, USERS["judy"])
    mallory = UA("udp", (server.host, server.udp), "mallory", server.host, USERS["mallory"])
    a_rtp, b_rtp = udp_socket(), udp_socket()
    try:
        assert mallory.register().status == 200
        inv = judy.build("INVITE", mallory.aor)
        inv.set("Contact", f"<sip:judy@192.168.77.2:{judy.port}>")  # behind a NAT: media is relayed
        judy.send(inv)
        judy.send(judy.authorize(inv, judy.expect(407)))
        seen = mallory.wait("INVITE")
        assert isinstance(seen, m.Request) and not seen.body
        mallory.answer(seen, 200, body=sdp("127.0.0.1", b_rtp.getsockname()[1]))
        ok = judy.expect(200)
        to_judy = media_of(ok.body)
        assert to_judy[0] == "127.0.0.1" and to_judy[1] != b_rtp.getsockname()[1]  # the relay's port
        ack = in_dialog(judy, "ACK", ok, body=sdp("192.168.77.2", 4000))
        ack.set("CSeq", f"{inv.cseq.number + 1} ACK")
        judy.send(ack)
        got = mallory.wait("ACK")
        to_mallory = media_of(got.body)
        assert to_mallory[0] == "127.0.0.1" and to_mallory[1] not in (4000, to_judy[1])
        talk(a_rtp, b_rtp, to_judy[1], to_mallory[1], 0)
        judy.send(in_dialog(judy, "BYE", ok))
        bye = mallory.wait("BYE")
        assert isinstance(bye, m.Request)
        mallory.answer(bye, 200)
        judy.expect(200)
    finally:
        judy.close()
        mallory.close()
        for s in (a_rtp, b_rtp):
            s.close()
