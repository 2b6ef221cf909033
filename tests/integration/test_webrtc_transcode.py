"""Transcoding end to end (issue 12, "Codecs"): an Opus-only WebRTC client (aiortc with
codec preferences) and a PCMU-only plain phone call each other through ``sipedge serve``
with its default configuration and routing. The relay adds PCMU/PCMA (or Opus) to the
offer, the other side picks the added codec, and the relay transcodes Opus <-> PCMU:
the phone decodes the browser's 440 Hz tone as PCMU at its loudness and pitch, and the
browser decodes the phone's tone from Opus. Counters from /metrics prove the path."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from integration.test_webrtc_bridge import pytestmark as bridge_marks
from integration.test_webrtc_bridge import run_scenario

pytestmark = bridge_marks


def _transcoded(out: dict[str, Any]) -> None:
    assert out["status"] == 200
    assert out["ice"] == "completed" and out["connection"] == "connected", out["log"][-3000:]
    assert out["phone_payload_types"] == [0], out  # PCMU only, never the browser's Opus
    assert out["phone_energy"] > 2500, out  # the tone's mean |sample| is 8000 * 2/pi = 5093
    assert abs(out["phone_pitch"] - 440) < 20, out
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
