"""The relay's own RTCP towards the plain phone through ``sipedge serve`` (issue 12):
with ``generate-RTCP=on`` the phone gets sender reports on its RTCP port."""

from __future__ import annotations

from pathlib import Path

from helpers import loopback_netns

pytestmark = loopback_netns.MARKS

SR = 200


def test_with_generate_rtcp_on_the_phone_gets_the_relays_sender_reports(tmp_path: Path) -> None:
    out = loopback_netns.run_scenario("webrtc_rtcp", "relay-reports-rtcp-to-the-phone", tmp_path)
    assert out["status"] == 200 and out["phone_voiced"] > 50 and out["browser_voiced"] > 25, out["log"][-3000:]
    offer = out["offer_to_phone"]
    # aiortc's own reports, forwarded, are compounds with its SDES CNAME; the relay's
    # are a lone SR (RFC 3550 §6.4.1), plain RTCP on RTP port + 1
    srs = [parts[0][1] for parts in out["phone_rtcp"] if [pt for pt, _ in parts] == [SR]]
    assert srs, out["phone_rtcp"]
    ssrc = next(line.split()[0].split(":")[1] for line in offer.split("\r\n") if line.startswith("a=ssrc:"))
    assert all(s == int(ssrc) for s in srs)  # from the browser's SSRC, as the phone sees its RTP
    assert out["metrics"]["media_rtcp_generated"] >= 2  # (the browser's reports too)
    assert "Traceback" not in out["log"]
