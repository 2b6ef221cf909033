"""The softphone page in a real browser: Debian chromium (headless, fake microphone)
driven by Playwright, JsSIP over WS/WSS through a real ``sipedge serve``.

Each test runs ``tests/browser/worker.py`` in a loopback-only network namespace (see
``tests/browser/netns.py``): sipedge, Chromium, SIPp and the Playwright driver live and die
there; pytest only reads the worker's ``result.json``. On failure the message carries the
worker's steps, the sipedge log and the browsers' consoles (JsSIP debug on).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from browser.netns import missing, report, run_scenario

pytestmark = [pytest.mark.browser, pytest.mark.timeout(90)]


@pytest.fixture(autouse=True)
def _needs_browser() -> None:
    why = missing()
    if why:
        pytest.skip(why)


def test_two_browsers_call_with_media_message_and_hangup(tmp_path: Path) -> None:
    """alice and bob register over WSS; alice calls bob, bob answers; both peer
    connections receive growing RTP (getStats inbound-rtp bytesReceived); alice's MESSAGE
    reaches bob; alice hangs up and both pages show the end."""
    result = run_scenario("call", tmp_path, timeout=40)
    why = report(tmp_path, result)
    assert result["error"] is None, why
    assert result["steps"] == ["server", "registered", "ringing", "confirmed", "media", "message", "ended"], why
    assert result["ringing"]["callee_from"] == "sip:alice@127.0.0.1", why
    media = result["media"]
    for user in ("alice", "bob"):
        assert media["later"][user] > media["first"][user] > 0, why
    assert result["message"]["peer"] == "sip:alice@127.0.0.1", why
    ended = result["ended"]
    assert ended["caller"] == {"state": "ended", "cause": "Terminated", "originator": "local"}, why
    assert ended["callee"] == {"state": "ended", "cause": "Terminated", "originator": "remote"}, why


def test_two_browsers_reject_cancel_and_callee_hangup(tmp_path: Path) -> None:
    """Over WSS: bob rejects (486 reaches alice as Busy); alice hangs up while it rings
    (CANCEL: both see Canceled); bob calls alice, alice answers and hangs up (the callee's
    BYE reaches the caller down its WebSocket)."""
    result = run_scenario("flows", tmp_path, timeout=40)
    why = report(tmp_path, result)
    assert result["error"] is None, why
    assert result["steps"] == ["server", "registered", "rejected", "cancelled", "callee_hangup"], why
    assert result["rejected"]["caller"] == {"state": "failed", "cause": "Busy", "originator": "remote"}, why
    assert result["cancelled"]["caller"] == {"state": "failed", "cause": "Canceled", "originator": "local"}, why
    assert result["cancelled"]["callee"] == {"state": "failed", "cause": "Canceled", "originator": "remote"}, why
    hangup = result["callee_hangup"]
    assert hangup["caller"] == {"state": "ended", "cause": "Terminated", "originator": "remote"}, why
    assert hangup["callee"] == {"state": "ended", "cause": "Terminated", "originator": "local"}, why


@pytest.mark.sipp
def test_browser_calls_sipp_on_udp(tmp_path: Path) -> None:
    """alice (JsSIP over WS) calls carol, a SIPp UAS on UDP that answers plain RTP/AVP:
    INVITE/180/200/ACK cross WS -> UDP through sipedge (double Record-Route), the default
    routing bridges the media (DTLS-SRTP and ICE-lite towards Chromium), the call is
    confirmed, SIPp's RTP echo comes back to Chromium decrypted (getStats inbound bytes),
    alice's BYE reaches SIPp, which counts one successful call."""
    if shutil.which("sipp") is None:
        pytest.skip("sipp not installed (scripts/setup test)")
    result = run_scenario("sipp", tmp_path, timeout=40)
    why = report(tmp_path, result)
    assert result["error"] is None, why
    assert result["answered"]["caller"]["state"] == "confirmed", why
    assert result["ended"]["caller"] == {"state": "ended", "cause": "Terminated", "originator": "local"}, why
    assert result["sipp_returncode"] == 0, why
    # audio through the bridge both ways: SIPp echoed the browser's RTP back to it
    assert result["inbound_bytes"] >= 4000, why


def test_jssip_registers_with_the_default_auth_algorithms(tmp_path: Path) -> None:
    result = run_scenario("register-default-auth", tmp_path, timeout=30)
    why = report(tmp_path, result)
    assert result["error"] is None, why
    assert result["register"]["state"] == "registered", why


def test_page_gets_turn_credentials_with_the_subscribers_password(tmp_path: Path) -> None:
    """/turn/ice-servers is closed to strangers by default; the page answers its digest
    challenge with the password alice registers with and gets a TURN credential that
    names her (issue 10 item 8: the softphone keeps working out of the box)."""
    result = run_scenario("turn", tmp_path, timeout=30)
    why = report(tmp_path, result)
    assert result["error"] is None, why
    assert result["steps"] == ["server", "registered", "ice_servers"], why
    username = result["ice_servers"]["turn_username"]
    assert username is not None and username.endswith(":alice"), why
