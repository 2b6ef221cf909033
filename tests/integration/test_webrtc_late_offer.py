"""Late offers across the WebRTC bridge through ``sipedge serve`` (issue 12): a plain
phone's INVITE without SDP to aiortc, and aiortc's INVITE without SDP to the phone; the
default routing bridges both (``default_routing.late_offer_bridge``), audio both ways."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from helpers import loopback_netns

pytestmark = loopback_netns.MARKS


def _media_flowed(out: dict[str, Any]) -> None:
    assert out["status"] == 200
    assert out["ice"] == "completed" and out["connection"] == "connected", out["log"][-3000:]
    assert out["phone_voiced"] > 50, out  # the browser's tone, decrypted, as PCMU
    assert out["browser_voiced"] > 25, out  # the phone's tone, encrypted, decoded by aiortc
    metrics = out["metrics"]
    assert metrics["media_dtls_established"] >= 1 and metrics["media_dtls_failures"] == 0
    assert out["bye"] == 200 and out["metrics_after"]["media_calls"] == 0
    assert "Traceback" not in out["log"]


def test_a_phones_late_offer_to_a_browser_is_bridged(tmp_path: Path) -> None:
    out = loopback_netns.run_scenario("webrtc_late", "phone-late-offer-to-browser", tmp_path)
    assert out["invite_body_at_callee"] == ""
    to_phone = out["offer_to_caller"]  # aiortc's offer, converted
    assert " RTP/AVP " in to_phone and "a=fingerprint" not in to_phone and "a=ice-ufrag" not in to_phone
    to_browser = out["answer_to_callee"]  # the phone's answer in its ACK, converted back
    assert "UDP/TLS/RTP/SAVPF" in to_browser and "a=fingerprint:sha-256 " in to_browser
    assert "a=setup:passive" in to_browser and "a=ice-lite" in to_browser
    _media_flowed(out)


def test_a_browsers_late_offer_to_a_phone_is_bridged(tmp_path: Path) -> None:
    out = loopback_netns.run_scenario("webrtc_late", "browser-late-offer-to-phone", tmp_path)
    assert out["invite_body_at_callee"] == ""
    to_browser = out["offer_to_caller"]  # the phone's offer, converted
    assert "UDP/TLS/RTP/SAVPF" in to_browser and "a=setup:actpass" in to_browser and "a=ice-lite" in to_browser
    to_phone = out["answer_to_callee"]  # aiortc's answer in its ACK, converted back
    assert " RTP/AVP " in to_phone and "a=fingerprint" not in to_phone and "a=ice-ufrag" not in to_phone
    _media_flowed(out)
