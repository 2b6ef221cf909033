"""NAT: a UA behind a masquerading router whose SDP carries its private address gets
two-way audio through the relay (symmetric latching), and only one-way audio without it.

Topology (network namespaces built by the test, documentation/private ranges only):

    [ua] 192.168.77.2 --- 192.168.77.1 [router: MASQUERADE] 203.0.113.1 --- [pub]
                                                          203.0.113.2 relay, 203.0.113.3 peer B

The public side has no route to 192.168.77.0/24, like the Internet. The relay and B run
in one helper process in ``pub``; A runs in ``ua``. Both send 100 RTP packets and count.
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

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [
    pytest.mark.netns,
    pytest.mark.timeout(60),
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces"),
    pytest.mark.skipif(shutil.which("ip") is None or shutil.which("iptables") is None,
                       reason="needs iproute2 and iptables"),
]

N = 100

PUB = textwrap.dedent(
    """
    import json, re, socket, sys, time, random
    from sipedge.media.ports import RangePortAllocator
    from sipedge.media.relay import MediaRelay, RelayConfig
    from sipedge.media.rtp import RtpPacket

    use_relay = sys.argv[1] == "relay"
    n = int(sys.argv[2])
    def sdp(ip, port):
        return (f"v=0\\r\\no=- 1 1 IN IP4 {ip}\\r\\ns=-\\r\\nc=IN IP4 {ip}\\r\\nt=0 0\\r\\n"
                f"m=audio {port} RTP/AVP 0\\r\\n").encode()
    b = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    b.bind(("203.0.113.3", 6000))
    b.setblocking(False)
    socks = {}
    if use_relay:
        class Alloc(RangePortAllocator):
            def allocate(self, count):
                base = super().allocate(count)
                for p in range(base, base + count):
                    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                    s.bind(("203.0.113.2", p))
                    s.setblocking(False)
                    socks[p] = s
                return base
        relay = MediaRelay(RelayConfig(advertised_address="203.0.113.2"), Alloc(40000, 40009, random.Random(1)))
        to_b = relay.offer("nat", "a", sdp("192.168.77.2", 5000), 0.0)  # A's private address
        to_a = relay.answer("nat", "a", "b", sdp("203.0.113.3", 6000), 0.0)
        port = lambda body: int(re.search(rb"m=audio (\\d+)", body).group(1))
        a_target, b_target = ("203.0.113.2", port(to_a)), ("203.0.113.2", port(to_b))
    else:
        a_target, b_target = ("203.0.113.3", 6000), ("192.168.77.2", 5000)
    print(json.dumps({"a_target": a_target}), flush=True)
    got_b = 0
    start = time.monotonic()
    sent = 0
    while time.monotonic() - start < 3.0:
        t = time.monotonic() - start
        if sent < n and t >= 1.0 + sent * 0.01:
            try:
                b.sendto(RtpPacket(0, sent, sent * 160, 0xB, bytes(160)).serialize(), b_target)
            except OSError:
                pass  # no route to the private network: the packet is lost
            sent += 1
        for p, s in socks.items():
            while True:
                try:
                    data, src = s.recvfrom(2048)
                except BlockingIOError:
                    break
                out = relay.receive(data, p, src, time.monotonic())
                if out is not None:
                    try:
                        socks[out[0]].sendto(out[2], out[1])
                    except OSError:
                        pass
        while True:
            try:
                b.recv(2048)
            except BlockingIOError:
                break
            got_b += 1
        time.sleep(0.001)
    stats = relay.stats() if use_relay else {}
    print(json.dumps({"b_received": got_b, "stats": stats}), flush=True)
    """
)

UA = textwrap.dedent(
    """
    import json, socket, sys, time
    from sipedge.media.rtp import RtpPacket
    host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    a = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    a.bind(("192.168.77.2", 5000))
    a.setblocking(False)
    got = 0
    start = time.monotonic()
    sent = 0
    while time.monotonic() - start < 2.5:
        if sent < n and time.monotonic() - start >= sent * 0.01:
            a.sendto(RtpPacket(0, sent, sent * 160, 0xA, bytes(160)).serialize(), (host, port))
            sent += 1
        while True:
            try:
                a.recv(2048)
            except BlockingIOError:
                break
            got += 1
        time.sleep(0.001)
    print(json.dumps({"a_received": got}), flush=True)
    """
)


def sh(*args: str) -> None:
    subprocess.run(args, check=True, timeout=10, capture_output=True)


@pytest.fixture
def topology() -> Iterator[tuple[str, str]]:
    tag = f"{os.getpid() % 100000}"
    ua, rt, pub = f"smu{tag}", f"smr{tag}", f"smp{tag}"
    for ns in (ua, rt, pub):
        sh("ip", "netns", "add", ns)
    try:
        sh("ip", "link", "add", f"u{tag}", "netns", ua, "type", "veth", "peer", "name", f"ri{tag}", "netns", rt)
        sh("ip", "link", "add", f"ro{tag}", "netns", rt, "type", "veth", "peer", "name", f"p{tag}", "netns", pub)
        for ns, cmds in (
            (ua, [["addr", "add", "192.168.77.2/24", "dev", f"u{tag}"], ["link", "set", f"u{tag}", "up"],
                  ["link", "set", "lo", "up"], ["route", "add", "default", "via", "192.168.77.1"]]),
            (rt, [["addr", "add", "192.168.77.1/24", "dev", f"ri{tag}"], ["link", "set", f"ri{tag}", "up"],
                  ["addr", "add", "203.0.113.1/24", "dev", f"ro{tag}"], ["link", "set", f"ro{tag}", "up"],
                  ["link", "set", "lo", "up"]]),
            (pub, [["addr", "add", "203.0.113.2/24", "dev", f"p{tag}"],
                   ["addr", "add", "203.0.113.3/24", "dev", f"p{tag}"], ["link", "set", f"p{tag}", "up"],
                   ["link", "set", "lo", "up"]]),
        ):
            for c in cmds:
                sh("ip", "-n", ns, *c)
        sh("ip", "netns", "exec", rt, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1")
        sh("ip", "netns", "exec", rt, "iptables", "-t", "nat", "-A", "POSTROUTING", "-o", f"ro{tag}",
           "-j", "MASQUERADE")
        yield ua, pub
    finally:
        for ns in (ua, rt, pub):
            subprocess.run(["ip", "netns", "del", ns], timeout=10, capture_output=True)


def run_pair(ua: str, pub: str, mode: str) -> tuple[int, int, dict[str, int]]:
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    p = subprocess.Popen(["ip", "netns", "exec", pub, sys.executable, "-c", PUB, mode, str(N)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True)
    try:
        assert p.stdout is not None
        first = json.loads(p.stdout.readline())
        host, port = first["a_target"]
        a = subprocess.run(["ip", "netns", "exec", ua, sys.executable, "-c", UA, host, str(port), str(N)],
                           capture_output=True, text=True, timeout=20, env=env)
        assert a.returncode == 0, a.stderr
        out, err = p.communicate(timeout=20)
        assert p.returncode == 0, err
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    last = json.loads(out.strip().splitlines()[-1])
    return json.loads(a.stdout)["a_received"], last["b_received"], last["stats"]


def test_private_sdp_address_two_way_only_with_relay(topology: tuple[str, str]) -> None:
    ua, pub = topology
    a_got, b_got, _ = run_pair(ua, pub, "direct")
    assert b_got == N  # A -> B works through the NAT
    assert a_got == 0  # B -> A's private SDP address goes nowhere: one-way audio
    a_got, b_got, stats = run_pair(ua, pub, "relay")
    assert b_got == N
    # B starts after A's first packet latched A's public mapping: everything reaches A
    assert a_got == N, (a_got, stats)
    assert stats["media_packets_dropped_stranger"] == 0
