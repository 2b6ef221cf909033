"""The HTTP side of sipedge (aiohttp): Prometheus metrics, health, static pages.

Every role exposes ``stats()``; ``/metrics`` renders them all as Prometheus text, so an
operator scrapes one endpoint per process. Roles add their own routes (the TURN
``iceServers`` endpoint, the softphone page) through ``extra_routes``.
"""

from __future__ import annotations

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
    """Prometheus text format: counters and gauges as untyped samples, names sanitized."""
    lines = []
    for name in sorted(stats):
        value = stats[name]
        metric = prefix + "".join(c if c.isalnum() or c == "_" else "_" for c in name)
        lines.append(f"{metric} {value}")
    return "\n".join(lines) + "\n"


class WebServer:
    def __init__(self, config: Config, stats: StatsProvider, extra_routes: Iterable[RouteAdder] = ()) -> None:
        self.config = config
        self.stats = stats
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

    async def _metrics(self, request: web.Request) -> web.Response:
        return web.Response(text=render_metrics(self.stats()), content_type="text/plain")

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
