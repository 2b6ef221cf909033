"""The control API of a running server: the commands of ``sipedge ctl``.

As kamcmd talks to Kamailio's jsonrpcs module, ``sipedge ctl`` talks JSON-RPC 2.0 to
``sipedge serve``: one request per line on a Unix socket that only the server's user may
open (``general.control_socket``), and the same commands under ``/api/`` on the web port
behind a bearer token (``web.admin_token``, else one generated into the data directory).

Commands are named ``group.verb`` (``ul.dump``, ``ban.add``); their parameters are a
JSON object. A command that changes state (``writes``) is refused over HTTP GET. Errors
are JSON-RPC errors: -32700 unparseable, -32600 not a request, -32601 no such command,
-32602 bad parameters, and 404/409/503 for "not found", "conflict" and "that role is not
running here", each with a message saying what to do. Every request and reply is bounded
(:data:`MAX_REQUEST`), connections are bounded and time out, and a failing command is
logged and answered, never taking the server down.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import ipaddress
import json
import logging
import os
import socket
import stat
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web

from ..config import Config
from ..errors import ConfigError, Error, ParseError
from ..media.ng import NgServer
from ..proxy.location import Binding, normalize_aor
from ..proxy.trace import TraceStore
from ..web.server import bearer_token

if TYPE_CHECKING:
    from .app import App

log = logging.getLogger(__name__)

MAX_REQUEST = 64 * 1024
"""Bytes of one request line (socket) or body (HTTP)."""
MAX_CONNECTIONS = 16
IDLE_TIMEOUT = 60.0
LOG_LEVELS = ("debug", "info", "warning", "error")

Params = Mapping[str, Any]


class ControlError(Error):
    """A command refused: ``code`` is the JSON-RPC error code."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class Command:
    name: str
    run: Callable[[Params], Awaitable[Any]]
    summary: str
    params: tuple[str, ...] = ()  # names; a trailing "?" marks an optional one
    writes: bool = False


def _text(params: Params, name: str, required: bool = True) -> str | None:
    value = params.get(name)
    if value is None:
        if required:
            raise ControlError(-32602, f"missing parameter {name!r}")
        return None
    if not isinstance(value, str) or not value.strip():
        raise ControlError(-32602, f"parameter {name!r} must be a non-empty string")
    return value.strip()


def _ip(params: Params) -> str:
    text = _text(params, "source") or ""
    try:
        return str(ipaddress.ip_address(text.strip("[]")))
    except ValueError:
        raise ControlError(-32602, f"source {text!r} is not an IP address (e.g. 192.0.2.7 or 2001:db8::7)") from None


def _aor(params: Params) -> str:
    text = _text(params, "aor") or ""
    try:
        return normalize_aor(text if text.lower().startswith(("sip:", "sips:")) else "sip:" + text)
    except ParseError as exc:
        raise ControlError(-32602, f"aor {text!r} is not user@domain: {exc}") from None


def _binding(b: Binding, now: float) -> dict[str, Any]:
    return {
        "aor": b.aor,
        "contact": b.contact,
        "expires": b.expires_in(now),
        "q": b.q,
        "received": b.received,
        "socket": b.socket,
        "flow": b.flow,
        "user_agent": b.user_agent,
        "instance": b.instance,
        "reg_id": b.reg_id,
        "path": list(b.path),
        "call_id": b.call_id,
        "cseq": b.cseq,
    }


class Control:
    """The commands over one running :class:`~sipedge.server.app.App`."""

    def __init__(self, app: App) -> None:
        self.app = app
        self.commands: dict[str, Command] = {
            c.name: c
            for c in (
                Command("help", self._help, "the commands and their parameters"),
                Command("stats", self._stats, "every counter of every role (as /metrics)", ("prefix?",)),
                Command("ul.dump", self._ul_dump, "every registered contact"),
                Command("ul.show", self._ul_show, "the contacts of one address of record", ("aor",)),
                Command("ul.rm", self._ul_rm, "remove an AoR's contacts (or one of them)", ("aor", "contact?"),
                        writes=True),
                Command("media.list", self._media_list, "the calls the media relay holds"),
                Command("media.query", self._media_query, "one call's media: streams, addresses, packets",
                        ("call_id",)),
                Command("media.nodes", self._media_nodes,
                        "the remote media relays (media.remote): state, weight, calls"),
                Command("turn.allocations", self._turn_allocations, "the TURN allocations"),
                Command("trace.list", self._trace_list,
                        "the traced calls, most recent first (with since: only those with newer messages)",
                        ("since?",)),
                Command("trace.show", self._trace_show, "one call's SIP messages in order, whole",
                        ("call_id",)),
                Command("ban.list", self._ban_list, "the banned sources"),
                Command("ban.add", self._ban_add, "ban a source IP (default: sip.flood.ban_time seconds)",
                        ("source", "seconds?"), writes=True),
                Command("ban.rm", self._ban_rm, "lift a source's ban", ("source",), writes=True),
                Command("log.level", self._log_level, "show or set the log level", ("level?",), writes=True),
                Command("reload", self._reload, "re-read the routing module and the TLS certificate",
                        writes=True),
            )
        }
        self.commands["ds.list"] = Command("ds.list", self._ds_list,
                                           "the dispatcher's destinations and their state (up, probing, down)")
        # dialogs (docs/operations.md, "Dialogs")
        for c in (
            Command("dlg.list", self._dlg_list, "the calls the proxy follows (record-routed dialogs)"),
            Command("dlg.show", self._dlg_show, "one call's dialog: parties, state, timers, routes", ("call_id",)),
            Command("dlg.end", self._dlg_end, "end a call: BYE to both parties, its media deleted",
                    ("call_id",), writes=True),
        ):
            self.commands[c.name] = c
        self.counters: dict[str, int] = {"ctl_requests": 0, "ctl_errors": 0}
        self._ng_view: NgServer | None = None

    # -- dispatch ----------------------------------------------------------------------
    async def call(self, method: str, params: Params) -> Any:
        command = self.commands.get(method)
        if command is None:
            raise ControlError(-32601, f"no command {method!r}; 'help' lists them")
        known = {p.rstrip("?") for p in command.params}
        unknown = sorted(set(params) - known)
        if unknown:
            raise ControlError(-32602, f"{method}: unknown parameter(s) {', '.join(unknown)}; "
                                       f"it takes {', '.join(command.params) or 'none'}")
        return await command.run(params)

    async def handle(self, body: bytes, *, allow_writes: bool = True) -> dict[str, Any] | None:
        """One JSON-RPC 2.0 request → its response object (None for a notification)."""
        self.counters["ctl_requests"] += 1
        req_id: Any = None
        try:
            try:
                req = json.loads(body)
            except (ValueError, UnicodeDecodeError):
                raise ControlError(-32700, "not JSON; send one JSON-RPC 2.0 request object per line") from None
            if not isinstance(req, dict):
                raise ControlError(-32600, "a request is a JSON object with jsonrpc, method, params and id")
            req_id = req.get("id")
            method, params = req.get("method"), req.get("params", {})
            if not isinstance(method, str):
                raise ControlError(-32600, "'method' must be a string such as \"ul.dump\"")
            if params is None:
                params = {}
            if not isinstance(params, dict):
                raise ControlError(-32602, "'params' must be a JSON object of named parameters")
            command = self.commands.get(method)
            if not allow_writes and command is not None and command.writes:
                raise ControlError(-32600, f"{method} changes state: send it with POST")
            result = await self.call(method, params)
        except ControlError as exc:
            self.counters["ctl_errors"] += 1
            return {"jsonrpc": "2.0", "id": req_id, "error": {"code": exc.code, "message": exc.message}}
        except Exception:  # a bug: the server keeps serving, the caller learns it failed
            self.counters["ctl_errors"] += 1
            log.exception("x control command failed: %r", body[:200])
            return {"jsonrpc": "2.0", "id": req_id, "error": {"code": -32603, "message": "internal error (see the log)"}}
        if "id" not in req:
            return None
        return {"jsonrpc": "2.0", "id": req_id, "result": result}

    # -- commands ----------------------------------------------------------------------
    async def _help(self, params: Params) -> list[dict[str, Any]]:
        return [{"name": c.name, "params": list(c.params), "summary": c.summary, "writes": c.writes}
                for c in self.commands.values()]

    async def _stats(self, params: Params) -> dict[str, int | float]:
        prefix = _text(params, "prefix", required=False) or ""
        stats = self.app.stats()
        if self.app.web is not None:
            stats.update(self.app.web.counters)
        return {k: v for k, v in sorted(stats.items()) if k.startswith(prefix)}

    def _location(self) -> tuple[Any, float]:
        sip = self.app.sip
        if self.app.location is None or sip is None:
            raise ControlError(503, "the registrar is not running")
        return self.app.location, sip.clock.wall()

    async def _ul_dump(self, params: Params) -> list[dict[str, Any]]:
        location, now = self._location()
        return [_binding(b, now) for b in location.bindings(now)]

    async def _ul_show(self, params: Params) -> list[dict[str, Any]]:
        aor = _aor(params)
        location, now = self._location()
        found = location.lookup(aor, now)
        if not found:
            raise ControlError(404, f"{aor} has no registered contact")
        return [_binding(b, now) for b in found]

    async def _ul_rm(self, params: Params) -> dict[str, Any]:
        aor = _aor(params)
        contact = _text(params, "contact", required=False)
        location, now = self._location()
        found = location.lookup(aor, now)
        gone = [b for b in found if contact is None or b.contact == contact]
        if not gone:
            raise ControlError(404, f"{aor} has no registered contact {contact or ''}".rstrip())
        if contact is None:
            location.remove_aor(aor)
        else:
            location.remove(aor, contact)
        log.info("- control: removed %d contact(s) of %s", len(gone), aor)
        return {"aor": aor, "removed": [b.contact for b in gone]}

    def _relay(self) -> Any:
        if self.app.media is None:
            why = "it is remote (media.remote): ask that relay" if self.app.media_remote else "media.enabled is off"
            raise ControlError(503, f"no media relay in this process: {why}")
        return self.app.media

    def _ng(self, media: Any) -> NgServer:
        """rtpengine's view of a call (the ng ``query`` reply), whether or not ng is served."""
        if self._ng_view is None or self._ng_view.relay is not media.relay:
            self._ng_view = NgServer(media.relay, wall_clock=time.time)
        return self._ng_view

    async def _media_list(self, params: Params) -> list[dict[str, Any]]:
        media = self._relay()
        now, ng = media.loop.time(), self._ng(media)
        out = []
        for call_id in media.relay.calls():
            summary = ng.summary(call_id, now)
            if summary is not None:
                out.append(media_row(call_id, summary))
        return out

    async def _media_query(self, params: Params) -> dict[str, Any]:
        call_id = _text(params, "call_id") or ""
        if self.app.media is None and self.app.media_remote is not None:
            reply: dict[str, Any] = await self.app.media_remote.query(call_id)
            return reply
        media = self._relay()
        summary: dict[str, Any] | None = self._ng(media).summary(call_id, media.loop.time())
        if summary is None:
            raise ControlError(404, f"the media relay has no call {call_id!r}")
        return {"call_id": call_id, **summary}

    async def _media_nodes(self, params: Params) -> list[dict[str, Any]]:
        pool = self.app.media_remote
        if pool is None:
            raise ControlError(503, "no remote media relays here: media.remote is empty (the relay is built in)")
        return pool.nodes()

    async def _turn_allocations(self, params: Params) -> list[dict[str, Any]]:
        turn = self.app.turn
        if turn is None:
            raise ControlError(503, "the TURN server is not running here (turn.enabled)")
        core, now = turn.core, turn.loop.time()
        out = []
        for flow in core.flows():
            a = core.allocation(flow)
            if a is None:
                continue
            out.append({
                "client": f"{flow.transport}:{_hostport(flow.remote)}",
                "listener": f"{flow.transport}:{_hostport(flow.local)}",
                "username": a.username,
                "relayed": [_hostport(r) for r in a.relays.values()],
                "expires": max(0, int(a.expiry - now + 0.5)),
                "permissions": sorted(a.permissions),
                "channels": {str(n): _hostport(c.peer) for n, c in sorted(a.channels.items())},
            })
        return out

    def _trace(self) -> TraceStore:
        sip = self.app.sip
        if sip is None or sip.trace is None:
            raise ControlError(503, "the SIP trace is off (web.trace = false)")
        return sip.trace

    async def _trace_list(self, params: Params) -> dict[str, Any]:
        since = params.get("since", 0)
        if isinstance(since, str) and since.isdigit():
            since = int(since)
        if isinstance(since, bool) or not isinstance(since, int) or since < 0:
            raise ControlError(-32602, f"since must be a message sequence number >= 0, not {since!r}")
        trace = self._trace()
        return {"seq": trace.seq, "calls": trace.calls(since)}

    async def _trace_show(self, params: Params) -> dict[str, Any]:
        call_id = _text(params, "call_id") or ""
        messages = self._trace().show(call_id)
        if messages is None:
            raise ControlError(404, f"the trace has no call {call_id!r} (trace list shows the calls it keeps)")
        return {"call_id": call_id, "messages": messages}

    def _flood(self) -> Any:
        sip = self.app.sip
        if sip is None or sip.core is None:
            raise ControlError(503, "the SIP proxy is not running")
        return sip

    async def _ds_list(self, params: Params) -> list[dict[str, Any]]:
        sip = self._flood()
        ds = sip.core.dispatcher
        return [] if ds is None else ds.snapshot()

    async def _ban_list(self, params: Params) -> list[dict[str, Any]]:
        sip = self._flood()
        return [{"source": s, "seconds_left": round(left, 1), "dropped": dropped}
                for s, left, dropped in sip.core.flood.bans(sip.loop.time())]

    async def _ban_add(self, params: Params) -> dict[str, Any]:
        source = _ip(params)
        sip = self._flood()
        seconds = params.get("seconds", sip.config.sip.flood.ban_time)
        if isinstance(seconds, bool) or not isinstance(seconds, int | float) or not 0 < seconds <= 10 * 365 * 86400:
            raise ControlError(-32602, f"seconds must be a number above 0 (up to ten years), not {seconds!r}")
        sip.core.flood.ban(source, float(seconds), sip.loop.time())
        sip.kick()
        log.warning("x control: source %s banned for %g s", source, seconds)
        return {"source": source, "seconds": seconds}

    async def _ban_rm(self, params: Params) -> dict[str, Any]:
        source = _ip(params)
        sip = self._flood()
        if not sip.core.flood.lift(source):
            raise ControlError(404, f"{source} is not banned")
        sip.kick()
        log.warning("- control: ban of %s lifted", source)
        return {"source": source, "lifted": True}

    async def _log_level(self, params: Params) -> dict[str, str]:
        level = _text(params, "level", required=False)
        root = logging.getLogger()
        if level is not None:
            if level.lower() not in LOG_LEVELS:
                raise ControlError(-32602, f"level must be one of {', '.join(LOG_LEVELS)}, not {level!r}")
            root.setLevel(level.upper())
            log.warning("- control: log level set to %s", level.lower())
        return {"level": logging.getLevelName(root.getEffectiveLevel()).lower()}

    async def _reload(self, params: Params) -> dict[str, Any]:
        try:
            return self.app.reload()
        except ConfigError as exc:
            raise ControlError(409, f"nothing reloaded: {exc}") from None


    # -- dialogs ----------------------------------------------------------------------
    def _dialogs(self) -> Any:
        sip = self.app.sip
        if sip is None or sip.core is None or sip.core.dialogs is None:
            raise ControlError(503, "no dialog tracking here (the proxy is not running, or dialog.enabled is off)")
        return sip

    async def _dlg_list(self, params: Params) -> list[dict[str, Any]]:
        sip = self._dialogs()
        now = sip.clock.wall()
        return [d.summary(now) for d in list(sip.core.dialogs.active())]

    def _dialog(self, sip: Any, params: Params) -> Any:
        call_id = _text(params, "call_id") or ""
        found = sip.core.dialogs.dialogs.get(call_id)
        if found is None:
            raise ControlError(404, f"no call {call_id[:200]!r} (dlg.list shows the calls)")
        return found

    async def _dlg_show(self, params: Params) -> dict[str, Any]:
        sip = self._dialogs()
        d = self._dialog(sip, params)
        out: dict[str, Any] = d.summary(sip.clock.wall())
        out["refresher"] = d.refresher
        out["caller_leg"] = {"uri": d.caller_leg.uri, "route": d.caller_leg.route, "cseq": d.caller_leg.cseq}
        out["callee_leg"] = {"uri": d.callee_leg.uri, "route": d.callee_leg.route, "cseq": d.callee_leg.cseq}
        return out

    async def _dlg_end(self, params: Params) -> dict[str, Any]:
        sip = self._dialogs()
        d = self._dialog(sip, params)
        media = self.app.media
        if media is not None and d.call_id in media.relay.calls():
            store = self.app.dialog_store
            if store is not None:
                store.media_directions(d.call_id, sip.media_directions(media.relay.query(d.call_id)))
            await media.delete(d.call_id)  # first, so its totals are in the CDR
        state = d.state
        sip.end_dialog(d.call_id, "ended by control")
        log.warning("- control: call %s ended", d.call_id)
        return {"call_id": d.call_id, "ended": True, "was": state}


def media_row(call_id: str, summary: dict[str, Any]) -> dict[str, Any]:
    """One call of ``media.list``, from its ng ``query`` summary."""
    totals = summary["totals"]
    return {
        "call_id": call_id,
        "created": summary["created"],
        "tags": list(summary["tags"]),
        "rtp_packets": totals["RTP"]["packets"],
        "rtcp_packets": totals["RTCP"]["packets"],
    }


def _hostport(addr: tuple[str, int]) -> str:
    host, port = addr[0], addr[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


# -- the Unix socket -------------------------------------------------------------------
def control_socket_path(config: Config) -> Path | None:
    """Where ``sipedge ctl`` finds the server (None: ``general.control_socket = "off"``)."""
    value = config.general.control_socket
    if value == "off":
        return None
    return Path(value) if value else Path(config.general.data_dir) / "control.sock"


class ControlSocket:
    """JSON-RPC, one request per line, on a Unix stream socket of mode 0600."""

    def __init__(self, control: Control, path: Path) -> None:
        self.control = control
        self.path = path
        self._server: asyncio.base_events.Server | None = None
        self._connections = 0

    async def start(self) -> None:
        path = self.path
        if len(os.fsencode(path)) > 100:
            raise ConfigError(f"general.control_socket = {str(path)!r}: longer than a Unix socket path may be; "
                              "set a shorter path")
        with contextlib.suppress(FileNotFoundError):
            mode = path.lstat().st_mode
            if not stat.S_ISSOCK(mode):
                raise ConfigError(f"general.control_socket = {str(path)!r} exists and is not a socket; remove it "
                                  "or set another path")
            if _answers(path):
                raise ConfigError(f"general.control_socket = {str(path)!r}: another sipedge serves it; stop that "
                                  "one or set another path")
            path.unlink()  # left by a server that did not stop cleanly
        old = os.umask(0o177)  # the socket is born 0600: no window where others may connect
        try:
            self._server = await asyncio.start_unix_server(self._serve, path, limit=MAX_REQUEST)
        finally:
            os.umask(old)
        log.info("control socket %s (sipedge ctl)", path)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await self._server.wait_closed()
            self._server = None
            with contextlib.suppress(OSError):
                self.path.unlink()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._connections >= MAX_CONNECTIONS:
            writer.close()
            return
        self._connections += 1
        try:
            while True:
                try:
                    line = await asyncio.wait_for(reader.readline(), IDLE_TIMEOUT)
                except (asyncio.LimitOverrunError, ValueError):
                    reply: dict[str, Any] | None = {"jsonrpc": "2.0", "id": None, "error": {
                        "code": -32600, "message": f"request over {MAX_REQUEST} bytes"}}
                    writer.write(json.dumps(reply).encode() + b"\n")
                    await writer.drain()
                    return
                if not line:
                    return
                if not line.strip():
                    continue
                reply = await self.control.handle(line)
                if reply is not None:
                    writer.write(json.dumps(reply, default=str).encode() + b"\n")
                    await writer.drain()
        except (TimeoutError, ConnectionError):
            return
        finally:
            self._connections -= 1
            writer.close()


def _answers(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(1.0)
        try:
            s.connect(str(path))
        except OSError:
            return False
        return True


# -- the HTTP side ---------------------------------------------------------------------
def add_api_routes(app: web.Application, control: Control, token: str, counters: dict[str, int]) -> None:
    """``POST /api/`` (JSON-RPC), ``GET /api/<command>?param=...`` for commands that only
    read, ``POST /api/<command>`` with a JSON object of parameters for any. Without the
    token: 401 and nothing else (``web_api_refused``)."""
    counters.setdefault("web_api_refused", 0)
    expected = token.encode()

    def allowed(request: web.Request) -> bool:
        given = bearer_token(request)
        if given is not None and hmac.compare_digest(given.encode("utf-8", "replace"), expected):
            return True
        counters["web_api_refused"] += 1
        log.debug("x /api refused to %s: no valid admin token", request.remote)
        return False

    def refused() -> web.Response:
        return web.json_response({"error": "unauthorized"}, status=401,
                                 headers={"WWW-Authenticate": 'Bearer realm="sipedge"'})

    async def body_of(request: web.Request) -> bytes | None:
        if request.content_length is not None and request.content_length > MAX_REQUEST:
            return None
        data = await request.content.read(MAX_REQUEST + 1)
        return None if len(data) > MAX_REQUEST else data

    def answer(reply: dict[str, Any] | None) -> web.Response:
        if reply is None:
            return web.Response(status=204)
        status = 200
        if "error" in reply:
            code = reply["error"]["code"]
            status = code if code in (404, 409, 503) else 500 if code == -32603 else 400
        return web.json_response(reply, status=status, dumps=lambda o: json.dumps(o, default=str))

    async def rpc(request: web.Request) -> web.Response:
        if not allowed(request):
            return refused()
        body = await body_of(request)
        if body is None:
            return web.json_response({"error": f"body over {MAX_REQUEST} bytes"}, status=413)
        return answer(await control.handle(body))

    async def command(request: web.Request) -> web.Response:
        if not allowed(request):
            return refused()
        name = request.match_info["name"].replace("/", ".")
        params: Any
        if request.method == "GET":
            params = dict(request.query)
            if "seconds" in params:
                with contextlib.suppress(ValueError):
                    params["seconds"] = float(params["seconds"])
        else:
            body = await body_of(request)
            if body is None:
                return web.json_response({"error": f"body over {MAX_REQUEST} bytes"}, status=413)
            try:
                params = json.loads(body) if body.strip() else {}
            except (ValueError, UnicodeDecodeError):
                return web.json_response({"error": "the body is not JSON; send a JSON object of parameters"},
                                         status=400)
        envelope = json.dumps({"jsonrpc": "2.0", "id": 1, "method": name, "params": params}).encode()
        return answer(await control.handle(envelope, allow_writes=request.method == "POST"))

    app.router.add_post("/api", rpc)
    app.router.add_post("/api/", rpc)
    app.router.add_route("GET", "/api/{name:.+}", command)
    app.router.add_route("POST", "/api/{name:.+}", command)
