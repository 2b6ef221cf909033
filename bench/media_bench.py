"""Media relay benchmark: forwarded RTP packets/s at < 1% loss, sipedge vs rtpengine.

Each relay runs as its own process on loopback, controlled over the ng protocol (the same
client codec for both). The bench sets up ``--streams`` calls (offer + answer), then sends
RTP from every caller socket to its relay port at a rising rate and counts what reaches
the callee sockets. The result per relay is the highest rate whose loss stayed under 1%.
rtpengine runs in userspace only (``--table=-1``: no kernel forwarding), the fair
comparison with a userspace Python relay.

Bounded: at most ``len(RATES)`` steps of ``--seconds`` each per relay, plus set-up.

    python bench/media_bench.py [--streams 20] [--seconds 1.5] [--repeat 3] [--no-rtpengine]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from sipedge.media.ng import NgClient  # noqa: E402
from sipedge.media.relay import Flags  # noqa: E402
from sipedge.media.rtp import RtpPacket  # noqa: E402

RATES = (5_000, 10_000, 20_000, 30_000, 40_000, 50_000, 60_000, 70_000, 80_000, 100_000, 130_000, 160_000)
PAYLOAD = bytes(160)  # 20 ms of G.711

SIPEDGE_RUNNER = textwrap.dedent(
    """
    import asyncio, signal, sys
    try:
        import uvloop
        uvloop.install()
    except ImportError:
        pass
    from sipedge.config.media import MediaConfig
    from sipedge.server.media import MediaServer
    from sipedge.server.ng import NgControlServer

    async def main():
        cfg = MediaConfig(listen="127.0.0.1", port_min=int(sys.argv[2]), port_max=int(sys.argv[3]),
                          timeout=600.0)
        media = MediaServer(cfg)
        NgControlServer(media, "127.0.0.1", int(sys.argv[1]))
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        print("ready", flush=True)
        await stop.wait()

    asyncio.run(main())
    """
)


def free_udp() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def sdp(port: int) -> bytes:
    return (
        "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
        f"m=audio {port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
    ).encode()


class Ng:
    """A tiny blocking ng client (bench only)."""

    def __init__(self, port: int) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.connect(("127.0.0.1", port))
        self.sock.settimeout(0.5)
        self.codec = NgClient()

    def call(self, cookie: bytes, data: bytes) -> dict[str, object]:
        for _ in range(20):
            self.sock.send(data)
            try:
                while True:
                    got_cookie, reply = NgClient.parse_reply(self.sock.recv(65535))
                    if got_cookie == cookie:
                        return reply
            except TimeoutError:
                continue
        raise RuntimeError("ng: no reply")

    def wait_ready(self) -> None:
        self.call(*self.codec.request("ping"))


@dataclass
class Streams:
    """All calls share one caller socket ``a`` and one callee socket ``b``: each call has its
    own relay ports, and one socket per side keeps the load generator's cost per packet low."""

    a: socket.socket
    b: socket.socket
    dests: list[tuple[str, int]]  # the relay port A sends to, per call


def setup_streams(ng: Ng, n: int) -> Streams:
    flags = Flags(ice="remove")
    a = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    b = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for s in (a, b):
        s.bind(("127.0.0.1", 0))
        s.setblocking(False)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    dests = []
    for i in range(n):
        call_id = f"bench-{os.getpid()}-{i}"
        offer = ng.call(*ng.codec.offer(call_id, "ft", sdp(a.getsockname()[1]), flags))
        answer = ng.call(*ng.codec.answer(call_id, "ft", "tt", sdp(b.getsockname()[1]), flags))
        if offer.get("result") != "ok" or answer.get("result") != "ok":
            raise RuntimeError(f"ng setup failed: {offer} {answer}")
        body = answer["sdp"]
        m = re.search(rb"m=audio (\d+)", body) if isinstance(body, bytes) else None
        if m is None:
            raise RuntimeError(f"no m= line in {body!r}")
        dests.append(("127.0.0.1", int(m.group(1))))
    return Streams(a, b, dests)


def run_rate(streams: Streams, rate: int, seconds: float) -> tuple[int, int, float]:
    """Send ``rate`` packets/s for ``seconds`` (paced per batch); return sent, received and
    the achieved send rate."""
    received = 0
    buf = bytearray(2048)
    recv_into = streams.b.recv_into
    sendto = streams.a.sendto

    def drain() -> None:
        nonlocal received
        while True:
            try:
                recv_into(buf)
            except BlockingIOError:
                return
            received += 1

    pkts = [RtpPacket(0, i, i * 160, 0x5EED, PAYLOAD).serialize() for i in range(256)]
    dests = streams.dests
    n = len(dests)
    total = int(rate * seconds)
    sent = 0
    start = time.perf_counter()
    while sent < total:
        due = min(total, int((time.perf_counter() - start) * rate) + 1)
        while sent < due:
            try:
                sendto(pkts[(sent // n) & 0xFF], dests[sent % n])
            except BlockingIOError:
                drain()
                continue
            sent += 1
        drain()
    elapsed = time.perf_counter() - start
    end = time.perf_counter() + 0.3
    while time.perf_counter() < end and received < sent:
        drain()
        time.sleep(0.005)
    return sent, received, sent / elapsed


def measure(name: str, ng_port: int, proc: subprocess.Popen[bytes], streams_n: int, seconds: float) -> int:
    ng = Ng(ng_port)
    ng.wait_ready()
    streams = setup_streams(ng, streams_n)
    best = 0
    print(f"== {name}: {streams_n} streams, {seconds:.1f} s per step")
    try:
        for rate in RATES:
            sent, received, achieved = run_rate(streams, rate, seconds)
            loss = 1 - received / sent if sent else 1.0
            bound = " (generator-bound)" if achieved < 0.9 * rate else ""
            print(f"   {rate:>7} pps offered, {achieved:>9.0f} sent/s, loss {loss * 100:6.2f}%{bound}")
            if loss >= 0.01 or bound:
                break
            best = rate
    finally:
        streams.a.close()
        streams.b.close()
    print(f"   -> {best} packets/s forwarded at < 1% loss "
          f"(~{best // 100} G.711 calls of 2 x 50 packets/s on one relay core)")
    return best


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def bench_sipedge(streams: int, seconds: float) -> int:
    ng_port = free_udp()
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    proc = subprocess.Popen([sys.executable, "-c", SIPEDGE_RUNNER, str(ng_port), "47000", "47999"],
                            stdout=subprocess.PIPE, env=env)
    try:
        assert proc.stdout is not None
        proc.stdout.readline()
        return measure("sipedge", ng_port, proc, streams, seconds)
    finally:
        stop(proc)


def bench_rtpengine(streams: int, seconds: float) -> int | None:
    binary = shutil.which("rtpengine") or "/usr/bin/rtpengine"
    if not Path(binary).exists():
        print("== rtpengine: not installed (Debian package rtpengine-daemon); skipped")
        return None
    ng_port = free_udp()
    with tempfile.TemporaryDirectory() as tmp:
        conf = Path(tmp) / "rtpengine.conf"
        conf.write_text("[rtpengine]\n")
        cmd = [binary, "--config-file", str(conf), "--foreground", "--interface=127.0.0.1",
               f"--listen-ng=127.0.0.1:{ng_port}", "--port-min=48000", "--port-max=48999",
               "--table=-1", "--log-level=3", "--log-stderr", "--num-threads=1",
               f"--pidfile={tmp}/rtpengine.pid"]
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            time.sleep(0.5)
            if proc.poll() is not None:
                err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
                print(f"== rtpengine: failed to start: {err[-400:]}")
                return None
            return measure("rtpengine (userspace, 1 thread)", ng_port, proc, streams, seconds)
        finally:
            stop(proc)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--streams", type=int, default=20)
    p.add_argument("--seconds", type=float, default=1.5)
    p.add_argument("--no-rtpengine", action="store_true")
    p.add_argument("--repeat", type=int, default=3,
                   help="alternate the relays this many times and compare medians (the machine "
                        "is shared: single runs are noisy)")
    args = p.parse_args()
    ours: list[int] = []
    theirs: list[int] = []
    for _ in range(max(1, args.repeat)):
        ours.append(bench_sipedge(args.streams, args.seconds))
        if not args.no_rtpengine:
            r = bench_rtpengine(args.streams, args.seconds)
            if r is not None:
                theirs.append(r)
    ours_m = statistics.median(ours)
    print(f"sipedge median: {ours_m:.0f} packets/s over {ours}")
    if theirs:
        theirs_m = statistics.median(theirs)
        print(f"rtpengine median: {theirs_m:.0f} packets/s over {theirs}")
        if theirs_m:
            print(f"ratio sipedge / rtpengine: {ours_m / theirs_m:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
