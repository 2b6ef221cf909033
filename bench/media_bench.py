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

``--mode sdes`` (or ``--bridge``) makes every call a bridge: the caller's side is SRTP keyed
by SDES (``RTP/SAVP`` with ``a=crypto``, AES_CM_128_HMAC_SHA1_80), the callee's plain RTP
(``transport-protocol=RTP/AVP`` on the offer), so the relay unprotects one direction and
protects the other. The SRTP sender's packets are protected up front with libsrtp
(``SrtpTransform.from_sdes``), a fresh sequence number per packet and call (a replayed
SRTP packet is dropped by the relay's replay window), so the generator costs what it
costs in plain mode; the SRTP side counts what arrives without decrypting it, after one
packet each way has been checked (the relay's SRTP decrypts with the key of its answer's
``a=crypto``, the plain side receives the caller's RTP byte for byte). The same mode also
measures DTLS handshakes: ``--handshakes`` in-process pairs of sipedge's ``DtlsContext``
over memory, and the same number over UDP against each relay (the bench as the DTLS
client of a ``UDP/TLS/RTP/SAVP`` leg, the relay the server), per relay CPU-second.

``--mode transcode`` makes every call transcoded: the caller offers Opus only and the
relay is asked to add PCMU (ng ``codec`` → ``transcode``), the callee answers PCMU, so the
relay decodes and re-encodes every packet (Opus 48 kHz <-> PCMU 8 kHz). The caller sends
real Opus frames (a 440 Hz tone encoded up front with PyAV), the callee PCMU, each with
their own sequence numbers and timestamps; one packet each way is checked to arrive in
the other codec before the load. Rates start lower (``TRANSCODE_RATES``): run it with
``--streams 100`` so that each call stays near its real 50 packets/s each way.

``--profile`` runs sipedge's relay under cProfile and prints where its time goes.

Bounded: at most ``len(RATES)`` steps of ``--seconds`` each per relay, plus set-up.

    python -m bench.media_bench [--mode plain|sdes|transcode] [--streams 20] [--seconds 1.5] [--repeat 3]
                                [--handshakes 200] [--no-rtpengine] [--profile]
"""

from __future__ import annotations

import argparse
import os
import pstats
import re
import select
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
from sipedge.media.srtp import SrtpTransform, generate_sdes_key  # noqa: E402
from sipedge.sdp import Fingerprint  # noqa: E402
from sipedge.server.dtls import DtlsAssociation, DtlsContext  # noqa: E402

TRANSCODE_RATES = (1_000, 2_000, 3_000, 4_000, 5_000, 6_000, 8_000, 10_000, 12_000, 15_000, 20_000, 25_000)
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
    from sipedge.server.dtls import DtlsContext
    from sipedge.server.media import MediaServer
    from sipedge.server.ng import NgControlServer

    async def main():
        cfg = MediaConfig(listen="127.0.0.1", port_min=int(sys.argv[2]), port_max=int(sys.argv[3]),
                          timeout=600.0)
        dtls = DtlsContext(sys.argv[4]) if len(sys.argv) > 4 else None  # a data directory
        media = MediaServer(cfg, dtls=dtls)
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


SUITE = "AES_CM_128_HMAC_SHA1_80"
CHECK_SSRC = 0x5EED  # the one packet each way checked before the load (not the load's SSRCs)
SSRC_A, SSRC_B = 0xA11CE, 0xB0B


def sdp(port: int, profile: str = "RTP/AVP", extra: str = "") -> bytes:
    return (
        "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
        f"m=audio {port} {profile} 0\r\na=rtpmap:0 PCMU/8000\r\n{extra}"
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
    own relay ports, and one socket per side keeps the load generator's cost per packet low.

    ``srtp`` (``--mode sdes``): A's SRTP, protecting with the key A offered every call (each
    call has its own replay window on the relay, so one protected packet serves every
    call once); ``seq_a``/``seq_b`` are the next sequence numbers, which never repeat."""

    a: socket.socket
    b: socket.socket
    to_a_side: list[tuple[str, int]]  # per call, the relay port A sends to
    to_b_side: list[tuple[str, int]]  # per call, the relay port B sends to
    srtp: SrtpTransform | None = None
    seq_a: int = 0
    seq_b: int = 0
    opus: list[bytes] | None = None  # (--mode transcode) A's Opus frames, sent over and over

    def batches(self, per_call: int) -> tuple[list[bytes], list[bytes]]:
        """The packets A and B send to each call in the next step, in order."""
        if self.opus is not None:
            return self._transcoded(per_call)
        if self.srtp is None:  # plain: 256 packets over and over, as the bench always did
            base_a = [RtpPacket(0, i, i * 160, SSRC_A, PAYLOAD).serialize() for i in range(256)]
            base_b = [RtpPacket(0, i, i * 160, SSRC_B, PAYLOAD).serialize() for i in range(256)]
            return [base_a[i & 0xFF] for i in range(per_call)], [base_b[i & 0xFF] for i in range(per_call)]
        protect = self.srtp.protect
        a: list[bytes] = []
        for seq in range(self.seq_a, self.seq_a + per_call):
            wire = protect(RtpPacket(0, seq & 0xFFFF, seq * 160 & 0xFFFFFFFF, SSRC_A, PAYLOAD).serialize(), False)
            assert wire is not None
            a.append(wire)
        b = [RtpPacket(0, seq & 0xFFFF, seq * 160 & 0xFFFFFFFF, SSRC_B, PAYLOAD).serialize()
             for seq in range(self.seq_b, self.seq_b + per_call)]
        self.seq_a += per_call
        self.seq_b += per_call
        return a, b

    def _transcoded(self, per_call: int) -> tuple[list[bytes], list[bytes]]:
        """A's Opus and B's PCMU, continuing their streams (the transcoders follow them)."""
        assert self.opus is not None
        opus = self.opus
        a = [RtpPacket(OPUS_PT, seq & 0xFFFF, seq * 960 & 0xFFFFFFFF, SSRC_A, opus[seq % len(opus)]).serialize()
             for seq in range(self.seq_a, self.seq_a + per_call)]
        b = [RtpPacket(0, seq & 0xFFFF, seq * 160 & 0xFFFFFFFF, SSRC_B, PAYLOAD).serialize()
             for seq in range(self.seq_b, self.seq_b + per_call)]
        self.seq_a += per_call
        self.seq_b += per_call
        return a, b


OPUS_PT = 96


def opus_frames(n: int = 50) -> list[bytes]:
    """``n`` 20 ms Opus frames of a 440 Hz tone (PyAV's libopus, as the relay uses)."""
    import array
    import math

    from sipedge.media.codecs import TRANSCODABLE
    from sipedge.server.codecs import PyAvCodecs

    enc = PyAvCodecs().encoder(TRANSCODABLE["opus"], 960)
    out = []
    for i in range(n):
        pcm = array.array("h", (int(8000 * math.sin(2 * math.pi * 440 * k / 48000)) for k in range(i * 960, i * 960 + 960)))
        out.append(enc.encode(pcm.tobytes()))
    return out


def setup_transcoded(ng: Ng, n: int) -> Streams:
    """Opus-only A, PCMU-only B: the offer asks the relay to add PCMU, B answers it."""
    a, b = _sockets()
    to_a, to_b = [], []
    offer_sdp = (f"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
                 f"m=audio {a.getsockname()[1]} RTP/AVP {OPUS_PT}\r\na=rtpmap:{OPUS_PT} opus/48000/2\r\n").encode()
    for i in range(n):
        call_id = f"bench-{os.getpid()}-{time.monotonic_ns()}-{i}"
        offer = ng.call(*ng.codec.offer(call_id, "ft", offer_sdp, Flags(ice="remove", codec_transcode=("PCMU",))))
        answer = ng.call(*ng.codec.answer(call_id, "ft", "tt", sdp(b.getsockname()[1]), Flags(ice="remove")))
        if "0" not in _formats(offer):
            raise RuntimeError(f"the relay added no PCMU to the offer: {offer.get('sdp')!r}")
        if _formats(answer)[:1] != [str(OPUS_PT)]:
            raise RuntimeError(f"the relay's answer to A is not Opus: {answer.get('sdp')!r}")
        to_b.append(("127.0.0.1", _port(offer)))
        to_a.append(("127.0.0.1", _port(answer)))
    streams = Streams(a, b, to_a, to_b, opus=opus_frames())
    check_transcoded(streams)
    return streams


def _formats(reply: dict[str, object]) -> list[str]:
    body = reply.get("sdp")
    m = re.search(rb"m=audio \d+ \S+ ([^\r\n]*)", body) if isinstance(body, bytes) else None
    return m.group(1).decode().split() if m else []


def check_transcoded(streams: Streams) -> None:
    """A few packets each way on call 0 before the load: B gets PCMU, A gets Opus."""
    assert streams.opus is not None
    for i in range(5):
        streams.a.sendto(RtpPacket(OPUS_PT, i, i * 960, CHECK_SSRC, streams.opus[i]).serialize(), streams.to_a_side[0])
        streams.b.sendto(RtpPacket(0, i, i * 160, CHECK_SSRC, PAYLOAD).serialize(), streams.to_b_side[0])
        time.sleep(0.02)
    got_b, got_a = _recv_one(streams.b), _recv_one(streams.a)
    if got_b[1] & 0x7F != 0 or got_a[1] & 0x7F != OPUS_PT:
        raise RuntimeError(f"transcode check: B got payload type {got_b[1] & 0x7F}, A {got_a[1] & 0x7F}")
    time.sleep(0.2)
    for sock in (streams.a, streams.b):  # the rest of the check's packets
        while True:
            try:
                sock.recv(2048)
            except BlockingIOError:
                break


def _port(reply: dict[str, object]) -> int:
    body = reply.get("sdp")
    m = re.search(rb"m=audio (\d+)", body) if isinstance(body, bytes) else None
    if reply.get("result") != "ok" or m is None:
        raise RuntimeError(f"ng setup failed: {reply}")
    return int(m.group(1))


def _profile_of(reply: dict[str, object]) -> str:
    body = reply.get("sdp")
    m = re.search(rb"m=audio \d+ (\S+)", body) if isinstance(body, bytes) else None
    return m.group(1).decode() if m else "?"


def _crypto(reply: dict[str, object]) -> tuple[str, str]:
    """(suite, key parameter) of the one ``a=crypto`` line of a relay's SDP."""
    body = reply.get("sdp")
    m = re.search(rb"a=crypto:\d+ (\S+) (inline:[^\s|]+)", body) if isinstance(body, bytes) else None
    if m is None:
        raise RuntimeError(f"no a=crypto in the relay's answer to the SDES side: {body!r}")
    return m.group(1).decode(), m.group(2).decode()


def _sockets() -> tuple[socket.socket, socket.socket]:
    a = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    b = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for s in (a, b):
        s.bind(("127.0.0.1", 0))
        s.setblocking(False)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    return a, b


def setup_streams(ng: Ng, n: int, mode: str = "plain") -> Streams:
    if mode == "transcode":
        return setup_transcoded(ng, n)
    a, b = _sockets()
    to_a, to_b = [], []
    if mode == "plain":
        flags = Flags(ice="remove")
        for i in range(n):
            call_id = f"bench-{os.getpid()}-{time.monotonic_ns()}-{i}"
            offer = ng.call(*ng.codec.offer(call_id, "ft", sdp(a.getsockname()[1]), flags))
            answer = ng.call(*ng.codec.answer(call_id, "ft", "tt", sdp(b.getsockname()[1]), flags))
            to_b.append(("127.0.0.1", _port(offer)))  # the offer went to B: B sends there
            to_a.append(("127.0.0.1", _port(answer)))
        return Streams(a, b, to_a, to_b)
    # SDES (A) -> plain (B): the offer asks for RTP/AVP towards B; the answer, without the
    # recipient's keys (Flags.for_answer), gives A the relay's RTP/SAVP with its a=crypto.
    key = generate_sdes_key(SUITE)
    offer_sdp = sdp(a.getsockname()[1], "RTP/SAVP", f"a=crypto:1 {SUITE} {key}\r\n")
    flags = Flags(ice="remove", transport_protocol="RTP/AVP")
    relay_key: tuple[str, str] | None = None
    for i in range(n):
        call_id = f"bench-{os.getpid()}-{time.monotonic_ns()}-{i}"
        offer = ng.call(*ng.codec.offer(call_id, "ft", offer_sdp, flags))
        answer = ng.call(*ng.codec.answer(call_id, "ft", "tt", sdp(b.getsockname()[1]), flags.for_answer()))
        if _profile_of(offer) != "RTP/AVP" or _profile_of(answer) != "RTP/SAVP":
            raise RuntimeError(f"not bridged: offer to B {_profile_of(offer)}, answer to A {_profile_of(answer)}")
        if relay_key is None:
            relay_key = _crypto(answer)
        to_b.append(("127.0.0.1", _port(offer)))
        to_a.append(("127.0.0.1", _port(answer)))
    assert relay_key is not None
    # A protects with its key; its inbound key is call 0's (used once, by check_bridge).
    srtp = SrtpTransform.from_sdes(relay_key[0], local=key, remote=relay_key[1])
    streams = Streams(a, b, to_a, to_b, srtp)
    check_bridge(streams)
    return streams


def _recv_one(sock: socket.socket, timeout: float = 2.0) -> bytes:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            return sock.recv(2048)
        except BlockingIOError:
            time.sleep(0.001)
    raise RuntimeError("bridge check: nothing arrived")


def check_bridge(streams: Streams) -> None:
    """One packet each way on call 0 before the load: A's SRTP reaches B as A's RTP, byte
    for byte; B's RTP reaches A as SRTP that decrypts with the relay's answered key."""
    assert streams.srtp is not None
    rtp = RtpPacket(0, 1, 160, CHECK_SSRC, PAYLOAD).serialize()
    wire = streams.srtp.protect(rtp, False)
    assert wire is not None
    streams.a.sendto(wire, streams.to_a_side[0])
    got = _recv_one(streams.b)
    if got != rtp:
        raise RuntimeError(f"bridge check: B got {got[:16].hex()}..., not A's RTP")
    streams.b.sendto(rtp, streams.to_b_side[0])
    got = _recv_one(streams.a)
    if got == rtp or streams.srtp.unprotect(got, False) != rtp:
        raise RuntimeError("bridge check: A's packet does not decrypt with the relay's a=crypto key")


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

    send_a, send_b = streams.a.sendto, streams.b.sendto
    to_a, to_b = streams.to_a_side, streams.to_b_side
    n = len(to_a)
    total = int(rate * seconds)
    pkts_a, pkts_b = streams.batches(total // (2 * n) + 1)
    sent = 0
    cpu0 = cpu_seconds(relay_pid)
    start = time.perf_counter()
    while sent < total:
        due = min(total, int((time.perf_counter() - start) * rate) + 1)
        while sent < due:
            k = sent >> 1
            try:
                if sent & 1:
                    send_b(pkts_b[k // n], to_b[k % n])
                else:
                    send_a(pkts_a[k // n], to_a[k % n])
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
    handshakes_per_cpu_second: float | None = None  # DTLS handshakes served per relay CPU-second

    @property
    def calls_per_core(self) -> float:
        return self.per_cpu_second / CALL_PPS


def _pump(assoc: DtlsAssociation, sock: socket.socket, to: tuple[str, int], first: list[bytes],
          deadline: float) -> None:
    """Run one client association over ``sock`` until it has keys (or fails/times out)."""
    for d in first:
        sock.sendto(d, to)
    while assoc.keys is None and assoc.failure is None:
        now = time.monotonic()
        if now > deadline:
            raise RuntimeError("DTLS handshake with the relay timed out")
        timer = assoc.get_timer()
        wait = 0.05 if timer is None else max(0.0, min(0.05, timer - now))
        ready, _, _ = select.select([sock], [], [], wait)
        out = assoc.receive(sock.recv(4096), time.monotonic()) if ready else assoc.handle_timer(time.monotonic())
        for d in out:
            sock.sendto(d, to)
    if assoc.failure is not None:
        raise RuntimeError(f"DTLS handshake with the relay failed: {assoc.failure}")


def network_handshakes(ng: Ng, n: int, relay_pid: int, client: DtlsContext) -> tuple[float, float]:
    """``n`` DTLS-SRTP handshakes over UDP with the relay as the server: per call, B's plain
    offer goes to A as ``UDP/TLS/RTP/SAVP`` (the relay offers actpass), A answers
    ``a=setup:active`` with its fingerprint and handshakes as the client (the bench's
    pyOpenSSL association). Calls are set up first; only the handshakes are timed.
    Returns (handshakes/s, handshakes per relay CPU-second)."""
    flags = Flags(ice="remove", transport_protocol="UDP/TLS/RTP/SAVP")
    b = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    b.bind(("127.0.0.1", 0))
    calls: list[tuple[socket.socket, tuple[str, int], list[Fingerprint]]] = []
    try:
        for i in range(n):
            a = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            a.bind(("127.0.0.1", 0))
            call_id = f"dtls-{os.getpid()}-{time.monotonic_ns()}-{i}"
            offer = ng.call(*ng.codec.offer(call_id, "ft", sdp(b.getsockname()[1]), flags))
            body = offer.get("sdp")
            fps = re.findall(rb"a=fingerprint:(\S+) (\S+)", body) if isinstance(body, bytes) else []
            if not fps or _profile_of(offer) != "UDP/TLS/RTP/SAVP":
                raise RuntimeError(f"no DTLS offer towards A: {body!r}")
            fp = client.fingerprint
            answer_sdp = sdp(a.getsockname()[1], "UDP/TLS/RTP/SAVP",
                             f"a=fingerprint:{fp.hash_func} {fp.value}\r\na=setup:active\r\n")
            ng.call(*ng.codec.answer(call_id, "ft", "tt", answer_sdp, flags.for_answer()))
            calls.append((a, ("127.0.0.1", _port(offer)), [Fingerprint(h.decode(), v.decode()) for h, v in fps]))
        cpu0 = cpu_seconds(relay_pid)
        start = time.perf_counter()
        for a, to, remote in calls:
            assoc = client("client", remote)
            _pump(assoc, a, to, assoc.start(time.monotonic()), time.monotonic() + 5)
        elapsed = time.perf_counter() - start
        time.sleep(0.05)  # the relay's last flight is sent, its CPU counted
        cpu = cpu_seconds(relay_pid) - cpu0
    finally:
        b.close()
        for a, _, _ in calls:
            a.close()
    return n / elapsed, (n / cpu if cpu > 0 else 0.0)


def memory_handshakes(n: int) -> tuple[float, float]:
    """``n`` handshakes between two of sipedge's DtlsContexts in this process, datagrams
    passed in memory (no sockets). Returns (pairs/s, server side handshakes per
    CPU-second: only the time inside the server association's calls)."""
    with tempfile.TemporaryDirectory() as d1, tempfile.TemporaryDirectory() as d2:
        server_ctx, client_ctx = DtlsContext(d1), DtlsContext(d2)
        in_server = 0.0
        start = time.perf_counter()
        for _ in range(n):
            now = time.monotonic()
            client = client_ctx("client", [server_ctx.fingerprint])
            t = time.perf_counter()
            server = server_ctx("server", [client_ctx.fingerprint])
            server.start(now)
            in_server += time.perf_counter() - t
            to_server = client.start(now)
            for _ in range(10):
                t = time.perf_counter()
                to_client = [d for dg in to_server for d in server.receive(dg, now)]
                in_server += time.perf_counter() - t
                to_server = [d for dg in to_client for d in client.receive(dg, now)]
                if client.keys is not None and server.keys is not None:
                    break
            if client.keys is None or server.keys is None or client.keys.local != server.keys.remote:
                raise RuntimeError(f"in-memory DTLS handshake failed: {client.failure or server.failure}")
        elapsed = time.perf_counter() - start
    return n / elapsed, n / in_server


def measure(name: str, ng_port: int, proc: subprocess.Popen[bytes], streams_n: int, seconds: float,
            mode: str = "plain", handshakes: int = 0) -> Result:
    ng = Ng(ng_port)
    ng.wait_ready()
    streams = setup_streams(ng, streams_n, mode)
    best: Step | None = None
    kind = {"sdes": "SRTP (SDES) <-> RTP bridged", "transcode": "Opus <-> PCMU transcoded"}.get(mode, "two-way")
    print(f"== {name}: {streams_n} calls, {kind}, {seconds:.1f} s per step")
    try:
        if mode == "transcode":  # warm-up: every transcoder past its codecs' first frames
            run_rate(streams, TRANSCODE_RATES[0], 20 * streams_n * 2 / TRANSCODE_RATES[0], proc.pid)
        for rate in TRANSCODE_RATES if mode == "transcode" else RATES:
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
          f"CPU-second = {result.calls_per_core:.0f} calls per core")
    if handshakes:
        with tempfile.TemporaryDirectory() as tmp:
            hs_rate, per_cpu = network_handshakes(ng, handshakes, proc.pid, DtlsContext(tmp))
        result.handshakes_per_cpu_second = per_cpu
        print(f"   DTLS: {handshakes} handshakes over UDP (relay = server) at {hs_rate:.0f}/s "
              f"(client-bound), {per_cpu:.0f} per relay CPU-second")
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


def bench_sipedge(streams: int, seconds: float, profile: Path | None = None, mode: str = "plain",
                  handshakes: int = 0) -> Result:
    ng_port = free_udp()
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    if profile is not None:
        env["SIPEDGE_BENCH_PROFILE"] = str(profile)
    with tempfile.TemporaryDirectory() as data_dir:
        argv = [sys.executable, "-c", SIPEDGE_RUNNER, str(ng_port), "44000", "46999"]
        if handshakes:
            argv.append(data_dir)  # a DTLS certificate for the relay
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, env=env, preexec_fn=lambda: pin(RELAY_CPU))
        try:
            assert proc.stdout is not None
            proc.stdout.readline()
            return measure("sipedge" + (" (under cProfile)" if profile else ""), ng_port, proc, streams,
                           seconds, mode, handshakes)
        finally:
            stop(proc)


def bench_rtpengine(streams: int, seconds: float, mode: str = "plain", handshakes: int = 0) -> Result | None:
    binary = shutil.which("rtpengine") or "/usr/bin/rtpengine"
    if not Path(binary).exists():
        print("== rtpengine: not installed (Debian package rtpengine-daemon); skipped")
        return None
    ng_port = free_udp()
    with tempfile.TemporaryDirectory() as tmp:
        conf = Path(tmp) / "rtpengine.conf"
        conf.write_text("[rtpengine]\n")
        cmd = [binary, "--config-file", str(conf), "--foreground", "--interface=127.0.0.1",
               f"--listen-ng=127.0.0.1:{ng_port}", "--port-min=50000", "--port-max=52999",
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
            return measure("rtpengine (userspace, 1 thread)", ng_port, proc, streams, seconds, mode, handshakes)
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
    p.add_argument("--mode", choices=("plain", "sdes", "transcode"), default="plain",
                   help="plain: RTP both sides (the default); sdes: every call bridges SDES-SRTP to RTP; "
                        "transcode: every call is Opus on one side, PCMU on the other")
    p.add_argument("--bridge", dest="mode", action="store_const", const="sdes", help="same as --mode sdes")
    p.add_argument("--handshakes", type=int, default=None,
                   help="DTLS handshakes to time, in memory and against each relay over UDP "
                        "(default 200 with --mode sdes, none in plain mode)")
    args = p.parse_args()
    mode = args.mode
    handshakes = args.handshakes if args.handshakes is not None else (200 if mode == "sdes" else 0)
    pin(GENERATOR_CPU)
    if (os.cpu_count() or 1) > 1:
        print(f"load generator on CPU {GENERATOR_CPU}, relay under test on CPU {RELAY_CPU}")
    memory: list[tuple[float, float]] = []
    ours: list[Result] = []
    theirs: list[Result] = []
    for _ in range(max(1, args.repeat)):
        if handshakes:
            pairs, served = memory_handshakes(handshakes)
            memory.append((pairs, served))
            print(f"== sipedge DTLS in memory: {handshakes} handshakes, {pairs:.0f} pairs/s in one process, "
                  f"server side {served:.0f} per CPU-second")
        ours.append(bench_sipedge(args.streams, args.seconds, mode=mode, handshakes=handshakes))
        if not args.no_rtpengine:
            r = bench_rtpengine(args.streams, args.seconds, mode, handshakes)
            if r is not None:
                theirs.append(r)

    def summary(name: str, results: list[Result]) -> tuple[float, float]:
        rate = statistics.median(r.best for r in results)
        per_cpu = statistics.median(r.per_cpu_second for r in results)
        print(f"{name} median: {rate:.0f} packets/s at < 1% loss over {[r.best for r in results]}; "
              f"{per_cpu:.0f} packets per CPU-second = {per_cpu / CALL_PPS:.0f} calls per core")
        return rate, per_cpu

    def handshake_summary(name: str, results: list[Result]) -> float | None:
        values = [r.handshakes_per_cpu_second for r in results if r.handshakes_per_cpu_second is not None]
        if not values:
            return None
        median = statistics.median(values)
        print(f"{name} DTLS median: {median:.0f} handshakes per relay CPU-second over {[round(v) for v in values]}")
        return median

    if mode == "sdes":
        print("(bridged calls: SDES-SRTP on one side, RTP on the other)")
    if mode == "transcode":
        print("(transcoded calls: Opus on one side, PCMU on the other)")
    ours_rate, ours_cpu = summary("sipedge", ours)
    ours_hs = handshake_summary("sipedge", ours)
    if memory:
        print(f"sipedge DTLS in memory median: {statistics.median(m[0] for m in memory):.0f} pairs/s, server side "
              f"{statistics.median(m[1] for m in memory):.0f} handshakes per CPU-second")
    if theirs:
        theirs_rate, theirs_cpu = summary("rtpengine", theirs)
        theirs_hs = handshake_summary("rtpengine", theirs)
        if theirs_rate:
            print(f"ratio sipedge / rtpengine: forwarded at < 1% loss {ours_rate / theirs_rate:.2f}, "
                  f"calls per core {ours_cpu / theirs_cpu:.2f}" if theirs_cpu else "")
        if ours_hs and theirs_hs:
            print(f"ratio sipedge / rtpengine: DTLS handshakes per relay CPU-second {ours_hs / theirs_hs:.2f}")
    if args.profile:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "relay.prof"
            bench_sipedge(args.streams, args.seconds, profile=path, mode=mode)
            show_profile(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
