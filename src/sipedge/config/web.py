"""Config section of the HTTP side: metrics, health, the softphone page, admin API."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ._schema import option


def _http_listen(v: Any) -> str | None:
    host, _, port = v.rpartition(":")
    if not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        return f'"host:port" such as "127.0.0.1:8088" ({v!r} is not)'
    return None


@dataclass(frozen=True, slots=True)
class WebConfig:
    """HTTP server: /metrics (Prometheus), /healthz, the softphone page."""

    enabled: bool = option(True, "serve HTTP (metrics, health, softphone page)")
    listen: str = option("127.0.0.1:8088", "HTTP listen address host:port", _http_listen)
