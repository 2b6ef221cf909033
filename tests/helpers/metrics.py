"""Read a running ``sipedge serve``'s counters from its /metrics page."""

from __future__ import annotations

import re
import urllib.request

from .sipserver import Server


def metrics(server: Server) -> dict[str, float]:
    """Every ``sipedge_<name> <value>`` line, keyed by ``<name>`` (e.g. ``sip_udp_stun_bindings``)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{server.http}/metrics", timeout=5) as r:
        text = r.read().decode()
    return {k: float(v) for k, v in re.findall(r"^sipedge_(\w+) (\S+)$", text, re.M)}
