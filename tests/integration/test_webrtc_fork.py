"""Per-branch media offers (issue 12, rtpengine's ``via-branch``) through ``sipedge serve``
with its default configuration and routing: bob registers a browser (aiortc over a
WebSocket) and a plain UDP phone; alice calls bob and the call forks to both. The
browser's branch is offered DTLS-SRTP with ICE, the phone's plain RTP; whichever answers
talks with alice (audio both ways), the other is CANCELled, and its relay leg is released
at once; after the BYE the relay holds no call and no port.

Run in a private network namespace (only loopback and a veth with 192.0.2.1), so ICE
never probes a real interface (helpers/webrtc_fork.py).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("aiortc")

from helpers.rtpengine import INSTALLED as RTPENGINE_INSTALLED
from helpers.webrtc_interop import run_in_netns

pytestmark = [
    pytest.mark.netns,
    pytest.mark.timeout(120),
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for a network namespace"),
    pytest.mark.skipif(shutil.which("unshare") is None or shutil.which("ip") is None,
                       reason="needs util-linux unshare and iproute2"),
]


def run(name: str, tmp: Path, main: str = "main") -> dict[str, Any]:
    return run_in_netns(f"from helpers.webrtc_fork import {main}; {main}({name!r}, {str(tmp)!r})")


def _offers_per_branch(out: dict[str, Any]) -> None:
    to_browser, to_phone = out["offer_to_browser"], out["offer_to_phone"]
    assert "UDP/TLS/RTP/SAVPF" in to_browser and "a=ice-ufrag:" in to_browser, to_browser
    assert "a=fingerprint:sha-256 " in to_browser and "a=rtcp-mux" in to_browser
    assert " RTP/AVP " in to_phone and "a=ice" not in to_phone and "a=fingerprint" not in to_phone, to_phone
    assert len(out["branches"]) == 2
    assert out["status"] == 200 and out["loser_cancelled"] and out["bye"] == 200
    assert out["caller_voiced"] > 40, out["log"][-3000:]
    assert out["callee_voiced"] > 25, out["log"][-3000:]


def _talked_and_released(out: dict[str, Any]) -> None:
    assert out["ringing"]["media_calls"] == 1 and out["ringing"]["media_offers"] == 2
    # the loser's leg (and its ports) went with its CANCEL, not at the BYE; the BYE took the rest
    assert out["ringing"]["media_deletes"] == 0
    assert out["talking"]["media_deletes"] == 1 and out["talking"]["media_calls"] == 1
    assert out["after"]["media_calls"] == 0 and out["after"]["media_ports_in_use"] == 0


def test_phone_calls_a_forked_user_and_the_phone_answers(tmp_path: Path) -> None:
    out = run("phone-calls-fork-phone-answers", tmp_path)
    _offers_per_branch(out)
    assert " RTP/AVP " in out["answer_to_caller"] and "a=ice" not in out["answer_to_caller"]
    _talked_and_released(out)
    assert out["talking"]["media_dtls_established"] == 0  # the browser never got that far


def test_phone_calls_a_forked_user_and_the_browser_answers(tmp_path: Path) -> None:
    out = run("phone-calls-fork-browser-answers", tmp_path)
    _offers_per_branch(out)
    to_caller = out["answer_to_caller"]
    assert " RTP/AVP " in to_caller and "a=ice" not in to_caller and "a=fingerprint" not in to_caller
    _talked_and_released(out)
    assert out["callee_connection"] == "connected"
    assert out["talking"]["media_dtls_established"] >= 1 and out["talking"]["media_dtls_failures"] == 0


def test_browser_calls_a_forked_user_and_the_phone_answers(tmp_path: Path) -> None:
    out = run("browser-calls-fork-phone-answers", tmp_path)
    _offers_per_branch(out)
    to_caller = out["answer_to_caller"]
    assert "UDP/TLS/RTP/SAVPF" in to_caller and "a=setup:passive" in to_caller and "a=ice-lite" in to_caller
    _talked_and_released(out)
    assert out["caller_connection"] == "connected"
    assert out["talking"]["media_dtls_established"] >= 1 and out["talking"]["media_dtls_failures"] == 0


def test_browser_calls_a_forked_user_and_the_browser_answers(tmp_path: Path) -> None:
    out = run("browser-calls-fork-browser-answers", tmp_path)
    _offers_per_branch(out)
    assert "UDP/TLS/RTP/SAVPF" in out["answer_to_caller"]
    _talked_and_released(out)
    # the two browsers' DTLS is theirs, end to end: the relay only carries it
    assert out["caller_connection"] == "connected" and out["callee_connection"] == "connected"
    assert out["talking"]["media_dtls_established"] == 0


@pytest.mark.skipif(not RTPENGINE_INSTALLED, reason="rtpengine not installed (rtpengine-daemon)")
@pytest.mark.parametrize("scenario", ["phone-calls-fork-phone-answers", "phone-calls-fork-browser-answers"])
def test_rtpengine_as_media_remote_gets_the_per_branch_offers(tmp_path: Path, scenario: str) -> None:
    """Our ng client sends ``via-branch`` in offer, answer and delete: Debian's rtpengine
    makes the two offers, bridges the winner, and deletes the CANCELled branch alone."""
    out = run(scenario, tmp_path, "main_rtpengine")
    _offers_per_branch(out)
    assert f"Deleting call branch '' (via-branch '{out['loser_branch']}')" in out["log"]
    if "browser-answers" in scenario:
        assert any("DTLS-SRTP successfully negotiated" in line for line in out["rtpengine_dtls"])


def test_early_media_from_both_branches_then_hold_and_resume(tmp_path: Path) -> None:
    """Both branches answer 183 with SDP: two early dialogs, each on the relay ports of its
    own branch (the browser's early answer reaches alice as plain RTP); the phone's 200
    wins, the browser's leg goes with its CANCEL; re-INVITEs in the dialog keep the media."""
    out = run("phone-calls-fork-early-media-from-both", tmp_path)
    assert len(out["early_to_tags"]) == 2 and len(out["early_ports"]) == 2
    from_browser = out["early_from_browser"]
    assert " RTP/AVP " in from_browser and "a=ice" not in from_browser and "a=fingerprint" not in from_browser
    assert out["early_caller_voiced"] > 25, out["log"][-3000:]
    assert out["ringing"]["media_answers"] == 2
    assert out["status"] == 200 and out["loser_cancelled"]
    assert out["reinvite_sendonly"] == 200 and out["reinvite_sendrecv"] == 200
    for direction in ("sendonly", "sendrecv"):
        reoffer = out[f"reoffer_{direction}"]
        assert f"a={direction}" in reoffer and " RTP/AVP " in reoffer and "a=ice" not in reoffer
    assert out["caller_voiced"] > 25 and out["callee_voiced"] > 25, out["log"][-3000:]
    assert out["talking"]["media_deletes"] == 1 and out["talking"]["media_calls"] == 1
    assert out["bye"] == 200
    assert out["after"]["media_calls"] == 0 and out["after"]["media_ports_in_use"] == 0
