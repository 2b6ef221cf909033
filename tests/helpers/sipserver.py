"""Run a real ``sipedge serve`` process on free loopback ports for a test."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from .ports import free_port

SIPEDGE = str(Path(sys.executable).parent / "sipedge")


@dataclass
class Server:
    proc: subprocess.Popen[bytes]
    config: Path
    data_dir: Path
    host: str
    udp: int
    tcp: int
    tls: int
    log: Path
    ws: int = 0
    wss: int = 0
    http: int = 0
    workers: int = 1  # general.workers (docs/workers.md)

    def add_user(self, user: str, password: str) -> None:
        cli(["user", "add", f"{user}@{self.host}", "--password", password, "--config", str(self.config)])

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


def cli(args: list[str], check: bool = True, input_text: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [SIPEDGE, *args], capture_output=True, text=True, check=check, timeout=30, input=input_text
    )


def add_users(cfg: Path, host: str, users: dict[str, str]) -> None:
    """Add subscribers straight into the server's database (one process, fast; the CLI
    path is tested on its own)."""
    from sipedge.config import load_config
    from sipedge.store.backend import open_database
    from sipedge.store.sqlite import SqliteSubscriberStore

    db = open_database(load_config(cfg))
    try:
        store = SqliteSubscriberStore(db)
        for user, password in users.items():
            store.add(user, host, password)
    finally:
        db.close()


def write_config(
    tmp: Path, host: str = "127.0.0.1", extra: str = "", general: str = "", more_listen: tuple[str, ...] = (),
    sip: str = "", log_level: str = "debug", web: str = "",
) -> tuple[Path, int, int, int, int, int, int]:
    udp = free_port(host)
    tcp = udp  # same port number for UDP and TCP, as SIP servers usually do
    tls = free_port(host)
    ws, wss, http = free_port(host), free_port(host), free_port(host)
    data = tmp / "data"
    cfg = tmp / "sipedge.toml"
    h = f"[{host}]" if ":" in host else host
    cfg.write_text(
        f"""
[general]
data_dir = "{data}"
log_level = "{log_level}"
{general}

[sip]
listen = ["udp:{h}:{udp}", "tcp:{h}:{tcp}", "tls:{h}:{tls}", "ws:{h}:{ws}", "wss:{h}:{wss}"{"".join(f', "{li}"' for li in more_listen)}]
{sip}

[web]
listen = "{h}:{http}"
{web}

[sip.timers]
t1 = 0.1
{extra}
"""
    )
    return cfg, udp, tcp, tls, ws, wss, http


def wait_ready(host: str, port: int, proc: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
    """Until an OPTIONS over UDP gets any answer."""
    deadline = time.monotonic() + timeout
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    h = f"[{host}]" if ":" in host else host
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"sipedge exited with {proc.returncode}")
        with socket.socket(family, socket.SOCK_DGRAM) as s:
            s.settimeout(0.3)
            s.bind((host, 0))
            lport = s.getsockname()[1]
            msg = (
                f"OPTIONS sip:{h}:{port} SIP/2.0\r\nVia: SIP/2.0/UDP {h}:{lport};branch=z9hG4bKready{time.monotonic_ns()}\r\n"
                f"From: <sip:probe@{h}>;tag=p\r\nTo: <sip:{h}:{port}>\r\nCall-ID: ready{time.monotonic_ns()}\r\n"
                "CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
            )
            s.sendto(msg.encode(), (host, port))
            with contextlib.suppress(OSError):
                s.recvfrom(65535)
                return
    raise RuntimeError("sipedge did not answer OPTIONS in time")


def wait_http(host: str, port: int, timeout: float = 10.0) -> None:
    """Until the web port accepts a connection (it starts after SIP answers)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection((host, port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)


def wait_workers(server: Server, timeout: float = 20.0, log: Path | None = None) -> Server:
    """Until every worker of a supervisor has said it is ready in its log (``wait_ready``
    waits for one answer, which any worker may give); needs log level info or debug."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = (log or server.log).read_text(errors="replace")
        if all(f"sipedge ready (worker {w}," in text for w in range(server.workers)):
            return server
        if server.proc.poll() is not None:
            break
        time.sleep(0.05)
    raise RuntimeError(f"not every worker got ready: {server.log_text()[-2000:]}")


@contextlib.contextmanager
def running_server(
    tmp: Path, host: str = "127.0.0.1", extra: str = "", users: dict[str, str] | None = None, general: str = "",
    more_listen: tuple[str, ...] = (), sip: str = "", log_level: str = "debug", web: str = "",
) -> Iterator[Server]:
    """``sipedge serve`` on every transport; ``extra`` is appended to its TOML config,
    ``general`` goes into its ``[general]`` table, ``sip`` into its ``[sip]`` table,
    ``web`` into its ``[web]`` table and ``more_listen`` into ``sip.listen``.
    ``log_level`` "info" keeps a flood from being a flood of debug lines."""
    tmp.mkdir(parents=True, exist_ok=True)
    cfg, udp, tcp, tls, ws, wss, http = write_config(
        tmp, host, extra, general, more_listen, sip, log_level=log_level, web=web
    )
    log = tmp / "sipedge.log"
    data = tmp / "data"
    if users:
        add_users(cfg, host, users)
    with log.open("wb") as logf:
        proc = subprocess.Popen([SIPEDGE, "serve", "--config", str(cfg)], stdout=logf, stderr=subprocess.STDOUT, env=os.environ.copy())
        server = Server(proc, cfg, data, host, udp, tcp, tls, log, ws, wss, http)
        if m := re.search(r"^\s*workers\s*=\s*(\d+)", general, re.M):
            server.workers = int(m.group(1))
        try:
            try:
                wait_ready(host, udp, proc)
                if server.workers > 1 and log_level in ("debug", "info"):
                    wait_workers(server)
                if "enabled = false" not in web:
                    wait_http(host, http)
            except RuntimeError as exc:
                logf.flush()
                tail = log.read_text(errors="replace")[-2000:]
                raise RuntimeError(f"{exc}; its log ends:\n{tail}") from None
            yield server
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(5)


@contextlib.contextmanager
def restarted(server: Server, log: Path) -> Iterator[Server]:
    """Stop ``server`` (SIGTERM) and run ``sipedge serve`` again on its config and data
    directory, logging to ``log``; ``server.proc`` is the new process until it stops."""
    server.proc.send_signal(signal.SIGTERM)
    server.proc.wait(10)
    with log.open("wb") as logf:
        proc = subprocess.Popen([SIPEDGE, "serve", "--config", str(server.config)], stdout=logf,
                                stderr=subprocess.STDOUT, env=os.environ.copy())
        server.proc = proc
        try:
            wait_ready(server.host, server.udp, proc)
            if server.workers > 1:
                wait_workers(server, log=log)
            yield server
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                proc.wait(10)
