"""The HTTP side of sipedge (aiohttp): Prometheus metrics, health, static pages.

Every role exposes ``stats()``; ``/metrics`` renders them all as Prometheus text, so an
operator scrapes one endpoint per process. Counts tell an outsider how busy the server
is and which roles run, so ``/metrics`` answers only clients in ``web.metrics_allow``
(loopback by default) or requests carrying ``Authorization: Bearer <web.metrics_token>``;
others get 403 (``web_metrics_refused``). Roles add their own routes (the TURN
``iceServers`` endpoint) through ``extra_routes`` or on :attr:`WebServer.app` before
:meth:`WebServer.start`, and may count in :attr:`WebServer.counters`.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import logging
from collections.abc import Callable, Iterable
from pathlib import Path

from aiohttp import web

from ..config import Config

log = logging.getLogger(__name__)

StatsProvider = Callable[[], dict[str, int | float]]
RouteAdder = Callable[[web.Application], None]

STATIC_DIR = Path(__file__).parent / "static"


def render_metrics(stats: dict[str, int | float], prefix: str = "sipedge_") -> str:
    """Prometheus text format: counters and gauges as untyped samples, names sanitized;
    a name may end in labels of our own making (``{worker="1"}``, server/worker.py)."""
    lines = []
    for name in sorted(stats):
        value = stats[name]
        base, brace, labels = name.partition("{")
        metric = prefix + "".join(c if c.isalnum() or c == "_" else "_" for c in base)
        lines.append(f"{metric}{brace}{labels} {value}")
    return "\n".join(lines) + "\n"


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
    def __init__(self, config: Config, stats: StatsProvider, extra_routes: Iterable[RouteAdder] = ()) -> None:
        self.config = config
        self.stats = stats
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
        stats = {**self.stats(), **self.counters}
        return web.Response(text=render_metrics(stats), content_type="text/plain")

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
