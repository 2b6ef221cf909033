"""The composition root: build every role from one Config and run one event loop.

The SIP side follows STYLE.md B3's four steps on every callback: feed the core, drain
its output, flush it to the transports, re-arm the one timer.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import math
import os
import secrets
import signal
import ssl
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._common.addr import is_ip
from .._common.clock import SystemClock
from .._common.histogram import Observed
from ..config import Config
from ..errors import ConfigError, ParseError, StorageError
from ..media.control import MediaControl
from ..media.model import CallDeleted
from ..media.relay import RelayError
from ..proxy import dialog as dlgs
from ..proxy import nat, pike
from ..proxy.core import MediaJob, ProxyCore, ResolveJob, Send
from ..proxy.identity import Identity, Listener
from ..proxy.routing import load_router
from ..proxy.trace import TraceStore
from ..sip.auth import DigestAuth
from ..sip.flow import Flow, Target
from ..store.backend import open_database, open_location
from ..store.dialogs import SqliteDialogStore
from ..store.keepalive import SqliteEndpointStore
from ..store.redis import (
    RedisAllocationQuota,
    RedisBanStore,
    RedisLink,
    RedisLocationStore,
    shared_secret,
)
from ..store.schema import Database
from ..store.sqlite import SqliteLocationStore, SqliteSubscriberStore
from ..store.turn_users import TurnUserStore

if TYPE_CHECKING:
    from ..store.postgres import PgLocationStore
from ..stun import server as stun_server
from ..web.dashboard import add_dashboard
from ..web.server import WebServer
from . import tls, turn_http
from .control import Control, ControlSocket, add_api_routes, control_socket_path
from .dispatcher import DispatcherService
from .dns import DnsResolver
from .dtls import DtlsContext
from .gcschedule import GcSchedule
from .keepalive import KeepaliveService
from .logsetup import setup_logging
from .media import MediaServer
from .ng import NgControlServer, NgPool
from .stun_turn import TurnService, start_from_config
from .transport import ALL_TRANSPORTS, TransportLayer
from .ws import WsOptions, own_origins

log = logging.getLogger("sipedge")

# The core's timers wake the loop on 10 ms ticks: a loaded server has thousands of
# deadlines a second (Timers E, J, K, L, M... of every transaction), and every deadline
# that falls in one tick is handled by one wake-up. 10 ms is small next to T1 (500 ms).
TIMER_TICK = 0.01


class SipService:
    """The SIP proxy/registrar: transports + ProxyCore + location store."""

    def __init__(
        self,
        config: Config,
        location: SqliteLocationStore | PgLocationStore | RedisLocationStore,
        subscribers: SqliteSubscriberStore,
        secret: bytes,
        dialog_store: SqliteDialogStore | None = None,
        bans: pike.BanStore | None = None,
    ) -> None:
        self.config = config
        self.bans = bans
        self.dialog_store = dialog_store
        self.location = location
        self.subscribers = subscribers
        self.secret = secret
        self.clock = SystemClock()
        self.transports: TransportLayer | None = None
        self.core: ProxyCore | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._purge_task: asyncio.Task[None] | None = None
        self._ban_sync_task: asyncio.Task[None] | None = None
        self._load_task: asyncio.Task[None] | None = None
        self.media: MediaControl | None = None
        self.dns = DnsResolver(config.dns, transports=ALL_TRANSPORTS)
        self._pending: set[asyncio.Task[None]] = set()
        self.loop = asyncio.get_running_loop()
        web = config.web
        self.trace = TraceStore(web.trace_calls, web.trace_messages, web.trace_bytes) if web.trace else None
        # a worker's (server/worker.py): the supervisor's listener sockets, its connection ids
        self.inherited: dict[str, Any] = {}
        self.conn_ids = (1, 1)

    async def start(self, server_ctx: Any, client_ctx: Any) -> None:
        ws = self.config.sip.websocket
        flood = pike.flood_detector(self.config.sip, self.bans)  # the transport drops banned sources
        origins = websocket_origins(self.config)
        self.transports = TransportLayer(
            self.config.sip,
            self._on_message,
            server_ssl=server_ctx,
            client_ssl=client_ctx,
            on_flow_closed=self._on_flow_closed,
            on_stun=self._on_stun,
            source_banned=flood.banned,
            inherited=self.inherited,
            conn_ids=self.conn_ids,
            ws_options=WsOptions(
                origins=origins,
                ping_interval=ws.ping_interval,
                ping_timeout=ws.ping_timeout,
                server_header=self.config.sip.server_header,
            ),
        )
        await self.transports.start()
        adv = self.config.sip.advertise
        listeners = [
            Listener(li.transport, li.host, li.port, advertise_host=adv)
            for li in self.transports.listeners
        ]
        listeners = nat.advertised_listeners(listeners, self.config.nat.advertise)
        identity = Identity(listeners, self.config.sip.domains)
        router = load_router(self.config.routing.module)
        self.core = ProxyCore(
            self.config,
            identity,
            self.location,
            self.subscribers,
            router,
            self.clock,
            secret=self.secret,
            flood=flood,
            dialogs=self._dialog_table(),
        )
        self.core.flow_alive = self.transports.is_alive
        self.core.resolve_names = True  # branches to a name: one address, the others their failover list
        self._purge_task = asyncio.create_task(self._purge_loop())
        if self.bans is not None and self.config.redis.sync_interval > 0:
            self._ban_sync_task = asyncio.create_task(self._ban_sync_loop(self.config.redis.sync_interval))
        if self.config.sip.ratelimit.algorithm == "network":
            self._load_task = asyncio.create_task(self._network_load_loop())
        for li in listeners:
            log.info("listening on %s", li.name)
        if any(li.transport in ("ws", "wss") for li in listeners):
            log.info("WebSocket upgrades from browser pages at: %s (sip.websocket.origins)",
                     "any origin" if origins is None else ", ".join(origins))

    def _dialog_table(self) -> dlgs.DialogTable | None:
        """The proxy's calls on the database (docs/operations.md, "Dialogs")."""
        cfg = self.config
        if not cfg.dialog.enabled or self.dialog_store is None:
            return None
        table = dlgs.DialogTable(cfg.dialog, self.dialog_store, timer_c=cfg.sip.timers.timer_c)
        if table.dialogs:
            log.info("dialogs: %d call(s) loaded from %s", len(table.dialogs), self.dialog_store.db.name)
        return table

    def end_dialog(self, call_id: str, why: str) -> bool:
        """End a call from the server (``dlg.end``, a media timeout): BYE both sides."""
        if self.core is None:
            return False
        done = self.core.end_dialog(call_id, why, self.loop.time())
        self._flush()
        return done

    def on_media_event(self, ev: object) -> None:
        """The in-process relay's events: a call's media totals go to its CDR, and a media
        timeout ends its dialog."""
        if not isinstance(ev, CallDeleted):
            return
        if self.dialog_store is not None:
            self.dialog_store.media_totals(ev.call_id, ev.totals)
        if ev.reason == "timeout":
            self.loop.call_soon(self.end_dialog, ev.call_id, "media timeout")

    @staticmethod
    def media_directions(call: Any) -> dict[str, dict[str, int | float]]:
        """What each party of an in-process relay call sent (by its tag): RTP packets, bytes,
        lost, the worst jitter of its streams (for the CDR, docs/operations.md)."""
        out: dict[str, dict[str, int | float]] = {}
        if call is None:
            return out
        for leg in call.legs:
            for side, streams in enumerate(leg.streams):
                tag = leg.tags[side]
                if not tag or not streams:
                    continue
                d = out.setdefault(tag, {"packets": 0, "bytes": 0, "lost": 0, "jitter_ms": 0.0})
                for stream in streams:
                    st = stream.rtp_stats
                    d["packets"] += st.packets
                    d["bytes"] += st.bytes
                    d["lost"] += st.lost
                    d["jitter_ms"] = max(d["jitter_ms"], round(st.jitter_ms, 3))
        return out

    async def stop(self) -> None:
        for task in (self._purge_task, self._load_task, self._ban_sync_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self._timer is not None:
            self._timer.cancel()
        for t in list(self._pending):
            t.cancel()
        if self.transports is not None:
            await self.transports.close()

    # -- the four steps --------------------------------------------------------
    def _on_message(self, data: bytes, flow: Flow) -> None:
        core = self.core
        if core is None:
            return
        if self.trace is not None:
            self.trace.record(data, "in", flow.transport, flow.local, flow.remote, self.clock.wall())
        core.receive(data, flow, self.loop.time())
        self._flush()

    def _on_stun(self, data: bytes, flow: Flow) -> bytes | None:
        """RFC 5626 §4.4.2: outbound clients check their NAT binding with STUN Binding
        requests to the SIP port; they get their mapped address back."""
        return stun_server.answer_sip_keepalive(data, flow.remote, self.config.sip.server_header)

    def _on_flow_closed(self, flow: Flow) -> None:
        if self.core is not None:
            self.core.flow_closed(flow, self.loop.time())
            self._flush()

    def kick(self) -> None:
        """Send what the core has to send and re-arm its timer, after a change made from
        outside a message or a timer (``sipedge ctl ban add``)."""
        self._flush()

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = None
        if self.core is not None:
            self.core.handle_timer(self.loop.time())
            self._flush()

    def _flush(self) -> None:
        core = self.core
        transports = self.transports
        if core is None or transports is None:
            return
        for item in core.outgoing():
            self._send(item)
        for job in core.media_jobs():
            task = asyncio.create_task(self._media(job))
            self._pending.add(task)
            task.add_done_callback(self._pending.discard)
        for rjob in core.resolve_jobs():
            task = asyncio.create_task(self._resolve(rjob))
            self._pending.add(task)
            task.add_done_callback(self._pending.discard)
        for silent in core.silent_targets():  # Timer B/F on an address of a name
            log.info("x %s:%s:%d (%s) did not answer: listed last for %g s", silent.transport, silent.host,
                     silent.port, silent.name, self.dns.config.down_time)
            self.dns.mark_down(silent)
        when = core.get_timer()
        if when is not None:
            when = max(when, math.ceil(when / TIMER_TICK) * TIMER_TICK)
        if when is not None and (self._timer_at is None or when < self._timer_at):
            if self._timer is not None:
                self._timer.cancel()
            self._timer_at = when
            self._timer = self.loop.call_at(when, self._on_timer)

    def _send(self, item: Send) -> None:
        assert self.transports is not None
        key = getattr(item, "key", None)
        if self.trace is not None:
            self.trace.sent(item.data, item.flow or item.target, self.clock.wall())
        if item.flow is not None:
            if not self.transports.send(item.data, item.flow):
                self._failed(key)
            return
        target = item.target
        if target is not None:
            if target.transport == "udp" and is_ip(target.host):
                # the common case needs no task: UDP to an address leaves at once
                family = 6 if ":" in target.host else 4
                try:
                    local = self.transports.listener("udp", family).address
                except OSError:
                    self._failed(key)
                    return
                if not self.transports.send(item.data, Flow("udp", local, (target.host, target.port))):
                    self._failed(key)
                return
            task = asyncio.create_task(self._send_to(item.data, target, key))
            self._pending.add(task)
            task.add_done_callback(self._pending.discard)

    async def _send_to(self, data: bytes, target: Target, key: Any) -> None:
        transports = self.transports
        assert transports is not None
        if is_ip(target.host):
            try:
                await transports.send_to(data, target, tls_name=target.name or None)
            except (OSError, TimeoutError, ValueError) as exc:
                log.info("x cannot send to %s:%s:%d: %s", target.transport, target.host, target.port, exc)
                if target.name:  # an address a name resolved to: listed last for a while
                    self.dns.send_failed(target)
                self._failed(key)
            return

        async def send(t: Target) -> None:
            await transports.send_to(data, t, tls_name=target.host)

        # a name: only the configured resolver is asked ([dns]; RFC 3263 NAPTR/SRV/A with
        # failover), never the system's, and a name that leads nowhere fails the branch
        if await self.dns.send_failover(data, target, send) is None:
            log.info("x cannot send to %s:%s:%d: no resolved address took it",
                     target.transport, target.host, target.port)
            self._failed(key)

    async def _resolve(self, job: ResolveJob) -> None:
        """A branch's next hop by name (docs/dns.md): its addresses back to the core."""
        targets = await self.dns.resolve_next_hop(job.uri, job.target)
        if self.core is not None:
            self.core.resolved(job.token, targets, self.loop.time())
            self._flush()

    async def _media(self, job: MediaJob) -> None:
        """Perform one media-relay step and hand the result back to the core."""
        media = self.media
        if media is None or self.core is None:
            return
        sdp: bytes | None = None
        error: tuple[int, str] | None = None
        try:
            if job.op == "offer":
                sdp = await media.offer(job.call_id, job.from_tag, job.sdp, job.flags, job.to_tag, job.via_branch)
            elif job.op == "answer":
                sdp = await media.answer(job.call_id, job.from_tag, job.to_tag or "", job.sdp, job.flags,
                                         job.via_branch)
            else:
                if job.via_branch is None and self.dialog_store is not None and isinstance(media, MediaServer):
                    # per party, before the relay forgets them; the totals follow in CallDeleted
                    directions = self.media_directions(media.relay.query(job.call_id))
                    if directions:
                        self.dialog_store.media_directions(job.call_id, directions)
                await media.delete(job.call_id, job.from_tag, job.to_tag, via_branch=job.via_branch)
                return
        except (ParseError, RelayError) as exc:
            error = exc.hint if isinstance(exc, RelayError) else exc.sip_reply((500, "Media Relay Error"))
            log.info("media %s for %s failed: %s", job.op, job.call_id, exc)
        except Exception:
            log.exception("media %s for %s failed", job.op, job.call_id)
            error = (500, "Media Relay Error")
        self.core.media_done(job.token, sdp, error, self.loop.time())
        self._flush()

    def _failed(self, key: Any) -> None:
        if key is not None and self.core is not None:
            self.core.transport_failed(key, self.loop.time())
            self._flush()

    async def _network_load_loop(self) -> None:
        """``sip.ratelimit.algorithm = "network"``: the host's inbound packets per second
        (the kernel's UDP datagrams and TCP segments received), sampled every interval."""
        interval = self.config.sip.ratelimit.interval
        last = inbound_packets()
        while True:
            await asyncio.sleep(interval)
            now = inbound_packets()
            if self.core is not None and now is not None and last is not None:
                self.core.ratelimit.set_network_load((now - last) / interval)
            last = now

    async def _ban_sync_loop(self, interval: float) -> None:
        """``[redis] bans``: adopt the bans other nodes made, drop the ones lifted there."""
        while True:
            await asyncio.sleep(interval)
            if self.core is not None:
                self.core.flood.sync(self.loop.time())
                self.kick()  # log the adopted bans, arm the timer that ends them

    async def _purge_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.registrar.purge_interval)
            try:
                n = self.location.purge_expired(self.clock.wall())
                if n:
                    log.info("purged %d expired contacts", n)
            except StorageError as exc:  # the database is away: the next round purges
                log.warning("x purging expired contacts failed: %s", exc)
            except Exception:
                log.exception("purging expired contacts failed")

    def stats(self) -> dict[str, int | float]:
        out: dict[str, int | float] = {}
        if self.core is not None:
            out.update(self.core.stats())
        if self.transports is not None:
            out.update(self.transports.stats())
        if self.dialog_store is not None:
            out.update(self.dialog_store.counters)
        out.update(self.dns.stats())
        if self.trace is not None:
            out.update(self.trace.stats())
        return out

    def histograms(self) -> Observed:
        return self.core.histograms() if self.core is not None else []


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
        self.sip = self.sip_service(cfg, location, subscribers, secret, self.dialog_store, bans)
        await self.start_sip(server_ctx, client_ctx)
        assert self.sip.core is not None and self.sip.transports is not None
        self.keepalive = KeepaliveService(
            cfg.nat, location, self.sip.core, self.sip.transports, self.sip.clock, SqliteEndpointStore(self.db)
        )
        self.keepalive.start()
        self.dispatcher = DispatcherService(self.sip.core, self.sip.transports, self.sip.dns)
        self.dispatcher.start()
        if location.write_back:
            self._location_flush = asyncio.create_task(self._flush_location_loop(cfg.registrar.db_flush_interval))
        remote = cfg.media.remote_nodes
        if remote:
            self.media_remote = NgPool(remote, cfg.media.ping_interval, cfg.media.remote_timeout,
                                       cfg.media.max_calls)
            self.media_remote.start()
            self.sip.media = self.media_remote
            assert self.sip.core is not None
            self.sip.core.media_available = True
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
            assert self.sip.core is not None
            self.sip.core.media_available = True
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
                what for what in ("location", "nonces", "bans", "turn_quotas") if getattr(self.config.redis, what)
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
        if self.keepalive is not None:
            self.keepalive.set_router(router)
        elif self.sip is not None and self.sip.core is not None:
            self.sip.core.router = router
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


def websocket_origins(config: Config) -> tuple[str, ...] | None:
    """The ``Origin`` values WebSocket upgrades may carry: ``sip.websocket.origins``, or
    when it is empty this server's own (:func:`~sipedge.server.ws.own_origins` of the
    ``[web]`` listener, the ws/wss listeners with their advertised addresses, and
    ``sip.domains`` / ``sip.advertise``); None (any) when the list has ``"*"``."""
    listed = config.sip.websocket.origins
    if "*" in listed:
        return None
    if listed:
        return tuple(o.rstrip("/") for o in listed)
    sip = config.sip
    listeners = []
    for entry in sip.listen:
        transport, _, rest = entry.partition(":")
        host, _, port = rest.rpartition(":")
        if transport in ("ws", "wss"):
            listeners.append(Listener(transport, host.strip("[]"), int(port), advertise_host=sip.advertise))
    endpoints: list[tuple[str, str, int]] = []
    for li in nat.advertised_listeners(listeners, config.nat.advertise):
        scheme = "https" if li.transport == "wss" else "http"
        endpoints.append((scheme, li.host, li.port))
        if li.advertise_host:
            endpoints.append((scheme, li.advertise_host, li.advertise_port or li.port))
    if config.web.enabled:
        host, _, port = config.web.listen.rpartition(":")
        endpoints.append(("http", host.strip("[]"), int(port)))
    return own_origins(endpoints, [*sip.domains, sip.advertise])


def inbound_packets() -> int | None:
    """UDP datagrams and TCP segments received by this host (IPv4 and IPv6) so far, from
    /proc/net/snmp and /proc/net/snmp6; None where they cannot be read."""
    total = 0
    try:
        lines = Path("/proc/net/snmp").read_text().splitlines()
        for names, values in zip(lines[::2], lines[1::2], strict=False):
            keys, nums = names.split(), values.split()
            if keys[0] in ("Udp:", "Tcp:"):
                field = "InDatagrams" if keys[0] == "Udp:" else "InSegs"
                total += int(nums[keys.index(field)])
        for line in Path("/proc/net/snmp6").read_text().splitlines():
            name, _, value = line.partition(" ")
            if name == "Udp6InDatagrams":
                total += int(value.strip())
    except (OSError, ValueError, IndexError):
        return None
    return total


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
