"""WebRTC through the relay: two Chromium peer connections exchange audio and video (one
BUNDLE group) with every SDP passing through the relay (``ice = "force"``), so each
browser's only ICE candidate is the relay's ICE-lite one. Proves, with a real browser:
ICE-lite answers to Chrome's checks, DTLS and SRTP passed through end to end (fingerprints
untouched), rtcp-mux kept, one BUNDLE transport in the answer, media counted both ways.

The worker runs in a loopback-only network and PID namespace (``unshare``), as the field
notes in TESTING.md advise for browsers.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"

pytestmark = [
    pytest.mark.browser,
    pytest.mark.timeout(90),
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian chromium not installed"),
    pytest.mark.skipif(shutil.which("unshare") is None, reason="needs util-linux unshare"),
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for unshare --net"),
]

WORKER = textwrap.dedent(
    r"""
    import asyncio, json, subprocess, sys
    from playwright.async_api import async_playwright
    from sipedge.config.media import MediaConfig
    from sipedge.server.media import MediaServer

    ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--allow-loopback-in-peer-connection", "--disable-features=WebRtcHideLocalIpsWithMdns",
            "--autoplay-policy=no-user-gesture-required"]

    PAGE_JS = '''
    window.pcs = {};
    window.makePc = async (name) => {
      const pc = new RTCPeerConnection({bundlePolicy: "max-bundle", rtcpMuxPolicy: "require"});
      const ctx = new AudioContext();
      const osc = ctx.createOscillator();
      const dest = ctx.createMediaStreamDestination();
      osc.connect(dest); osc.start();
      pc.addTrack(dest.stream.getAudioTracks()[0], dest.stream);
      const canvas = document.createElement("canvas");
      canvas.width = 64; canvas.height = 48;
      const g = canvas.getContext("2d");
      setInterval(() => { g.fillStyle = "#" + (100 + Math.floor(Math.random() * 899)); g.fillRect(0, 0, 64, 48); }, 40);
      const video = canvas.captureStream(25);
      pc.addTrack(video.getVideoTracks()[0], video);
      window.pcs[name] = pc;
    };
    window.gathered = (pc) => new Promise((resolve) => {
      if (pc.iceGatheringState === "complete") return resolve();
      pc.addEventListener("icegatheringstatechange", () => {
        if (pc.iceGatheringState === "complete") resolve();
      });
      setTimeout(resolve, 3000);
    });
    window.offer = async (name) => {
      const pc = window.pcs[name];
      await pc.setLocalDescription(await pc.createOffer());
      await window.gathered(pc);
      return pc.localDescription.sdp;
    };
    window.answer = async (name, sdp) => {
      const pc = window.pcs[name];
      await pc.setRemoteDescription({type: "offer", sdp});
      await pc.setLocalDescription(await pc.createAnswer());
      await window.gathered(pc);
      return pc.localDescription.sdp;
    };
    window.accept = async (name, sdp) => {
      await window.pcs[name].setRemoteDescription({type: "answer", sdp});
    };
    window.inbound = async (name) => {
      const stats = await window.pcs[name].getStats();
      const state = window.pcs[name].connectionState, kinds = {};
      stats.forEach((r) => { if (r.type === "inbound-rtp") kinds[r.kind] = r.bytesReceived; });
      return {state, audio: kinds.audio || 0, video: kinds.video || 0};
    };
    "ready";  // the value of the script: a function here would be called by page.evaluate
    '''

    async def main():
        subprocess.run(["ip", "link", "set", "lo", "up"], check=True, timeout=5)
        media = MediaServer(MediaConfig(listen="127.0.0.1", port_min=40000, port_max=40099, ice="force"))
        out = {}
        async with async_playwright() as p:
            browser = await p.chromium.launch(executable_path="/usr/bin/chromium", args=ARGS)
            try:
                page = await browser.new_page()
                await page.goto("about:blank")
                await page.evaluate(PAGE_JS)
                await page.evaluate("makePc('a')")
                await page.evaluate("makePc('b')")
                offer = await page.evaluate("offer('a')")
                to_b = (await media.offer("web", "a-tag", offer.encode())).decode()
                answer = await page.evaluate("([s]) => answer('b', s)", [to_b])
                to_a = (await media.answer("web", "a-tag", "b-tag", answer.encode())).decode()
                await page.evaluate("([s]) => accept('a', s)", [to_a])
                seen = {}
                for _ in range(80):
                    await asyncio.sleep(0.1)
                    seen = {n: await page.evaluate(f"inbound('{n}')") for n in ("a", "b")}
                    if all(v["audio"] > 2000 and v["video"] > 2000 for v in seen.values()):
                        break
                out = {"seen": seen, "offer": offer, "to_b": to_b, "answer": answer, "to_a": to_a,
                       "stats": media.stats()}
            finally:
                await browser.close()
                media.close()
        print(json.dumps(out), flush=True)

    asyncio.run(main())
    """
)


def test_two_chromium_peers_through_ice_lite_relay() -> None:
    pytest.importorskip("playwright")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    env["PYTHONPATH"] = str(ROOT / "src")
    res = subprocess.run(
        ["unshare", "--net", "--pid", "--mount-proc", "--fork", "--kill-child",
         sys.executable, "-c", WORKER],
        capture_output=True, text=True, timeout=75, env=env,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    out = json.loads(res.stdout.strip().splitlines()[-1])
    seen = out["seen"]
    assert seen["a"]["state"] == "connected" and seen["b"]["state"] == "connected", seen
    for side in ("a", "b"):
        assert seen[side]["audio"] > 2000 and seen[side]["video"] > 2000, seen
    # each browser was told about the relay only, as an ICE-lite agent
    for sdp in (out["to_a"], out["to_b"]):
        cands = [ln for ln in sdp.splitlines() if ln.startswith("a=candidate:")]
        assert cands and all(" 127.0.0.1 " in c and "typ host" in c for c in cands)
        assert "a=ice-lite" in sdp and "a=rtcp-mux" in sdp and "a=group:BUNDLE 0 1" in sdp
    # the answer gives the BUNDLE group one transport (RFC 8843): one port, one ufrag
    ports = {ln.split()[1] for ln in out["to_a"].splitlines() if ln.startswith("m=")}
    ufrags = {ln for ln in out["to_a"].splitlines() if ln.startswith("a=ice-ufrag:")}
    assert len(ports) == 1 and len(ufrags) == 1, out["to_a"]
    # DTLS fingerprints went through untouched
    fp = [ln for ln in out["offer"].splitlines() if ln.startswith("a=fingerprint:")]
    assert fp and all(f in out["to_b"] for f in fp)
    stats = out["stats"]
    assert stats["media_stun_answered"] >= 2
    assert stats["media_packets_received_live"] > 50
    assert stats["media_packets_dropped_stranger"] == 0
