"""NAT, end to end: a phone behind a masquerading router calls through ``sipedge serve``
with its private address in the SDP. With the media relay (the default routing module
engages it for NATed callers) both sides hear each other: the relay's address is in
both SDPs and symmetric latching finds the phone's public mapping. With ``[media]
enabled = false`` the callee sends to the private address, and the phone hears nothing.

Topology (network namespaces built by the test, documentation/private ranges only):

    [ua] 192.168.77.2 --- 192.168.77.1 [router: MASQUERADE] 203.0.113.1 --- [pub]
                                         203.0.113.2 sipedge (SIP + relay), 203.0.113.3 callee

The public side has no route to 192.168.77.0/24, like the Internet. Each party is a
script in its namespace: a raw SIP UA (``helpers.ua``) and an RTP sender/counter.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers.netns import Topology, env, nat_topology, sipedge_in

pytestmark = [
    pytest.mark.netns,
    pytest.mark.timeout(90),
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces"),
    pytest.mark.skipif(shutil.which("ip") is None or shutil.which("iptables") is None,
                       reason="needs iproute2 and iptables"),
]

N = 100
SERVER = "203.0.113.2"

PARTY = textwrap.dedent(
    """
    import json, re, socket, sys, time
    from helpers.ua import UA
    from sipedge.sip import message as m
    from sipedge.media.rtp import RtpPacket

    role, server, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    host, rtp_port = ("192.168.77.2", 5000) if role == "caller" else ("203.0.113.3", 6000)

    def sdp(ip, port):
        return (f"v=0\\r\\no=- 1 1 IN IP4 {ip}\\r\\ns=-\\r\\nc=IN IP4 {ip}\\r\\nt=0 0\\r\\n"
                f"m=audio {port} RTP/AVP 0\\r\\na=rtpmap:0 PCMU/8000\\r\\n").encode()

    def target(body):
        ip = re.search(rb"c=IN IP4 (\\S+)", body).group(1).decode()
        return ip, int(re.search(rb"m=audio (\\d+)", body).group(1))

    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # open before the SDP names it
    s.bind((host, rtp_port))
    s.setblocking(False)

    def rtp(dest, start_after, seconds):
        got = sent = 0
        start = time.monotonic()
        while time.monotonic() - start < seconds:
            if sent < n and time.monotonic() - start >= start_after + sent * 0.01:
                try:
                    s.sendto(RtpPacket(0, sent, sent * 160, 7, bytes(160)).serialize(), dest)
                except OSError:
                    pass  # no route to a private address: lost, as on the Internet
                sent += 1
            while True:
                try:
                    s.recv(2048)
                except BlockingIOError:
                    break
                got += 1
            time.sleep(0.001)
        return got

    ua = UA("udp", (server, 5060), "alice" if role == "caller" else "bob", "nat.test", host=host)
    if role == "callee":
        assert ua.register().status == 200
        print(json.dumps({"registered": True}), flush=True)
        inv = ua.wait("INVITE", 20)
        ua.answer(inv, 180)
        ua.answer(inv, 200, body=sdp(host, rtp_port))
        ua.wait("ACK", 10)
        dest = target(inv.body)
        got = rtp(dest, 0.5, 3.0)  # the caller speaks first, as phones do when answered
        bye = ua.wait("BYE", 10)
        ua.answer(bye, 200)
    else:
        inv = ua.build("INVITE", "sip:bob@nat.test", body=sdp(host, rtp_port),
                       headers={"Content-Type": "application/sdp"})
        ua.send(inv)
        ok = ua.expect(200, 10)
        routes = list(reversed(ok.get_all("record-route")))
        contact = str(ok.contacts[0].uri)
        ack = ua.build("ACK", contact, to=str(ok.to.uri), to_tag=ok.to.tag)
        ack.set("CSeq", f"{inv.cseq.number} ACK")
        for r in routes:
            ack.add("Route", r)
        ua.send(ack)
        dest = target(ok.body)
        got = rtp(dest, 0.0, 3.0)
        bye = ua.build("BYE", contact, to=str(ok.to.uri), to_tag=ok.to.tag)
        for r in routes:
            bye.add("Route", r)
        ua.send(bye)
        assert ua.wait(lambda x: isinstance(x, m.Response) and x.cseq.method == "BYE", 5).status == 200
    print(json.dumps({"received": got, "sent_to": dest}), flush=True)
    """
)


@pytest.fixture
def topology() -> Iterator[Topology]:
    with nat_topology("sm", [SERVER, "203.0.113.3"]) as topo:
        yield topo


def config(tmp: Path, relay: bool) -> Path:
    cfg = tmp / "sipedge.toml"
    cfg.write_text(
        f"""
[general]
data_dir = "{tmp / 'data'}"
log_level = "debug"

[sip]
listen = ["udp:{SERVER}:5060"]
domains = ["nat.test"]

[auth]
register = false
invite = false

[web]
enabled = false

[nat]
keepalive_interval = 0

[media]
enabled = {"true" if relay else "false"}
listen = "{SERVER}"
port_min = 40000
port_max = 40019
"""
    )
    return cfg


def party(ns: str, role: str) -> subprocess.Popen[str]:
    return subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-c", PARTY, role, SERVER, str(N)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env())


def call(tmp: Path, topo: Topology, relay: bool) -> tuple[dict[str, object], dict[str, object], str]:
    """One call from the NATed caller to the public callee; each side's JSON result."""
    tmp.mkdir()
    log = tmp / "sipedge.log"
    procs: list[subprocess.Popen[str]] = []
    with sipedge_in(topo.pub, config(tmp, relay), log):
        try:
            callee = party(topo.pub, "callee")
            procs.append(callee)
            assert callee.stdout is not None
            line = callee.stdout.readline()
            assert line, callee.communicate(timeout=10)[1]
            caller = party(topo.phone, "caller")
            procs.append(caller)
            out = {}
            for name, p in (("caller", caller), ("callee", callee)):
                stdout, stderr = p.communicate(timeout=40)
                assert p.returncode == 0, (name, stderr, log.read_text(errors="replace")[-3000:])
                out[name] = json.loads(stdout.strip().splitlines()[-1])
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
                p.wait(10)
    return out["caller"], out["callee"], log.read_text(errors="replace")


def test_natted_caller_has_two_way_audio_only_through_the_relay(topology: Topology, tmp_path: Path) -> None:
    caller, callee, _ = call(tmp_path / "direct", topology, relay=False)
    assert callee["sent_to"] == ["192.168.77.2", 5000]  # the phone's private SDP address
    assert callee["received"] == N  # the phone reaches the public callee through its NAT
    assert caller["received"] == 0  # but nothing comes back: one-way audio
    caller, callee, log = call(tmp_path / "relay", topology, relay=True)
    assert callee["sent_to"][0] == SERVER and caller["sent_to"][0] == SERVER  # both SDPs name the relay
    assert callee["received"] == N
    assert caller["received"] == N, log[-3000:]  # latching found the NAT mapping: two-way audio
