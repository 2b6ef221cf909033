"""Config section of the HTTP side: metrics, health, the softphone page, admin API."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any

from ._schema import Check, option, positive


def _http_listen(v: Any) -> str | None:
    host, _, port = v.rpartition(":")
    if not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        return f'"host:port" such as "127.0.0.1:8088" ({v!r} is not)'
    return None


def _networks(v: Any) -> str | None:
    for item in v:
        try:
            ipaddress.ip_network(str(item), strict=False)
        except ValueError:
            return f'a list of IP addresses or networks like ["127.0.0.0/8", "::1", "10.1.0.0/16"]; {item!r} is not'
    return None


def _bounded(low: int, high: int) -> Check:
    def check(v: Any) -> str | None:
        return None if low <= v <= high else f"a whole number from {low} to {high}"

    return check


@dataclass(frozen=True, slots=True)
class WebConfig:
    """HTTP server: /metrics (Prometheus), /healthz, the softphone page."""

    enabled: bool = option(True, "serve HTTP (metrics, health, softphone page)")
    listen: str = option("127.0.0.1:8088", "HTTP listen address host:port", _http_listen)
    metrics_allow: list[str] = option(
        ["127.0.0.0/8", "::1"],
        "client addresses or networks that may read /metrics without a token (loopback by "
        'default; ["0.0.0.0/0", "::/0"] opens it to everyone); others get 403',
        _networks,
    )
    metrics_token: str = option(
        "", "token that also opens /metrics from anywhere, sent as Authorization: Bearer <token> (empty = none)"
    )
    api: bool = option(True, "serve the admin API under /api/ (the commands of `sipedge ctl`, behind admin_token) "
                             "and the dashboard at /dashboard (a login with admin_token)")
    admin_token: str = option(
        "",
        "token of the admin API, sent as Authorization: Bearer <token> (empty = one generated "
        "on first start and kept in <data_dir>/admin.token)",
    )
    trace: bool = option(
        True,
        "keep a bounded per-call trace of the SIP messages the proxy receives and sends (sipedge ctl trace, "
        "the dashboard's ladder diagrams)",
    )
    trace_calls: int = option(200, "calls (Call-IDs) the trace keeps; the least recently active is forgotten first",
                              _bounded(1, 100_000))
    trace_messages: int = option(200, "messages kept per call in the trace; its oldest forgotten first",
                                 _bounded(1, 10_000))
    trace_bytes: int = option(16384, "bytes kept of each traced message (the rest is cut, its size kept)",
                              _bounded(64, 65536))
    dashboard_session: float = option(
        8 * 3600.0, "seconds a dashboard login lasts (then the admin token is asked again)", positive
    )
