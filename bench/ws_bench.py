"""SIP over WebSocket benchmark: sipedge against Kamailio's websocket module, same run.

A small asyncio load client (``websockets``) opens many concurrent ``sip`` WebSocket
connections, one subscriber each, the way browsers running JsSIP do (``.invalid`` Via and
Contact hosts), and measures for each server:

- *connect*: WebSocket handshakes per second while opening all connections;
- *register*: REGISTER -> 401 -> REGISTER with MD5 digest -> 200 cycles per second, every
  connection looping back to back (closed loop) for ``--seconds``;
- *call*: connections paired caller -> callee; INVITE -> 180 -> 200 -> ACK -> BYE -> 200
  per call, the callee answering at once, both legs over WebSocket through the server
  (no INVITE challenge on either server), closed loop for ``--seconds``.

For each it prints operations/s, p50/p99 latency, server CPU seconds (utime+stime of the
server and its children from /proc) per 1000 operations, the client's own CPU, and the
sipedge/kamailio ratios.

    .venv/bin/python -m bench.ws_bench                         # both servers, ~1 min
    .venv/bin/python -m bench.ws_bench --connections 100 --seconds 3 --servers sipedge

Kamailio gets a config written here: xhttp + websocket (handshake in
``event_route[xhttp:request]``), nathelper (``nat_uac_test(64)``, ``fix_nated_register``,
``add_contact_alias``/``handle_ruri_alias``), usrloc in memory, registrar, tm, rr, auth with
passwords in an htable; it runs ``--kamailio-children`` TCP workers. sipedge gets one WS
listener, MD5 only (as Kamailio's auth module), INVITE challenge off, web/TURN/media off,
subscribers written straight into its SQLite file. Loopback only; every phase is bounded
in operations and seconds; both servers are stopped in ``finally``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import functools
import hashlib
import os
import re
import resource
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a file: make "bench" importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.kamailio_ref import _module_dir, descendants, free_port, kamailio_bin, sip_ping

ROOT = Path(__file__).resolve().parent.parent
DOMAIN = "bench.test"
_TICK = os.sysconf("SC_CLK_TCK")
OP_TIMEOUT = 5.0  # seconds for one REGISTER cycle or one call before it counts as failed
MAX_OPS = 200_000  # per phase, whatever the duration


def password(user: str) -> str:
    return f"{user}-ws-pw"


def cpu_seconds(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rindex(b")") + 2 :].split()
        total += int(fields[11]) + int(fields[12])
    return total / _TICK


class Skip(Exception):
    """This server cannot be benchmarked here; the message says why."""


# ---------------------------------------------------------------------------------------
# servers


class Server:
    name = "server"
    url = ""
    description = ""

    def pids(self) -> list[int]:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError


def _wait_ping(port: int, proc: subprocess.Popen[bytes], tail: Callable[[], str], what: str) -> None:
    deadline = time.monotonic() + 20
    while not sip_ping("127.0.0.1", port, 0.2):
        if proc.poll() is not None:
            raise Skip(f"{what} exited ({proc.returncode}): {tail()}")
        if time.monotonic() > deadline:
            raise Skip(f"{what} did not answer OPTIONS within 20 s: {tail()}")


def _stop_group(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(10)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    if proc.poll() is None:
        proc.wait(5)


def kamailio_ws_config(users: list[str], children: int, module_dir: str) -> str:
    fill = "\n".join(f'\t$sht(users=>{u}) = "{password(u)}";' for u in users)
    modules = ("kex", "corex", "tm", "tmx", "sl", "rr", "pv", "maxfwd", "usrloc", "registrar",
               "textops", "siputils", "xlog", "auth", "htable", "nathelper", "xhttp",
               "websocket")
    loads = "\n".join(f'loadmodule "{m}.so"' for m in modules)
    return f"""#!KAMAILIO
# written by sipedge bench/ws_bench.py: registrar + proxy for SIP over WebSocket
debug=1
log_stderror=yes
memdbg=5
memlog=5
children={children}
tcp_children={children}
tcp_accept_no_cl=yes
tcp_max_connections=8192
tcp_connection_lifetime=3605
auto_aliases=no
alias="{DOMAIN}"
dns=no
rev_dns=no
use_dns_cache=no
server_header="Server: kamailio-ws-bench"
user_agent_header="User-Agent: kamailio-ws-bench"

mpath="{module_dir}"
{loads}

modparam("tm", "fr_timer", 5000)
modparam("tm", "fr_inv_timer", 30000)
modparam("rr", "enable_full_lr", 1)
modparam("rr", "append_fromtag", 1)
modparam("usrloc", "db_mode", 0)
modparam("registrar", "min_expires", 60)
modparam("registrar", "max_expires", 3600)
modparam("nathelper|registrar", "received_avp", "$avp(RECEIVED)")
modparam("nathelper", "natping_interval", 0)
modparam("websocket", "keepalive_mechanism", 0)
modparam("auth", "nonce_expire", 300)
modparam("htable", "htable", "users=>size=12;")

event_route[htable:mod-init] {{
{fill}
}}

event_route[xhttp:request] {{
\tset_reply_close();
\tset_reply_no_connect();
\tif ($hdr(Upgrade) =~ "websocket" && $hdr(Connection) =~ "Upgrade" && $rm =~ "GET") {{
\t\tif (ws_handle_handshake()) {{
\t\t\texit;
\t\t}}
\t}}
\txhttp_reply("404", "Not Found", "", "");
}}

request_route {{
\tif (!mf_process_maxfwd_header("10")) {{
\t\tsl_send_reply("483", "Too Many Hops");
\t\texit;
\t}}
\tif (is_method("OPTIONS") && uri==myself && $rU==$null) {{
\t\tsl_send_reply("200", "OK");
\t\texit;
\t}}
\tforce_rport();
\tif (nat_uac_test("64")) {{
\t\tif (is_method("REGISTER")) {{
\t\t\tfix_nated_register();
\t\t}} else {{
\t\t\tadd_contact_alias();
\t\t}}
\t}}
\tif (has_totag()) {{
\t\tif (loose_route()) {{
\t\t\thandle_ruri_alias();
\t\t\troute(RELAY);
\t\t}}
\t\tif (is_method("ACK") && t_check_trans()) {{
\t\t\troute(RELAY);
\t\t}}
\t\tif (!is_method("ACK")) {{
\t\t\tsl_send_reply("404", "Not here");
\t\t}}
\t\texit;
\t}}
\tif (is_method("CANCEL")) {{
\t\tif (t_check_trans()) {{
\t\t\troute(RELAY);
\t\t}}
\t\texit;
\t}}
\tif (!is_method("ACK")) {{
\t\tt_check_trans();
\t}}
\tremove_hf("Route");
\tif (is_method("REGISTER")) {{
\t\tif ($au == $null || !pv_auth_check("$td", "$sht(users=>$au)", "0", "1")) {{
\t\t\tauth_challenge("$td", "1");
\t\t\texit;
\t\t}}
\t\tif (!save("location")) {{
\t\t\tsl_reply_error();
\t\t}}
\t\texit;
\t}}
\tif (is_method("INVITE")) {{
\t\trecord_route();
\t\tt_on_reply("REPLY");
\t}}
\tif (uri!=myself) {{
\t\tsl_send_reply("403", "Not relaying");
\t\texit;
\t}}
\tif (!lookup("location")) {{
\t\tsl_send_reply("404", "Not Found");
\t\texit;
\t}}
\troute(RELAY);
}}

route[RELAY] {{
\tif (!t_relay()) {{
\t\tsl_reply_error();
\t}}
\texit;
}}

onreply_route[REPLY] {{
\tif (nat_uac_test("64")) {{
\t\tadd_contact_alias();
\t}}
}}
"""


class KamailioWs(Server):
    name = "kamailio"

    def __init__(self, workdir: Path, users: list[str], children: int) -> None:
        binary = kamailio_bin()
        if binary is None:
            raise Skip("kamailio not installed (apt-get install kamailio)")
        try:
            mdir = _module_dir()
        except RuntimeError as e:
            raise Skip(str(e)) from e
        if not Path(mdir, "websocket.so").exists():
            raise Skip("Kamailio websocket module missing (apt-get install kamailio-websocket-modules)")
        wd = workdir.resolve()
        self.log = wd / "kamailio.log"
        cfg = wd / "kamailio.cfg"
        cfg.write_text(kamailio_ws_config(users, children, mdir))
        self.udp = free_port("127.0.0.1", ("udp",))
        self.ws = free_port("127.0.0.1", ("tcp",))
        cmd = [binary, "-DD", "-E", "-f", str(cfg), "-P", str(wd / "kamailio.pid"), "-w", str(wd),
               "-Y", str(wd), "-m", "256", "-M", "16",
               "-l", f"udp:127.0.0.1:{self.udp}", "-l", f"tcp:127.0.0.1:{self.ws}"]
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT, cwd=wd, start_new_session=True)
        try:
            _wait_ping(self.udp, self.proc, self._tail, "kamailio")
        except BaseException:
            self.stop()
            raise
        self.url = f"ws://127.0.0.1:{self.ws}/"
        version = subprocess.run([binary, "-v"], capture_output=True, text=True, timeout=10)
        first = (version.stdout.splitlines() or ["kamailio"])[0].replace("version: ", "").strip()
        self.description = f"{first}, websocket module, {children} TCP worker(s), usrloc in memory"

    def _tail(self) -> str:
        try:
            return self.log.read_text(errors="replace")[-1500:]
        except OSError:
            return ""

    def pids(self) -> list[int]:
        return descendants(self.proc.pid) if self.proc.poll() is None else []

    def stop(self) -> None:
        _stop_group(self.proc)


class SipedgeWs(Server):
    name = "sipedge"

    def __init__(self, workdir: Path, users: list[str], binary: str) -> None:
        if not Path(binary).exists():
            raise Skip(f"{binary} not found (scripts/setup first)")
        from sipedge.config import Config, load_config
        from sipedge.store.sqlite import SqliteDatabase, SqliteSubscriberStore

        self.udp = free_port("127.0.0.1", ("udp",))
        self.ws = free_port("127.0.0.1", ("tcp",))
        defaults = Config()
        off = "".join(
            f"\n[{f.name}]\nenabled = false\n" for f in dataclasses.fields(Config)
            if f.name in ("web", "turn", "media") and hasattr(getattr(defaults, f.name), "enabled")
        )
        cfg = workdir / "sipedge.toml"
        cfg.write_text(f"""# written by bench/ws_bench.py
[general]
data_dir = "{workdir / 'data'}"
log_level = "warning"

[sip]
listen = ["udp:127.0.0.1:{self.udp}", "ws:127.0.0.1:{self.ws}"]
domains = ["{DOMAIN}"]

[sip.limits]
max_connections_per_ip = 0  # every simulated browser comes from 127.0.0.1

[auth]
register = true
invite = false
algorithms = ["MD5"]
{off}""")
        path = load_config(cfg).database_path
        path.parent.mkdir(parents=True, exist_ok=True)
        db = SqliteDatabase(path)
        try:
            store = SqliteSubscriberStore(db)
            for u in users:
                store.add(u, DOMAIN, password(u))
        finally:
            db.close()
        self.log = workdir / "sipedge.log"
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen([binary, "serve", "--config", str(cfg)],
                                         stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT, cwd=workdir,
                                         start_new_session=True)
        try:
            _wait_ping(self.udp, self.proc, self._tail, "sipedge")
        except BaseException:
            self.stop()
            raise
        self.url = f"ws://127.0.0.1:{self.ws}/"
        loop = "uvloop" if _has("uvloop") else "asyncio"
        self.description = f"sipedge (Python {sys.version.split()[0]}, {loop}), one process, SQLite"

    def _tail(self) -> str:
        try:
            return self.log.read_text(errors="replace")[-1500:]
        except OSError:
            return ""

    def pids(self) -> list[int]:
        return descendants(self.proc.pid) if self.proc.poll() is None else []

    def stop(self) -> None:
        _stop_group(self.proc)


def _has(module: str) -> bool:
    try:
        __import__(module)
    except ImportError:
        return False
    return True


# ---------------------------------------------------------------------------------------
# the load client

_COMPACT = {"v": "via", "f": "from", "t": "to", "i": "call-id", "m": "contact", "l": "content-length",
            "c": "content-type"}
_AUTH_PARAM = re.compile(r'(\w+)=(?:"([^"]*)"|([^\s,]+))')


def parse(text: str) -> tuple[str, dict[str, list[str]]]:
    """First line and headers (lower-case names, compact forms expanded, values in order)."""
    head = text.split("\r\n\r\n", 1)[0]
    lines = head.split("\r\n")
    headers: dict[str, list[str]] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        key = name.strip().lower()
        headers.setdefault(_COMPACT.get(key, key), []).append(value.strip())
    return lines[0], headers


def split_commas(values: list[str]) -> list[str]:
    """Header values that may hold several comma-separated entries (Record-Route)."""
    out: list[str] = []
    for v in values:
        depth, start = 0, 0
        for i, c in enumerate(v):
            if c == "<":
                depth += 1
            elif c == ">":
                depth -= 1
            elif c == "," and depth == 0:
                out.append(v[start:i].strip())
                start = i + 1
        out.append(v[start:].strip())
    return [x for x in out if x]


def _md5(s: str) -> str:
    return hashlib.md5(s.encode()).hexdigest()


SDP = ("v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
       "m=audio 9 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n")


class Endpoint:
    """One WebSocket connection = one subscriber (a browser tab, in effect)."""

    def __init__(self, ws: Any, user: str) -> None:
        self.ws = ws
        self.user = user
        self.host = f"{uuid.uuid4().hex[:12]}.invalid"
        self.contact = f"<sip:{user}@{self.host};transport=ws>"
        self.aor = f"sip:{user}@{DOMAIN}"
        self.cseq = 0
        self.reg_call_id = uuid.uuid4().hex
        self.waiting: tuple[str, asyncio.Future[tuple[str, dict[str, list[str]]]]] | None = None
        self.reader = asyncio.get_running_loop().create_task(self._read())
        self.errors = 0

    def branch(self) -> str:
        return f"z9hG4bK{uuid.uuid4().hex[:16]}"

    async def send(self, text: str) -> None:
        await self.ws.send(text)

    async def _read(self) -> None:
        with contextlib.suppress(Exception):
            async for data in self.ws:
                text = data if isinstance(data, str) else data.decode("utf-8", "replace")
                if text.startswith("SIP/2.0 "):
                    self._on_response(text)
                elif text.strip():
                    await self._on_request(text)

    def _on_response(self, text: str) -> None:
        first, h = parse(text)
        status = int(first[8:11])
        if status < 200 or self.waiting is None:
            return
        cseq, fut = self.waiting
        if h.get("cseq", [""])[0] == cseq and not fut.done():
            fut.set_result((first, h))

    async def request(self, text: str, cseq: str) -> tuple[int, dict[str, list[str]]]:
        fut: asyncio.Future[tuple[str, dict[str, list[str]]]] = asyncio.get_running_loop().create_future()
        self.waiting = (cseq, fut)
        await self.send(text)
        first, h = await asyncio.wait_for(fut, OP_TIMEOUT)
        self.waiting = None
        return int(first[8:11]), h

    # -- UAS: answer every call at once -------------------------------------------------
    async def _on_request(self, text: str) -> None:
        first, h = parse(text)
        method = first.split(" ", 1)[0]
        if method == "ACK":
            return
        copied = "".join(f"Via: {v}\r\n" for v in h.get("via", []))
        copied += f"From: {h['from'][0]}\r\nCall-ID: {h['call-id'][0]}\r\nCSeq: {h['cseq'][0]}\r\n"
        to = h["to"][0]
        if method == "INVITE":
            if ";tag=" not in to:
                to += f";tag={uuid.uuid4().hex[:10]}"
            rr = "".join(f"Record-Route: {r}\r\n" for r in h.get("record-route", []))
            base = f"{copied}To: {to}\r\n{rr}Contact: {self.contact}\r\n"
            await self.send(f"SIP/2.0 180 Ringing\r\n{base}Content-Length: 0\r\n\r\n")
            await self.send(f"SIP/2.0 200 OK\r\n{base}Content-Type: application/sdp\r\n"
                            f"Content-Length: {len(SDP)}\r\n\r\n{SDP}")
            return
        await self.send(f"SIP/2.0 200 OK\r\n{copied}To: {to}\r\nContent-Length: 0\r\n\r\n")

    # -- UAC ---------------------------------------------------------------------------------
    def _register(self, auth: str = "") -> tuple[str, str]:
        self.cseq += 1
        cseq = f"{self.cseq} REGISTER"
        return (
            f"REGISTER sip:{DOMAIN} SIP/2.0\r\n"
            f"Via: SIP/2.0/WS {self.host};branch={self.branch()}\r\n"
            "Max-Forwards: 70\r\n"
            f"To: <{self.aor}>\r\nFrom: <{self.aor}>;tag={self.reg_call_id[:10]}\r\n"
            f"Call-ID: {self.reg_call_id}\r\nCSeq: {cseq}\r\n"
            f"Contact: {self.contact};expires=600\r\nExpires: 600\r\n{auth}"
            "Content-Length: 0\r\n\r\n"
        ), cseq

    async def register(self) -> None:
        text, cseq = self._register()
        status, h = await self.request(text, cseq)
        if status == 401:
            challenge = next((c for c in h.get("www-authenticate", []) if "MD5" in c.upper()
                              or "algorithm" not in c.lower()), "")
            p = {m.group(1).lower(): m.group(2) if m.group(2) is not None else m.group(3)
                 for m in _AUTH_PARAM.finditer(challenge)}
            realm, nonce = p.get("realm", DOMAIN), p.get("nonce", "")
            ha1 = _md5(f"{self.user}:{realm}:{password(self.user)}")
            ha2 = _md5(f"REGISTER:sip:{DOMAIN}")
            cnonce = uuid.uuid4().hex[:8]
            resp = _md5(f"{ha1}:{nonce}:00000001:{cnonce}:auth:{ha2}")
            auth = (f'Authorization: Digest username="{self.user}", realm="{realm}", '
                    f'nonce="{nonce}", uri="sip:{DOMAIN}", response="{resp}", algorithm=MD5, '
                    f'qop=auth, nc=00000001, cnonce="{cnonce}"\r\n')
            text, cseq = self._register(auth)
            status, h = await self.request(text, cseq)
        if status != 200:
            raise RuntimeError(f"REGISTER {self.user}: {status}")

    async def call(self, callee: str) -> None:
        call_id, tag = uuid.uuid4().hex, uuid.uuid4().hex[:10]
        self.cseq += 1
        n = self.cseq
        frm = f"<{self.aor}>;tag={tag}"
        invite = (
            f"INVITE sip:{callee}@{DOMAIN} SIP/2.0\r\n"
            f"Via: SIP/2.0/WS {self.host};branch={self.branch()}\r\n"
            f"Max-Forwards: 70\r\nTo: <sip:{callee}@{DOMAIN}>\r\nFrom: {frm}\r\n"
            f"Call-ID: {call_id}\r\nCSeq: {n} INVITE\r\nContact: {self.contact}\r\n"
            f"Content-Type: application/sdp\r\nContent-Length: {len(SDP)}\r\n\r\n{SDP}"
        )
        status, h = await self.request(invite, f"{n} INVITE")
        if status != 200:
            raise RuntimeError(f"INVITE {self.user} -> {callee}: {status}")
        to = h["to"][0]
        target = h["contact"][0].split(">", 1)[0].lstrip("<")
        route = "".join(f"Route: {r}\r\n" for r in reversed(split_commas(h.get("record-route", []))))

        def in_dialog(method: str, number: int) -> str:
            return (
                f"{method} {target} SIP/2.0\r\n{route}"
                f"Via: SIP/2.0/WS {self.host};branch={self.branch()}\r\n"
                f"Max-Forwards: 70\r\nTo: {to}\r\nFrom: {frm}\r\nCall-ID: {call_id}\r\n"
                f"CSeq: {number} {method}\r\nContent-Length: 0\r\n\r\n"
            )

        await self.send(in_dialog("ACK", n))
        self.cseq += 1
        status, _ = await self.request(in_dialog("BYE", self.cseq), f"{self.cseq} BYE")
        if status != 200:
            raise RuntimeError(f"BYE {self.user} -> {callee}: {status}")

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.ws.close(), 2)
        self.reader.cancel()


@dataclass
class Phase:
    name: str
    ops: int = 0
    failed: int = 0
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    server_cpu: float = 0.0
    client_cpu: float = 0.0
    note: str = ""

    @property
    def rate(self) -> float:
        return self.ops / self.seconds if self.seconds else 0.0

    def pct(self, q: float) -> float:
        if not self.latencies:
            return 0.0
        s = sorted(self.latencies)
        return s[min(len(s) - 1, int(q * len(s)))] * 1000

    @property
    def cpu_per_1000(self) -> float:
        return self.server_cpu / self.ops * 1000 if self.ops else 0.0


def _client_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


async def _measure(phase: Phase, server: Server, work: list[Callable[[], Awaitable[None]]],
                   seconds: float) -> Phase:
    """Run every worker back to back until ``seconds`` (or MAX_OPS) pass."""
    deadline = time.monotonic() + seconds
    cpu0, ccpu0, t0 = cpu_seconds(server.pids()), _client_cpu(), time.monotonic()

    async def loop(one: Callable[[], Awaitable[None]]) -> None:
        while time.monotonic() < deadline and phase.ops + phase.failed < MAX_OPS:
            start = time.monotonic()
            try:
                await one()
            except Exception as e:
                phase.failed += 1
                phase.note = phase.note or f"{type(e).__name__}: {e}"[:160]
                await asyncio.sleep(0.05)
                continue
            phase.ops += 1
            phase.latencies.append(time.monotonic() - start)

    await asyncio.wait_for(asyncio.gather(*(loop(w) for w in work)), seconds + OP_TIMEOUT + 5)
    phase.seconds = time.monotonic() - t0
    phase.server_cpu = cpu_seconds(server.pids()) - cpu0
    phase.client_cpu = _client_cpu() - ccpu0
    return phase


async def run_load(server: Server, connections: int, seconds: float) -> list[Phase]:
    from websockets.asyncio.client import connect

    phases: list[Phase] = []
    eps: list[Endpoint] = []
    sem = asyncio.Semaphore(50)  # handshakes in flight

    connect_phase = Phase("connect")

    async def open_one(i: int) -> Endpoint:
        async with sem:
            start = time.monotonic()
            ws = await asyncio.wait_for(
                connect(server.url, subprotocols=["sip"], compression=None, ping_interval=None,  # type: ignore[list-item]
                        open_timeout=OP_TIMEOUT, max_size=65536),
                OP_TIMEOUT + 1,
            )
            connect_phase.latencies.append(time.monotonic() - start)
            return Endpoint(ws, f"u{i}")

    try:
        cpu0, ccpu0, t0 = cpu_seconds(server.pids()), _client_cpu(), time.monotonic()
        results = await asyncio.gather(*(open_one(i) for i in range(connections)), return_exceptions=True)
        connect_phase.seconds = time.monotonic() - t0
        connect_phase.server_cpu = cpu_seconds(server.pids()) - cpu0
        connect_phase.client_cpu = _client_cpu() - ccpu0
        for r in results:
            if isinstance(r, Endpoint):
                eps.append(r)
                connect_phase.ops += 1
            else:
                connect_phase.failed += 1
                connect_phase.note = connect_phase.note or f"{type(r).__name__}: {r}"[:160]
        phases.append(connect_phase)
        if not eps:
            return phases
        # everybody registers once (the callees must be reachable), then the timed loop
        await asyncio.wait_for(asyncio.gather(*(e.register() for e in eps)), OP_TIMEOUT * 4)
        phases.append(await _measure(Phase("register"), server, [e.register for e in eps], seconds))
        pairs = [(eps[i], eps[i + 1]) for i in range(0, len(eps) - 1, 2)]
        work: list[Callable[[], Awaitable[None]]] = [functools.partial(a.call, b.user) for a, b in pairs]
        phases.append(await _measure(Phase("call"), server, work, seconds))
    finally:
        await asyncio.gather(*(e.close() for e in eps), return_exceptions=True)
    return phases


# ---------------------------------------------------------------------------------------
# report


def report(results: dict[str, tuple[Server, list[Phase]]], connections: int) -> str:
    lines = [f"## SIP over WebSocket: {connections} connections, closed loop", ""]
    for name, (server, _) in results.items():
        lines.append(f"- {name}: {server.description}")
    lines += ["", "| server | load | ops/s | ok | failed | p50 ms | p99 ms | server CPU s/1000 ops | client CPU % |",
              "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name, (_, phases) in results.items():
        for p in phases:
            client = p.client_cpu / p.seconds * 100 if p.seconds else 0
            lines.append(f"| {name} | {p.name} | {p.rate:.0f} | {p.ops} | {p.failed} | "
                         f"{p.pct(0.5):.1f} | {p.pct(0.99):.1f} | {p.cpu_per_1000:.2f} | {client:.0f} |")
    if {"sipedge", "kamailio"} <= results.keys():
        lines += ["", "| load | sipedge/kamailio ops/s | sipedge/kamailio CPU per op |", "|---|---:|---:|"]
        kam = {p.name: p for p in results["kamailio"][1]}
        for p in results["sipedge"][1]:
            k = kam.get(p.name)
            if k is None or not k.rate:
                continue
            cpu = f"{p.cpu_per_1000 / k.cpu_per_1000:.2f}" if k.cpu_per_1000 >= 0.01 else "-"
            lines.append(f"| {p.name} | {p.rate / k.rate:.2f} | {cpu} |")
    notes = [f"- {n}/{p.name}: {p.note}" for n, (_, ps) in results.items() for p in ps if p.note]
    if notes:
        lines += ["", "First errors:", *notes]
    lines += ["", "The load client is one Python process on the same 2-core machine; a client CPU",
              "near 100% means the client, not the server, set the pace."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--servers", default="sipedge,kamailio", help="comma-separated: sipedge, kamailio")
    ap.add_argument("--connections", type=int, default=200, help="concurrent WebSocket connections (<= 2000)")
    ap.add_argument("--seconds", type=float, default=5.0, help="duration of each timed phase (<= 60)")
    ap.add_argument("--kamailio-children", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--sipedge", default=str(Path(sys.executable).parent / "sipedge"))
    ap.add_argument("--markdown", type=Path, help="also write the report to this file")
    args = ap.parse_args(argv)
    connections = max(2, min(args.connections, 2000))
    seconds = max(1.0, min(args.seconds, 60.0))
    users = [f"u{i}" for i in range(connections)]
    try:
        import uvloop

        run: Callable[[Any], Any] = uvloop.run
    except ImportError:
        run = asyncio.run
    results: dict[str, tuple[Server, list[Phase]]] = {}
    for name in [s.strip() for s in args.servers.split(",") if s.strip()]:
        with tempfile.TemporaryDirectory(prefix=f"ws-bench-{name}-") as tmp:
            server: Server | None = None
            try:
                if name == "kamailio":
                    server = KamailioWs(Path(tmp), users, args.kamailio_children)
                elif name == "sipedge":
                    server = SipedgeWs(Path(tmp), users, args.sipedge)
                else:
                    print(f"unknown server {name!r}", file=sys.stderr)
                    return 2
                print(f"{name}: {server.description} at {server.url}", file=sys.stderr)
                results[name] = (server, run(run_load(server, connections, seconds)))
            except Skip as e:
                print(f"{name}: skipped: {e}", file=sys.stderr)
            finally:
                if server is not None:
                    server.stop()
    text = report(results, connections)
    print(text)
    if args.markdown:
        args.markdown.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
