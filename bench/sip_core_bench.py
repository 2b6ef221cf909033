"""In-process CPU cost of the SIP hot path: ``ProxyCore`` fed bytes, no sockets.

Two scenarios against a real ``ProxyCore`` with the default routing script and SQLite
stores (in a temporary directory):

* **register**: one REGISTER pair per iteration (REGISTER → 401 with a digest challenge,
  REGISTER with credentials → 200), one subscriber, a fresh Call-ID each time.
* **call**: INVITE → 407, ACK; INVITE with Proxy-Authorization → relayed to the
  registered callee; 180 and 200 from the callee relayed back; ACK and BYE relayed along
  the Record-Route; 200 to the BYE.

It prints, per REGISTER pair and per call, the CPU time spent inside
``ProxyCore.receive`` + ``outgoing`` ("core"), and the CPU time of the whole iteration
including the test client building and parsing messages ("total"). Each figure is the
mean over ``--iterations`` iterations after a warm-up (a mean, not a best-of: garbage
collection passes over the live transactions are part of the cost).

Time is simulated: each iteration moves the monotonic clock by ``1/--rate`` seconds and
fires the timers due, so finished transactions linger and end as on a server loaded at
that rate (UDP Timer J/K/L: up to 32 s). The warm-up covers 35 simulated seconds, so the
measured iterations run with the steady-state number of live transactions (which is
what the garbage collector walks).

With ``--gc``, after each warm-up (the steady state at ``--rate``) it also prints how many
objects the garbage collector tracks beyond start-up and how long one full collection
over them takes: the pause ``sipedge serve`` takes every ``general.gc_interval``.

Run: ``.venv/bin/python -m bench.sip_core_bench [--iterations N] [--rate R] [--gc]
[--only register|call] [--profile register|call [--sort tottime]]``.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import pstats
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from sipedge._common.clock import SystemClock
from sipedge.config import parse_config
from sipedge.proxy.core import ProxyCore
from sipedge.proxy.dialog import DialogTable
from sipedge.proxy.identity import Identity, Listener
from sipedge.proxy.location import Binding
from sipedge.proxy.routing import load_router
from sipedge.sip import auth as digest
from sipedge.sip import message as m
from sipedge.sip.flow import Flow
from sipedge.store.dialogs import SqliteDialogStore
from sipedge.store.sqlite import SqliteDatabase, SqliteLocationStore, SqliteSubscriberStore

SDP = (
    b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    b"m=audio 4000 RTP/AVP 0\r\n"
)


class Harness:
    """One ProxyCore and the CPU time spent inside it."""

    def __init__(self, workdir: Path) -> None:
        self.clock = SystemClock()
        db = SqliteDatabase(workdir / "bench.db")
        self.location = SqliteLocationStore(db)
        subscribers = SqliteSubscriberStore(db)
        subscribers.add("bob", "127.0.0.1", "pw")
        subscribers.add("alice", "127.0.0.1", "pw")
        self.location.put(
            Binding("sip:carol@127.0.0.1", "sip:carol@127.0.0.1:7000", self.clock.wall() + 86400)
        )
        config = parse_config({})
        # dialogs and CDRs as sipedge serve keeps them: written back once a second
        self.dialog_store = SqliteDialogStore(db, config.accounting, write_back=True)
        self.core = ProxyCore(
            config,
            Identity([Listener("udp", "127.0.0.1", 5060)]),
            self.location,
            subscribers,
            load_router("sipedge.proxy.default_routing"),
            self.clock,
            secret=b"k" * 32,
            dialogs=DialogTable(config.dialog, self.dialog_store, timer_c=config.sip.timers.timer_c),
        )
        self.core_cpu = 0.0
        self.now = time.monotonic()
        self._flushed = self.now

    def send(self, data: bytes, flow: Flow) -> list[tuple[bytes, Flow | None]]:
        t = time.process_time()
        self.core.receive(data, flow, self.now)
        out = self.core.outgoing()
        self.core_cpu += time.process_time() - t
        return [(s.data, s.flow) for s in out]

    def advance(self, seconds: float) -> None:
        """Move the simulated monotonic clock and fire due timers (counted as core CPU),
        so transactions end as they would on a server running at that rate."""
        self.now += seconds
        t = time.process_time()
        core = self.core
        due = core.get_timer()
        while due is not None and due <= self.now:
            core.handle_timer(self.now)
            core.outgoing()
            due = core.get_timer()
        self.core_cpu += time.process_time() - t
        if self.now - self._flushed >= 1.0:
            self._flushed = self.now
            self.dialog_store.flush()


A = Flow("udp", ("127.0.0.1", 5060), ("127.0.0.1", 6000))
B = Flow("udp", ("127.0.0.1", 5060), ("127.0.0.1", 7000))


def _register(i: int, cred: str = "") -> bytes:
    a = f"Authorization: {cred}\r\n" if cred else ""
    return (
        f"REGISTER sip:127.0.0.1 SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:7000;branch=z9hG4bKr{i};rport\r\n"
        f"From: <sip:bob@127.0.0.1>;tag=1\r\nTo: <sip:bob@127.0.0.1>\r\n"
        f"Call-ID: c{i}\r\nCSeq: {i} REGISTER\r\nContact: <sip:bob@127.0.0.1:7000>\r\n"
        f"Expires: 300\r\nMax-Forwards: 70\r\n{a}Content-Length: 0\r\n\r\n"
    ).encode()


def register_pair(h: Harness, i: int) -> None:
    out = h.send(_register(2 * i), B)
    ch = m.parse(out[-1][0])
    c = digest.Challenge.parse(ch.get_all("www-authenticate")[0])
    cr = digest.authorize(
        c, username="bob", password="pw", method="REGISTER", uri="sip:127.0.0.1", cnonce="abc"
    )
    out = h.send(_register(2 * i + 1, str(cr)), B)
    r = m.parse(out[-1][0])
    if not isinstance(r, m.Response) or r.status != 200:
        raise SystemExit(f"REGISTER pair {i}: expected 200, got {r!r}")


def _invite(i: int, cseq: int, cred: str = "") -> bytes:
    a = f"Proxy-Authorization: {cred}\r\n" if cred else ""
    return (
        f"INVITE sip:carol@127.0.0.1 SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:6000;branch=z9hG4bKi{i}c{cseq};rport\r\n"
        f"Max-Forwards: 70\r\nFrom: <sip:alice@127.0.0.1>;tag=a{i}\r\n"
        f"To: <sip:carol@127.0.0.1>\r\nCall-ID: call{i}\r\nCSeq: {cseq} INVITE\r\n"
        f"Contact: <sip:alice@127.0.0.1:6000>\r\nContent-Type: application/sdp\r\n"
        f"{a}Content-Length: {len(SDP)}\r\n\r\n"
    ).encode() + SDP


def _in_dialog(method: str, i: int, branch: str, cseq: int, route: str) -> bytes:
    return (
        f"{method} sip:carol@127.0.0.1:7000 SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:6000;branch=z9hG4bK{branch}{i};rport\r\n"
        f"Max-Forwards: 70\r\nFrom: <sip:alice@127.0.0.1>;tag=a{i}\r\n"
        f"To: <sip:carol@127.0.0.1>;tag=b{i}\r\nCall-ID: call{i}\r\nCSeq: {cseq} {method}\r\n"
        f"{route}Content-Length: 0\r\n\r\n"
    ).encode()


def _relayed_request(out: list[tuple[bytes, Flow | None]], what: str) -> m.Request:
    for data, flow in out:
        if flow is None or flow == B:
            msg = m.parse(data)
            if isinstance(msg, m.Request):
                return msg
    raise SystemExit(f"{what} was not relayed: {[d[:60] for d, _ in out]}")


def call(h: Harness, i: int) -> None:
    out = h.send(_invite(i, 1), A)
    ch = m.parse(out[-1][0])
    if not isinstance(ch, m.Response) or ch.status != 407:
        raise SystemExit(f"call {i}: expected 407, got {ch!r}")
    ack = (
        f"ACK sip:carol@127.0.0.1 SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:6000;branch=z9hG4bKi{i}c1;rport\r\nMax-Forwards: 70\r\n"
        f"From: <sip:alice@127.0.0.1>;tag=a{i}\r\nTo: <sip:carol@127.0.0.1>;tag={ch.to.tag}\r\n"
        f"Call-ID: call{i}\r\nCSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n"
    ).encode()
    h.send(ack, A)
    c = digest.Challenge.parse(ch.get_all("proxy-authenticate")[0])
    cr = digest.authorize(
        c, username="alice", password="pw", method="INVITE", uri="sip:carol@127.0.0.1", cnonce="abc"
    )
    req = _relayed_request(h.send(_invite(i, 2, str(cr)), A), "INVITE")
    h.send(m.make_response(req, 180, to_tag=f"b{i}").serialize(), B)
    r200 = m.make_response(req, 200, to_tag=f"b{i}")
    for v in req.get_all("record-route"):
        r200.add("Record-Route", v)
    r200.add("Contact", "<sip:carol@127.0.0.1:7000>")
    r200.body = SDP
    r200.set("Content-Type", "application/sdp")
    out = h.send(r200.serialize(), B)
    ok = [m.parse(d) for d, f in out if f == A][-1]
    if not isinstance(ok, m.Response) or ok.status != 200:
        raise SystemExit(f"call {i}: expected 200, got {ok!r}")
    route = "".join(f"Route: {r}\r\n" for r in reversed(ok.get_all("record-route")))
    h.send(_in_dialog("ACK", i, "a2", 2, route), A)
    bye = _relayed_request(h.send(_in_dialog("BYE", i, "b", 3, route), A), "BYE")
    h.send(m.make_response(bye, 200).serialize(), B)


def measure(
    h: Harness, op: Callable[[Harness, int], None], first: int, iterations: int, rate: float
) -> tuple[float, float]:
    """(core µs, total µs) per iteration; the simulated clock moves 1/rate per one."""
    h.core_cpu = 0.0
    t = time.process_time()
    for i in range(first, first + iterations):
        op(h, i)
        h.advance(1.0 / rate)
    total = time.process_time() - t
    return h.core_cpu / iterations * 1e6, total / iterations * 1e6


def gc_pass(h: Harness, name: str) -> None:
    """What a full collection walks in the steady state, and how long it takes."""
    gc.collect()
    tracked = len(gc.get_objects())
    t = time.perf_counter()
    gc.collect()
    pause = time.perf_counter() - t
    print(f"{name:8s}  gc: {len(h.core.tl)} live transactions, {tracked} tracked objects, "
          f"full pass {pause * 1e3:.1f} ms")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    ap.add_argument("--iterations", type=int, default=4000)
    ap.add_argument(
        "--rate", type=float, default=300.0,
        help="simulated operations per second: sets how many transactions are alive (timers "
        "fire on a simulated clock), as on a server loaded at that rate",
    )
    ap.add_argument("--warmup", type=int, help="iterations before measuring (default: 35 s worth)")
    ap.add_argument("--gc", action="store_true", help="after each warm-up: tracked objects, full pass")
    ap.add_argument("--only", choices=("register", "call"), help="run one scenario")
    ap.add_argument("--profile", choices=("register", "call"))
    ap.add_argument("--sort", default="tottime")
    ap.add_argument("--lines", type=int, default=35)
    args = ap.parse_args()
    scenarios: dict[str, Callable[[Harness, int], None]] = {"register": register_pair, "call": call}
    warmup = args.warmup if args.warmup is not None else int(args.rate * 35)
    if args.only:
        scenarios = {args.only: scenarios[args.only]}
    with tempfile.TemporaryDirectory() as d:
        h = Harness(Path(d))
        gc.collect()
        gc.freeze()  # as sipedge serve does after start-up
        n = 0
        for name, op in scenarios.items():
            measure(h, op, n, warmup, args.rate)  # warm-up: reach the steady state
            n += warmup
            if args.gc:
                gc_pass(h, name)
            core, total = measure(h, op, n, args.iterations, args.rate)
            n += args.iterations
            unit = "REGISTER pair" if name == "register" else "call"
            print(f"{name:8s}  core {core:7.1f} µs/{unit}   total {total:7.1f} µs/{unit}")
        if args.profile:
            pr = cProfile.Profile()
            pr.enable()
            measure(h, scenarios[args.profile], n, args.iterations, args.rate)
            pr.disable()
            pstats.Stats(pr).sort_stats(args.sort).print_stats(args.lines)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
