"""``sipedge serve`` runs its own full garbage collections (``general.gc_interval``) and
reports them in /metrics, while clients register over every transport."""

from __future__ import annotations

import re
import time
import urllib.request
from pathlib import Path

from helpers.metrics import metrics
from helpers.sipserver import Server, running_server
from helpers.ua import UA

USERS = {"alice": "alice-pw"}


def gc_metrics(server: Server) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{server.http}/metrics", timeout=5) as r:
        text = r.read().decode()
    return {k: float(v) for k, v in re.findall(r"^sipedge_(gc_\w+) (\S+)$", text, re.M)}


def test_full_collections_run_on_the_configured_interval_and_are_reported(tmp_path: Path) -> None:
    with running_server(tmp_path, users=USERS, general="gc_interval = 0.2") as s:
        ports = {"udp": s.udp, "tcp": s.tcp, "tls": s.tls, "ws": s.ws, "wss": s.wss}
        for _ in range(4):
            for transport, port in ports.items():
                ua = UA(transport, (s.host, port), "alice", s.host, USERS["alice"])
                try:
                    assert ua.register().status == 200
                    assert ua.register(expires=0).status == 200
                finally:
                    ua.close()
        first = gc_metrics(s)
        time.sleep(0.6)
        later = gc_metrics(s)
    assert later["gc_full_collections"] >= first["gc_full_collections"] + 2
    assert 0 < later["gc_full_max_pause_seconds"] < 1
    assert "gc_full_unreachable_objects" in later


def test_answered_udp_transactions_are_parked_and_reported(tmp_path: Path) -> None:
    """Each REGISTER answered 200 over UDP lingers 32 s (Timer J) as a parked tuple,
    counted by sip_tx_lingering (and in sip_tx_live)."""
    with running_server(tmp_path, users=USERS) as s:
        ua = UA("udp", (s.host, s.udp), "alice", s.host, USERS["alice"])
        try:
            for _ in range(5):
                assert ua.register().status == 200
        finally:
            ua.close()
        m = metrics(s)
        assert m["sip_tx_lingering"] >= 5
        assert m["sip_tx_live"] >= m["sip_tx_lingering"]
