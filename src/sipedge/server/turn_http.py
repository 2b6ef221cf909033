"""The iceServers HTTP endpoint: a WebRTC app fetches time-limited TURN credentials.

``GET /turn/ice-servers?user=<id>`` returns ``{"iceServers": [...], "ttl": N,
"expires": T}`` with TURN REST API credentials (the job of Xirsys's and Twilio's token
endpoints). When ``[turn] api_key`` is set, the request must carry it as ``?key=`` or
``Authorization: Bearer <key>``; otherwise anyone who can reach the endpoint gets
credentials, so put it behind the web app's own authentication.
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Awaitable, Callable

from aiohttp import web

from ..config.turn import TurnConfig, split_listener
from ..turn.auth import ice_servers

ICE_SERVERS_PATH = "/turn/ice-servers"
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def default_urls(cfg: TurnConfig, request_host: str) -> list[str]:
    """stun:/turn:/turns: URLs from the listeners; a wildcard listener takes the host the
    client used to reach us (``request_host``)."""
    out: list[str] = []
    for item in cfg.listen:
        proto, host, port = split_listener(item)
        if host in ("0.0.0.0", "::", ""):
            host = request_host or "127.0.0.1"
        h = _host(host)
        if proto == "udp":
            out.append(f"stun:{h}:{port}")
            out.append(f"turn:{h}:{port}?transport=udp")
        elif proto == "tcp":
            out.append(f"turn:{h}:{port}?transport=tcp")
        else:
            out.append(f"turns:{h}:{port}?transport=tcp")
    return out


def ice_servers_handler(cfg: TurnConfig, wall_clock: Callable[[], float] = time.time) -> Handler:
    async def handle(request: web.Request) -> web.StreamResponse:
        if not cfg.secrets:
            return web.json_response(
                {"error": "TURN REST credentials are off: set [turn] secrets"}, status=503
            )
        if cfg.api_key:
            given = request.query.get("key", "")
            auth = request.headers.get("Authorization", "")
            if auth.startswith("Bearer "):
                given = auth[7:]
            if not hmac.compare_digest(given.encode(), cfg.api_key.encode()):
                return web.json_response({"error": "missing or wrong API key"}, status=401)
        user = request.query.get("user", "")[:64]
        if ":" in user:
            return web.json_response({"error": "user must not contain ':'"}, status=400)
        urls = cfg.ice_urls or default_urls(cfg, request.url.host or "")
        doc = ice_servers(urls, cfg.secrets[0], user, cfg.rest_ttl, wall_clock())
        return web.json_response(doc, headers={"Cache-Control": "no-store"})

    return handle


def add_routes(app: web.Application, cfg: TurnConfig, wall_clock: Callable[[], float] = time.time) -> None:
    """Mount ``GET /turn/ice-servers`` on an aiohttp application."""
    app.router.add_get(ICE_SERVERS_PATH, ice_servers_handler(cfg, wall_clock))
