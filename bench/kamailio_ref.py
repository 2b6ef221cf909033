"""Debian ``kamailio`` as a reference registrar + stateful proxy on loopback.

Used two ways:

* by ``tests/integration/test_sipp_kamailio_ref.py`` to prove the SIPp scenarios under
  ``tests/sipp/`` against a known-good server, and
* by ``bench/sip_bench.py`` as the yardstick sipedge is measured against.

The configuration is written here (nothing from the Debian examples is used): usrloc in
memory, registrar, tm (stateful relay), rr (Record-Route / loose routing), sl, maxfwd,
sanity, textops, siputils; digest auth through the ``auth`` module with plain passwords kept
in an in-memory ``htable`` (no database), so both servers under test look up a subscriber
table and check an MD5 digest with ``qop=auth``.

Usage::

    with KamailioRef(users={"alice": "secret"}, domain="bench.test") as k:
        print(k.host, k.port)          # answers OPTIONS on udp:127.0.0.1:<port>
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

__all__ = [
    "KamailioError",
    "KamailioRef",
    "descendants",
    "free_port",
    "kamailio_bin",
    "render_config",
    "sip_exchange",
    "sip_ping",
]

_MODULES = (
    "kex", "corex", "tm", "tmx", "sl", "rr", "pv", "maxfwd", "usrloc", "registrar",
    "textops", "siputils", "xlog", "sanity", "auth", "htable",
)  # fmt: skip


class KamailioError(RuntimeError):
    """Kamailio did not start, or did not answer in time."""


def kamailio_bin() -> str | None:
    """Path of the kamailio binary (Debian puts it in /usr/sbin)."""
    return shutil.which("kamailio") or shutil.which("kamailio", path="/usr/sbin:/sbin")


def _module_dir() -> str:
    for pattern in ("/usr/lib/*/kamailio/modules", "/usr/lib/kamailio/modules",
                    "/usr/local/lib*/kamailio/modules"):
        for d in sorted(glob.glob(pattern)):
            if os.path.exists(os.path.join(d, "tm.so")):
                return d
    raise KamailioError("kamailio modules not found (apt-get install kamailio)")


def free_port(host: str = "127.0.0.1", transports: Iterable[str] = ("udp", "tcp")) -> int:
    """A port currently free on ``host`` for every transport given (bind 0, read, close)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    kinds = {"udp": socket.SOCK_DGRAM, "tcp": socket.SOCK_STREAM, "tls": socket.SOCK_STREAM}
    wanted = [kinds[t] for t in transports]
    for _ in range(50):
        with socket.socket(family, wanted[0] if wanted else socket.SOCK_DGRAM) as s:
            s.bind((host, 0))
            port = int(s.getsockname()[1])
        ok = True
        for kind in wanted[1:]:
            with socket.socket(family, kind) as s2:
                try:
                    s2.bind((host, port))
                except OSError:
                    ok = False
                    break
        if ok:
            return port
    raise OSError(f"no port free for {list(transports)} on {host}")


def _quote(s: str) -> str:
    """A Kamailio config string literal."""
    if any(c in s for c in "\"\\\r\n"):
        raise ValueError(f"unsupported character in {s!r}")
    return f'"{s}"'


def render_config(
    *,
    domain: str,
    users: dict[str, str],
    auth_register: bool = True,
    auth_invite: bool = True,
    children: int = 2,
    module_dir: str | None = None,
    tls_config: str | None = None,
    sbc_db: str | None = None,
) -> str:
    """The kamailio.cfg text. Listeners come from the command line (``-l``).

    ``sbc_db``: a db_text directory: the session-border duties on as well, dialog
    tracking (``dlg_manage``), accounting of every call to the log (``acc``, missed
    calls too) and topology hiding (``topos``, stored in that db_text directory)."""
    mdir = module_dir or _module_dir()
    modules = (*_MODULES, "tls") if tls_config else _MODULES
    if sbc_db:
        modules = (*modules, "db_text", "dialog", "acc", "topos")
    loads = "\n".join(f'loadmodule "{m}.so"' for m in modules)
    tls = "enable_tls=yes\n" if tls_config else ""
    tls_params = f'modparam("tls", "config", {_quote(tls_config)})\n' if tls_config else ""
    fill = "\n".join(f"\t$sht(users=>{u}) = {_quote(p)};" for u, p in users.items())
    # pv_auth_check: plain password from the htable; check 1 = the digest user must be the
    # To user (REGISTER) or From user (others). auth_challenge flag 1 = qop=auth.
    reg_block = (
        '\t\tif ($au == $null || !pv_auth_check("$td", "$sht(users=>$au)", "0", "1")) {\n'
        '\t\t\tauth_challenge("$td", "1");\n\t\t\texit;\n\t\t}\n'
        if auth_register else ""
    )
    inv_block = (
        '\tif (is_method("INVITE") && from_uri==myself) {\n'
        '\t\tif ($au == $null || !pv_auth_check("$fd", "$sht(users=>$au)", "0", "1")) {\n'
        '\t\t\tauth_challenge("$fd", "1");\n\t\t\texit;\n\t\t}\n'
        '\t\tconsume_credentials();\n\t}\n'
        if auth_invite else ""
    )
    sbc_params = (
        'modparam("dialog", "dlg_flag", 4)\nmodparam("dialog", "default_timeout", 3600)\n'
        'modparam("acc", "log_flag", 1)\nmodparam("acc", "log_missed_flag", 2)\n'
        'modparam("acc", "failed_transaction_flag", 3)\nmodparam("acc", "log_level", 1)\n'
        f'modparam("topos", "db_url", {_quote("text://" + sbc_db)})\n'
        if sbc_db else ""
    )
    sbc_block = (
        '\tif (is_method("INVITE")) {\n\t\tdlg_manage();\n\t\tsetflag(1);\n\t\tsetflag(2);\n'
        '\t\tsetflag(3);\n\t}\n'
        if sbc_db else ""
    )
    return f"""#!KAMAILIO
# written by sipedge bench/kamailio_ref.py: reference registrar + stateful proxy
debug=1
log_stderror=yes
memdbg=5
memlog=5
children={children}
tcp_children={children}
auto_aliases=no
alias={_quote(domain)}
dns=no
rev_dns=no
use_dns_cache=no
{tls}server_header="Server: kamailio-ref"
user_agent_header="User-Agent: kamailio-ref"

mpath={_quote(mdir)}
{loads}

modparam("tm", "fr_timer", 5000)
modparam("tm", "fr_inv_timer", 30000)
modparam("rr", "enable_full_lr", 1)
modparam("rr", "append_fromtag", 1)
modparam("usrloc", "db_mode", 0)
modparam("registrar", "min_expires", 60)
modparam("registrar", "max_expires", 3600)
modparam("registrar", "default_expires", 3600)
modparam("registrar", "max_contacts", 10)
modparam("auth", "nonce_expire", 300)
modparam("htable", "htable", "users=>size=10;")
{tls_params}{sbc_params}

event_route[htable:mod-init] {{
{fill}
}}

request_route {{
\tif (!mf_process_maxfwd_header("10")) {{
\t\tsl_send_reply("483", "Too Many Hops");
\t\texit;
\t}}
\tif (!sanity_check()) {{
\t\texit;
\t}}
\tif (is_method("OPTIONS") && uri==myself && $rU==$null) {{
\t\tsl_send_reply("200", "OK");
\t\texit;
\t}}
\tif (has_totag()) {{
\t\tif (loose_route()) {{
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
{reg_block}
\t\tif (!save("location")) {{
\t\t\tsl_reply_error();
\t\t}}
\t\texit;
\t}}
{inv_block}
\tif (is_method("INVITE|SUBSCRIBE")) {{
\t\trecord_route();
\t}}
{sbc_block}\tif (uri!=myself) {{
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
"""


def sip_exchange(host: str, port: int, request: Callable[[str, int], str],
                 timeout: float) -> bytes | None:
    """Send one SIP request over UDP and return the first response's bytes (or None).

    ``request(local_host, local_port)`` builds the message text (CRLF line ends).
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        s.bind((host, 0))
        lport = int(s.getsockname()[1])
        s.settimeout(timeout)
        h = f"[{host}]" if ":" in host else host
        try:
            s.sendto(request(h, lport).encode(), (host, port))
            deadline = time.monotonic() + timeout
            while True:
                s.settimeout(max(0.01, deadline - time.monotonic()))
                data = s.recv(65535)
                if data.startswith(b"SIP/2.0 1"):
                    continue  # provisional
                return data if data.startswith(b"SIP/2.0 ") else None
        except OSError:  # timeout, or ICMP port unreachable surfaced as ECONNREFUSED
            return None


def sip_ping(host: str, port: int, timeout: float) -> bool:
    """True when something answers a SIP OPTIONS on udp host:port within ``timeout``."""
    tag = uuid.uuid4().hex[:10]

    def options(h: str, lport: int) -> str:
        return (
            f"OPTIONS sip:{h}:{port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {h}:{lport};branch=z9hG4bK{tag};rport\r\n"
            "Max-Forwards: 70\r\n"
            f"From: <sip:probe@{h}>;tag={tag}\r\n"
            f"To: <sip:{h}:{port}>\r\n"
            f"Call-ID: {tag}@{h}\r\n"
            "CSeq: 1 OPTIONS\r\n"
            "Content-Length: 0\r\n\r\n"
        )

    return sip_exchange(host, port, options, timeout) is not None


@dataclass
class KamailioRef:
    """A kamailio process with a generated config, listening on loopback.

    ``transports`` udp and tcp share ``port`` (``udp`` is always included: the readiness
    probe uses it); ``tls`` listens on ``tls_port`` with a generated self-signed
    certificate and does not check peers' certificates. Paths handed to kamailio are
    absolute (``-w`` changes its directory).
    """

    domain: str = "127.0.0.1"
    users: dict[str, str] = field(default_factory=dict)
    host: str = "127.0.0.1"
    port: int = 0
    transports: tuple[str, ...] = ("udp", "tcp")
    auth_register: bool = True
    auth_invite: bool = True
    children: int = 2
    shm_mb: int = 64
    tls_port: int = 0
    sbc: bool = False  # dialog + acc + topos (render_config's sbc_db)
    workdir: Path | None = None
    proc: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)
    _tmp: tempfile.TemporaryDirectory[str] | None = field(default=None, init=False, repr=False)

    @property
    def pid(self) -> int:
        if self.proc is None:
            raise KamailioError("kamailio is not running")
        return self.proc.pid

    @property
    def target(self) -> str:
        h = f"[{self.host}]" if ":" in self.host else self.host
        return f"{h}:{self.port}"

    @property
    def log_path(self) -> Path:
        assert self.workdir is not None
        return self.workdir / "kamailio.log"

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def start(self, timeout: float = 10.0) -> KamailioRef:
        binary = kamailio_bin()
        if binary is None:
            raise KamailioError("kamailio not installed (apt-get install kamailio)")
        if self.workdir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="kamailio-ref-")
            self.workdir = Path(self._tmp.name)
        wd = self.workdir.resolve()
        self.workdir = wd
        transports = tuple(dict.fromkeys(("udp", *self.transports)))
        plain = tuple(t for t in transports if t != "tls")
        if not self.port:
            self.port = free_port(self.host, plain)
        tls_cfg: Path | None = None
        if "tls" in transports:
            if not self.tls_port:
                self.tls_port = free_port(self.host, ("tcp",))
            tls_cfg = self._write_tls(wd)
        sbc_db: str | None = None
        if self.sbc:
            db = wd / "dbtext"
            if not db.exists():
                shutil.copytree("/usr/share/kamailio/dbtext/kamailio", db)
            sbc_db = str(db)
        cfg = wd / "kamailio.cfg"
        cfg.write_text(
            render_config(
                domain=self.domain,
                users=self.users,
                auth_register=self.auth_register,
                auth_invite=self.auth_invite,
                children=self.children,
                tls_config=str(tls_cfg) if tls_cfg else None,
                sbc_db=sbc_db,
            )
        )
        h = f"[{self.host}]" if ":" in self.host else self.host
        cmd = [binary, "-DD", "-E", "-f", str(cfg), "-P", str(wd / "kamailio.pid"),
               "-w", str(wd), "-Y", str(wd), "-m", str(self.shm_mb), "-M", "8"]
        for t in transports:
            cmd += ["-l", f"{t}:{h}:{self.tls_port if t == 'tls' else self.port}"]
        log = open(self.log_path, "wb")  # noqa: SIM115 - handed to the child
        try:
            self.proc = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                cwd=wd, start_new_session=True,
            )
        finally:
            log.close()
        deadline = time.monotonic() + timeout
        try:
            while True:
                if self.proc.poll() is not None:
                    raise KamailioError(
                        f"kamailio exited with {self.proc.returncode}:\n{self.log_tail()}"
                    )
                if sip_ping(self.host, self.port, 0.2):
                    return self
                if time.monotonic() > deadline:
                    raise KamailioError(f"kamailio did not answer OPTIONS:\n{self.log_tail()}")
        except BaseException:
            self.stop()
            raise

    def _write_tls(self, wd: Path) -> Path:
        from .sipp_runner import self_signed

        cert, key = self_signed(wd / "tls", self.host)
        path = wd / "tls.cfg"
        path.write_text(
            "[server:default]\nmethod = TLSv1.2+\nverify_certificate = no\n"
            f"require_certificate = no\nprivate_key = {key}\ncertificate = {cert}\n\n"
            "[client:default]\nmethod = TLSv1.2+\nverify_certificate = no\n"
            "require_certificate = no\n"
        )
        return path

    @property
    def tls_target(self) -> str:
        h = f"[{self.host}]" if ":" in self.host else self.host
        return f"{h}:{self.tls_port}"

    def process_ids(self) -> list[int]:
        """The main process and all its descendants (kamailio forks its workers)."""
        if self.proc is None:
            return []
        return descendants(self.proc.pid)

    def stop(self, timeout: float = 5.0) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait(timeout)
        if proc is not None:
            # workers left behind by a crashed main process share its process group
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None
            self.workdir = None

    def __enter__(self) -> KamailioRef:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def descendants(pid: int) -> list[int]:
    """``pid`` and every process below it, read from /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(b")") + 2 :].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, ()))
    return out
