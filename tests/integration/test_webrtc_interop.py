"""Interop of the WebRTC bridge (issue 12): the browser ↔ phone calls of
test_webrtc_bridge.py (aiortc with full ICE and DTLS-SRTP over SIP on a WebSocket; a plain
UDP phone sending and hearing PCMU), both directions, with audio measured on both sides,

- through **Debian's kamailio** (websocket + rtpengine modules, a minimal cfg written
  here) whose ``rtpengine_manage()`` drives sipedge's relay over ng with the flags
  Kamailio WebRTC scripts use: ``RTP/AVP ICE=remove rtcp-mux-demux …`` for a browser's
  offer towards the phone, ``UDP/TLS/RTP/SAVPF ICE=force rtcp-mux-require DTLS=passive …``
  for a phone's offer towards the browser, and the same flags on the reply;
- through **sipedge's own proxy** with ``media.remote`` at **Debian's rtpengine-daemon**:
  the default routing's flags, as our ng client serializes them, make rtpengine bridge
  the call.

Each runs in a private network namespace (loopback and a veth with 192.0.2.1).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("aiortc")

from helpers.rtpengine import INSTALLED as RTPENGINE_INSTALLED
from helpers.webrtc_interop import kamailio_missing, run_in_netns

pytestmark = [
    pytest.mark.netns,
    pytest.mark.timeout(150),
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for a network namespace"),
    pytest.mark.skipif(shutil.which("unshare") is None or shutil.which("ip") is None,
                       reason="needs util-linux unshare and iproute2"),
]

needs_kamailio = pytest.mark.skipif(bool(kamailio_missing()), reason=kamailio_missing() or "kamailio")
needs_rtpengine = pytest.mark.skipif(not RTPENGINE_INSTALLED, reason="rtpengine not installed (rtpengine-daemon)")


def kamailio_call(scenario: str, tmp: Path) -> dict[str, Any]:
    return run_in_netns(f"from helpers.webrtc_interop import main_kamailio; main_kamailio({scenario!r}, {str(tmp)!r})")


def rtpengine_call(scenario: str, tmp: Path) -> dict[str, Any]:
    return run_in_netns(f"from helpers.webrtc_interop import main_rtpengine; main_rtpengine({scenario!r}, {str(tmp)!r})")


def plain(sdp: str) -> None:
    """What a phone can take: RTP/AVP, no ICE, no DTLS."""
    assert " RTP/AVP " in sdp and "a=fingerprint" not in sdp and "a=ice-" not in sdp and "a=setup" not in sdp, sdp


def webrtc(sdp: str, setup: str) -> None:
    """What a browser needs: DTLS-SRTP with a fingerprint and role, ICE, rtcp-mux."""
    assert " UDP/TLS/RTP/SAVPF " in sdp and "a=fingerprint:sha-256 " in sdp, sdp
    assert f"a=setup:{setup}" in sdp and "a=ice-ufrag:" in sdp and "a=candidate:" in sdp, sdp
    assert "a=rtcp-mux" in sdp, sdp


def audio_both_ways(out: dict[str, Any]) -> None:
    assert out["status"] == 200
    assert out["ice"] == "completed" and out["connection"] == "connected", out["log"][-4000:]
    assert out["phone_voiced"] > 50, out["log"][-4000:]  # the browser's tone, decrypted, as PCMU
    assert out["phone_payload_types"] == [0]
    assert out["browser_voiced"] > 25, out["log"][-4000:]  # the phone's tone, encrypted, decoded by aiortc
    assert out["bye"] == 200


def relayed_by_sipedge(out: dict[str, Any]) -> None:
    stats = out["metrics"]
    assert stats["media_dtls_established"] == 1 and stats["media_dtls_failures"] == 0, stats
    assert stats["media_srtp_dropped"] < 5
    assert out["ng_counters"]["ng_errors"] == 0, out["ng_requests"]
    commands = [r["command"] for r in out["ng_requests"]]
    assert "offer" in commands and "answer" in commands and "delete" in commands, commands
    assert out["stats_end"]["media_calls"] == 0  # kamailio's delete on the BYE ended it


@pytest.mark.kamailio
@needs_kamailio
def test_kamailio_browser_calls_phone(tmp_path: Path) -> None:
    out = kamailio_call("browser-calls-phone", tmp_path)
    plain(out["offer_to_phone"])
    webrtc(out["answer_to_browser"], "passive")
    assert "a=ice-lite" in out["answer_to_browser"]
    audio_both_ways(out)
    relayed_by_sipedge(out)
    offer = next(r for r in out["ng_requests"] if r["command"] == "offer")
    assert offer["transport-protocol"] == "RTP/AVP" and offer["ICE"] == "remove", offer
    assert offer["rtcp-mux"] == ["demux"], offer


@pytest.mark.kamailio
@needs_kamailio
def test_kamailio_phone_calls_browser(tmp_path: Path) -> None:
    out = kamailio_call("phone-calls-browser", tmp_path)
    webrtc(out["offer_to_browser"], "passive")  # DTLS=passive: the browser is the client
    plain(out["answer_to_phone"])
    audio_both_ways(out)
    relayed_by_sipedge(out)
    offer = next(r for r in out["ng_requests"] if r["command"] == "offer")
    assert offer["transport-protocol"] == "UDP/TLS/RTP/SAVPF" and offer["ICE"] == "force", offer
    assert offer["rtcp-mux"] == ["require"] and offer["DTLS"] == "passive", offer


def bridged_by_rtpengine(out: dict[str, Any]) -> None:
    """rtpengine (not sipedge: its relay is remote) verified aiortc's certificate and keyed SRTP."""
    lines = "\n".join(out["rtpengine_dtls"])
    assert "DTLS: Peer certificate accepted" in lines, out["log"][-6000:]
    assert "DTLS-SRTP successfully negotiated" in lines, lines


@needs_rtpengine
def test_sipedge_proxy_with_rtpengine_browser_calls_phone(tmp_path: Path) -> None:
    out = rtpengine_call("browser-calls-phone", tmp_path)
    plain(out["offer_to_phone"])
    webrtc(out["answer_to_browser"], "active")  # rtpengine takes the client role
    audio_both_ways(out)
    bridged_by_rtpengine(out)


@needs_rtpengine
def test_sipedge_proxy_with_rtpengine_phone_calls_browser(tmp_path: Path) -> None:
    out = rtpengine_call("phone-calls-browser", tmp_path)
    webrtc(out["offer_to_browser"], "actpass")
    plain(out["answer_to_phone"])
    audio_both_ways(out)
    bridged_by_rtpengine(out)
