"""The iceServers HTTP endpoint: a WebRTC app fetches time-limited TURN credentials.

``GET /turn/ice-servers?user=<id>`` returns ``{"iceServers": [...], "ttl": N,
"expires": T}`` with TURN REST API credentials (the job of Xirsys's and Twilio's token
endpoints). Every answer is a working TURN credential for ``rest_ttl`` seconds, so the
endpoint is closed by default. A request is served when it carries

- the ``[turn] api_key``, as ``?key=`` or ``Authorization: Bearer <key>`` (a web app's
  back end that authenticated its own users), or
- a SIP subscriber's HTTP digest credentials (RFC 7616, the same HA1 the registrar
  checks; realm ``auth.realm``, else the ``?domain=`` of the request, else the only one of
  ``sip.domains``, else the Host). The TURN username then names that subscriber, whatever
  ``?user=`` says. The bundled softphone page does this with the password it registers
  with. Or
- anything at all, when ``[turn] ice_servers_open = true`` (behind a front end that
  authenticates).

Otherwise: 401 with the challenges (``Digest`` for subscribers, ``Bearer`` for the key),
or 403 when there is no way in (``sipedge turn serve`` without ``api_key``). Counters
``web_ice_servers_issued`` and ``web_ice_servers_refused``.
"""

from __future__ import annotations

import hmac
import logging
import time
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass

from aiohttp import web
from multidict import CIMultiDict

from ..config.turn import TurnConfig, split_listener
from ..sip import auth as digest
from ..turn.auth import ice_servers

ICE_SERVERS_PATH = "/turn/ice-servers"
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class SubscriberAuth:
    """HTTP digest authentication of SIP subscribers for the endpoint."""

    digest: digest.DigestAuth
    """Nonces and verification (``check_uri`` on: the digest uri must be the request's)."""
    ha1: Callable[[str, str, str], str | None]
    """The subscriber table's ``ha1(username, realm, algorithm)``."""
    realm: str = ""
    """A fixed realm (``auth.realm``); empty: the request's ``?domain=``, else
    ``default_domain``, else the Host the client used."""
    default_domain: str = ""

    def realm_for(self, request: web.Request) -> str:
        if self.realm:
            return self.realm
        domain = request.query.get("domain", "").strip().lower().rstrip(".")
        return domain or self.default_domain or (request.url.host or "").lower()


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


def _given_key(request: web.Request) -> str | None:
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer":
        return value.strip()
    return request.query.get("key")


def ice_servers_handler(
    cfg: TurnConfig,
    wall_clock: Callable[[], float] = time.time,
    subscribers: SubscriberAuth | None = None,
    counters: MutableMapping[str, int] | None = None,
) -> Handler:
    stats: MutableMapping[str, int] = counters if counters is not None else {}
    stats.setdefault("web_ice_servers_issued", 0)
    stats.setdefault("web_ice_servers_refused", 0)

    def refuse(status: int, error: str, headers: CIMultiDict[str] | None = None) -> web.Response:
        stats["web_ice_servers_refused"] += 1
        return web.json_response({"error": error}, status=status, headers=headers)

    def authorize(request: web.Request) -> web.Response | str | None:
        """None: served as asked; a str: served to that subscriber; a response: refused."""
        if cfg.ice_servers_open:
            return None
        key = _given_key(request)
        if cfg.api_key and key is not None and hmac.compare_digest(key.encode("utf-8", "replace"), cfg.api_key.encode()):
            return None
        if subscribers is None and not cfg.api_key:
            return refuse(403, "closed: set [turn] api_key (or ice_servers_open)")
        challenges: CIMultiDict[str] = CIMultiDict()
        if subscribers is not None:
            realm = subscribers.realm_for(request)
            now = wall_clock()
            values = [v for v in request.headers.getall("Authorization", []) if v[:7].lower() == "digest "]
            outcome = subscribers.digest.verify(
                digest.select_credentials(values, realm), method=request.method, realm=realm, now=now,
                ha1_lookup=subscribers.ha1, request_uri=request.raw_path,
            )
            if outcome.ok:
                return outcome.username
            if outcome.result is not digest.AuthResult.MISSING:
                log.info("x %s from %s: digest %s for %r %s", ICE_SERVERS_PATH, request.remote,
                         outcome.result.value, outcome.username, outcome.detail)
            if not outcome.result.challenge:
                return refuse(400, f"bad Authorization header ({outcome.result.value})")
            for c in subscribers.digest.challenges(realm, now, stale=outcome.result.stale):
                challenges.add("WWW-Authenticate", c)
        if cfg.api_key:
            challenges.add("WWW-Authenticate", 'Bearer realm="sipedge ice-servers"')
        return refuse(401, "authentication required: a subscriber's digest credentials or the API key", challenges)

    async def handle(request: web.Request) -> web.StreamResponse:
        if not cfg.secrets:
            return web.json_response(
                {"error": "TURN REST credentials are off: set [turn] secrets"}, status=503
            )
        who = authorize(request)
        if isinstance(who, web.Response):
            return who
        user = (who if who is not None else request.query.get("user", ""))[:64]
        if ":" in user:
            return web.json_response({"error": "user must not contain ':'"}, status=400)
        urls = cfg.ice_urls or default_urls(cfg, request.url.host or "")
        doc = ice_servers(urls, cfg.secrets[0], user, cfg.rest_ttl, wall_clock())
        stats["web_ice_servers_issued"] += 1
        return web.json_response(doc, headers={"Cache-Control": "no-store"})

    return handle


def add_routes(
    app: web.Application,
    cfg: TurnConfig,
    wall_clock: Callable[[], float] = time.time,
    subscribers: SubscriberAuth | None = None,
    counters: MutableMapping[str, int] | None = None,
) -> None:
    """Mount ``GET /turn/ice-servers`` on an aiohttp application."""
    app.router.add_get(ICE_SERVERS_PATH, ice_servers_handler(cfg, wall_clock, subscribers, counters))
