"""SIP benchmark: sipedge against Debian kamailio, same machine, same run.

For each server and each load (REGISTER, full call INVITE..BYE) the SIPp rate is stepped
up until more than 1% of a step's calls fail (or SIPp cannot reach the rate, or the time
budget runs out). For every server and load it prints the highest rate held, p50/p99
response time (SIPp ``-trace_rtt``), server CPU (utime+stime of the server and all its
processes, from /proc, over the steps) and the sipedge/kamailio ratios, then a Markdown
section for docs/performance.md. After each ramp one more step runs at half the highest
rate held: its p99 response time and SIPp's retransmissions (``Retransmissions(C)`` of
``-trace_stat``) are issue 13's "p99 at half the held rate under 20 ms; no retransmission
storms" (``--no-half-step`` leaves it out).

    .venv/bin/python -m bench.sip_bench                   # both servers, ~3-5 min
    .venv/bin/python -m bench.sip_bench --servers kamailio --loads register --budget 60

Loopback only; every step is bounded in calls and seconds; every process started here is
stopped in ``finally`` blocks.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a file: make "bench" importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.kamailio_ref import (
    KamailioRef,
    descendants,
    free_port,
    kamailio_bin,
    sip_exchange,
    sip_ping,
)
from bench.sipp_runner import SippResult, run_sipp, sipp_bin, start_sipp, stop_process

ROOT = Path(__file__).resolve().parent.parent
DOMAIN = "bench.test"
CALLER, CALLEE, REGUSER = "alice", "bob", "reguser"
PASSWORDS = {CALLER: "alice-bench-pw", CALLEE: "bob-bench-pw", REGUSER: "reg-bench-pw"}
LOAD_USERS = 1000  # distinct AoRs for the no-auth REGISTER load
_TICK = os.sysconf("SC_CLK_TCK")
SIPP_BUFFERS = ["-buff_size", str(4 * 1024 * 1024)]  # sipp's default is 64 KiB


class Skip(Exception):
    """This server cannot be benchmarked here; the message says why."""


# ---------------------------------------------------------------------------------------
# servers


def udp_rcvbuf_errors() -> int:
    """The kernel's UdpRcvbufErrors counter (datagrams dropped: a socket buffer was full)."""
    try:
        with open("/proc/net/snmp") as f:
            rows = [line.split() for line in f if line.startswith("Udp:")]
        return int(rows[1][rows[0].index("RcvbufErrors")])
    except (OSError, ValueError, IndexError):
        return 0


def cpu_seconds(pids: Sequence[int]) -> float:
    """utime+stime (all threads) of ``pids`` from /proc/<pid>/stat, in seconds."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rindex(b")") + 2 :].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15)
    return total / _TICK


class Server:
    name = "server"
    target = ""
    description = ""

    def pids(self) -> list[int]:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError


class KamailioServer(Server):
    name = "kamailio"

    def __init__(self, workdir: Path, auth: bool, children: int, sbc: bool = False) -> None:
        binary = kamailio_bin()
        if binary is None:
            raise Skip("kamailio not installed (apt-get install kamailio)")
        self.ref = KamailioRef(domain=DOMAIN, users=dict(PASSWORDS), transports=("udp",),
                               auth_register=auth, auth_invite=auth, children=children,
                               shm_mb=256, workdir=workdir, sbc=sbc)
        self.ref.start()
        self.target = self.ref.target
        version = subprocess.run([binary, "-v"], capture_output=True, text=True, timeout=10)
        first = (version.stdout.splitlines() or ["kamailio"])[0].replace("version: ", "").strip()
        self.description = f"{first}, {children} UDP worker(s), usrloc in memory" + (
            ", dialog + acc (log) + topos (db_text)" if sbc else "")

    def pids(self) -> list[int]:
        return self.ref.process_ids()

    def stop(self) -> None:
        self.ref.stop()


def sipedge_toml(port: int, data_dir: Path, auth: bool, sections: set[str], db_mode: str = "write-through",
                 sbc: bool = False, options: str = "", workers: int = 1) -> str:
    """A sipedge config: one UDP listener, the bench domain, auth like the kamailio side.

    ``sections``: those this sipedge knows (from ``sipedge init``); optional roles that
    exist are switched off so that only the SIP side runs. ``sbc``: dialogs, CDRs and
    topology hiding on (as the Kamailio side's dialog + acc + topos), else dialogs and
    CDRs off (Kamailio's plain side keeps neither). ``options``: the text of
    ``sipedge init``, to use only options this sipedge has.
    """
    dialog = ""
    if "dialog" in sections:
        dialog = f"\n[dialog]\nenabled = {'true' if sbc else 'false'}\n"
    hide = "topology_hiding = true\n" if sbc and "topology_hiding" in options else ""
    on = "true" if auth else "false"
    off = "".join(f"\n[{name}]\nenabled = false\n" for name in ("web", "turn", "media")
                  if name in sections)
    return f"""# written by bench/sip_bench.py
[general]
data_dir = "{data_dir}"
log_level = "warning"
{f"workers = {workers}" if workers > 1 else ""}

[sip]
listen = ["udp:127.0.0.1:{port}"]
domains = ["{DOMAIN}"]
{hide}
[auth]
register = {on}
invite = {on}
# SIPp 3.6.1 computes MD5 digests only
algorithms = ["MD5"]

[registrar]
db_mode = "{db_mode}"
{off}{dialog}"""


class SipedgeServer(Server):
    name = "sipedge"

    def __init__(self, workdir: Path, auth: bool, binary: str, db_mode: str = "write-through",
                 sbc: bool = False, workers: int = 1) -> None:
        if not Path(binary).exists() and shutil.which(binary) is None:
            raise Skip(f"{binary} not found (pip install -e . into .venv first)")
        probe = subprocess.run([binary, "serve", "--help"], capture_output=True, text=True,
                               timeout=30)
        if probe.returncode != 0:
            raise Skip(f"'{binary} serve' is not available yet: {probe.stderr.strip()[-200:]}")
        self.workdir = workdir
        self.port = free_port("127.0.0.1", ("udp",))
        self.config = workdir / "sipedge.toml"
        init = workdir / "init.toml"
        subprocess.run([binary, "init", str(init)], capture_output=True, timeout=30)
        sections = set()
        options = init.read_text() if init.exists() else ""
        sections = {line.strip()[1:-1] for line in options.splitlines()
                    if line.startswith("[") and line.strip().endswith("]")}
        self.config.write_text(sipedge_toml(self.port, workdir / "data", auth, sections, db_mode, sbc, options,
                                            workers))
        for user, pw in PASSWORDS.items():
            r = subprocess.run([binary, "user", "add", f"{user}@{DOMAIN}", "--password", pw,
                                "--config", str(self.config)],
                               capture_output=True, text=True, timeout=30)
            if r.returncode != 0:
                raise Skip(f"'sipedge user add' failed: {(r.stderr or r.stdout).strip()[-300:]}")
        self.log = workdir / "sipedge.log"
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                [binary, "serve", "--config", str(self.config)], stdin=subprocess.DEVNULL,
                stdout=log, stderr=subprocess.STDOUT, cwd=workdir, start_new_session=True,
            )
        self.target = f"127.0.0.1:{self.port}"
        deadline = time.monotonic() + 20
        try:
            while not sip_ping("127.0.0.1", self.port, 0.2):
                if self.proc.poll() is not None:
                    raise Skip(f"sipedge serve exited ({self.proc.returncode}): {self._tail()}")
                if time.monotonic() > deadline:
                    raise Skip(f"sipedge did not answer OPTIONS within 20 s: {self._tail()}")
        except BaseException:
            self.stop()
            raise
        version = subprocess.run([binary, "--version"], capture_output=True, text=True,
                                 timeout=30)
        self.description = (
            f"{(version.stdout or 'sipedge').strip()}, Python {platform.python_version()}, "
            f"SQLite location ({db_mode}), {workers} worker(s)"
            + (", dialogs + CDRs (SQLite)" + (" + topology hiding" if "topology_hiding" in options else "")
               if sbc else ", no dialogs")
        )

    def _tail(self) -> str:
        try:
            return self.log.read_text(errors="replace")[-800:]
        except OSError:
            return ""

    def pids(self) -> list[int]:
        return descendants(self.proc.pid) if self.proc.poll() is None else []

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        if self.proc.poll() is None:
            self.proc.wait(5)


# ---------------------------------------------------------------------------------------
# loads


@dataclass
class Step:
    rate: float
    calls: int
    successful: int
    failed: int
    elapsed: float
    achieved: float
    server_cpu: float
    client_cpu: float
    rtt_ms: list[float]
    drops: int = 0
    retransmissions: int = 0

    @property
    def fail_ratio(self) -> float:
        done = self.successful + self.failed
        return self.failed / done if done else 1.0

    def held(self, min_fraction: float = 0.9) -> bool:
        return (
            self.successful > 0
            and self.fail_ratio <= 0.01
            and self.achieved >= min_fraction * self.rate
        )


@dataclass
class LoadResult:
    server: str
    load: str
    steps: list[Step] = field(default_factory=list)
    skipped: str = ""
    note: str = ""
    half: Step | None = None  # the step at half the highest rate held, after the ramp

    @property
    def best(self) -> Step | None:
        held = [s for s in self.steps if s.held()]
        return max(held, key=lambda s: s.rate) if held else None


def percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1))))
    return ordered[k]


@dataclass
class Options:
    start_rate: float
    factor: float
    max_rate: float
    step_seconds: float
    max_calls: int
    deadline: float
    auth: bool
    workdir: Path
    verbose: bool
    half_step: bool = True
    run_deadline: float = float("inf")  # the whole run's end (``deadline``: this ramp's)


def _children_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def _one_step(server: Server, rate: float, opts: Options,
              run: Callable[[float, int, Path, float], SippResult], n: int) -> Step:
    calls = max(1, min(opts.max_calls, int(rate * opts.step_seconds)))
    wd = opts.workdir / f"{server.name}-{n:02d}-{int(rate)}"
    cpu0, ccpu0, drops0 = cpu_seconds(server.pids()), _children_cpu(), udp_rcvbuf_errors()
    timeout = calls / rate + 15
    r = run(rate, calls, wd, timeout)
    cpu1, ccpu1 = cpu_seconds(server.pids()), _children_cpu()
    drops = udp_rcvbuf_errors() - drops0
    rtts = r.rtt_ms.get(1, [])
    elapsed = max(r.elapsed, 1e-6)
    step = Step(rate=rate, calls=calls, successful=r.successful, failed=r.failed,
                elapsed=elapsed, achieved=r.successful / elapsed,
                server_cpu=cpu1 - cpu0, client_cpu=ccpu1 - ccpu0, rtt_ms=rtts, drops=drops,
                retransmissions=r.retransmissions)
    if step.held():  # keep the traces of failing steps only
        shutil.rmtree(wd, ignore_errors=True)
    return step


def ramp(server: Server, load: str, opts: Options,
         run: Callable[[float, int, Path, float], SippResult]) -> LoadResult:
    """Step the rate up (x factor) until a step is not held; then one step halfway back."""
    result = LoadResult(server.name, load)
    rate, n, last_good = opts.start_rate, 0, 0.0
    bisected = False
    while rate <= opts.max_rate:
        needed = min(opts.max_calls / rate, opts.step_seconds) + 3
        if time.monotonic() + needed > opts.deadline:
            result.note = "time budget reached"
            break
        n += 1
        step = _one_step(server, rate, opts, run, n)
        result.steps.append(step)
        _report(server.name, load, step)
        time.sleep(0.5)  # let retransmissions and transactions of the step drain
        if step.held():
            last_good = rate
            if bisected:
                break
            rate *= opts.factor
            continue
        if bisected or last_good == 0:
            break
        bisected = True
        rate = round((last_good + rate) / 2)
        if rate <= last_good:
            break
    else:
        result.note = f"reached --max-rate {opts.max_rate:g}"
    best = result.best
    if best is None and result.steps:
        first = result.steps[0]
        result.note = (f"first step ({first.rate:g}/s): {first.failed} of "
                       f"{first.successful + first.failed} failed")
    if best is not None and best.client_cpu >= 0.85 * best.elapsed:
        result.note = (result.note + "; " if result.note else "") + "SIPp near one full core"
    if best is not None and opts.half_step:
        half = best.rate / 2
        # the half step is allowed past the ramp's share of the budget, never past the run's
        needed = min(opts.max_calls / half, opts.step_seconds) + 3
        if time.monotonic() + needed > opts.run_deadline:
            result.note = (result.note + "; " if result.note else "") + "no time for the half-rate step"
        else:
            result.half = _one_step(server, half, opts, run, n + 1)
            _report(server.name, f"{load}/2", result.half)
            time.sleep(0.5)
    return result


def _report(server: str, load: str, s: Step) -> None:
    p50, p99 = percentile(s.rtt_ms, 50), percentile(s.rtt_ms, 99)
    print(f"  {server:8} {load:8} rate {s.rate:7.0f}/s  calls {s.calls:6d}  "
          f"ok {s.successful:6d}  failed {s.failed:5d} ({100 * s.fail_ratio:5.2f}%)  "
          f"achieved {s.achieved:7.0f}/s  p50 {p50:5.1f} ms  p99 {p99:6.1f} ms  "
          f"server cpu {s.server_cpu:5.2f}s  sipp cpu {s.client_cpu:5.2f}s  "
          f"udp drops {s.drops:5d}  resent {s.retransmissions:5d}  "
          f"{'held' if s.held() else 'NOT held'}", flush=True)


def register_runner(server: Server, opts: Options) -> Callable[[float, int, Path, float], SippResult]:
    users = opts.workdir / "users.csv"
    users.write_text("SEQUENTIAL\n" + "".join(f"load{i};x\n" for i in range(LOAD_USERS)))

    def run(rate: float, calls: int, wd: Path, timeout: float) -> SippResult:
        common: dict[str, Any] = dict(local_port=free_port("127.0.0.1", ("udp",)), keys={"domain": DOMAIN},
                      calls=calls, rate=rate, limit=max(100, int(rate * 2)), timeout=timeout,
                      recv_timeout_ms=4000, workdir=wd, trace_rtt=True)
        if opts.auth:
            return run_sipp("register_auth_load.xml", server.target, service=REGUSER,
                            auth=(REGUSER, PASSWORDS[REGUSER]),
                            extra=["-auth_uri", DOMAIN, *SIPP_BUFFERS], **common)
        return run_sipp("register_noauth.xml", server.target, inf=users, extra=SIPP_BUFFERS,
                        **common)

    return run


def register_plain(server: Server, user: str, contact: str) -> str | None:
    """REGISTER without credentials (auth off); None on 200, else what came back."""
    host, _, port = server.target.rpartition(":")
    tag = uuid.uuid4().hex[:10]

    def register(h: str, lport: int) -> str:
        return (
            f"REGISTER sip:{DOMAIN} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {h}:{lport};branch=z9hG4bK{tag};rport\r\n"
            "Max-Forwards: 70\r\n"
            f"From: <sip:{user}@{DOMAIN}>;tag={tag}\r\n"
            f"To: <sip:{user}@{DOMAIN}>\r\n"
            f"Call-ID: {tag}@{h}\r\n"
            "CSeq: 1 REGISTER\r\n"
            f"Contact: <sip:{user}@{contact}>\r\n"
            "Expires: 3600\r\n"
            "Content-Length: 0\r\n\r\n"
        )

    answer = sip_exchange(host, int(port), register, 5.0)
    if answer is not None and answer.startswith(b"SIP/2.0 200"):
        return None
    return (answer or b"no answer").split(b"\r\n", 1)[0].decode(errors="replace")


@contextmanager
def callee(server: Server, opts: Options) -> Iterator[None]:
    """A SIPp UAS (uas_answer.xml) registered as bob, for the call load."""
    port = free_port("127.0.0.1", ("udp",))
    uas = start_sipp("uas_answer.xml", workdir=opts.workdir / f"{server.name}-uas",
                     local_port=port, timeout=900, recv_timeout_ms=None, extra=SIPP_BUFFERS)
    try:
        contact = f"127.0.0.1:{port}"
        if opts.auth:
            r = run_sipp("register_auth.xml", server.target,
                         local_port=free_port("127.0.0.1", ("udp",)), service=CALLEE,
                         auth=(CALLEE, PASSWORDS[CALLEE]),
                         keys={"domain": DOMAIN, "contact": contact, "expires": "3600"},
                         extra=["-auth_uri", DOMAIN], timeout=10)
            problem = None if r.ok else r.explain()[-600:]
        else:
            problem = register_plain(server, CALLEE, contact)
        if problem:
            raise Skip(f"could not register the callee on {server.name}: {problem}")
        yield
    finally:
        stop_process(uas)


def call_runner(server: Server, opts: Options) -> Callable[[float, int, Path, float], SippResult]:
    def run(rate: float, calls: int, wd: Path, timeout: float) -> SippResult:
        return run_sipp("uac_call.xml", server.target,
                        local_port=free_port("127.0.0.1", ("udp",)), service=CALLEE,
                        auth=(CALLER, PASSWORDS[CALLER]),
                        keys={"domain": DOMAIN, "caller": CALLER}, calls=calls, rate=rate,
                        limit=max(100, int(rate * 2)), timeout=timeout, recv_timeout_ms=4000,
                        call_duration_ms=0, workdir=wd, trace_rtt=True,
                        extra=["-auth_uri", f"{CALLEE}@{DOMAIN}", *SIPP_BUFFERS])

    return run


# ---------------------------------------------------------------------------------------
# report


LOAD_TITLES = {"register": "REGISTER", "call": "Call (INVITE..BYE)"}
LOAD_UNITS = {"register": "registrations/s", "call": "calls/s"}


def _fmt_ms(v: float, tick: float = 1.0) -> str:
    if v != v:  # nan
        return "-"
    return f"<{tick:g}" if v < tick else f"{v:.0f}"


def _tick(results: Sequence[LoadResult]) -> float:
    """SIPp's response-time resolution seen in this run (smallest non-zero value)."""
    positive = [v for r in results for st in r.steps for v in st.rtt_ms if v > 0]
    return min(positive) if positive else 1.0


def _summary(r: LoadResult) -> dict[str, float]:
    b = r.best
    if b is None:
        return {}
    out = {
        "rate": b.rate,
        "p50": percentile(b.rtt_ms, 50),
        "p99": percentile(b.rtt_ms, 99),
        "cpu_pct": 100 * b.server_cpu / b.elapsed,
        "cpu_ms_per_op": 1000 * b.server_cpu / max(1, b.successful),
    }
    h = r.half
    if h is not None:
        out["half_rate"] = h.rate
        out["half_p99"] = percentile(h.rtt_ms, 99)
        out["half_resent"] = h.retransmissions
        out["half_failed"] = h.failed
    return out


def _half_cells(s: dict[str, float], tick: float) -> str:
    """The half-rate step's cells: rate, p99, retransmissions (``-`` when not run)."""
    if "half_rate" not in s:
        return "- | - | -"
    failed = f" ({s['half_failed']:.0f} failed)" if s["half_failed"] else ""
    return f"{s['half_rate']:g}/s | {_fmt_ms(s['half_p99'], tick)} | {s['half_resent']:.0f}{failed}"


def _ratio(a: float | None, b: float | None) -> str:
    if not a or not b or a != a or b != b:
        return "-"
    return f"{a / b:.2f}"


def markdown(results: list[LoadResult], servers: dict[str, str], opts: Options,
             command: str, skipped: dict[str, str]) -> str:
    """The docs/performance.md section for this run."""
    tick = _tick(results)
    lines = [
        "## SIP proxy/registrar: sipedge and Kamailio",
        "",
        f"Measured {time.strftime('%Y-%m-%d', time.gmtime())} on {platform.node() or 'this host'}: "
        f"{os.cpu_count()} CPU(s), {platform.platform(terse=True)}, loopback UDP, "
        f"SIPp {_sipp_version()} as the client on the same machine.",
        "",
        "```",
        command,
        "```",
        "",
        f"- Digest auth on REGISTER and INVITE: {'on (MD5, qop=auth) on both servers' if opts.auth else 'off on both servers'}.",
        f"- Rate stepped from {opts.start_rate:g}/s by x{opts.factor:g} (one step back halfway "
        f"after the first miss); each step {opts.step_seconds:g} s, at most {opts.max_calls} calls. "
        "A step is *held* when at most 1% of its calls fail and SIPp reaches 90% of the rate.",
        "- Response time: SIPp rtd 1 at the highest rate held (REGISTER: first request to "
        "the final 200, challenge included; call: first INVITE to the 200 OK). SIPp's "
        f"clock moved in steps of {tick:g} ms in this run: `<{tick:g}` is below that.",
        "- CPU: utime+stime of the server's processes over that step, as % of one core and "
        "as CPU ms per registration or call. UDP drops: the kernel's UdpRcvbufErrors during "
        "the step (any socket on the machine, SIPp's included). SIPp runs with 4 MB socket "
        "buffers.",
        "- At half rate: one more step after the ramp at half the highest rate held (issue 13: "
        "p99 under 20 ms there, no retransmission storms). Resent: the messages SIPp sent "
        "again during that step for want of an answer in time (`Retransmissions(C)` of its "
        "`-trace_stat` CSV; SIPp's UDP T1 is 500 ms).",
    ]
    for name, desc in servers.items():
        lines.append(f"- {name}: {desc}")
    for name, why in skipped.items():
        lines.append(f"- {name}: not measured — {why}")
    lines += ["", "| Load | Server | Highest rate held | p50 ms | p99 ms | CPU % of a core | CPU ms/op "
              "| Half rate | p99 ms at half | Resent at half | Note |",
              "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    by_key = {(r.load, r.server): r for r in results}
    loads = list(dict.fromkeys(r.load for r in results))
    for load in loads:
        for server in servers:
            r = by_key.get((load, server))
            if r is None:
                continue
            s = _summary(r)
            if not s:
                lines.append(f"| {LOAD_TITLES[load]} | {server} | none held | - | - | - | - | - | - | - | "
                             f"{r.skipped or r.note} |")
                continue
            lines.append(
                f"| {LOAD_TITLES[load]} | {server} | {s['rate']:.0f} {LOAD_UNITS[load]} | "
                f"{_fmt_ms(s['p50'], tick)} | {_fmt_ms(s['p99'], tick)} | {s['cpu_pct']:.0f} | "
                f"{s['cpu_ms_per_op']:.2f} | {_half_cells(s, tick)} | {r.note} |"
            )
    if "sipedge" in servers and "kamailio" in servers:
        lines += ["", "sipedge / kamailio (rate: higher is better; times and CPU: lower is better):", "",
                  "| Load | Rate | p50 | p99 | CPU ms/op | p99 at half rate |",
                  "|---|---:|---:|---:|---:|---:|"]
        for load in loads:
            a = _summary(by_key[(load, "sipedge")]) if (load, "sipedge") in by_key else {}
            b = _summary(by_key[(load, "kamailio")]) if (load, "kamailio") in by_key else {}
            lines.append(
                f"| {LOAD_TITLES[load]} | {_ratio(a.get('rate'), b.get('rate'))} | "
                f"{_ratio(max(a.get('p50', 0), tick) if a else None, max(b.get('p50', 0), tick) if b else None)} | "
                f"{_ratio(max(a.get('p99', 0), tick) if a else None, max(b.get('p99', 0), tick) if b else None)} | "
                f"{_ratio(a.get('cpu_ms_per_op'), b.get('cpu_ms_per_op'))} | "
                f"{_ratio(max(a['half_p99'], tick) if 'half_p99' in a else None, max(b['half_p99'], tick) if 'half_p99' in b else None)} |"
            )
        lines.append("")
        lines.append(f"Times under {tick:g} ms count as {tick:g} ms in the ratios.")
    lines += ["", "Steps (`/2`: the step at half the highest rate held):", "",
              "| Server | Load | Rate/s | Calls | Failed | Achieved/s | p50 ms | p99 ms | Server CPU s "
              "| SIPp CPU s | UDP drops | Resent |",
              "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        steps = [(r.load, st) for st in r.steps] + ([(f"{r.load}/2", r.half)] if r.half else [])
        for load, st in steps:
            lines.append(
                f"| {r.server} | {load} | {st.rate:.0f} | {st.calls} | {st.failed} | "
                f"{st.achieved:.0f} | {_fmt_ms(percentile(st.rtt_ms, 50), tick)} | "
                f"{_fmt_ms(percentile(st.rtt_ms, 99), tick)} | {st.server_cpu:.2f} | {st.client_cpu:.2f} | "
                f"{st.drops} | {st.retransmissions} |"
            )
    return "\n".join(lines) + "\n"


def _sipp_version() -> str:
    binary = sipp_bin()
    if binary is None:
        return "?"
    out = subprocess.run([binary, "-v"], capture_output=True, text=True, timeout=10).stdout
    for word in out.split():
        if word.startswith("v3") or word.startswith("v4"):
            return word.split("-")[0].lstrip("v")
    return "?"


# ---------------------------------------------------------------------------------------
# main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.sip_bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--servers", default="sipedge,kamailio", help="comma list: sipedge, kamailio")
    p.add_argument("--loads", default="register,call", help="comma list: register, call")
    p.add_argument("--no-auth", action="store_true", help="digest auth off on both servers")
    p.add_argument("--start-rate", type=float, default=100.0, help="first step, per second")
    p.add_argument("--factor", type=float, default=2.0, help="rate multiplier between steps")
    p.add_argument("--max-rate", type=float, default=20000.0, help="stop stepping above this")
    p.add_argument("--step-seconds", type=float, default=3.0, help="length of one step")
    p.add_argument("--max-calls", type=int, default=15000, help="most calls in one step")
    p.add_argument("--budget", type=float, default=270.0,
                   help="seconds for the whole run (default 270: under 5 minutes)")
    p.add_argument("--kamailio-children", type=int, default=os.cpu_count() or 2,
                   help="kamailio UDP worker processes (default: CPU count)")
    p.add_argument("--sipedge", default=str(ROOT / ".venv" / "bin" / "sipedge"),
                   help="sipedge executable")
    p.add_argument("--markdown", type=Path, help="also write the Markdown section here")
    p.add_argument("--sipedge-db-mode", choices=("write-through", "write-back"), default="write-through",
                   help="sipedge's registrar.db_mode (Kamailio's side keeps usrloc in memory)")
    p.add_argument("--sipedge-workers", type=int, default=1,
                   help="sipedge's general.workers (docs/workers.md); 1 = one process")
    p.add_argument("--sbc", action="store_true",
                   help="session-border duties on both sides: sipedge's dialogs, CDRs and topology hiding "
                        "against Kamailio's dialog + acc + topos")
    p.add_argument("--no-half-step", action="store_true",
                   help="skip the step at half the highest rate held after each ramp "
                        "(its p99 and SIPp retransmissions are issue 13's latency target)")
    p.add_argument("--keep", action="store_true", help="keep the work directory (traces)")
    p.add_argument("-v", "--verbose", action="store_true")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if sipp_bin() is None:
        print("sipp not installed (apt-get install sip-tester)", file=sys.stderr)
        return 2
    servers = [s.strip() for s in args.servers.split(",") if s.strip()]
    loads = [s.strip() for s in args.loads.split(",") if s.strip()]
    bad = [s for s in servers if s not in ("sipedge", "kamailio")] + [
        x for x in loads if x not in LOAD_TITLES]
    if bad:
        print(f"unknown server or load {bad}; servers: sipedge, kamailio; loads: register, call",
              file=sys.stderr)
        return 2
    started = time.monotonic()
    tmp = Path(tempfile.mkdtemp(prefix="sip-bench-"))
    opts = Options(start_rate=args.start_rate, factor=args.factor, max_rate=args.max_rate,
                   step_seconds=args.step_seconds, max_calls=args.max_calls,
                   deadline=started + args.budget, auth=not args.no_auth, workdir=tmp,
                   verbose=args.verbose, half_step=not args.no_half_step,
                   run_deadline=started + args.budget)
    command = " ".join(["python -m bench.sip_bench", *(
        shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv))])
    results: list[LoadResult] = []
    described: dict[str, str] = {}
    skipped: dict[str, str] = {}
    # each server gets an equal share of what is left of the budget
    try:
        for i, name in enumerate(servers):
            left = opts.deadline - time.monotonic()
            share = left / (len(servers) - i)
            server_deadline = time.monotonic() + share
            wd = tmp / name
            wd.mkdir()
            print(f"== {name}", flush=True)
            server: Server | None = None
            try:
                server = (SipedgeServer(wd, opts.auth, args.sipedge, args.sipedge_db_mode, args.sbc,
                                        args.sipedge_workers)
                          if name == "sipedge" else KamailioServer(wd, opts.auth, args.kamailio_children, args.sbc))
                described[name] = server.description
                print(f"   {server.description} on udp:{server.target}", flush=True)
                for j, load in enumerate(loads):
                    load_left = server_deadline - time.monotonic()
                    opts.deadline = time.monotonic() + load_left / (len(loads) - j)
                    if load == "register":
                        results.append(ramp(server, load, opts, register_runner(server, opts)))
                    else:
                        with callee(server, opts):
                            results.append(ramp(server, load, opts, call_runner(server, opts)))
            except Skip as e:
                skipped[name] = str(e)
                print(f"   SKIPPED {name}: {e}", flush=True)
            finally:
                if server is not None:
                    server.stop()
            opts.deadline = started + args.budget
    finally:
        if args.keep:
            print(f"work directory kept: {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    md = markdown(results, described, opts, command, skipped)
    print()
    print(md)
    if args.markdown:
        args.markdown.write_text(md)
    print(f"(total {time.monotonic() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
