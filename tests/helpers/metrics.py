"""Read a running ``sipedge serve``'s counters from its /metrics page."""

from __future__ import annotations

import re
import time
import urllib.error
import urllib.request

from .sipserver import Server


def metrics(server: Server, timeout: float = 5.0) -> dict[str, float]:
    """Every ``sipedge_<name> <value>`` line, keyed by ``<name>`` (e.g. ``sip_udp_stun_bindings``;
    with workers, also ``sip_requests_received{worker="1"}``).

    The web listener starts after SIP answers (what ``running_server`` waits for), so a
    refused connection is retried for up to ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    host = f"[{server.host}]" if ":" in server.host else server.host
    while True:
        try:
            with urllib.request.urlopen(f"http://{host}:{server.http}/metrics", timeout=5) as r:
                text = r.read().decode()
            break
        except urllib.error.URLError as exc:
            if not isinstance(exc.reason, ConnectionRefusedError) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)
    return {k: float(v) for k, v in re.findall(r"^sipedge_(\w+(?:\{[^}\n]*\})?) (\S+)$", text, re.M)}
