"""SDES ↔ plain RTP end to end through ``sipedge serve`` (issue 12): Debian baresip with
``mediaenc=srtp-mand`` and a plain UDP phone call each other both ways, bridged by the
relay on the flags of a routing module (tests/helpers/sdes_plain_routing.py, the
docs/routing.md example); audio measured on the plain side and in baresip's dump."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from helpers import loopback_netns

pytestmark = [*loopback_netns.MARKS,
              pytest.mark.skipif(shutil.which("baresip") is None, reason="needs Debian baresip-core")]


def _heard(out: dict[str, Any]) -> None:
    why = out["baresip_log"][-2000:] + out["log"][-2000:]
    assert "SRTP is Enabled" in out["baresip_log"], why
    assert out["phone_voiced"] > 100 and out["phone_payload_types"] == [0], why  # baresip's sine, decrypted
    assert out["baresip_energy"] > 500, why  # the phone's tone, encrypted by the relay, decoded by baresip
    assert out["metrics"]["media_srtp_dropped"] < 5, why
    assert "Traceback" not in out["log"]


def test_sdes_baresip_calls_a_plain_phone(tmp_path: Path) -> None:
    out = loopback_netns.run_scenario("webrtc_sdes", "sdes-baresip-calls-plain-phone", tmp_path)
    to_phone = out["offer_to_phone"]
    assert " RTP/AVP " in to_phone and "a=crypto" not in to_phone, to_phone
    assert out["acked"]
    _heard(out)


def test_a_plain_phone_calls_sdes_baresip(tmp_path: Path) -> None:
    out = loopback_netns.run_scenario("webrtc_sdes", "plain-phone-calls-sdes-baresip", tmp_path)
    assert out["status"] == 200
    to_phone = out["answer_to_phone"]
    assert " RTP/AVP " in to_phone and "a=crypto" not in to_phone, to_phone
    assert out["bye"] == 200
    _heard(out)
