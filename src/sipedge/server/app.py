"""The composition root: build every role from one Config and run one event loop.

The SIP side is :class:`~sipedge.server.sip_service.SipService` (server/sip_service.py);
the proxy core's consumers (NAT keepalives, dispatcher probes) are built first and given
to it, so the core gets them at construction.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import os
import secrets
import signal
import ssl
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._common.clock import SystemClock
from .._common.histogram import Observed
from ..config import Config
from ..errors import ConfigError, StorageError
from ..proxy import pike
from ..proxy.routing import load_router
from ..sip.auth import DigestAuth
from ..store.backend import open_database, open_location
from ..store.dialogs import SqliteDialogStore
from ..store.keepalive import SqliteEndpointStore
from ..store.redis import (
    RedisAllocationQuota,
    RedisBanStore,
    RedisLink,
    RedisLocationStore,
    RedisPipeCounter,
    shared_secret,
)
from ..store.schema import Database
from ..store.sqlite import SqliteLocationStore, SqliteSubscriberStore
from ..store.turn_users import TurnUserStore

if TYPE_CHECKING:
    from ..store.postgres import PgLocationStore
from ..web.dashboard import add_dashboard
from ..web.server import WebServer
from . import tls, turn_http
from .control import Control, ControlSocket, add_api_routes, control_socket_path
from .dispatcher import DispatcherService
from .dtls import DtlsContext
from .gcschedule import GcSchedule
from .keepalive import KeepaliveService
from .logsetup import setup_logging
from .media import MediaServer
from .ng import NgControlServer, NgPool
from .sip_service import SipService
from .stun_turn import TurnService, start_from_config

log = logging.getLogger("sipedge")


class App:
    """Every role of one sipedge process."""

    # a worker (server/worker.py) builds its own kinds of these
    sip_service: type[SipService] = SipService

    def __init__(self, config: Config) -> None:
        self.config = config
        self.db: Database | None = None
        self.turn_db: Database | None = None  # [turn] users_db, when it is another database
        self.sip: SipService | None = None
        self.cert_path: Path | None = None
        self.cert_key: Path | None = None
        self.fingerprint: str = ""
        self.web: WebServer | None = None
        self.media: MediaServer | None = None
        self.ng: NgControlServer | None = None
        self.media_remote: NgPool | None = None
        self.keepalive: KeepaliveService | None = None
        self.dispatcher: DispatcherService | None = None
        self.turn: TurnService | None = None
        self.turn_users: TurnUserStore | None = None
        self.gc = GcSchedule(config.general.gc_interval)
        self.location: SqliteLocationStore | PgLocationStore | RedisLocationStore | None = None
        self.redis: RedisLink | None = None
        self.dialog_store: SqliteDialogStore | None = None
        self._dialog_flush: asyncio.Task[None] | None = None
        self._location_flush: asyncio.Task[None] | None = None
        self._server_tls: ssl.SSLContext | None = None  # re-read by reload()
        self.control = Control(self)
        self.control_socket: ControlSocket | None = None

    async def start(self) -> None:
        cfg = self.config
        data_dir = Path(cfg.general.data_dir)
        try:
            data_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"general.data_dir = {str(data_dir)!r}: cannot create it ({exc.strerror})") from exc
        socket_path = control_socket_path(cfg)
        if socket_path is not None:  # first: a second server on the same socket stops here
            self.control_socket = ControlSocket(self.control, socket_path)
            await self.control_socket.start()
        self.db = open_database(cfg)
        log.info("database %s (%s, schema version %d)", self.db.name, self.db.dialect, self.db.schema_version)
        secret = load_secret(data_dir / "nonce.key")
        bans: pike.BanStore | None = None
        location: SqliteLocationStore | PgLocationStore | RedisLocationStore
        if cfg.redis.url:
            redis = self.redis = self._open_redis()
            if cfg.redis.nonces:
                secret = shared_secret(redis, secret)
            if cfg.redis.bans:
                bans = RedisBanStore(redis, cfg.sip.flood.max_sources)
        if self.redis is not None and cfg.redis.location:
            location = self.location = RedisLocationStore(self.redis)
        else:
            location = self.location = self.open_location(self.db, write_back=cfg.registrar.db_mode == "write-back")
        subscribers = SqliteSubscriberStore(self.db)
        needs_tls = any(li.split(":", 1)[0] in ("tls", "wss") for li in cfg.sip.listen)
        server_ctx = client_ctx = None
        if needs_tls:
            cert_p, key_p = tls.certificate_paths(cfg.tls.cert, cfg.tls.key, data_dir)
            cert = tls.ensure_certificate(cert_p, key_p)
            self.cert_path, self.fingerprint = cert.cert, cert.fingerprint
            log.info("TLS certificate %s (SHA-256 fingerprint %s)", cert.cert, cert.fingerprint)
            server_ctx = self._server_tls = tls.server_context(
                cert.cert, cert.key, verify_peer=cfg.tls.verify_peer, ca=cfg.tls.ca or None
            )
            self.cert_key = cert.key
            client_ctx = tls.client_context(verify=cfg.tls.verify_peer, ca=cfg.tls.ca or None)
        self.dialog_store = SqliteDialogStore(self.db, cfg.accounting, write_back=cfg.dialog.db_flush_interval > 0)
        if self.dialog_store.write_back:
            self._dialog_flush = asyncio.create_task(self._flush_dialogs_loop(cfg.dialog.db_flush_interval))
        # the proxy core's consumers: built first, given to the core at construction
        keepalive = self.keepalive = KeepaliveService(cfg.nat, location, SystemClock(), SqliteEndpointStore(self.db))
        dispatcher = self.dispatcher = DispatcherService()
        self.sip = self.sip_service(cfg, location, subscribers, secret, self.dialog_store, bans,
                                    observers=(keepalive,),
                                    local_responses=(keepalive.local_response, dispatcher.local_response),
                                    pipe_counter=RedisPipeCounter(self.redis)
                                    if self.redis is not None and cfg.redis.ratelimit else None)
        await self.start_sip(server_ctx, client_ctx)
        assert self.sip.core is not None
        keepalive.start(self.sip.core.identity, self.sip)
        dispatcher.start(self.sip.core.dispatcher, self.sip)
        if location.write_back:
            self._location_flush = asyncio.create_task(self._flush_location_loop(cfg.registrar.db_flush_interval))
        remote = cfg.media.remote_nodes
        if remote:
            self.media_remote = NgPool(remote, cfg.media.ping_interval, cfg.media.remote_timeout,
                                       cfg.media.max_calls)
            self.media_remote.start()
            self.sip.media = self.media_remote
            log.info("media relay: remote ng at %s", ", ".join(f"{n['node']} (weight {n['weight']})"
                                                              for n in self.media_remote.nodes()))
        elif cfg.media.enabled:
            dtls = DtlsContext(cfg.general.data_dir)  # the bridge's certificate (docs/webrtc.md)
            log.info("media relay DTLS certificate %s, fingerprint sha-256 %s", dtls.certificate.cert,
                     dtls.fingerprint.value)
            self.media = MediaServer(cfg.media, dtls=dtls)
            self.media.listeners.append(self.sip.on_media_event)
            ng = cfg.media.ng_address
            if ng is not None:
                self.ng = NgControlServer(self.media, *ng)
            self.sip.media = self.media
            log.info("media relay on %s ports %d-%d", cfg.media.describe_interfaces(), cfg.media.port_min,
                     cfg.media.port_max)
        if cfg.turn.enabled:
            if cfg.turn.users_db:
                self.turn_db = open_database(cfg, cfg.turn.users_db)
            self.turn_users = TurnUserStore(self.turn_db or self.db)
            quota = None
            if self.redis is not None and cfg.redis.turn_quotas:
                quota = RedisAllocationQuota(self.redis, secrets.token_hex(8))
            self.turn = await start_from_config(cfg, users=self.turn_users, ssl_context=server_ctx, quota=quota)
        if cfg.web.enabled:
            self.web = WebServer(cfg, self.stats, histograms=self.histograms)
            if cfg.turn.enabled:
                subscriber_auth = turn_http.SubscriberAuth(
                    digest=DigestAuth(
                        # a key of its own: a SIP nonce is no HTTP nonce
                        hmac.new(self.sip.secret, b"sipedge web digest", hashlib.sha256).digest(),
                        algorithms=tuple(cfg.auth.algorithms),
                        nonce_lifetime=cfg.auth.nonce_lifetime,
                        check_uri=True,
                    ),
                    ha1=subscribers.ha1,
                    realm=cfg.auth.realm,
                    default_domain=cfg.sip.domains[0] if len(cfg.sip.domains) == 1 else "",
                )
                turn_http.add_routes(
                    self.web.app, cfg.turn, subscribers=subscriber_auth, counters=self.web.counters
                )
            if cfg.web.api:
                token = cfg.web.admin_token or load_token(data_dir / "admin.token")
                add_api_routes(self.web.app, self.control, token, self.web.counters)
                add_dashboard(self.web.app, self.control, token, self.web.counters, cfg.web.dashboard_session)
            await self.web.start()
        self.gc.start()

    def _open_redis(self) -> RedisLink:
        """``[redis] url``: connect once at start, so a wrong URL stops the start here."""
        try:
            link = RedisLink(self.config.redis)
            link.ping()
            log.info("redis %s: sharing %s", link.where, ", ".join(
                what for what in ("location", "nonces", "bans", "ratelimit", "turn_quotas")
                if getattr(self.config.redis, what)
            ) or "nothing")
        except StorageError as exc:
            raise ConfigError(f"redis.url: {exc}") from exc
        return link

    def open_location(self, db: Database, write_back: bool) -> SqliteLocationStore | PgLocationStore:
        """The location store on the database (a worker of several shares SQLite's)."""
        return open_location(db, write_back=write_back)

    async def start_sip(self, server_ctx: Any, client_ctx: Any) -> None:
        assert self.sip is not None
        await self.sip.start(server_ctx, client_ctx)

    def reload(self) -> dict[str, Any]:
        """``sipedge ctl reload``: the routing module and the TLS certificate, re-read
        without a restart. New requests and handshakes use them; calls, registrations and
        connections under way are kept. A module that fails to import changes nothing
        (ConfigError saying why)."""
        router = load_router(self.config.routing.module)
        done: dict[str, Any] = {"routing": router.name}
        if self._server_tls is not None and self.cert_path is not None:
            try:
                self._server_tls.load_cert_chain(self.cert_path, self.cert_key)
            except (OSError, ssl.SSLError) as exc:
                raise ConfigError(f"TLS certificate {self.cert_path}: cannot load it ({exc})") from exc
            done["tls_certificate"] = str(self.cert_path)
            done["tls_fingerprint"] = self.fingerprint = tls.fingerprint(self.cert_path)
        if self.sip is not None and self.sip.core is not None:
            self.sip.core.set_router(router)
        log.warning("- reloaded: %s", ", ".join(f"{k} {v}" for k, v in done.items()))
        return done

    def stats(self) -> dict[str, int | float]:
        out: dict[str, int | float] = {}
        for role in (self.sip, self.keepalive, self.media, self.ng, self.media_remote, self.turn, self.gc, self.redis):
            if role is not None:
                out.update(role.stats())
        db_stats = getattr(self.db, "stats", None)  # PostgreSQL: db_errors, db_unavailable, db_down...
        if db_stats is not None:
            out.update(db_stats())
        return out

    def histograms(self) -> Observed:
        """Every role's histograms, for /metrics."""
        out = self.sip.histograms() if self.sip is not None else []
        if self.media is not None:
            out.extend(self.media.relay.histograms())
        return out

    async def stop(self) -> None:
        await self.gc.stop()
        if self.control_socket is not None:
            await self.control_socket.stop()
        if self.web is not None:
            await self.web.stop()
        if self.turn is not None:
            await self.turn.stop()
        if self.turn_db is not None:
            self.turn_db.close()
        if self.ng is not None:
            self.ng.close()
        if self.media_remote is not None:
            self.media_remote.close()
        if self.media is not None:
            self.media.close()
        if self.dispatcher is not None:
            self.dispatcher.stop()
        if self.keepalive is not None:
            self.keepalive.stop()
        if self.sip is not None:
            await self.sip.stop()
        if self._location_flush is not None:
            self._location_flush.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._location_flush
        if self.location is not None:
            self._flush_location()  # write-back: nothing more comes in; keep it all
        if self._dialog_flush is not None:
            self._dialog_flush.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._dialog_flush
        if self.dialog_store is not None:
            self.dialog_store.flush()  # the calls under way and the last CDRs
        if self.db is not None:
            self.db.close()
        if self.redis is not None:
            self.redis.close()

    async def _flush_dialogs_loop(self, interval: float) -> None:
        assert self.dialog_store is not None
        while True:
            await asyncio.sleep(interval)
            self.dialog_store.flush()

    async def _flush_location_loop(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            self._flush_location()

    def _flush_location(self) -> None:
        assert self.location is not None
        try:
            n = self.location.flush()
        except StorageError as exc:
            log.warning("x location write-back failed, kept for the next flush: %s", exc)
            return
        if n:
            log.debug("location write-back: %d changes committed", n)


async def _serve(config: Config) -> int:
    app = App(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    try:
        await app.start()
    except OSError as exc:
        await app.stop()
        raise ConfigError(f"sip.listen: cannot bind ({exc.strerror or exc}); is another server using the port?") from exc
    except (ConfigError, StorageError):  # a bad option, or a database that cannot be opened
        await app.stop()  # what started is closed again (the control socket's file too)
        raise
    log.info("sipedge ready (pid %d)", os.getpid())
    await stop.wait()
    # the last counters of the NAT keepalives say which bindings were still kept
    log.info("shutting down; keepalive %s", app.keepalive.stats() if app.keepalive else {})
    await app.stop()
    return 0


def run(config: Config) -> int:
    """Run until SIGINT/SIGTERM; used by ``sipedge serve``. With ``general.workers`` > 1
    this process is the supervisor of that many (docs/workers.md)."""
    setup_logging(config.general.log_level, config.general.log_format)
    if config.general.workers > 1:
        from .supervisor import supervise

        return supervise(config)
    try:
        import uvloop

        return uvloop.run(_serve(config))
    except ImportError:
        return asyncio.run(_serve(config))


def load_token(path: Path) -> str:
    """The admin API token: made once, kept 0600 in the data directory (``cat`` it)."""
    try:
        token = path.read_text(encoding="ascii").strip()
        if len(token) >= 32:
            return token
    except (FileNotFoundError, UnicodeDecodeError):
        pass
    token = secrets.token_urlsafe(32)
    tls.write_atomic(path, token.encode() + b"\n", 0o600)
    log.info("admin API token written to %s", path)
    return token


def load_secret(path: Path) -> bytes:
    """The digest-nonce key: made once, kept 0600 in the data directory, so nonces stay
    valid across a restart."""
    try:
        data = path.read_bytes()
        if len(data) >= 32:
            return data
    except FileNotFoundError:
        pass
    data = secrets.token_bytes(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    return data
