"""The dashboard in headless Chromium (Playwright, the system /usr/bin/chromium) against a
real ``sipedge serve`` with SIPp and JsSIP clients, in a loopback-only namespace
(tests/browser/dashboard_worker.py drives it; this file checks what it saw).

Proves: without a session the dashboard sends the browser to its login page; a wrong token
is refused; the right one opens every view (registrations of a SIPp and a JsSIP client,
the active relayed call with its codec and the RTP packets sent to it, bans, an aioice TURN allocation, counter plots); the SIPp call's ladder
shows INVITE/100/180/200/ACK/BYE/200 in order and a click shows the whole BYE; HTML in a
From display name and a User-Agent renders as text and never runs; the session cookie is
out of JavaScript's reach; logout ends it. A screenshot of each view is kept.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from browser.netns import missing, report, run_scenario

pytestmark = [pytest.mark.browser, pytest.mark.sipp, pytest.mark.netns, pytest.mark.timeout(150)]

WORKER = Path(__file__).resolve().parents[1] / "browser" / "dashboard_worker.py"
LADDER = ["INVITE", "100", "180", "200", "ACK", "BYE", "200"]
XSS_NAME = "<img src=x onerror=window.__xss=1>"
XSS_AGENT = "<script>window.__xss=2</script><b>bold</b>"


def in_order(labels: list[str], wanted: list[str]) -> bool:
    it = iter(labels)
    return all(any(x == w for x in it) for w in wanted)


@pytest.mark.skipif(missing() is not None, reason=str(missing()))
def test_dashboard_in_chromium(tmp_path: Path) -> None:
    result = run_scenario("dashboard", tmp_path, timeout=120.0, worker=WORKER)
    why = report(tmp_path, result)
    assert result["error"] is None, why

    assert result["unauthenticated"]["url"].endswith("/dashboard/login"), why
    assert result["wrong_token"]["error_shown"] and result["wrong_token"]["url"].endswith("/dashboard/login"), why
    assert result["logged_in"]["url"].endswith("/dashboard"), why
    assert "sipedge_dashboard" not in result["logged_in"]["document_cookie"], why  # HttpOnly

    rows = {r[0]: r for r in result["registrations"]["rows"]}
    host = "127.0.0.1"
    bob, alice, carol = rows[f"sip:bob@{host}"], rows[f"sip:alice@{host}"], rows[f"sip:carol@{host}"]
    assert bob[2] == "udp" and alice[2] == "ws", why  # SIPp over UDP, JsSIP over WebSocket
    assert "JsSIP" in alice[4] and ".invalid" in alice[1], why
    assert carol[4] == XSS_AGENT, why  # shown as the text it is

    calls = result["calls"]["rows"]
    assert any("PCMU/8000" in r[4] and "carol" in r[1] and "bob" in r[2] and "relay" in r[6] for r in calls), why
    assert int(calls[0][7]) >= 40 and len(calls) == 2, why  # RTP sent to the caller's relay port, counted
    assert "192.0.2.7" in result["bans"]["text"], why
    (turn,) = [r for r in result["turn"]["rows"] if "dash-user" in r[1]]
    assert turn[0].startswith("udp:127.0.0.1:") and turn[2].startswith("127.0.0.1:") and "127.0.0.1" in turn[4], why
    assert "sip_requests_received" in result["counters"]["plots"], why

    ladder = result["ladder"]
    assert in_order(ladder["labels"], LADDER), why
    assert len(ladder["columns"]) >= 3, why  # caller, sipedge, callee
    assert ladder["message"].startswith("BYE sip:") and f"Call-ID: {result['call_id']}" in ladder["message"], why
    assert ladder["has_html_from"], why

    assert result["html_is_text"] == {"xss": None, "images": 0, "bold": 0, "scripts": 0}, why
    assert result["logged_out"]["url"].endswith("/dashboard/login"), why
    assert result["logged_out"]["again"].endswith("/dashboard/login"), why
    assert result["logged_out"]["data_status"] == 401, why

    for page in ("login", "registrations", "calls", "bans", "turn", "counters", "trace"):
        shot = tmp_path / f"{page}.png"
        assert shot.is_file() and shot.stat().st_size > 2000, page
