"""The WebRTC bridge behind real NATs, through ``sipedge serve`` (issue 12): aiortc behind
a masquerading Linux router calls a plain phone (its host candidate is private; the
relay's ICE-lite answers and latches its NAT mapping, DTLS and SRTP follow it), and aiortc
calls a phone behind the NAT whose SDP names its private address (symmetric latching
finds the mapping of each of its ports). Audio and video, BUNDLE towards aiortc.

    [private] 192.168.77.2 --- [router: MASQUERADE] 203.0.113.1 --- [public] 203.0.113.2
                                                                   sipedge (SIP, relay)

Built by ``helpers.netns.nat_topology``; the parties: ``helpers/webrtc_nat.py``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from helpers.netns import env, nat_topology

pytest.importorskip("aiortc")

pytestmark = [
    pytest.mark.netns,
    pytest.mark.timeout(150),
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces"),
    pytest.mark.skipif(shutil.which("ip") is None or shutil.which("iptables") is None,
                       reason="needs iproute2 and iptables"),
]
ROOT = Path(__file__).resolve().parents[2]


def run(scenario: str, tmp: Path) -> dict[str, Any]:
    with nat_topology("wn", ["203.0.113.2"]) as topo:
        code = f"from helpers.webrtc_nat import main; main({scenario!r}, {str(tmp)!r}, {topo.phone!r})"
        res = subprocess.run(["ip", "netns", "exec", topo.pub, sys.executable, "-c", code],
                             capture_output=True, text=True, timeout=120, env=env(), cwd=ROOT / "tests")
    assert res.returncode == 0, res.stderr[-6000:]
    return dict(json.loads(res.stdout.strip().splitlines()[-1]), log=res.stderr)


def _flowed(out: dict[str, Any]) -> None:
    why = out["log"][-3000:]
    assert out["status"] == 200, why
    assert out["phone_voiced"] > 50 and out["phone_video_received"] > 50, why
    assert out["browser_voiced"] > 25, why
    assert out["browser_inbound"].get("video", 0) > 50, out["browser_inbound"]
    assert out["metrics"]["media_dtls_established"] == 1 and out["metrics"]["media_dtls_failures"] == 0


def test_a_browser_behind_a_nat_calls_a_phone(tmp_path: Path) -> None:
    """aiortc's only candidate is 192.168.77.2, which the public side cannot reach: that
    media flows at all means the relay answered its checks at the router's mapping and
    sent DTLS and SRTP there."""
    out = run("browser-behind-nat", tmp_path)
    _flowed(out)
    assert out["metrics"]["media_stun_answered"] > 0


def test_a_browser_calls_a_phone_behind_a_nat(tmp_path: Path) -> None:
    """The phone's SDP names 192.168.77.2 for both its ports, which the public side cannot
    reach: what it hears on each came to the mappings the relay latched."""
    out = run("phone-behind-nat", tmp_path)
    assert "c=IN IP4 203.0.113.2" in out["answer_to_browser"] and "c=IN IP4 192.168.77.2" not in out["answer_to_browser"]
    _flowed(out)
    assert out["metrics"]["media_packets_dropped_stranger"] == 0
