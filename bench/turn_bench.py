"""The same turnutils_uclient load against sipedge and against coturn's turnserver.

Usage: python bench/turn_bench.py [--clients 50 200] [--messages 100] [--size 170]
       [--interval 20] [--tcp]

Both servers run as separate processes on loopback with the same relay port width,
long-term credentials and --allow-loopback-peers equivalent; one turnutils_peer echoes.
For each client count it runs turnutils_uclient (-c: no RTCP twin, so N allocations)
once per server and prints relayed packets/s, loss, average RTT and jitter, and server
CPU seconds (utime+stime from /proc), then the sipedge/coturn ratios. Every run is bounded
(--messages per client, a subprocess timeout), traffic stays on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REALM = "bench.test"
USER, PASSWORD = "bench", "bench-pass"
TICK = os.sysconf("SC_CLK_TCK")


@dataclass
class Result:
    server: str
    clients: int
    sent: int
    received: int
    lost_pct: float
    rtt_ms: float
    jitter_ms: float
    seconds: float
    cpu: float

    @property
    def us_per_pkt(self) -> float:
        """Server CPU microseconds per relayed packet (allocation set-up included)."""
        return 1e6 * self.cpu / (2 * self.received) if self.received else 0.0

    @property
    def pps(self) -> float:
        # Each message is relayed twice (client->peer, peer->client).
        return 2 * self.received / self.seconds if self.seconds else 0.0


def free_port() -> int:
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u, socket.socket() as t:
            u.bind(("127.0.0.1", 0))
            port = u.getsockname()[1]
            try:
                t.bind(("127.0.0.1", port))
            except OSError:
                continue
            return int(port)
    raise RuntimeError("no free port")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def wait_udp(port: int, timeout: float = 10.0) -> None:
    """Until something answers a STUN Binding request on 127.0.0.1:port."""
    req = bytes.fromhex("000100002112a442") + os.urandom(12)
    deadline = time.monotonic() + timeout
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(0.2)
        while time.monotonic() < deadline:
            s.sendto(req, ("127.0.0.1", port))
            try:
                s.recv(2048)
                return
            except OSError:
                continue
    raise RuntimeError(f"no STUN answer on port {port}")


def start_sipedge(port: int, tmp: Path) -> subprocess.Popen[bytes]:
    conf = tmp / "sipedge.toml"
    conf.write_text(
        f'[general]\ndata_dir = "{tmp}"\nlog_level = "warning"\n'
        f'[turn]\nlisten = ["udp:127.0.0.1:{port}", "tcp:127.0.0.1:{port}"]\n'
        f'realm = "{REALM}"\nrelay_ipv4 = "127.0.0.1"\nport_min = 45000\nport_max = 49999\n'
        'allow_peers = ["127.0.0.0/8"]\nmax_allocations_per_user = 10000\n'
    )
    db = tmp / "users.db"
    subprocess.run(
        [sys.executable, "-m", "sipedge.cli", "turn", "user", "add", USER, "-p", PASSWORD,
         "--realm", REALM, "--db", str(db)],
        check=True, stdout=subprocess.DEVNULL, timeout=30,
    )
    conf.write_text(conf.read_text() + f'users_db = "{db}"\n')
    return subprocess.Popen(
        [sys.executable, "-m", "sipedge.cli", "turn", "serve", "-c", str(conf)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )


def start_coturn(port: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            "turnserver", "-n", "--no-tls", "--no-dtls", "--no-cli",
            "--listening-ip=127.0.0.1", f"--listening-port={port}", "--relay-ip=127.0.0.1",
            "--min-port=40000", "--max-port=44999", "--allow-loopback-peers",
            "--lt-cred-mech", f"--user={USER}:{PASSWORD}", f"--realm={REALM}",
            "--relay-threads=1", "--log-file=stdout", "--simple-log", "--no-stdout-log",
        ],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )


def run_load(server: str, pid: int, port: int, peer: int, clients: int, args: argparse.Namespace) -> Result:
    argv = [
        "turnutils_uclient", "-c", "-u", USER, "-w", PASSWORD, "-p", str(port), "-e", "127.0.0.1",
        "-r", str(peer), "-m", str(clients), "-n", str(args.messages), "-l", str(args.size),
        "-z", str(args.interval),
    ]
    if args.tcp:
        argv.insert(1, "-t")
    argv.append("127.0.0.1")
    cpu0 = cpu_seconds(pid)
    t0 = time.monotonic()
    out = subprocess.run(argv, capture_output=True, text=True, timeout=args.timeout).stdout
    seconds = time.monotonic() - t0
    cpu = cpu_seconds(pid) - cpu0
    totals = re.findall(r"tot_send_msgs=(\d+), tot_recv_msgs=(\d+)", out)
    lost = re.search(r"Total lost packets \d+ \(([\d.]+)%\)", out)
    rtt = re.search(r"Average round trip delay ([\d.]+) ms", out)
    jit = re.search(r"Average jitter ([\d.]+) ms", out)
    if not totals or not lost:
        raise RuntimeError(f"{server}: uclient output not understood:\n{out[-1500:]}")
    # uclient reports whole seconds; use our wall time (includes allocation set-up).
    return Result(
        server, clients, int(totals[-1][0]), int(totals[-1][1]), float(lost.group(1)),
        float(rtt.group(1)) if rtt else 0.0, float(jit.group(1)) if jit else 0.0, seconds, cpu,
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, nargs="+", default=[50, 200])
    ap.add_argument("--messages", type=int, default=100, help="messages per client (bounded)")
    ap.add_argument("--size", type=int, default=170, help="payload bytes (170 = G.711 20 ms + RTP)")
    ap.add_argument("--interval", type=int, default=20, help="ms between a client's packets")
    ap.add_argument("--tcp", action="store_true", help="clients talk TCP to the server")
    ap.add_argument("--timeout", type=float, default=300.0, help="seconds per uclient run")
    ap.add_argument("--only", choices=["sipedge", "coturn"], help="run one server (no ratios)")
    args = ap.parse_args()
    for tool in ("turnserver", "turnutils_uclient", "turnutils_peer"):
        if shutil.which(tool) is None:
            sys.stderr.write(f"turn_bench: {tool} not found; install Debian coturn\n")
            return 2
    peer_port = free_port()
    peer = subprocess.Popen(
        ["turnutils_peer", "-L", "127.0.0.1", "-p", str(peer_port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    results: list[Result] = []
    with tempfile.TemporaryDirectory() as tmpdir:
        servers: dict[str, tuple[subprocess.Popen[bytes], int]] = {}
        try:
            if args.only != "coturn":
                p1 = free_port()
                servers["sipedge"] = (start_sipedge(p1, Path(tmpdir)), p1)
            if args.only != "sipedge":
                p2 = free_port()
                servers["coturn"] = (start_coturn(p2), p2)
            for _proc, port in servers.values():
                wait_udp(port)
            for n in args.clients:
                for name, (proc, port) in servers.items():
                    r = run_load(name, proc.pid, port, peer_port, n, args)
                    results.append(r)
                    print(
                        f"{name:8s} clients={n:4d} sent={r.sent:6d} recv={r.received:6d} "
                        f"loss={r.lost_pct:6.2f}% relayed={r.pps:8.0f} pkt/s rtt={r.rtt_ms:6.2f} ms "
                        f"jitter={r.jitter_ms:6.2f} ms cpu={r.cpu:6.2f} s ({r.us_per_pkt:5.1f} us/pkt) "
                        f"wall={r.seconds:5.1f} s",
                        flush=True,
                    )
        finally:
            for proc, _ in servers.values():
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
            peer.kill()
            peer.wait()
    if args.only:
        return 0
    print("\nratios sipedge/coturn (relayed pkt/s: higher is better; cpu per packet: lower is better)")
    for n in args.clients:
        s = next(r for r in results if r.server == "sipedge" and r.clients == n)
        c = next(r for r in results if r.server == "coturn" and r.clients == n)

        def ratio(a: float, b: float) -> str:
            return f"{a / b:5.2f}" if b else "  n/a"

        print(
            f"clients={n:4d} relayed {ratio(s.pps, c.pps)}  cpu/pkt {ratio(s.us_per_pkt, c.us_per_pkt)}  "
            f"rtt {s.rtt_ms:.2f} vs {c.rtt_ms:.2f} ms  loss {s.lost_pct:.2f}% vs {c.lost_pct:.2f}%"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
