"""Media relay benchmark: forwarded RTP packets/s at < 1% loss and calls per relay core,
sipedge vs rtpengine doing the same job in the same run.

Each relay runs as its own process on loopback, controlled over the ng protocol (the same
client codec for both). The bench sets up ``--streams`` calls (offer + answer), then both
parties of every call send RTP to their relay ports at a rising total rate (two-way, as a
call is) and the bench counts what reaches each side. Per relay it reports the highest
rate whose loss stayed under 1%, and from the relay process's own CPU time (utime + stime
in /proc) the packets it forwards per CPU-second: divided by the 100 packets/s of a G.711
call (2 x 50), that is calls per core. On a machine with two or more cores the load
generator and the relay are pinned to different cores, so they do not steal each other's
time. rtpengine runs in userspace only (``--table=-1``: no kernel forwarding) with one
thread, the fair comparison with a one-process Python relay.

``--profile`` runs sipedge's relay under cProfile and prints where its time goes.

Bounded: at most ``len(RATES)`` steps of ``--seconds`` each per relay, plus set-up.

    python -m bench.media_bench [--streams 20] [--seconds 1.5] [--repeat 3] [--no-rtpengine] [--profile]
"""

from __future__ import annotations

import argparse
import os
import pstats
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

RATES = (5_000, 10_000, 20_000, 40_000, 60_000, 80_000, 100_000, 130_000, 160_000, 200_000, 250_000, 300_000)
PAYLOAD = bytes(160)  # 20 ms of G.711
CALL_PPS = 100  # a G.711 call: 50 packets/s each way
TICK = os.sysconf("SC_CLK_TCK")
GENERATOR_CPU, RELAY_CPU = 0, 1

SIPEDGE_RUNNER = textwrap.dedent(
    """
    import asyncio, os, signal, sys
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

    profile = os.environ.get("SIPEDGE_BENCH_PROFILE")
    if profile:
        import cProfile
        prof = cProfile.Profile()
        prof.enable()
        asyncio.run(main())
        prof.disable()
        prof.dump_stats(profile)
    else:
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
    to_a_side: list[tuple[str, int]]  # per call, the relay port A sends to
    to_b_side: list[tuple[str, int]]  # per call, the relay port B sends to


def _port(reply: dict[str, object]) -> int:
    body = reply.get("sdp")
    m = re.search(rb"m=audio (\d+)", body) if isinstance(body, bytes) else None
    if reply.get("result") != "ok" or m is None:
        raise RuntimeError(f"ng setup failed: {reply}")
    return int(m.group(1))


def setup_streams(ng: Ng, n: int) -> Streams:
    flags = Flags(ice="remove")
    a = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    b = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for s in (a, b):
        s.bind(("127.0.0.1", 0))
        s.setblocking(False)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    to_a, to_b = [], []
    for i in range(n):
        call_id = f"bench-{os.getpid()}-{time.monotonic_ns()}-{i}"
        offer = ng.call(*ng.codec.offer(call_id, "ft", sdp(a.getsockname()[1]), flags))
        answer = ng.call(*ng.codec.answer(call_id, "ft", "tt", sdp(b.getsockname()[1]), flags))
        to_b.append(("127.0.0.1", _port(offer)))  # the offer went to B: B sends there
        to_a.append(("127.0.0.1", _port(answer)))
    return Streams(a, b, to_a, to_b)


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


@dataclass
class Step:
    rate: int
    sent: int
    received: int
    achieved: float  # packets/s the generator managed to send
    cpu: float  # relay CPU seconds over the step

    @property
    def loss(self) -> float:
        return 1 - self.received / self.sent if self.sent else 1.0

    @property
    def per_cpu_second(self) -> float:
        return self.received / self.cpu if self.cpu > 0 else 0.0


def run_rate(streams: Streams, rate: int, seconds: float, relay_pid: int) -> Step:
    """Both sides send, ``rate`` packets/s in total, for ``seconds`` (paced per batch);
    return what was sent, what arrived and the relay's CPU time meanwhile."""
    received = 0
    buf = bytearray(2048)
    receivers = (streams.a.recv_into, streams.b.recv_into)

    def drain() -> None:
        nonlocal received
        for recv_into in receivers:
            while True:
                try:
                    recv_into(buf)
                except BlockingIOError:
                    break
                received += 1

    pkts_a = [RtpPacket(0, i, i * 160, 0xA11CE, PAYLOAD).serialize() for i in range(256)]
    pkts_b = [RtpPacket(0, i, i * 160, 0xB0B, PAYLOAD).serialize() for i in range(256)]
    send_a, send_b = streams.a.sendto, streams.b.sendto
    to_a, to_b = streams.to_a_side, streams.to_b_side
    n = len(to_a)
    total = int(rate * seconds)
    sent = 0
    cpu0 = cpu_seconds(relay_pid)
    start = time.perf_counter()
    while sent < total:
        due = min(total, int((time.perf_counter() - start) * rate) + 1)
        while sent < due:
            k = sent >> 1
            try:
                if sent & 1:
                    send_b(pkts_b[(k // n) & 0xFF], to_b[k % n])
                else:
                    send_a(pkts_a[(k // n) & 0xFF], to_a[k % n])
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
    return Step(rate, sent, received, sent / elapsed, cpu_seconds(relay_pid) - cpu0)


@dataclass
class Result:
    best: int  # packets/s forwarded at < 1% loss
    per_cpu_second: float  # packets forwarded per relay CPU-second at that rate

    @property
    def calls_per_core(self) -> float:
        return self.per_cpu_second / CALL_PPS


def measure(name: str, ng_port: int, proc: subprocess.Popen[bytes], streams_n: int, seconds: float) -> Result:
    ng = Ng(ng_port)
    ng.wait_ready()
    streams = setup_streams(ng, streams_n)
    best: Step | None = None
    print(f"== {name}: {streams_n} calls, two-way, {seconds:.1f} s per step")
    try:
        for rate in RATES:
            step = run_rate(streams, rate, seconds, proc.pid)
            bound = " (generator-bound)" if step.achieved < 0.9 * rate else ""
            print(f"   {rate:>7} pps offered, {step.achieved:>9.0f} sent/s, loss {step.loss * 100:6.2f}%, "
                  f"relay CPU {step.cpu / seconds * 100:5.1f}%, {step.per_cpu_second:>9.0f} pkt per CPU-s{bound}")
            if step.loss >= 0.01 or bound:
                break
            best = step
    finally:
        streams.a.close()
        streams.b.close()
    result = Result(best.rate if best else 0, best.per_cpu_second if best else 0.0)
    print(f"   -> {result.best} packets/s forwarded at < 1% loss; {result.per_cpu_second:.0f} packets per "
          f"CPU-second = {result.calls_per_core:.0f} G.711 calls per core")
    return result


def pin(cpu: int) -> None:
    """Pin the calling process to one core, when the machine has more than one."""
    if (os.cpu_count() or 1) > 1 and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {cpu})


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def bench_sipedge(streams: int, seconds: float, profile: Path | None = None) -> Result:
    ng_port = free_udp()
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    if profile is not None:
        env["SIPEDGE_BENCH_PROFILE"] = str(profile)
    proc = subprocess.Popen([sys.executable, "-c", SIPEDGE_RUNNER, str(ng_port), "47000", "47999"],
                            stdout=subprocess.PIPE, env=env, preexec_fn=lambda: pin(RELAY_CPU))
    try:
        assert proc.stdout is not None
        proc.stdout.readline()
        return measure("sipedge" + (" (under cProfile)" if profile else ""), ng_port, proc, streams, seconds)
    finally:
        stop(proc)


def bench_rtpengine(streams: int, seconds: float) -> Result | None:
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
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                preexec_fn=lambda: pin(RELAY_CPU))
        try:
            time.sleep(0.5)
            if proc.poll() is not None:
                err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
                print(f"== rtpengine: failed to start: {err[-400:]}")
                return None
            return measure("rtpengine (userspace, 1 thread)", ng_port, proc, streams, seconds)
        finally:
            stop(proc)


def show_profile(path: Path, top: int = 18) -> None:
    print(f"== where sipedge's relay time goes (cProfile, top {top} by own time)")
    stats = pstats.Stats(str(path))
    stats.sort_stats("tottime").print_stats(top)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--streams", type=int, default=20, help="concurrent calls")
    p.add_argument("--seconds", type=float, default=1.5)
    p.add_argument("--no-rtpengine", action="store_true")
    p.add_argument("--profile", action="store_true", help="one extra sipedge run under cProfile")
    p.add_argument("--repeat", type=int, default=3,
                   help="alternate the relays this many times and compare medians (the machine "
                        "is shared: single runs are noisy)")
    args = p.parse_args()
    pin(GENERATOR_CPU)
    if (os.cpu_count() or 1) > 1:
        print(f"load generator on CPU {GENERATOR_CPU}, relay under test on CPU {RELAY_CPU}")
    ours: list[Result] = []
    theirs: list[Result] = []
    for _ in range(max(1, args.repeat)):
        ours.append(bench_sipedge(args.streams, args.seconds))
        if not args.no_rtpengine:
            r = bench_rtpengine(args.streams, args.seconds)
            if r is not None:
                theirs.append(r)

    def summary(name: str, results: list[Result]) -> tuple[float, float]:
        rate = statistics.median(r.best for r in results)
        per_cpu = statistics.median(r.per_cpu_second for r in results)
        print(f"{name} median: {rate:.0f} packets/s at < 1% loss over {[r.best for r in results]}; "
              f"{per_cpu:.0f} packets per CPU-second = {per_cpu / CALL_PPS:.0f} calls per core")
        return rate, per_cpu

    ours_rate, ours_cpu = summary("sipedge", ours)
    if theirs:
        theirs_rate, theirs_cpu = summary("rtpengine", theirs)
        if theirs_rate:
            print(f"ratio sipedge / rtpengine: forwarded at < 1% loss {ours_rate / theirs_rate:.2f}, "
                  f"calls per core {ours_cpu / theirs_cpu:.2f}" if theirs_cpu else "")
    if args.profile:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "relay.prof"
            bench_sipedge(args.streams, args.seconds, profile=path)
            show_profile(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
