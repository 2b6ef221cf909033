"""The softphone page as ``sipedge serve`` serves it (no browser needed): ``/`` carries the
server's own ws/wss listeners and domains, the scripts are under ``/static/``."""

from __future__ import annotations

import json
import re
import urllib.request
from pathlib import Path

import pytest

from helpers.sipserver import running_server

pytestmark = [pytest.mark.browser, pytest.mark.timeout(30)]

JSSIP = Path(__file__).resolve().parents[2] / "src/sipedge/web/static/jssip.js"


def get(url: str) -> tuple[int, str, str]:
    with urllib.request.urlopen(url, timeout=5) as r:
        return r.status, r.headers.get("Content-Type", ""), r.read().decode()


def test_phone_page_offers_this_servers_websocket_listeners(tmp_path: Path) -> None:
    with running_server(tmp_path) as s:
        base = f"http://{s.host}:{s.http}"
        status, ctype, html = get(base + "/")
        assert status == 200 and ctype.startswith("text/html")
        m = re.search(r'<script id="sipedge-config" type="application/json">(.*?)</script>', html)
        assert m, html[:500]
        cfg = json.loads(m.group(1))
        assert cfg["listen"] == [f"ws:{s.host}:{s.ws}", f"wss:{s.host}:{s.wss}"]
        assert cfg["domains"] == []
        assert '<script src="/static/phone.js">' in html and '<script src="/static/jssip.js">' in html
        status, _, js = get(base + "/static/phone.js")
        assert status == 200 and "window.phone" in js
        if JSSIP.is_file():
            status, _, bundle = get(base + "/static/jssip.js")
            assert status == 200 and "JsSIP" in bundle
