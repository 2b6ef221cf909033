"""The live web dashboard at ``/dashboard``: registrations, calls, TURN, bans, counters
over time and a SIP ladder diagram per call, drawn by our own page in
``static/dashboard/``.

Everything it shows comes from the control API's read-only commands (``ul.dump``,
``media.list``, ``media.query``, ``turn.allocations``, ``ban.list``, ``stats``,
``trace.list``, ``trace.show``), run through the same :class:`Commands` object that serves
``sipedge ctl`` and ``/api/``: one way of gathering the data.

Authentication: ``/dashboard/login`` asks for the admin token (``web.admin_token`` or
``<data_dir>/admin.token``); the right one opens a session, a random id kept here with its
expiry (``web.dashboard_session``, 8 hours by default) and sent as an ``HttpOnly; SameSite=Strict`` cookie
scoped to ``/dashboard``. Without a valid session, pages redirect to the login and data,
assets and the event stream answer 401; a wrong token gets 401 and is counted
(``web_dashboard_refused``). ``POST /dashboard/logout`` ends the session. Every answer
carries a strict Content-Security-Policy (scripts and styles only from this server, no
inline code), so an attacker's SIP header shown on the page can never run; the page also
builds every element with ``textContent``.

Live updates: ``/dashboard/events`` is a server-sent event stream: ``trace`` events with the
calls that have new messages (checked every :data:`TRACE_POLL` seconds) and a ``snapshot``
of every panel every :data:`SNAPSHOT_INTERVAL` seconds (at most :data:`MAX_ROWS` rows a
table, :data:`MAX_MEDIA_QUERIES` calls queried). At most :data:`MAX_STREAMS` streams at
once; a stream ends when its session does.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from aiohttp import web

from ..errors import Error

log = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static" / "dashboard"
COOKIE = "sipedge_dashboard"
SESSION_LIFETIME = 8 * 3600.0
MAX_SESSIONS = 64
MAX_STREAMS = 8
TRACE_POLL = 0.5
SNAPSHOT_INTERVAL = 2.0
MAX_MEDIA_QUERIES = 50
MAX_ROWS = 500
"""Rows of a table in one snapshot (the page says how many there are in all)."""
READ_COMMANDS = frozenset(
    ("stats", "ul.dump", "media.list", "media.query", "turn.allocations", "ban.list", "trace.list", "trace.show")
)
ASSETS = {"dashboard.js": "text/javascript", "dashboard.css": "text/css"}
HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}


class Commands(Protocol):
    """What the dashboard needs of the control API (:class:`sipedge.server.control.Control`)."""

    async def call(self, method: str, params: dict[str, Any]) -> Any: ...


class Sessions:
    """Random session ids and their expiry; at most ``limit`` (the oldest dropped first)."""

    def __init__(self, lifetime: float = SESSION_LIFETIME, limit: int = MAX_SESSIONS) -> None:
        self.lifetime = lifetime
        self.limit = limit
        self._expiry: OrderedDict[str, float] = OrderedDict()

    def open(self, now: float) -> str:
        sid = secrets.token_urlsafe(32)
        self._expiry[sid] = now + self.lifetime
        while len(self._expiry) > self.limit:
            self._expiry.popitem(last=False)
        return sid

    def valid(self, sid: str | None, now: float) -> bool:
        if not sid:
            return False
        expiry = self._expiry.get(sid)
        if expiry is None:
            return False
        if expiry <= now:
            del self._expiry[sid]
            return False
        return True

    def close(self, sid: str | None) -> None:
        if sid:
            self._expiry.pop(sid, None)

    def __len__(self) -> int:
        return len(self._expiry)


class Dashboard:
    """The routes of ``/dashboard`` over one set of control commands."""

    def __init__(self, commands: Commands, token: str, counters: dict[str, int],
                 lifetime: float = SESSION_LIFETIME, clock: Callable[[], float] = time.monotonic) -> None:
        self.commands = commands
        self._token = token.encode()
        self.counters = counters
        counters.setdefault("web_dashboard_logins", 0)
        counters.setdefault("web_dashboard_refused", 0)
        self.clock = clock
        self.sessions = Sessions(lifetime)
        self._streams = 0
        self._closing = asyncio.Event()

    def add_routes(self, app: web.Application) -> None:
        r = app.router
        r.add_get("/dashboard", self._index)
        r.add_get("/dashboard/", self._index)
        r.add_get("/dashboard/login", self._login_page)
        r.add_post("/dashboard/login", self._login)
        r.add_post("/dashboard/logout", self._logout)
        r.add_get("/dashboard/assets/{name}", self._asset)
        r.add_get("/dashboard/api/{name}", self._api)
        r.add_get("/dashboard/events", self._events)
        app.on_shutdown.append(self._shutdown)

    # -- sessions ---------------------------------------------------------------------
    def _session(self, request: web.Request) -> str | None:
        sid = request.cookies.get(COOKIE)
        return sid if self.sessions.valid(sid, self.clock()) else None

    def _unauthorized(self) -> web.Response:
        return web.json_response({"error": "log in at /dashboard/login"}, status=401, headers=HEADERS)

    async def _login_page(self, request: web.Request, status: int = 200, failed: bool = False) -> web.Response:
        html = (STATIC / "login.html").read_text(encoding="utf-8")
        if failed:
            html = html.replace('<p id="error" hidden>', '<p id="error">', 1)
        return web.Response(text=html, content_type="text/html", status=status, headers=HEADERS)

    async def _login(self, request: web.Request) -> web.Response:
        form = await request.post()
        given = form.get("token")
        if not isinstance(given, str) or not hmac.compare_digest(given.strip().encode("utf-8", "replace"),
                                                                 self._token):
            self.counters["web_dashboard_refused"] += 1
            log.info("x dashboard login refused to %s: wrong admin token", request.remote)
            return await self._login_page(request, status=401, failed=True)
        self.counters["web_dashboard_logins"] += 1
        sid = self.sessions.open(self.clock())
        log.info("- dashboard login from %s", request.remote)
        resp = web.HTTPSeeOther("/dashboard", headers=HEADERS)
        resp.set_cookie(COOKIE, sid, path="/dashboard", max_age=max(1, int(self.sessions.lifetime)), httponly=True,
                        samesite="Strict", secure=request.secure)
        return resp

    async def _logout(self, request: web.Request) -> web.Response:
        self.sessions.close(request.cookies.get(COOKIE))
        resp = web.HTTPSeeOther("/dashboard/login", headers=HEADERS)
        resp.del_cookie(COOKIE, path="/dashboard")
        return resp

    # -- pages and data ---------------------------------------------------------------
    async def _index(self, request: web.Request) -> web.StreamResponse:
        if self._session(request) is None:
            return web.HTTPSeeOther("/dashboard/login", headers=HEADERS)
        return web.FileResponse(STATIC / "index.html", headers={**HEADERS, "Content-Type": "text/html"})

    async def _asset(self, request: web.Request) -> web.StreamResponse:
        if self._session(request) is None:
            return self._unauthorized()
        name = request.match_info["name"]
        if name not in ASSETS:
            return web.json_response({"error": "no such asset"}, status=404, headers=HEADERS)
        return web.FileResponse(STATIC / name, headers={**HEADERS, "Content-Type": ASSETS[name]})

    async def _run(self, name: str, params: dict[str, Any]) -> tuple[int, Any]:
        """A read-only command → (HTTP status, result or {"error": ...})."""
        if name not in READ_COMMANDS:
            return 404, {"error": f"the dashboard reads only {', '.join(sorted(READ_COMMANDS))}"}
        try:
            return 200, await self.commands.call(name, params)
        except Error as exc:
            code = getattr(exc, "code", 500)
            return (code if code in (404, 503) else 400), {"error": str(exc)}

    async def _api(self, request: web.Request) -> web.Response:
        if self._session(request) is None:
            return self._unauthorized()
        status, body = await self._run(request.match_info["name"], dict(request.query))
        return web.json_response(body, status=status, headers=HEADERS, dumps=_dumps)

    async def snapshot(self) -> dict[str, Any]:
        """Every panel's data at once: what the event stream pushes."""
        out: dict[str, Any] = {}
        for key, name in (("registrations", "ul.dump"), ("turn", "turn.allocations"), ("bans", "ban.list"),
                          ("stats", "stats")):
            status, body = await self._run(name, {})
            out[key] = body if status == 200 else {"error": body["error"]}
            if isinstance(body, list):
                out[key], out[f"{key}_total"] = body[:MAX_ROWS], len(body)
        status, calls = await self._run("media.list", {})
        if status == 200:
            out["media_total"] = len(calls)
            media = []
            for call in calls[:MAX_MEDIA_QUERIES]:
                st, detail = await self._run("media.query", {"call_id": call["call_id"]})
                media.append(detail if st == 200 else call)
            out["media"] = media
        else:
            out["media"] = {"error": calls["error"]}
        out["time"] = time.time()
        return out

    async def _events(self, request: web.Request) -> web.StreamResponse:
        sid = self._session(request)
        if sid is None:
            return self._unauthorized()
        if self._streams >= MAX_STREAMS:
            return web.json_response({"error": f"at most {MAX_STREAMS} event streams"}, status=503,
                                     headers=HEADERS)
        self._streams += 1
        resp = web.StreamResponse(headers={**HEADERS, "Content-Type": "text/event-stream",
                                           "X-Accel-Buffering": "no"})  # a reverse proxy passes events at once
        try:
            await resp.prepare(request)
            since, next_snapshot = 0, 0.0
            while not self._closing.is_set() and self.sessions.valid(sid, self.clock()):
                status, trace = await self._run("trace.list", {"since": since})
                if status == 200 and trace["calls"]:
                    since = trace["seq"]
                    await resp.write(_event("trace", trace))
                if self.clock() >= next_snapshot:
                    next_snapshot = self.clock() + SNAPSHOT_INTERVAL
                    await resp.write(_event("snapshot", await self.snapshot()))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._closing.wait(), TRACE_POLL)
        except ConnectionError:
            pass
        finally:
            self._streams -= 1
        return resp

    async def _shutdown(self, app: web.Application) -> None:
        self._closing.set()


def _dumps(value: Any) -> str:
    return json.dumps(value, default=str)


def _event(name: str, data: Any) -> bytes:
    return f"event: {name}\ndata: {_dumps(data)}\n\n".encode()


def add_dashboard(app: web.Application, commands: Commands, token: str, counters: dict[str, int],
                  lifetime: float = SESSION_LIFETIME) -> Dashboard:
    """Serve the dashboard on ``app``, opened with ``token`` for ``lifetime`` seconds."""
    dashboard = Dashboard(commands, token, counters, lifetime)
    dashboard.add_routes(app)
    return dashboard

