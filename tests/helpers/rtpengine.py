"""Debian's ``rtpengine-daemon`` as a reference media relay for tests: userspace only
(``--table=-1``), on loopback (or one address of a test's network namespace), with an ng
control port."""

from __future__ import annotations

import contextlib
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

from helpers.ports import free_port

RTPENGINE = shutil.which("rtpengine") or "/usr/bin/rtpengine"
INSTALLED = Path(RTPENGINE).exists()


def _pings(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(0.2)
        s.sendto(b"probe d7:command4:pinge", (host, port))
        try:
            return b"pong" in s.recv(2048)
        except OSError:
            return False


def wait_pong(ng_port: int, proc: subprocess.Popen[bytes], log: Path, timeout: float = 10.0,
              host: str = "127.0.0.1") -> None:
    """Until the ng relay run by ``proc`` (rtpengine or ``sipedge media serve``) answers ping."""
    deadline = time.monotonic() + timeout
    while not _pings(ng_port, host):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{proc.args[0]} did not answer ng ping: " + log.read_text(errors="replace")[-2000:])


@contextlib.contextmanager
def running_rtpengine(tmp: Path, port_min: int, port_max: int, host: str = "127.0.0.1") -> Iterator[int]:
    """rtpengine relaying on ``host`` ports ``port_min``..``port_max``, its ng socket on
    ``host`` too; yields its ng port. Its log is ``tmp/rtpengine.log``.
    Deleted calls go at once (``--delete-delay=0``; the default keeps them 30 s)."""
    ng_port = free_port(host)
    conf = tmp / "rtpengine.conf"
    conf.write_text("[rtpengine]\n")
    log = tmp / "rtpengine.log"
    proc = subprocess.Popen(
        [RTPENGINE, "--config-file", str(conf), "--foreground", f"--interface={host}",
         f"--listen-ng={host}:{ng_port}", f"--port-min={port_min}", f"--port-max={port_max}", "--table=-1",
         "--delete-delay=0", "--log-level=6", "--log-stderr", f"--pidfile={tmp}/rtpengine.pid"],
        stdout=subprocess.DEVNULL, stderr=log.open("wb"),
    )
    try:
        wait_pong(ng_port, proc, log, host=host)
        yield ng_port
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
