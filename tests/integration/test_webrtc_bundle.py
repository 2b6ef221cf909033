"""BUNDLE across the WebRTC bridge and the relay's own RTCP, end to end through ``sipedge
serve`` (issue 12): aiortc's audio and video on one 5-tuple reach a plain phone with a
port per m= line and come back; a phone's two-port offer reaches aiortc as one BUNDLE
group; aiortc's statistics show the relay's sender reports, unless a routing module turns
generate-RTCP off. In a private network namespace (helpers/webrtc_bundle.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from helpers import loopback_netns

pytest.importorskip("aiortc")

pytestmark = loopback_netns.MARKS

def run(name: str, tmp: Path) -> dict[str, Any]:
    return loopback_netns.run_scenario("webrtc_bundle", name, tmp)


def _both_sections_flowed(out: dict[str, Any]) -> None:
    why = out["log"][-3000:]
    assert out["status"] == 200
    assert out["phone_voiced"] > 50 and out["phone_payload_types"] == [0], out  # audio on the audio port
    assert out["phone_video_received"] > 50, why  # the browser's VP8, on the video port
    assert out["phone_video_payload_types"] == [out["phone_video_pt"]]
    assert out["browser_voiced"] > 25, why
    inbound = out["browser_inbound"]
    assert inbound.get("audio", 0) > 50 and inbound.get("video", 0) > 50, inbound  # both receivers, by getStats
    metrics = out["metrics"]
    assert metrics["media_dtls_associations"] == 1 and metrics["media_dtls_established"] == 1
    assert metrics["media_bundle_demuxed"] > 100
    assert metrics["media_bundle_unmatched"] < 5, metrics


def test_browser_audio_and_video_bundled_to_a_phone_with_a_port_per_section(tmp_path: Path) -> None:
    out = run("browser-video-calls-video-phone", tmp_path)
    to_phone = out["offer_to_phone"]
    assert "a=group:BUNDLE" not in to_phone and "a=rtcp-mux" not in to_phone
    to_browser = out["answer_to_browser"]
    assert "a=group:BUNDLE 0 1" in to_browser
    ports = {ln.split()[1] for ln in to_browser.splitlines() if ln.startswith("m=")}
    assert len(ports) == 1, to_browser  # one transport
    _both_sections_flowed(out)


def test_a_phones_audio_and_video_offer_reaches_the_browser_as_one_bundle(tmp_path: Path) -> None:
    out = run("video-phone-calls-browser", tmp_path)
    to_browser = out["offer_to_browser"]
    assert "a=group:BUNDLE 0 1" in to_browser and to_browser.count("a=rtcp-mux") == 2
    assert "urn:ietf:params:rtp-hdrext:sdes:mid" in to_browser
    ports = {ln.split()[1] for ln in to_browser.splitlines() if ln.startswith("m=")}
    assert len(ports) == 1, to_browser
    to_phone = out["answer_to_phone"]
    assert "a=group" not in to_phone and len({ln.split()[1] for ln in to_phone.splitlines() if ln.startswith("m=")}) == 2
    _both_sections_flowed(out)


def test_the_browser_sees_the_relays_sender_reports_for_a_phone_that_sends_no_rtcp(tmp_path: Path) -> None:
    out = run("relay-sends-sender-reports", tmp_path)
    assert out["browser_voiced"] > 25
    reports = out["remote_outbound"]
    assert [r["kind"] for r in reports] == ["audio"], out
    assert reports[0]["packets"] > 100 and reports[0]["bytes"] > 100 * 160  # what the relay sent it
    assert abs(reports[0]["wall_offset"]) < 30  # its NTP timestamp is the time of day
    assert out["metrics"]["media_rtcp_generated"] >= 2


def test_a_routing_module_turns_generate_rtcp_off(tmp_path: Path) -> None:
    out = run("routing-turns-generated-rtcp-off", tmp_path)
    assert out["browser_voiced"] > 25 and out["phone_voiced"] > 50
    assert out["remote_outbound"] == [] and out["metrics"]["media_rtcp_generated"] == 0
