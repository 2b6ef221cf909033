"""JsSIP in headless Chromium and Debian baresip (a plain G.711 phone on UDP) call each
other through ``sipedge serve`` with its default routing, which bridges DTLS-SRTP/ICE
towards Chromium and plain RTP/AVP towards baresip (issue 12, "Tests").

Each test runs ``tests/browser/baresip_worker.py`` in a loopback-only network namespace
(``tests/browser/netns.py``). Media is proven on both ends: Chromium's ``getStats()``
inbound and outbound audio bytes and decoded audio energy grow, and what baresip decoded
(its ``sndfile`` dump) over the same seconds is the fake microphone's beep, not silence.
Also: a camera towards the audio-only phone, an ICE restart mid-call, the page over WSS,
relay-only ICE through sipedge's own TURN server, and Chromium behind a real NAT
(``helpers.netns.nat_topology``; the worker on the public side, Chromium alone in the
private namespace).
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import pytest

from browser.baresip_worker import NAT_SERVER
from browser.baresip_worker import __file__ as BARESIP_WORKER
from browser.netns import missing, report, run_scenario
from helpers.netns import nat_topology

pytestmark = [pytest.mark.browser, pytest.mark.timeout(120)]

SILENCE = 20.0  # mean |sample| of baresip's decoded audio below this is silence


@pytest.fixture(autouse=True)
def _needs_browser_and_baresip() -> None:
    why = missing()
    if why:
        pytest.skip(why)
    if shutil.which("baresip") is None:
        pytest.skip("baresip not installed (Debian baresip-core)")


def run(name: str, tmp: Path, **where: Any) -> tuple[dict[str, Any], str]:
    result = run_scenario(name, tmp, timeout=90, worker=Path(BARESIP_WORKER), **where)
    why = report(tmp, result) + "\n--- baresip\n" + str(result.get("baresip_log", ""))[-2000:]
    assert result["error"] is None, why
    return result, why


def media_flowed(media: dict[str, Any], why: str) -> None:
    first, later = media["first"], media["later"]
    assert later["inbound"] > first["inbound"] > 0, why  # baresip's tone reaches Chromium
    assert later["outbound"] > first["outbound"] > 0, why
    assert later["energy"] > first["energy"], why  # and is decoded as sound
    assert media["baresip_dumped"] > 0 and media["baresip_energy"] > SILENCE, why  # Chromium's beep


def ufrag(sdp: str) -> str:
    found = re.search(r"^a=ice-ufrag:(\S+)", sdp, re.M)
    assert found is not None, sdp
    return found.group(1)


def bridged_towards_chromium(remote_sdp: str, why: str) -> None:
    assert "UDP/TLS/RTP/SAVPF" in remote_sdp and "a=fingerprint:sha-256 " in remote_sdp, why
    assert "a=ice-lite" in remote_sdp, why


@pytest.mark.parametrize("by", ["browser", "baresip"])
def test_jssip_calls_baresip_and_a_bye_from_either_side_ends_both(tmp_path: Path, by: str) -> None:
    """alice (JsSIP over WS) dials bob (baresip on UDP): the call is confirmed, audio flows
    both ways through the bridge, and the hang-up of ``by`` ends the call on both."""
    name = "browser-calls-baresip" + ("-baresip-hangs-up" if by == "baresip" else "")
    result, why = run(name, tmp_path)
    bridged_towards_chromium(result["confirmed"]["sdp"]["remote"], why)
    media_flowed(result["media"], why)
    origin = "local" if by == "browser" else "remote"
    assert result["ended"]["browser"] == {"state": "ended", "cause": "Terminated", "originator": origin}, why
    assert result["metrics"]["media_calls"] == 0, why  # the BYE ended the relayed session
    assert result["metrics"]["media_dtls_established"] == 1, why


@pytest.mark.parametrize("by", ["baresip", "browser"])
def test_baresip_calls_jssip_and_a_bye_from_either_side_ends_both(tmp_path: Path, by: str) -> None:
    """bob (baresip) dials alice; the page answers the offer bridged to
    DTLS-SRTP/ICE; audio both ways; the hang-up of ``by`` ends the call on both."""
    name = "baresip-calls-browser" + ("-browser-hangs-up" if by == "browser" else "")
    result, why = run(name, tmp_path)
    assert result["incoming"]["caller"] == "sip:bob@127.0.0.1", why
    offer = result["confirmed"]["sdp"]["remote"]
    assert re.search(r"^a=group:BUNDLE 0\r?$", offer, re.M), why  # Chromium's max-bundle needs one
    bridged_towards_chromium(result["confirmed"]["sdp"]["remote"], why)
    media_flowed(result["media"], why)
    origin = "local" if by == "browser" else "remote"
    assert result["ended"]["browser"] == {"state": "ended", "cause": "Terminated", "originator": origin}, why
    assert result["metrics"]["media_calls"] == 0, why


def test_jssip_with_a_camera_calls_audio_only_baresip(tmp_path: Path) -> None:
    """Chromium offers audio and video (fake camera) in one BUNDLE group; baresip has no
    video: the answer Chromium gets refuses the video section with port 0, and audio
    flows both ways."""
    result, why = run("video-to-audio-phone", tmp_path)
    sdp = result["confirmed"]["sdp"]
    assert re.search(r"^m=video \d+ ", sdp["local"], re.M), why  # Chromium did offer video
    assert re.search(r"^m=video 0 ", sdp["remote"], re.M), why
    assert not re.search(r"^m=audio 0 ", sdp["remote"], re.M), why
    bridged_towards_chromium(sdp["remote"], why)
    media_flowed(result["media"], why)


def test_jssip_restarts_ice_mid_call_and_media_goes_on(tmp_path: Path) -> None:
    """Mid-call JsSIP re-INVITEs with ``iceRestart``: its offer has new ICE credentials,
    the relay answers with new ones of its own and the same DTLS fingerprint, and audio
    goes on both ways after the restart (Chromium's bytes and baresip's decoded beep)."""
    result, why = run("ice-restart", tmp_path)
    before, after = result["confirmed"]["sdp"], result["restarted"]["sdp"]
    assert ufrag(after["local"]) != ufrag(before["local"]), why
    assert ufrag(after["remote"]) != ufrag(before["remote"]), why
    fp = re.compile(r"^a=fingerprint:(.+)$", re.M)
    assert fp.findall(after["remote"]) == fp.findall(before["remote"]), why
    media_flowed(result["media"], why)
    media_flowed(result["media_after_restart"], why)
    assert result["ended"]["browser"]["state"] == "ended", why
    before, after = result["restarted"]["metrics_before"], result["restarted"]["metrics_after"]
    assert after["media_ice_restarts"] - before["media_ice_restarts"] == 1, why
    # the DTLS association and its SRTP keys stay (Chromium sends no new ClientHello)
    assert after["media_dtls_associations"] == before["media_dtls_associations"] == 1, why
    assert result["metrics"]["media_dtls_established"] == 1, why
    assert result["metrics"]["media_dtls_failures"] == 0, why


def test_jssip_over_wss_calls_baresip(tmp_path: Path) -> None:
    """The same call with the page registered over WSS (sipedge's self-signed
    certificate): SIP over TLS on the browser's side, UDP on baresip's."""
    result, why = run("browser-calls-baresip-over-wss", tmp_path)
    bridged_towards_chromium(result["confirmed"]["sdp"]["remote"], why)
    media_flowed(result["media"], why)
    assert result["ended"]["browser"] == {"state": "ended", "cause": "Terminated", "originator": "local"}, why
    assert result["metrics"]["sip_wss_messages_in"] > 0 and result["metrics"]["media_calls"] == 0, why


def test_relay_only_jssip_calls_baresip_through_sipedges_turn(tmp_path: Path) -> None:
    """With ``[turn] enabled``, the page gets TURN credentials from /turn/ice-servers
    (digest with alice's SIP password) and JsSIP calls baresip with ``iceTransportPolicy:
    "relay"``: the pair Chromium selects has a relay candidate of its own, audio flows
    both ways, and sipedge's TURN counters show the allocation and the relayed packets."""
    result, why = run("relay-only-browser-calls-baresip", tmp_path)
    local = result["confirmed"]["sdp"]["local"]
    assert re.search(r"^a=candidate:.* typ relay", local, re.M), why
    assert not re.search(r"^a=candidate:.* typ (host|srflx)", local, re.M), why  # relay only
    bridged_towards_chromium(result["confirmed"]["sdp"]["remote"], why)
    assert result["selected"]["pairs"] == [{"local": "relay", "remote": "host"}], why
    media_flowed(result["media"], why)
    m = result["metrics"]
    assert m["turn_allocations_total"] >= 1 and m["turn_auth_failures"] == 0, why
    # MEDIA_SECONDS of 20 ms packets at least, each way, and more bytes (with RTP headers,
    # SRTP tags and ICE checks) than Chromium counts as audio payload
    assert m["turn_packets_to_peer"] > 100 and m["turn_packets_from_peer"] > 100, why
    later = result["media"]["later"]
    assert m["turn_bytes_to_peer"] > later["outbound"] and m["turn_bytes_from_peer"] > later["inbound"], why
    assert m["media_dtls_established"] == 1 and m["media_calls"] == 0, why
    assert result["ended"]["browser"] == {"state": "ended", "cause": "Terminated", "originator": "local"}, why


@pytest.mark.netns
@pytest.mark.skipif(shutil.which("iptables") is None, reason="needs iptables")
def test_jssip_behind_a_nat_calls_baresip(tmp_path: Path) -> None:
    """Chromium alone behind a masquerading Linux router (its only address 192.168.77.2,
    which the public side cannot reach; loopback aside) calls baresip on the public side:
    the relay's ICE-lite answers its checks at the router's mapping and DTLS and SRTP
    follow it; audio both ways."""
    with nat_topology("bb", [NAT_SERVER]) as topo:
        result, why = run("browser-calls-baresip", tmp_path, netns=topo.pub, args=(topo.phone,))
    bridged_towards_chromium(result["confirmed"]["sdp"]["remote"], why)
    assert "192.168.77.2" in result["confirmed"]["sdp"]["local"], why  # Chromium's private candidate
    assert "latched to ('203.0.113.1', " in (tmp_path / "sipedge.log").read_text(), why  # the router's mapping
    media_flowed(result["media"], why)
    assert result["metrics"]["media_dtls_established"] == 1 and result["metrics"]["media_calls"] == 0, why
