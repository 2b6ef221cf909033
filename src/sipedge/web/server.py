"""The HTTP side of sipedge (aiohttp): Prometheus metrics, health, static pages.

Every role exposes ``stats()``; ``/metrics`` renders them all as Prometheus text (format
0.0.4), with the roles' histograms (SIP response time, DTLS and ICE setup time), so an
operator scrapes one endpoint per process. Sample names are ``sipedge_<stat>``: the names
in :data:`GAUGES` are typed ``gauge``, the other stats (event counts) are untyped under
their own names (a ``counter`` would have to be called ``<name>_total`` and break every
dashboard; docs/operations.md, "Metrics"). The page is written here rather than through
prometheus-client, which renders the same page 4-8 times slower (``bench.metrics_bench``);
its parser checks ours in the tests. Counts tell an outsider how busy the server
is and which roles run, so ``/metrics`` answers only clients in ``web.metrics_allow``
(loopback by default) or requests carrying ``Authorization: Bearer <web.metrics_token>``;
others get 403 (``web_metrics_refused``). Roles add their own routes (the TURN
``iceServers`` endpoint) through ``extra_routes`` or on :attr:`WebServer.app` before
:meth:`WebServer.start`, and may count in :attr:`WebServer.counters`.
"""

from __future__ import annotations

import functools
import hmac
import ipaddress
import json
import logging
import math
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from aiohttp import web

from .._common.histogram import Histogram, Observed
from ..config import Config

log = logging.getLogger(__name__)

StatsProvider = Callable[[], dict[str, int | float]]
RouteAdder = Callable[[web.Application], None]
HistogramProvider = Callable[[], Observed]
METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

STATIC_DIR = Path(__file__).parent / "static"


# Stats that are a current level (they go down as well as up): ``# TYPE gauge``. Every
# other stat counts events since the start and is rendered untyped under its own name.
GAUGES = frozenset({
    "dialog_endpoints", "dialogs_active", "dialogs_confirmed_active", "dns_cache_entries", "dns_inflight",
    "dns_targets_down", "gc_full_last_pause_seconds", "gc_full_max_pause_seconds", "keepalive_endpoints",
    "media_bytes_received_live", "media_calls", "media_packets_received_live", "media_ports_in_use",
    "registered_endpoints", "sip_auth_failure_tracked", "sip_connections_open", "sip_flood_banned_sources",
    "sip_flood_tracked_sources", "sip_proxy_transactions", "sip_ratelimit_pipes", "sip_tx_lingering",
    "sip_tx_live", "subscribed_endpoints", "trace_calls", "turn_allocations", "turn_channels",
    "turn_connections", "turn_permissions", "turn_relay_ports_total", "turn_relay_ports_used",
    "turn_reservations",
})


@functools.lru_cache(maxsize=4096)  # the stats' names are a fixed set: sanitized once
def metric_name(name: str, prefix: str = "sipedge_") -> str:
    """``prefix`` + the name sanitized; labels of our own making at its end are kept
    (``sip_tx_live{worker="1"}``, server/worker.py)."""
    base, brace, labels = name.partition("{")
    return prefix + "".join(c if c.isalnum() or c == "_" else "_" for c in base) + brace + labels


def _label_value(v: str) -> str:
    return v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _histogram_lines(name: str, labels: dict[str, str], h: Histogram) -> Iterator[str]:
    pairs = [f'{k}="{_label_value(v)}"' for k, v in labels.items()]
    for bound, n in h.cumulative():
        le = "+Inf" if math.isinf(bound) else repr(bound)
        inside = ",".join([*pairs, 'le="' + le + '"'])
        yield f"{name}_bucket{{{inside}}} {n}"
    braces = f"{{{','.join(pairs)}}}" if pairs else ""
    yield f"{name}_sum{braces} {h.sum!r}"
    yield f"{name}_count{braces} {h.count}"


def render_metrics(stats: StatsProvider, histograms: HistogramProvider | None = None) -> bytes:
    """The /metrics page: one ``sipedge_<stat> <value>`` line per stat (gauges typed), then
    each histogram family with its ``_bucket{le=...}``, ``_sum`` and ``_count`` lines."""
    values = stats()
    lines: list[str] = []
    family = ""
    for name in sorted(values, key=lambda n: n.partition("{")[::2]):  # a family's series together
        base = name.partition("{")[0]
        if base != family:
            family = base
            if base in GAUGES:
                lines.append(f"# TYPE {metric_name(base)} gauge")
        lines.append(f"{metric_name(name)} {values[name]}")
    families: dict[str, list[tuple[dict[str, str], Histogram]]] = {}
    for name, labels, h in histograms() if histograms is not None else ():
        families.setdefault(metric_name(name), []).append((labels, h))
    for metric, members in families.items():
        lines.append(f"# TYPE {metric} histogram")
        for labels, h in members:
            lines.extend(_histogram_lines(metric, labels, h))
    return ("\n".join(lines) + "\n").encode()


def client_ip(request: web.Request) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The peer's address (IPv4-mapped IPv6 as IPv4); None when unknown (a UNIX socket)."""
    try:
        ip = ipaddress.ip_address((request.remote or "").split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def bearer_token(request: web.Request) -> str | None:
    auth = request.headers.get("Authorization", "")
    scheme, _, token = auth.partition(" ")
    return token.strip() if scheme.lower() == "bearer" else None


class WebServer:
    def __init__(self, config: Config, stats: StatsProvider, extra_routes: Iterable[RouteAdder] = (),
                 histograms: HistogramProvider | None = None) -> None:
        self.config = config
        self.stats = stats
        self.histograms = histograms
        self.counters: dict[str, int] = {"web_metrics_refused": 0}
        """This HTTP server's own counters (and those of routes added to it), on /metrics."""
        self._metrics_allow = tuple(ipaddress.ip_network(n, strict=False) for n in config.web.metrics_allow)
        self.app = web.Application()
        self.app.router.add_get("/metrics", self._metrics)
        self.app.router.add_get("/healthz", self._health)
        self.app.router.add_get("/", self._phone_page)
        for add in extra_routes:
            add(self.app)
        if STATIC_DIR.is_dir():
            self.app.router.add_static("/static/", STATIC_DIR)
        self._runner: web.AppRunner | None = None
        self.port = 0

    def metrics_allowed(self, request: web.Request) -> bool:
        """From an address of ``web.metrics_allow``, or with the ``web.metrics_token``."""
        token = self.config.web.metrics_token
        given = bearer_token(request)
        if token and given is not None and hmac.compare_digest(given.encode("utf-8", "replace"), token.encode()):
            return True
        ip = client_ip(request)
        return ip is not None and any(ip in net for net in self._metrics_allow if net.version == ip.version)

    async def _metrics(self, request: web.Request) -> web.Response:
        if not self.metrics_allowed(request):
            self.counters["web_metrics_refused"] += 1
            log.debug("x /metrics refused to %s (not in web.metrics_allow, no web.metrics_token)", request.remote)
            return web.Response(
                status=403, text="/metrics: not from web.metrics_allow and no valid Bearer token (web.metrics_token)\n"
            )
        page = render_metrics(lambda: {**self.stats(), **self.counters}, self.histograms)
        return web.Response(body=page, headers={"Content-Type": METRICS_CONTENT_TYPE})

    async def _health(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def _phone_page(self, request: web.Request) -> web.Response:
        """The softphone (static/index.html) with this server's ws/wss listeners and SIP
        domains filled in, so the page offers the right server URL."""
        page = STATIC_DIR / "index.html"
        if not page.is_file():
            raise web.HTTPNotFound(text="softphone page not installed (src/sipedge/web/static/index.html)")
        listen = [e for e in self.config.sip.listen if e.split(":", 1)[0] in ("ws", "wss")]
        page_config = json.dumps({"listen": listen, "domains": list(self.config.sip.domains)})
        page_config = page_config.replace("<", "\\u003c")  # never closes the script element
        tag = '<script id="sipedge-config" type="application/json">'
        html = page.read_text(encoding="utf-8").replace(f"{tag}{{}}</script>", f"{tag}{page_config}</script>", 1)
        return web.Response(text=html, content_type="text/html", headers={"Cache-Control": "no-cache"})

    async def start(self) -> None:
        host, _, port = self.config.web.listen.rpartition(":")
        host = host.strip("[]")
        self._runner = web.AppRunner(self.app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, int(port))
        await site.start()
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        self.port = sockets[0].getsockname()[1] if sockets else int(port)
        log.info("HTTP on http://%s:%d/ (metrics at /metrics)", host if ":" not in host else f"[{host}]", self.port)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
