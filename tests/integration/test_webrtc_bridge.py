"""The WebRTC bridge end to end (issue 12): aiortc (full ICE, DTLS-SRTP, as a browser
does it, over SIP on a WebSocket) and a plain SIP phone (UDP, PCMU RTP/AVP) call each
other through ``sipedge serve`` with its default configuration and routing, and audio
flows both ways: the phone hears the browser's tone as PCMU, the browser decodes the
phone's tone.

Run in a private network namespace (only loopback and a veth with 192.0.2.1), so ICE
never probes a real interface.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from helpers import loopback_netns

pytest.importorskip("aiortc")

pytestmark = loopback_netns.MARKS

def run_scenario(name: str, tmp: Path, helper: str = "webrtc_call") -> dict[str, Any]:
    return loopback_netns.run_scenario(helper, name, tmp)


def _media_flowed(out: dict[str, Any]) -> None:
    assert out["status"] == 200
    assert out["ice"] == "completed" and out["connection"] == "connected", out["log"][-3000:]
    assert out["phone_voiced"] > 50, out  # the browser's tone, decrypted, as PCMU
    assert out["phone_payload_types"] == [0]
    assert out["browser_voiced"] > 25, out  # the phone's tone, encrypted, decoded by aiortc
    metrics = out["metrics"]
    assert metrics["media_dtls_established"] >= 1
    assert metrics["media_dtls_failures"] == 0
    assert metrics["media_srtp_dropped"] < 5
    assert out["bye"] == 200


def test_browser_calls_phone(tmp_path: Path) -> None:
    out = run_scenario("browser-calls-phone", tmp_path)
    to_phone = out["offer_to_phone"]
    assert " RTP/AVP " in to_phone and "a=fingerprint" not in to_phone and "a=ice-ufrag" not in to_phone
    to_browser = out["answer_to_browser"]
    assert "UDP/TLS/RTP/SAVPF" in to_browser and "a=fingerprint:sha-256 " in to_browser
    assert "a=setup:passive" in to_browser and "a=ice-lite" in to_browser and "a=rtcp-mux" in to_browser
    _media_flowed(out)
    assert out["metrics_after"]["media_calls"] == 0  # BYE ended the relayed session
    # the setup histograms (docs/operations.md, "Metrics"): one association, keyed; ICE latched
    metrics = out["metrics"]
    assert metrics["media_dtls_setup_seconds_count"] == metrics["media_dtls_established"] == 1
    assert 0 < metrics["media_dtls_setup_seconds_sum"] < 10
    assert metrics["media_ice_connect_seconds_count"] == 1
    assert 0 < metrics["media_ice_connect_seconds_sum"] <= metrics["media_dtls_setup_seconds_sum"]


def test_phone_calls_browser(tmp_path: Path) -> None:
    out = run_scenario("phone-calls-browser", tmp_path)
    to_browser = out["offer_to_browser"]
    assert "UDP/TLS/RTP/SAVPF" in to_browser and "a=setup:actpass" in to_browser
    assert "a=fingerprint:sha-256 " in to_browser and "a=ice-ufrag" in to_browser
    to_phone = out["answer_to_phone"]
    assert " RTP/AVP " in to_phone and "a=fingerprint" not in to_phone and "a=ice" not in to_phone
    _media_flowed(out)


def test_a_stranger_on_the_browser_port_changes_nothing(tmp_path: Path) -> None:
    """ClientHellos, garbage DTLS records and SRTP without a valid tag from another
    address, mid-call: dropped as strangers (a DTLS-terminated party moves only by ICE),
    the association survives, audio goes on."""
    out = run_scenario("stranger-on-the-browser-port", tmp_path)
    _media_flowed(out)
    assert out["voiced_after_attack"] > 50
    metrics = out["metrics"]
    assert metrics["media_packets_dropped_stranger"] >= out["attack_sent"]
    assert metrics["media_dtls_associations"] == 1 and metrics["media_dtls_failures"] == 0


def test_a_browser_whose_certificate_does_not_match_its_fingerprint_gets_nothing(tmp_path: Path) -> None:
    """RFC 8122: the association fails, is counted and logged with both fingerprints, and
    not one packet of the browser is decrypted towards the phone."""
    out = run_scenario("wrong-fingerprint", tmp_path)
    metrics = out["metrics"]
    assert metrics["media_dtls_fingerprint_mismatch"] == 1 and metrics["media_dtls_established"] == 0
    assert out["phone_received"] == 0
    assert "fingerprint mismatch" in out["log"]


@pytest.mark.skipif(shutil.which("baresip") is None, reason="needs Debian baresip-core")
@pytest.mark.parametrize("scenario", ["browser-calls-baresip", "baresip-calls-browser", "sdes-baresip-calls-browser"])
def test_browser_and_baresip_hear_each_other(tmp_path: Path, scenario: str) -> None:
    """A real SIP phone (baresip, G.711, a sine as its microphone, what it decodes dumped
    to a WAV file) and the WebRTC endpoint, each calling the other through sipedge serve."""
    out = run_scenario(scenario, tmp_path)
    why = out["baresip_log"][-2000:] + out["log"][-2000:]
    assert out["ice"] == "completed" and out["connection"] == "connected", why
    assert out["browser_voiced"] > 50, why  # baresip's sine, encrypted by the relay
    assert out["baresip_energy"] > 500, why  # the browser's tone, decrypted, decoded by baresip
    assert out["metrics"]["media_dtls_established"] >= 1
    if scenario.startswith("sdes"):  # baresip offered RTP/SAVP with SDES keys: SDES <-> DTLS
        assert "SRTP is Enabled" in out["baresip_log"], why
        assert "a=crypto" not in out["offer_to_browser"] and "UDP/TLS/RTP/SAVPF" in out["offer_to_browser"]


def test_early_media_then_hold_and_resume_keep_one_association(tmp_path: Path) -> None:
    """A phone's 183 with SDP reaches the browser, which completes DTLS and hears the
    phone before the 200; a re-INVITE from the phone puts it on hold and one resumes:
    the re-offers keep our fingerprint and ICE credentials, so the association lasts."""
    out = run_scenario("early-media-then-hold", tmp_path)
    assert out["early_browser_voiced"] > 25 and out["early_phone_voiced"] > 25, out
    assert out["status"] == 200
    assert out["reinvite_sendonly"] == 200 and out["reinvite_sendrecv"] == 200
    assert "UDP/TLS/RTP/SAVPF" in out["reoffer_sendonly"] and "a=sendonly" in out["reoffer_sendonly"]
    assert out["browser_voiced_after_sendrecv"] > 25, out
    metrics = out["metrics"]
    assert metrics["media_dtls_associations"] == 1 and metrics["media_dtls_failures"] == 0


def test_audio_and_video_from_the_browser_to_an_audio_only_phone(tmp_path: Path) -> None:
    """The phone refuses the video section with port 0: the browser's answer says so in
    its own profile with its mid, the BUNDLE group keeps only the audio, and audio flows."""
    out = run_scenario("browser-with-video-calls-audio-phone", tmp_path)
    to_phone = out["offer_to_phone"]
    assert "m=video " in to_phone and " RTP/AVP " in to_phone and "a=group:BUNDLE" not in to_phone
    to_browser = out["answer_to_browser"]
    video = to_browser[to_browser.index("m=video"):]
    assert video.startswith("m=video 0 UDP/TLS/RTP/SAVPF ") and "a=mid:1" in video
    group = [ln for ln in to_browser.splitlines() if ln.startswith("a=group:BUNDLE")]
    assert group == ["a=group:BUNDLE 0"]
    # audio both ways over the one association (aiortc's overall ICE state stays
    # "checking": it keeps a transport for the refused section, Chromium closes it)
    assert out["phone_voiced"] > 50 and out["browser_voiced"] > 25, out
    assert out["metrics"]["media_dtls_established"] == 1 and out["metrics"]["media_dtls_failures"] == 0
    assert out["bye"] == 200


def test_a_relay_only_browser_reaches_the_bridge_through_sipedges_turn(tmp_path: Path) -> None:
    """iceTransportPolicy "relay": the browser's only candidate is an allocation on
    sipedge's own TURN server, from which it checks and talks to the relay's ICE-lite
    port; DTLS, SRTP and audio run through both."""
    out = run_scenario("relay-only-browser-calls-phone", tmp_path)
    _media_flowed(out)
    metrics = out["metrics"]
    assert metrics["turn_allocations_total"] >= 1
    assert metrics["turn_packets_to_peer"] > 50 and metrics["turn_packets_from_peer"] > 25


def test_the_relay_sends_rtcp_to_the_browser_for_a_phone_that_sends_none(tmp_path: Path) -> None:
    """The phone sends no RTCP: every 5 s the relay sends the browser an SRTCP receiver
    report about the browser's own stream, which aiortc decrypts and shows as
    remote-inbound-rtp statistics (what browsers' bandwidth estimation runs on)."""
    out = run_scenario("relay-reports-rtcp-to-the-browser", tmp_path)
    _media_flowed(out)
    assert out["remote_inbound_packets"] is not None and out["remote_inbound_packets"] > 100, out
    assert out["metrics"]["media_rtcp_generated"] >= 1
