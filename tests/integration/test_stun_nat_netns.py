"""Real NATs built from network namespaces: `sipedge probe` classifies Linux MASQUERADE
(endpoint-independent mapping, address-and-port-dependent filtering) and MASQUERADE
--random (address-and-port-dependent mapping), and coturn's turnutils_uclient behind the
NAT relays through sipedge to a public peer with the default peer policy on.

Topology (documentation addresses): client 192.168.77.2 -- router 192.168.77.1 /
203.0.113.1 (MASQUERADE) -- server 203.0.113.2 + 203.0.113.3 (sipedge, RFC 5780)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = [pytest.mark.netns, pytest.mark.timeout(90)]


def _run(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True, timeout=20)


def _usable() -> bool:
    if os.geteuid() != 0 or not shutil.which("ip") or not shutil.which("iptables"):
        return False
    name = f"sxprobe{os.getpid()}"
    r = subprocess.run(["ip", "netns", "add", name], capture_output=True, timeout=10)
    if r.returncode != 0:
        return False
    subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=10)
    return True


if not _usable():
    pytest.skip("needs root, iproute2 and iptables for network namespaces", allow_module_level=True)


class Net:
    def __init__(self, tag: str, masquerade: list[str]) -> None:
        p = f"sx{os.getpid() % 100000}{tag}"
        self.c, self.r, self.s = f"{p}c", f"{p}r", f"{p}s"
        for ns in (self.c, self.r, self.s):
            _run("ip", "netns", "add", ns)
        try:
            _run("ip", "link", "add", f"{p}a", "type", "veth", "peer", "name", f"{p}b")
            _run("ip", "link", "set", f"{p}a", "netns", self.c)
            _run("ip", "link", "set", f"{p}b", "netns", self.r)
            _run("ip", "link", "add", f"{p}d", "type", "veth", "peer", "name", f"{p}e")
            _run("ip", "link", "set", f"{p}d", "netns", self.r)
            _run("ip", "link", "set", f"{p}e", "netns", self.s)
            _run("ip", "-n", self.c, "addr", "add", "192.168.77.2/24", "dev", f"{p}a")
            _run("ip", "-n", self.r, "addr", "add", "192.168.77.1/24", "dev", f"{p}b")
            _run("ip", "-n", self.r, "addr", "add", "203.0.113.1/24", "dev", f"{p}d")
            _run("ip", "-n", self.s, "addr", "add", "203.0.113.2/24", "dev", f"{p}e")
            _run("ip", "-n", self.s, "addr", "add", "203.0.113.3/24", "dev", f"{p}e")
            for ns, devs in ((self.c, [f"{p}a"]), (self.r, [f"{p}b", f"{p}d"]), (self.s, [f"{p}e"])):
                for dev in [*devs, "lo"]:
                    _run("ip", "-n", ns, "link", "set", dev, "up")
            _run("ip", "-n", self.c, "route", "add", "default", "via", "192.168.77.1")
            _run("ip", "netns", "exec", self.r, "sysctl", "-qw", "net.ipv4.ip_forward=1")
            _run("ip", "netns", "exec", self.r, "iptables", "-t", "nat", "-A", "POSTROUTING",
                 "-o", f"{p}d", "-j", "MASQUERADE", *masquerade)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        for ns in (self.c, self.r, self.s):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=10)

    def popen(self, ns: str, *argv: str) -> subprocess.Popen[str]:
        return subprocess.Popen(["ip", "netns", "exec", ns, *argv], stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)

    def run(self, ns: str, *argv: str, timeout: float = 40) -> str:
        r = subprocess.run(["ip", "netns", "exec", ns, *argv], capture_output=True, text=True, timeout=timeout)
        return r.stdout + r.stderr


def _server(net: Net, tmp: Path) -> subprocess.Popen[str]:
    conf = tmp / "turn.toml"
    conf.write_text(
        f'[general]\ndata_dir = "{tmp}"\n[turn]\n'
        'listen = ["udp:203.0.113.2:3478", "tcp:203.0.113.2:3478"]\nalt_address = "203.0.113.3"\n'
        'relay_ipv4 = "203.0.113.2"\nrealm = "nat.test"\nsecrets = ["natsecret"]\n'
        'port_min = 50000\nport_max = 50999\n'
    )
    proc = net.popen(net.s, sys.executable, "-m", "sipedge.cli", "turn", "serve", "-c", str(conf))
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert "listening" in line, line
    return proc


@pytest.fixture(params=[[], ["--random"]], ids=["masquerade", "masquerade-random"])
def nat(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Net, str]]:
    net = Net("r" if request.param else "m", request.param)
    proc = None
    try:
        proc = _server(net, tmp_path)
        yield net, "random" if request.param else "plain"
    finally:
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
        net.close()


def test_probe_classifies_linux_nat(nat: tuple[Net, str]) -> None:
    net, kind = nat
    out = net.run(net.c, sys.executable, "-m", "sipedge.cli", "probe", "stun://203.0.113.2:3478", "--timeout", "1")
    assert "mapped address: 203.0.113.1:" in out, out
    assert "other address: 203.0.113.3:3479" in out, out
    mapping = "endpoint-independent" if kind == "plain" else "address-and-port-dependent"
    assert f"mapping behaviour: {mapping}" in out, out
    assert "filtering behaviour: address-and-port-dependent" in out, out
    if kind == "plain" and shutil.which("turnutils_uclient") and shutil.which("turnutils_peer"):
        # A client behind the NAT relays to a public peer; the default deny list stays on.
        peer = net.popen(net.s, "turnutils_peer", "-L", "203.0.113.3", "-p", "3480")
        try:
            time.sleep(0.3)
            out = net.run(net.c, "turnutils_uclient", "-W", "natsecret", "-u", "natted", "-e", "203.0.113.3",
                          "-r", "3480", "-n", "30", "-m", "2", "-l", "170", "-z", "5", "203.0.113.2")
            totals = re.findall(r"tot_send_msgs=(\d+), tot_recv_msgs=(\d+)", out)
            assert totals and totals[-1][0] == totals[-1][1] and int(totals[-1][0]) >= 60, out[-1500:]
            assert "Total lost packets 0 " in out, out[-1500:]
        finally:
            peer.kill()
            peer.wait()
