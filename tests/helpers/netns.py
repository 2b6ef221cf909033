"""Network namespaces for the real-NAT tests: a phone behind a masquerading Linux router
and a public side, wired with veth pairs (documentation and private ranges only), and
``sipedge serve`` started inside one of them.

    [phone] 192.168.77.2 --- 192.168.77.1 [router: MASQUERADE] 203.0.113.1 --- [pub] 203.0.113.2...

The public side has no route to 192.168.77.0/24, like the Internet.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def sh(*args: str) -> None:
    subprocess.run(args, check=True, timeout=10, capture_output=True)


@dataclass
class Topology:
    phone: str
    router: str
    pub: str


@contextlib.contextmanager
def nat_topology(prefix: str, pub_addresses: list[str], conntrack_timeout: int | None = None) -> Iterator[Topology]:
    """Three namespaces named from ``prefix`` and this process; ``pub_addresses`` are
    given to the public side (/24 in 203.0.113.0); with ``conntrack_timeout`` the router
    forgets idle UDP and established TCP bindings after that many seconds."""
    tag = f"{os.getpid() % 100000}{time.monotonic_ns() % 1000}"
    phone, rt, pub = f"{prefix}p{tag}", f"{prefix}r{tag}", f"{prefix}u{tag}"
    made: list[str] = []
    try:
        for ns in (phone, rt, pub):
            sh("ip", "netns", "add", ns)
            made.append(ns)
        sh("ip", "link", "add", f"{prefix}a{tag}", "netns", phone, "type", "veth", "peer", "name", f"{prefix}b{tag}", "netns", rt)
        sh("ip", "link", "add", f"{prefix}c{tag}", "netns", rt, "type", "veth", "peer", "name", f"{prefix}d{tag}", "netns", pub)
        pub_cmds = [["addr", "add", f"{a}/24", "dev", f"{prefix}d{tag}"] for a in pub_addresses]
        for ns, cmds in (
            (phone, [["addr", "add", "192.168.77.2/24", "dev", f"{prefix}a{tag}"], ["link", "set", f"{prefix}a{tag}", "up"],
                     ["link", "set", "lo", "up"], ["route", "add", "default", "via", "192.168.77.1"]]),
            (rt, [["addr", "add", "192.168.77.1/24", "dev", f"{prefix}b{tag}"], ["link", "set", f"{prefix}b{tag}", "up"],
                  ["addr", "add", "203.0.113.1/24", "dev", f"{prefix}c{tag}"], ["link", "set", f"{prefix}c{tag}", "up"],
                  ["link", "set", "lo", "up"]]),
            (pub, [*pub_cmds, ["link", "set", f"{prefix}d{tag}", "up"], ["link", "set", "lo", "up"]]),
        ):
            for c in cmds:
                sh("ip", "-n", ns, *c)
        sh("ip", "netns", "exec", rt, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1")
        sh("ip", "netns", "exec", rt, "iptables", "-t", "nat", "-A", "POSTROUTING", "-o", f"{prefix}c{tag}",
           "-j", "MASQUERADE")
        if conntrack_timeout is not None:
            for key in ("nf_conntrack_udp_timeout", "nf_conntrack_udp_timeout_stream",
                        "nf_conntrack_tcp_timeout_established"):
                sh("ip", "netns", "exec", rt, "sysctl", "-q", "-w", f"net.netfilter.{key}={conntrack_timeout}")
        yield Topology(phone, rt, pub)
    finally:
        for ns in made:
            subprocess.run(["ip", "netns", "del", ns], timeout=10, capture_output=True)


def env() -> dict[str, str]:
    """The environment of a test process in a namespace: sipedge and the test helpers."""
    return dict(os.environ, PYTHONPATH=f"{ROOT / 'tests'}:{ROOT / 'src'}")


@contextlib.contextmanager
def sipedge_in(ns: str, config: Path, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """``sipedge serve --config CONFIG`` inside ``ns``, once it says it is ready."""
    with log.open("ab") as logf:
        proc = subprocess.Popen(
            ["ip", "netns", "exec", ns, sys.executable, "-m", "sipedge.cli", "serve", "--config", str(config)],
            stdout=logf, stderr=subprocess.STDOUT, env=env(),
        )
    try:
        deadline = time.monotonic() + 15
        while b"sipedge ready" not in log.read_bytes():
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text(errors="replace")[-3000:]
            time.sleep(0.05)
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
