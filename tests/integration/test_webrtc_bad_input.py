"""Hostile input to a bridged call in progress through ``sipedge serve`` (issue 12):
SRTP with bad tags and replayed SRTP from the browser's own latched address, an offer
with DTLS but no fingerprint, an SDES key of the wrong length. Each is dropped or refused
and counted on /metrics; the call goes on; nothing raises."""

from __future__ import annotations

from pathlib import Path

from helpers import loopback_netns
from helpers.webrtc_bad import BAD_TAGS, REPLAYS

pytestmark = loopback_netns.MARKS


def test_hostile_input_during_a_bridged_call(tmp_path: Path) -> None:
    out = loopback_netns.run_scenario("webrtc_bad", "hostile-input-during-a-call", tmp_path)
    why = out["log"][-3000:]
    assert out["status"] == 200 and out["connection"] == "connected", why
    before, after_srtp, after = out["before"], out["after_srtp"], out["after_offers"]
    # SRTP that fails authentication or repeats an index is dropped and counted, never forwarded
    assert after_srtp["media_srtp_dropped"] - before["media_srtp_dropped"] >= BAD_TAGS + REPLAYS - 2, out
    assert out["voiced_after_srtp"] > 50  # the call carries on
    # an offer with UDP/TLS/RTP/SAVPF and no a=fingerprint: 488 naming why, counted
    assert out["no_fingerprint"] == {"status": 488, "reason": "DTLS fingerprint missing"}
    # an SDES key of 20 bytes where AES_CM_128_HMAC_SHA1_80 needs 30: 488, counted
    assert out["short_sdes_key"] == {"status": 488, "reason": "No supported SDES suite"}
    assert after["media_sdp_refused"] - after_srtp["media_sdp_refused"] == 2
    assert out["voiced_after_offers"] > 50 and out["browser_voiced"] > 25
    assert after["media_calls"] == 1  # only the call in progress
    assert out["bye"] == 200 and out["metrics_after"]["media_calls"] == 0
    assert "Traceback" not in out["log"] and "ERROR" not in out["log"], why
