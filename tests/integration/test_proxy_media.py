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
from helpers.sipserver import SIPEDGE, Server, running_server
from helpers.ua import UA
from sipedge.sdp.model import SessionDescription
from sipedge.sip import message as m

USERS = {"alice": "alice-pw", "bob": "bob-pw", "carol": "carol-pw", "dave": "dave-pw"}


@pytest.fixture(scope="module", params=["built-in relay", "remote relay over ng"])
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """sipedge serve with its own relay, or driving a separate `sipedge media serve` node
    over the ng protocol (the first step of media scale-out)."""
    tmp = tmp_path_factory.mktemp("media")
    low = free_port() & ~1
    ports = f"port_min = {low}\nport_max = {low + 40}\n"
    if request.param == "built-in relay":
        with running_server(tmp, users=USERS, extra=f'\n[media]\n{ports}ng_listen = ""\n') as s:
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
        time.sleep(0.5)
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


def test_natted_caller_gets_relayed_media_both_ways(server: Server) -> None:
    alice = UA("udp", (server.host, server.udp), "alice", server.host, USERS["alice"])
    bob = UA("udp", (server.host, server.udp), "bob", server.host, USERS["bob"])
    a_rtp, b_rtp = udp_socket(), udp_socket()
    try:
        assert bob.register().status == 200
        # alice is "behind a NAT": her SDP names a private address nobody can reach
        inv = alice.build("INVITE", bob.aor, body=sdp("192.168.77.2", 4000), headers={"Content-Type": "application/sdp"})
        alice.send(inv)
        alice.send(alice.authorize(inv, alice.expect(407)))
        seen = bob.wait("INVITE")
        assert isinstance(seen, m.Request)
        relay_for_bob = media_of(seen.body)
        assert relay_for_bob[0] == "127.0.0.1" and relay_for_bob[1] != 4000
        bob.answer(seen, 200, body=sdp("127.0.0.1", b_rtp.getsockname()[1]))
        ok = alice.expect(200)
        relay_for_alice = media_of(ok.body)
        assert relay_for_alice[0] == "127.0.0.1"
        assert relay_for_alice[1] != b_rtp.getsockname()[1]

        # alice speaks first (the relay latches her real address), then bob answers back
        for seq in range(5):
            a_rtp.sendto(rtp(seq), ("127.0.0.1", relay_for_alice[1]))
        got_b = [b_rtp.recvfrom(2048)[0] for _ in range(5)]
        assert [struct.unpack("!H", p[2:4])[0] for p in got_b] == list(range(5))
        for seq in range(100, 105):
            b_rtp.sendto(rtp(seq), ("127.0.0.1", relay_for_bob[1]))
        got_a = [a_rtp.recvfrom(2048)[0] for _ in range(5)]
        assert [struct.unpack("!H", p[2:4])[0] for p in got_a] == list(range(100, 105))

        # BYE ends the call and the relayed media with it
        routes = list(reversed(ok.get_all("record-route")))
        contacts = ok.contacts
        assert isinstance(contacts, list)
        bye = alice.build("BYE", str(contacts[0].uri), to=str(ok.to.uri), to_tag=ok.to.tag)
        for r in routes:
            bye.add("Route", r)
        alice.send(bye)
        got = bob.wait("BYE")
        assert isinstance(got, m.Request)
        bob.answer(got, 200)
        alice.expect(200)
        time.sleep(0.3)
        a_rtp.sendto(rtp(9), ("127.0.0.1", relay_for_alice[1]))
        b_rtp.settimeout(0.5)
        with pytest.raises(TimeoutError):
            b_rtp.recvfrom(2048)
    finally:
        for s in (a_rtp, b_rtp):
            s.close()
        alice.close()
        bob.close()


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
