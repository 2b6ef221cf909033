"""Transcoding end to end (issue 12, "Codecs"): an Opus-only WebRTC client (aiortc with
codec preferences) and a PCMU-only plain phone call each other through ``sipedge serve``
with its default configuration and routing. The relay adds PCMU/PCMA (or Opus) to the
offer, the other side picks the added codec, and the relay transcodes Opus <-> PCMU:
the phone decodes the browser's 440 Hz tone as PCMU at its loudness and pitch, and the
browser decodes the phone's tone from Opus. Counters from /metrics prove the path.

Interop: Debian's kamailio, with ``codec-transcode-PCMU codec-transcode-PCMA
codec-transcode-opus`` added to its rtpengine_manage() flags (its module sends them as
the ng ``codec`` dictionary), drives sipedge's relay through the same calls; and
``sipedge serve`` with ``media.remote`` at rtpengine-daemon makes rtpengine transcode
them with the default routing's codec flags, as our ng client sends them."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from helpers.rtpengine import INSTALLED as RTPENGINE_INSTALLED
from helpers.webrtc_interop import kamailio_missing, run_in_netns
from integration.test_webrtc_bridge import pytestmark as bridge_marks
from integration.test_webrtc_bridge import run_scenario

pytestmark = bridge_marks
needs_kamailio = pytest.mark.skipif(bool(kamailio_missing()), reason=kamailio_missing() or "kamailio")
needs_rtpengine = pytest.mark.skipif(not RTPENGINE_INSTALLED, reason="rtpengine not installed (rtpengine-daemon)")


def _transcoded(out: dict[str, Any]) -> None:
    assert out["status"] == 200
    assert out["ice"] == "completed" and out["connection"] == "connected", out["log"][-3000:]
    assert out["phone_payload_types"] == [0], out  # PCMU only, never the browser's Opus
    assert out["phone_energy"] > 2500, out  # the tone's mean |sample| is 8000 * 2/pi = 5093
    assert abs(out["phone_pitch"] - 440) < 30, out
    assert out["browser_voiced"] > 25 and out["browser_loudest"] > 2500, out  # the phone's tone, as Opus
    metrics = out["metrics"]
    assert metrics["media_transcoders"] == 2
    assert metrics["media_transcoded_packets"] > 75  # (both ways, while the call ran)
    assert metrics["media_transcode_errors"] == 0
    assert out["bye"] == 200


def test_opus_only_browser_calls_pcmu_phone(tmp_path: Path) -> None:
    out = run_scenario("opus-browser-calls-pcmu-phone", tmp_path, "webrtc_transcode")
    offer = out["offer_to_phone"]
    found = re.search(r"^m=audio \d+ RTP/AVP (\d+) 0 8\r$", offer, re.M)  # appended after Opus
    assert found is not None and f"a=rtpmap:{found.group(1)} opus/48000/2" in offer, offer
    answer = out["answer_to_browser"]
    assert re.search(rf"^m=audio \d+ UDP/TLS/RTP/SAVPF {found.group(1)}\r$", answer, re.M), answer
    assert "PCMU" not in answer
    _transcoded(out)


def test_pcmu_phone_calls_opus_only_browser(tmp_path: Path) -> None:
    out = run_scenario("pcmu-phone-calls-opus-browser", tmp_path, "webrtc_transcode")
    offer = out["offer_to_browser"]
    assert re.search(r"^m=audio \d+ UDP/TLS/RTP/SAVPF 0 101 96 97\r$", offer, re.M), offer
    assert "a=rtpmap:96 opus/48000/2" in offer
    assert re.search(r"^m=audio \d+ RTP/AVP 0\r$", out["answer_to_phone"], re.M), out["answer_to_phone"]
    _transcoded(out)


# -- interop: Kamailio drives sipedge's relay; sipedge's proxy drives rtpengine ------
def _heard_both_ways(out: dict[str, Any]) -> None:
    assert out["status"] == 200
    assert out["ice"] == "completed" and out["connection"] == "connected", out["log"][-4000:]
    assert out["phone_payload_types"] == [0], out
    assert out["phone_energy"] > 2500 and abs(out["phone_pitch"] - 440) < 30, out
    assert out["browser_voiced"] > 25 and out["browser_loudest"] > 2500, out
    assert out["bye"] == 200


def _netns(main: str, scenario: str, tmp: Path) -> dict[str, Any]:
    return run_in_netns(f"from helpers.webrtc_transcode import {main}; {main}({scenario!r}, {str(tmp)!r})")


@pytest.mark.kamailio
@needs_kamailio
@pytest.mark.parametrize("scenario", ["opus-browser-calls-pcmu-phone", "pcmu-phone-calls-opus-browser"])
def test_kamailio_codec_flags_drive_sipedges_transcoding(scenario: str, tmp_path: Path) -> None:
    out = _netns("main_kamailio", scenario, tmp_path)
    _heard_both_ways(out)
    assert out["ng_counters"]["ng_errors"] == 0, out["ng_requests"]
    offer = next(r for r in out["ng_requests"] if r["command"] == "offer")
    sent = offer.get("codec", {}).get("transcode", []) + [f for f in offer.get("flags", []) if "transcode" in f]
    assert sent, offer  # (Kamailio passes them as the codec dictionary or as flags)
    assert out["metrics"]["media_transcoders"] == 2 and out["metrics"]["media_transcode_errors"] == 0


@needs_rtpengine
@pytest.mark.parametrize("scenario", ["opus-browser-calls-pcmu-phone", "pcmu-phone-calls-opus-browser"])
def test_sipedge_proxy_makes_rtpengine_transcode(scenario: str, tmp_path: Path) -> None:
    out = _netns("main_rtpengine", scenario, tmp_path)
    _heard_both_ways(out)
