"""The SIP service of one process: the transports, the proxy core and its services hook,
driven on one event loop by STYLE.md B3's four steps on every callback (feed the core,
drain its output, flush it to the transports, re-arm the one timer). It has the one send
path to a target (:meth:`SipService.send_to_target`) the branches and the dispatcher's
probes take. ``server/app.py`` builds it; a worker (``server/worker.py``) subclasses it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._common.addr import is_ip
from .._common.clock import SystemClock
from .._common.histogram import Observed
from ..config import Config
from ..errors import ParseError, StorageError
from ..media.control import MediaControl
from ..media.model import CallDeleted
from ..media.relay import RelayError
from ..proxy import dialog as dlgs
from ..proxy import nat, pike
from ..proxy.core import MediaJob, ProxyCore, ResolveJob, Send
from ..proxy.identity import Identity, Listener
from ..proxy.ratelimit import PipeCounter
from ..proxy.routing import load_router
from ..proxy.services import LocalResponseConsumer, ProxyServices, RouteObserver
from ..proxy.trace import TraceStore
from ..sip.flow import Flow, Target
from ..store.dialogs import SqliteDialogStore
from ..store.redis import RedisLocationStore
from ..store.sqlite import SqliteLocationStore, SqliteSubscriberStore
from ..stun import server as stun_server
from .dns import DnsResolver
from .listeners import ALL_TRANSPORTS
from .media import MediaServer
from .transport import TransportLayer
from .ws import WsOptions, own_origins

if TYPE_CHECKING:
    from ..store.postgres import PgLocationStore

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
        observers: tuple[RouteObserver, ...] = (),
        local_responses: tuple[LocalResponseConsumer, ...] = (),
        pipe_counter: PipeCounter | None = None,
    ) -> None:
        self.config = config
        self.bans = bans
        # the proxy core's consumers, given to it at construction (proxy/services.py)
        self.observers = observers
        self.local_responses = local_responses
        self.pipe_counter = pipe_counter
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
            services=ProxyServices(
                flow_alive=self.flow_alive,
                media_available=media_wired(self.config),
                resolve_names=True,  # branches to a name: one address, the others their failover list
                route_observers=self.observers,
                local_responses=self.local_responses,
                pipe_counter=self.pipe_counter,
            ),
        )
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

    def flow_alive(self, flow: Flow) -> bool:
        """Whether a connection is still open (the proxy core's ``services.flow_alive``)."""
        return self.transports is not None and self.transports.is_alive(flow)

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
        if item.target is not None:
            self.send_to_target(item.data, item.target, partial(self._failed, key))

    def send(self, data: bytes, flow: Flow) -> bool:
        """Send on a flow (the NAT keepalives' sender); False when it is gone."""
        return self.transports is not None and self.transports.send(data, flow)

    def send_to_target(self, data: bytes, target: Target, failed: Callable[[], None],
                       sent: Callable[[Target], None] | None = None) -> None:
        """The one way out to a target (the proxy's branches, the dispatcher's probes):
        UDP to an address leaves at once, anything else (a connection to reuse or open, a
        name to resolve) in a task. ``failed()`` when it could not leave; ``sent(t)`` with
        the address it went to, when it left from a task."""
        transports = self.transports
        assert transports is not None
        if target.transport == "udp" and is_ip(target.host):
            # the common case needs no task: UDP to an address leaves at once
            family = 6 if ":" in target.host else 4
            try:
                local = transports.listener("udp", family).address
            except OSError:
                failed()
                return
            if not transports.send(data, Flow("udp", local, (target.host, target.port))):
                failed()
            return
        task = asyncio.create_task(self._send_to(data, target, failed, sent))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _send_to(self, data: bytes, target: Target, failed: Callable[[], None],
                       sent: Callable[[Target], None] | None) -> None:
        transports = self.transports
        assert transports is not None
        if is_ip(target.host):
            try:
                await transports.send_to(data, target, tls_name=target.name or None)
            except (OSError, TimeoutError, ValueError) as exc:
                log.info("x cannot send to %s:%s:%d: %s", target.transport, target.host, target.port, exc)
                if target.name:  # an address a name resolved to: listed last for a while
                    self.dns.send_failed(target)
                failed()
                return
            if sent is not None:
                sent(target)
            return

        async def send(t: Target) -> None:
            await transports.send_to(data, t, tls_name=target.host)

        # a name: only the configured resolver is asked ([dns]; RFC 3263 NAPTR/SRV/A with
        # failover), never the system's, and a name that leads nowhere fails the branch
        used = await self.dns.send_failover(data, target, send)
        if used is None:
            log.info("x cannot send to %s:%s:%d: no resolved address took it",
                     target.transport, target.host, target.port)
            failed()
        elif sent is not None:
            sent(used)

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


def media_wired(config: Config) -> bool:
    """Whether the server drives a media relay (remote ng nodes, or its own):
    ``App.start`` builds one exactly then."""
    return bool(config.media.remote_nodes) or config.media.enabled


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
