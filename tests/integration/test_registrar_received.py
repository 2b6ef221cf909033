"""``ctx.fix_nated_register()`` opts a REGISTER into keeping its source as the received
URI (as Kamailio's fix_nated_register), and the registrar's counters reach /metrics;
through ``sipedge serve``, the bindings read back with ``sipedge ctl ul show``."""

from __future__ import annotations

import json
from pathlib import Path

from helpers.metrics import metrics
from helpers.sipserver import Server, cli, running_server
from helpers.ua import UA

ROUTING = '''
from sipedge.proxy import default_routing


def request_route(ctx):
    if ctx.method == "REGISTER":
        ctx.fix_nated_register()
        ctx.save()
        return
    default_routing.request_route(ctx)
'''


def _received(server: Server, user: str) -> list[str]:
    proc = cli(["ctl", "--config", str(server.config), "--json", "ul", "show", f"{user}@{server.host}"])
    return [b["received"] for b in json.loads(proc.stdout)]


def test_fix_nated_register_keeps_the_source_and_the_default_keeps_none_for_a_public_phone(tmp_path: Path) -> None:
    routing = tmp_path / "routing.py"
    routing.write_text(ROUTING)
    with running_server(tmp_path / "opt-in", extra=f'\n[routing]\nmodule = "{routing}"\n') as s:
        ua = UA("udp", (s.host, s.udp), "carol", s.host)
        try:
            assert ua.register().status == 200
        finally:
            ua.close()
        assert _received(s, "carol") == [f"sip:127.0.0.1:{ua.port}"]
        counters = metrics(s)
        assert counters["registrar_requests"] >= 1 and counters["registrar_bindings_added"] >= 1
    with running_server(tmp_path / "default", users={"dave": "dave-pw"}) as s:
        ua = UA("udp", (s.host, s.udp), "dave", s.host, "dave-pw")
        try:
            assert ua.register().status == 200
        finally:
            ua.close()
        assert _received(s, "dave") == [""]  # Contact = source: nothing to remember
        assert metrics(s)["registrar_ok"] >= 1
