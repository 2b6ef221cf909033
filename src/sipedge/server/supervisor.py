"""The supervisor of ``general.workers`` SIP worker processes (docs/workers.md).

``sipedge serve`` with workers > 1 runs this instead of one App. It:

1. makes what every worker must share before any starts: the database schema, the
   digest-nonce key, the TLS certificate, the admin token;
2. binds every ``sip.listen`` entry once (port 0 is resolved here, once) and keeps the
   sockets open for its whole life: workers inherit them, so a worker that dies or is
   replaced never closes a listener;
3. runs the media relay (when ``media.enabled`` and no ``media.remote``) with its ng
   socket on loopback; every worker drives it over ng, and its sessions outlive workers;
4. starts the workers (``python -m sipedge.server.worker``), each with the listeners and
   the worker channel (server/handoff.py), restarts one that dies (logging what it
   held), forwards SIGHUP to each in turn (an in-place reload), and on SIGTERM/SIGINT
   stops them all and waits for them.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from ..config import Config
from ..errors import ConfigError
from ..media.model import CallDeleted
from ..store.backend import open_database
from . import tls
from .app import load_secret, load_token
from .dtls import DtlsContext
from .handoff import GENERATION, MEDIA, STATS, SUPERVISOR, channel_pair, encode, owner_of
from .media import MediaServer
from .ng import NgControlServer
from .transport import bind_listener, parse_listen
from .worker import ENV, STATS_INTERVAL, worker_config

log = logging.getLogger("sipedge")

RESTART_BACKOFF = (0.1, 0.5, 1.0, 2.0, 5.0)  # seconds before restart n of a worker dying early
STOP_GRACE = 10.0  # seconds a worker has to stop on SIGTERM before it is killed


def check(config: Config) -> None:
    """ConfigError for what several workers cannot do (yet)."""
    if config.registrar.db_mode == "write-back":
        raise ConfigError(
            'general.workers > 1 needs registrar.db_mode = "write-through": workers share '
            "registrations through the database, and write-back keeps them in one process"
        )
    # caps each worker would count of its own calls only: N workers would allow N times them
    caps = {
        "dialog.max_per_user": config.dialog.max_per_user if config.dialog.enabled else 0,
        "dialog.max_per_source": config.dialog.max_per_source if config.dialog.enabled else 0,
        "dialog.max_total": config.dialog.max_total if config.dialog.enabled else 0,
        "sip.fraud.max_foreign_calls": config.sip.fraud.max_foreign_calls,
    }
    for key, value in caps.items():
        if value:
            raise ConfigError(
                f"{key} = {value} with general.workers = {config.general.workers}: each worker counts only "
                f"the calls whose Call-ID it owns, so the cap would allow up to {config.general.workers} times "
                "as many; set it to 0 or general.workers = 1 (docs/workers.md)"
            )


def prepare(config: Config) -> None:
    """Create once what workers would otherwise race to create."""
    data_dir = Path(config.general.data_dir)
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"general.data_dir = {str(data_dir)!r}: cannot create it ({exc.strerror})") from exc
    open_database(config).close()  # the schema, migrated (SQLite; PostgreSQL as [database] migrate says)
    load_secret(data_dir / "nonce.key")
    if any(li.split(":", 1)[0] in ("tls", "wss") for li in config.sip.listen):
        tls.ensure_certificate(*tls.certificate_paths(config.tls.cert, config.tls.key, data_dir))
    if config.web.enabled and config.web.api and not config.web.admin_token:
        load_token(data_dir / "admin.token")


def bind_all(config: Config) -> dict[str, socket.socket]:
    out: dict[str, socket.socket] = {}
    try:
        for entry in config.sip.listen:
            transport, host, port = parse_listen(entry)
            out[entry] = bind_listener(transport, host, port)
            name = out[entry].getsockname()
            log.info("- listening on %s:%s:%d (shared by the workers)", transport, name[0], name[1])
    except BaseException:
        for s in out.values():
            s.close()
        raise
    return out


class Supervisor:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.n = config.general.workers
        self.listeners: dict[str, socket.socket] = {}
        self.channels = [channel_pair() for _ in range(self.n)]
        self.procs: list[subprocess.Popen[bytes] | None] = [None] * self.n
        self.started_at = [0.0] * self.n
        self.restarts = [0] * self.n
        self.generations = [0] * self.n
        self.media_remote = ""
        self.fatal: str | None = None  # a worker refused its configuration: all stop
        self._media: MediaServer | None = None
        self._ng: NgControlServer | None = None

    def start_media(self) -> None:
        cfg = self.config
        if not cfg.media.enabled or cfg.media.remote:
            return
        host, port = cfg.media.ng_address or ("127.0.0.1", 0)
        media = MediaServer(cfg.media, dtls=DtlsContext(cfg.general.data_dir))
        media.listeners.append(self._media_event)
        ng = NgControlServer(media, host, port)
        self._media, self._ng = media, ng
        self.media_remote = f"{ng.address[0]}:{ng.address[1]}"
        log.info("media relay in the supervisor: ng on %s, ports %d-%d", self.media_remote, cfg.media.port_min,
                 cfg.media.port_max)

    def _media_event(self, ev: object) -> None:
        """A media session ended: to the worker owning its Call-ID (its CDR's totals; a
        media timeout ends the call), as the in-process relay tells its App."""
        if not isinstance(ev, CallDeleted):
            return
        event = json.dumps({"call_id": ev.call_id, "reason": ev.reason, "totals": ev.totals}).encode()
        with contextlib.suppress(OSError):  # (a full channel: that CDR goes without media totals)
            self.channels[owner_of(ev.call_id, self.n)][1].send(encode(MEDIA, "0", event))

    def spawn(self, worker: int) -> None:
        if self.procs[worker] is None and self.started_at[worker]:  # a restart: a new generation
            self.generations[worker] += 1
            for w, (_, peer) in enumerate(self.channels):
                if w != worker:
                    with contextlib.suppress(OSError):
                        peer.send(encode(GENERATION, f"{worker}:{self.generations[worker]}", b""))
        rx = self.channels[worker][0]
        tx = [pair[1] for pair in self.channels]
        fds = [rx.fileno(), *(s.fileno() for s in tx), *(s.fileno() for s in self.listeners.values())]
        spec = {
            "config": dataclasses.asdict(worker_config(self.config, worker, self.media_remote)),
            "worker": worker,
            "generations": self.generations,
            "rx": rx.fileno(),
            "tx": [s.fileno() for s in tx],
            "listeners": {entry: s.fileno() for entry, s in self.listeners.items()},
        }
        env = {**os.environ, ENV: json.dumps(spec)}
        proc = subprocess.Popen([sys.executable, "-m", "sipedge.server.worker"], env=env, pass_fds=fds)
        self.procs[worker] = proc
        self.started_at[worker] = time.monotonic()
        log.info("worker %d started (pid %d)", worker, proc.pid)

    def push_stats(self) -> None:
        """The media relay's counters, to worker 0's /metrics."""
        if self._media is None or self._ng is None:
            return
        stats = {**self._media.stats(), **self._ng.stats()}
        with contextlib.suppress(OSError):
            self.channels[0][1].send(encode(STATS, SUPERVISOR, json.dumps(stats).encode()))

    def reap(self) -> list[int]:
        """The workers that have exited since the last look (their slots emptied)."""
        gone = []
        for w, proc in enumerate(self.procs):
            if proc is not None and proc.poll() is not None:
                gone.append(w)
                self.procs[w] = None
                if proc.returncode == 2:  # a ConfigError (the routing module...): no use restarting
                    self.fatal = f"worker {w} refused the configuration (its log says why)"
                    log.error("x %s; stopping", self.fatal)
                    continue
                what = "its UDP transactions and the TCP/TLS/WS connections it accepted"
                if w == 0:
                    what += ", the web server, TURN, NAT keepalives and the control socket"
                log.warning("x worker %d (pid %d) exited with %s; lost: %s", w, proc.pid, proc.returncode, what)
        return gone

    def reload(self) -> None:
        """SIGHUP: every worker reloads in place, one after another."""
        for w, proc in enumerate(self.procs):
            if proc is not None and proc.poll() is None:
                log.info("reloading worker %d (pid %d)", w, proc.pid)
                proc.send_signal(signal.SIGHUP)

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        loop.add_signal_handler(signal.SIGHUP, self.reload)
        self.listeners = bind_all(self.config)
        self.start_media()
        for w in range(self.n):
            self.spawn(w)
        log.info("sipedge supervisor ready (pid %d, %d workers)", os.getpid(), self.n)
        due: dict[int, float] = {}
        stats_at = 0.0
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.1)
            now = time.monotonic()
            if now >= stats_at:
                stats_at = now + STATS_INTERVAL
                self.push_stats()
            gone = self.reap()
            if self.fatal is not None:
                break
            for w in gone:
                early = now - self.started_at[w] < 10.0
                self.restarts[w] = self.restarts[w] + 1 if early else 0
                delay = RESTART_BACKOFF[min(self.restarts[w], len(RESTART_BACKOFF)) - 1] if early else 0.0
                due[w] = now + delay
            for w, at in list(due.items()):
                if at <= now and not stop.is_set():
                    del due[w]
                    self.spawn(w)
        await self.stop_all()
        return 0 if self.fatal is None else 2

    async def stop_all(self) -> None:
        log.info("stopping %d workers", self.n)
        for proc in self.procs:
            if proc is not None and proc.poll() is None:
                proc.terminate()
        deadline = time.monotonic() + STOP_GRACE
        for proc in self.procs:
            if proc is None:
                continue
            while proc.poll() is None and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            if proc.poll() is None:
                log.warning("x worker pid %d did not stop in %.0f s: killed", proc.pid, STOP_GRACE)
                proc.kill()
                proc.wait()
        if self._ng is not None:
            self._ng.close()
        if self._media is not None:
            self._media.close()
        for s in self.listeners.values():
            s.close()
        for rx, tx in self.channels:
            rx.close()
            tx.close()


def supervise(config: Config) -> int:
    """``sipedge serve`` with ``general.workers`` > 1."""
    check(config)
    prepare(config)
    try:
        return asyncio.run(Supervisor(config).run())
    except OSError as exc:
        raise ConfigError(f"sip.listen: cannot bind ({exc.strerror or exc}); is another server using the port?") from exc
