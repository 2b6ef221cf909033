"""Run the SIPp scenarios of ``tests/sipp/`` from Python (tests and benchmark).

``run_sipp`` runs one SIPp client to completion and returns what it counted;
``start_sipp`` starts a long-lived one (a UAS answering calls) to stop later.
Every run is bounded: ``-timeout`` on the SIPp side and a ``subprocess`` timeout here.

SIPp notes (3.6.1, Debian ``sip-tester``): built without TLS; ``-p`` must always be given
(it defaults to 5060); undefined ``-key`` names abort the run, so pass every key a
scenario's header comment lists.
"""

from __future__ import annotations

import contextlib
import csv
import os
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "SCENARIOS",
    "SippFlows",
    "StreamBridge",
    "self_signed",
    "tls_client_context",
    "tls_server_context",
    "SippError",
    "SippResult",
    "read_rtt",
    "sipp_bin",
    "sipp_command",
    "run_sipp",
    "start_sipp",
    "stop_process",
]

SCENARIOS = Path(__file__).resolve().parent.parent / "tests" / "sipp"

_TRANSPORT = {"udp": "u1", "tcp": "t1", "tls": "l1"}


class SippError(RuntimeError):
    """SIPp could not be run at all (missing binary, bad arguments)."""


def sipp_bin() -> str | None:
    return shutil.which("sipp")


@dataclass
class SippResult:
    """Outcome of one SIPp run."""

    returncode: int
    successful: int
    failed: int
    created: int
    elapsed: float
    stdout: str
    stderr: str
    workdir: Path
    rtt_ms: dict[int, list[float]] = field(default_factory=dict)
    errors: str = ""
    retransmissions: int = 0  # messages SIPp sent again for want of an answer in time

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and self.failed == 0 and self.successful > 0

    def explain(self) -> str:
        """A failure description worth printing in an assertion."""
        tail = "\n".join(self.stdout.splitlines()[-25:])
        return (
            f"sipp rc={self.returncode} ok={self.successful} failed={self.failed}\n"
            f"--- stderr\n{self.stderr[-2000:]}\n--- errors\n{self.errors[-4000:]}\n"
            f"--- screen\n{tail}"
        )


def sipp_command(
    scenario: str,
    target: str,
    *,
    local_port: int,
    local_ip: str = "127.0.0.1",
    transport: str = "udp",
    service: str | None = None,
    auth: tuple[str, str] | None = None,
    keys: dict[str, str] | None = None,
    inf: Path | None = None,
    calls: int | None = 1,
    rate: float | None = None,
    rate_period_ms: int = 1000,
    limit: int | None = None,
    timeout: float = 20.0,
    recv_timeout_ms: int | None = 5000,
    call_duration_ms: int | None = None,
    extra: Sequence[str] = (),
) -> list[str]:
    """The sipp argument list for ``scenario`` (a file name in ``SCENARIOS`` or a path)."""
    binary = sipp_bin()
    if binary is None:
        raise SippError("sipp not installed (apt-get install sip-tester)")
    if transport not in _TRANSPORT:
        raise SippError(f"transport {transport!r}: one of udp, tcp")
    path = Path(scenario)
    if not path.is_absolute() and not path.exists():
        path = SCENARIOS / scenario
    cmd = [binary, "-sf", str(path.resolve()), "-i", local_ip, "-p", str(local_port),
           "-t", _TRANSPORT[transport], "-timeout", f"{max(1, int(timeout))}s",
           "-timeout_error", "-nostdin", "-trace_err", "-trace_stat", "-fd", "1"]
    if target:
        cmd.append(target)
    if service is not None:
        cmd += ["-s", service]
    if auth is not None:
        cmd += ["-au", auth[0], "-ap", auth[1]]
    for k, v in (keys or {}).items():
        cmd += ["-key", k, v]
    if inf is not None:
        cmd += ["-inf", str(inf)]
    if calls is not None:
        cmd += ["-m", str(calls)]
    if rate is not None:
        cmd += ["-r", f"{rate:g}", "-rp", str(rate_period_ms)]
    if limit is not None:
        cmd += ["-l", str(limit)]
    if recv_timeout_ms is not None:
        cmd += ["-recv_timeout", str(recv_timeout_ms)]
    if call_duration_ms is not None:
        cmd += ["-d", str(call_duration_ms)]
    cmd += list(extra)
    return cmd


def _stat_counts(workdir: Path) -> tuple[int, int, int, int]:
    """(successful, failed, created, retransmissions) from the last line of the
    -trace_stat CSV (``Retransmissions(C)``: SIPp's own resends, cumulative)."""
    files = sorted(workdir.glob("*_.csv")) + sorted(workdir.glob("*_[0-9]*_.csv"))
    rows: list[dict[str, str]] = []
    for f in files:
        with open(f, newline="") as fh:
            rows.extend(csv.DictReader(fh, delimiter=";"))
    if not rows:
        return 0, 0, 0, 0
    last = rows[-1]

    def num(name: str) -> int:
        try:
            return int(last.get(name, "0") or 0)
        except ValueError:
            return 0

    return (num("SuccessfulCall(C)"), num("FailedCall(C)"), num("TotalCallCreated"),
            num("Retransmissions(C)"))


def read_rtt(workdir: Path) -> dict[int, list[float]]:
    """Response times (ms) per rtd number from ``-trace_rtt`` files in ``workdir``."""
    out: dict[int, list[float]] = {}
    for f in sorted(workdir.glob("*_rtt.csv")):
        with open(f, newline="") as fh:
            for row in csv.reader(fh, delimiter=";"):
                if len(row) < 3 or not row[1].replace(".", "", 1).isdigit():
                    continue
                try:
                    out.setdefault(int(row[2]), []).append(float(row[1]))
                except ValueError:
                    continue
    return out


def run_sipp(scenario: str, target: str, *, workdir: Path | None = None,
             trace_rtt: bool = False, **kw: Any) -> SippResult:
    """Run sipp to completion; never raises on call failures (see ``SippResult.ok``).

    ``kw`` are ``sipp_command`` arguments.
    """
    timeout = float(kw.get("timeout", 20.0))
    own_tmp = workdir is None
    wd = Path(tempfile.mkdtemp(prefix="sipp-")) if workdir is None else workdir
    wd.mkdir(parents=True, exist_ok=True)
    extra = list(kw.pop("extra", ()))
    if trace_rtt:
        extra += ["-trace_rtt", "-rtt_freq", "1"]
    cmd = sipp_command(scenario, target, extra=extra, **kw)
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=wd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout + 10)
    except subprocess.TimeoutExpired:
        stop_process(proc)
        out, err = proc.communicate()
    elapsed = time.monotonic() - t0
    ok, failed, created, resent = _stat_counts(wd)
    errors = "".join(p.read_text(errors="replace") for p in sorted(wd.glob("*_errors.log")))
    result = SippResult(
        returncode=proc.returncode if proc.returncode is not None else -9,
        successful=ok, failed=failed, created=created, elapsed=elapsed,
        stdout=out.decode(errors="replace"), stderr=err.decode(errors="replace"),
        workdir=wd, rtt_ms=read_rtt(wd) if trace_rtt else {}, errors=errors,
        retransmissions=resent,
    )
    if own_tmp and result.ok:
        shutil.rmtree(wd, ignore_errors=True)
    return result


def start_sipp(scenario: str, *, workdir: Path, **kw: Any) -> subprocess.Popen[bytes]:
    """Start a long-running sipp (e.g. ``uas_answer.xml``) in its own process group.

    Output goes to ``workdir``; stop it with ``stop_process``.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    kw.setdefault("calls", None)
    cmd = sipp_command(scenario, "", **kw)
    with open(workdir / "sipp-uas.out", "wb") as out:
        proc = subprocess.Popen(cmd, cwd=workdir, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    time.sleep(0.05)
    if proc.poll() is not None:
        raise SippError(
            f"sipp exited at once ({proc.returncode}): "
            + (workdir / "sipp-uas.out").read_text(errors="replace")[-2000:]
        )
    return proc


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 5.0) -> None:
    """Stop a process started in its own session, then make sure its group is gone."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    if proc.poll() is None:
        proc.wait(timeout)


class SippFlows:
    """The issue's SIPp flows against one server, each a call to ``run_sipp``.

    ``target`` is ``host:port`` of the registrar/proxy for ``transport`` (for ``tls``:
    its TLS listener); ``domain`` the SIP domain its subscribers live in. Digest URIs are
    forced to the Request-URI (``-auth_uri``), since SIPp would otherwise use the server's
    address. Every run keeps its work directory (``-trace_msg``, errors) under ``root``.

    ``tls``: SIPp has no TLS, so SIPp clients talk TCP to a ``StreamBridge`` that opens
    TLS to the server, and ``start_uas`` puts a TLS-in/TCP-out bridge in front of the UAS
    (the Contact then says ``;transport=tls``). Call ``close()`` (or use ``with``) to stop
    the bridges.
    """

    def __init__(self, target: str, domain: str, root: Path, *, transport: str = "udp",
                 local_ip: str = "127.0.0.1", timeout: float = 10.0) -> None:
        if transport not in ("udp", "tcp", "tls"):
            raise SippError(f"transport {transport!r}: one of udp, tcp, tls")
        self.target = target
        self.domain = domain
        self.root = root
        self.transport = transport
        self.sipp_transport = "tcp" if transport == "tls" else transport
        self.local_ip = local_ip
        self.timeout = timeout
        self._n = 0
        self._bridges: list[StreamBridge] = []
        self._sipp_target = target
        if transport == "tls":
            host, _, port = target.rpartition(":")
            bridge = StreamBridge((host.strip("[]"), int(port)), listen_host=local_ip,
                                  upstream_ssl=tls_client_context()).start()
            self._bridges.append(bridge)
            lh = f"[{local_ip}]" if ":" in local_ip else local_ip
            self._sipp_target = f"{lh}:{bridge.port}"

    def close(self) -> None:
        for b in self._bridges:
            b.stop()
        self._bridges.clear()

    def __enter__(self) -> SippFlows:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _workdir(self, name: str) -> Path:
        self._n += 1
        return self.root / f"{self._n:03d}-{name}-{self.transport}"

    def _run(self, scenario: str, **kw: Any) -> SippResult:
        kw.setdefault("transport", self.sipp_transport)
        kw.setdefault("local_ip", self.local_ip)
        kw.setdefault("timeout", self.timeout)
        kw.setdefault("local_port", _free_port(self.local_ip, str(kw["transport"])))
        extra = ["-trace_msg", *kw.pop("extra", ())]
        return run_sipp(scenario, self._sipp_target,
                        workdir=self._workdir(Path(scenario).stem),
                        extra=extra, **kw)

    def register(self, user: str, password: str, contact: str, *,
                 expires: int = 3600) -> SippResult:
        """REGISTER -> 401 -> REGISTER with digest -> 200 (expires 0: de-REGISTER)."""
        return self._run("register_auth.xml", service=user, auth=(user, password),
                         keys={"domain": self.domain, "contact": contact,
                               "expires": str(expires)},
                         extra=["-auth_uri", self.domain])

    def register_cycle(self, user: str, password: str, contact: str) -> SippResult:
        """Register, refresh, remove the contact, remove all (``*``) on one Call-ID."""
        return self._run("register_cycle.xml", service=user, auth=(user, password),
                         keys={"domain": self.domain, "contact": contact},
                         extra=["-auth_uri", self.domain])

    def call(self, caller: str, password: str, callee: str, *,
             talk_ms: int = 0, calls: int = 1, rate: float | None = None) -> SippResult:
        """INVITE (407 answered) -> 180 -> 200 -> ACK -> BYE -> 200; ``calls`` of them at
        ``rate`` calls a second."""
        return self._run("uac_call.xml", service=callee, auth=(caller, password),
                         keys={"domain": self.domain, "caller": caller},
                         call_duration_ms=talk_ms, calls=calls, rate=rate,
                         extra=["-auth_uri", f"{callee}@{self.domain}"])

    def cancel(self, caller: str, password: str, callee: str) -> SippResult:
        """INVITE -> 180 -> CANCEL -> 200 + 487 -> ACK (callee: uas_answer.xml)."""
        return self._run("uac_cancel.xml", service=callee, auth=(caller, password),
                         keys={"domain": self.domain, "caller": caller},
                         extra=["-auth_uri", f"{callee}@{self.domain}"])

    def expect(self, caller: str, password: str, callee: str, status: int) -> SippResult:
        """An INVITE whose final status must be ``status`` (407: no credentials sent)."""
        return self._run("uac_expect.xml", service=callee, auth=(caller, password),
                         keys={"domain": self.domain, "caller": caller,
                               "expect": str(status)},
                         extra=["-auth_uri", f"{callee}@{self.domain}"])

    def start_uas(self, port: int | None = None) -> tuple[subprocess.Popen[bytes], str]:
        """Start ``uas_answer.xml``; returns (process, Contact text after ``user@``)."""
        port = port or _free_port(self.local_ip, self.sipp_transport)
        wd = self._workdir("uas")
        proc = start_sipp("uas_answer.xml", workdir=wd, local_port=port,
                          local_ip=self.local_ip, transport=self.sipp_transport,
                          timeout=max(self.timeout, 60.0), recv_timeout_ms=None,
                          extra=["-trace_msg"])
        host = f"[{self.local_ip}]" if ":" in self.local_ip else self.local_ip
        if self.transport == "udp":
            return proc, f"{host}:{port}"
        if self.transport == "tcp":
            return proc, f"{host}:{port};transport=tcp"
        cert, key = self_signed(self.root / "tls", self.local_ip)
        bridge = StreamBridge((self.local_ip, port), listen_host=self.local_ip,
                              listen_ssl=tls_server_context(cert, key)).start()
        self._bridges.append(bridge)
        return proc, f"{host}:{bridge.port};transport=tls"


def _free_port(host: str, transport: str) -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    kind = socket.SOCK_DGRAM if transport == "udp" else socket.SOCK_STREAM
    with socket.socket(family, kind) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


# ---------------------------------------------------------------------------------------
# TLS: this SIPp has no TLS, so stream bridges carry its TCP over TLS.


def self_signed(directory: Path, host: str = "127.0.0.1") -> tuple[Path, Path]:
    """A throw-away self-signed certificate and key (PEM files) for ``host``."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    now = datetime.datetime.now(datetime.UTC)
    try:
        alt: x509.GeneralName = x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        alt = x509.DNSName(host)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.SubjectAlternativeName([alt]), critical=False)
        .sign(key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    cert_p, key_p = directory / "bridge-cert.pem", directory / "bridge-key.pem"
    cert_p.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_p.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                        serialization.PrivateFormat.PKCS8,
                                        serialization.NoEncryption()))
    return cert_p, key_p


class StreamBridge:
    """Accept connections on ``listen`` and pipe each to a new connection to ``upstream``.

    Either side may be TLS: ``listen_ssl`` (a server context) makes the listener TLS,
    ``upstream_ssl`` (a client context) makes the upstream connection TLS. One thread per
    direction and connection; ``stop()`` closes everything. For SIPp, which has no TLS:

    * caller side: SIPp ``-t t1`` to a bridge (plain TCP in, TLS out to the server);
    * callee side: the server connects over TLS to a bridge (TLS in, plain TCP out to a
      SIPp UAS); register the bridge's address with ``;transport=tls``.

    SIPp still writes ``SIP/2.0/TCP`` in its Via and Contact; replies travel back on the
    same connection, as RFC 3261 §18 wants for streams.
    """

    def __init__(self, upstream: tuple[str, int], *, listen_host: str = "127.0.0.1",
                 listen_port: int = 0, listen_ssl: ssl.SSLContext | None = None,
                 upstream_ssl: ssl.SSLContext | None = None) -> None:
        self.upstream = upstream
        self.listen_ssl = listen_ssl
        self.upstream_ssl = upstream_ssl
        family = socket.AF_INET6 if ":" in listen_host else socket.AF_INET
        self._sock = socket.socket(family, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind((listen_host, listen_port))
        self._sock.listen(64)
        self._sock.settimeout(0.2)
        self.port = int(self._sock.getsockname()[1])
        self._stop = threading.Event()
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self.connections = 0
        self.errors: list[str] = []

    def start(self) -> StreamBridge:
        t = threading.Thread(target=self._accept_loop, name="bridge-accept", daemon=True)
        t.start()
        self._threads.append(t)
        return self

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            t = threading.Thread(target=self._serve, args=(conn,), name="bridge-conn",
                                 daemon=True)
            t.start()
            self._threads.append(t)

    def _serve(self, conn: socket.socket) -> None:
        down: socket.socket = conn
        try:
            conn.settimeout(10)
            if self.listen_ssl is not None:
                down = self.listen_ssl.wrap_socket(conn, server_side=True)
            up: socket.socket = socket.create_connection(self.upstream, timeout=10)
            if self.upstream_ssl is not None:
                up = self.upstream_ssl.wrap_socket(up, server_hostname=self.upstream[0])
            down.settimeout(None)
            up.settimeout(None)
        except (OSError, ssl.SSLError) as exc:
            self.errors.append(f"bridge setup: {exc}")
            conn.close()
            return
        with self._lock:
            self._conns += [down, up]
            self.connections += 1
        t = threading.Thread(target=self._pump, args=(up, down), name="bridge-up",
                             daemon=True)
        t.start()
        self._threads.append(t)
        self._pump(down, up)

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except (OSError, ssl.SSLError):
            pass
        for s in (src, dst):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)

    def stop(self) -> None:
        self._stop.set()
        with contextlib.suppress(OSError):
            self._sock.close()
        with self._lock:
            conns, self._conns = self._conns, []
        for s in conns:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                s.close()
        for t in self._threads:
            t.join(2)

    def __enter__(self) -> StreamBridge:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def tls_client_context() -> ssl.SSLContext:
    """Client side of a bridge: TLS without certificate checks (self-signed servers)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def tls_server_context(cert: Path, key: Path) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    return ctx
