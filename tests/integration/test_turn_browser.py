"""Headless Chromium: two RTCPeerConnections with iceTransportPolicy 'relay' and sipedge as
the only TURN server connect, exchange data channel messages and audio/video — every byte
through sipedge. Over TURN/UDP and TURN/TCP.

The scenario runs in a private network namespace that has only loopback (`unshare
--net --pid`), so Chromium sees no other interface and no stray process survives. Run
this file as a script to execute the scenario itself (that is what the test does)."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys

import pytest

REALM = "browser.test"
USER, PASSWORD = "webrtc", "relay-only"
FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
    "--allow-loopback-in-peer-connection", "--disable-features=WebRtcHideLocalIpsWithMdns",
]

SCENARIO_JS = """
async ({url, username, credential}) => {
  const cfg = {iceServers: [{urls: [url], username, credential}], iceTransportPolicy: 'relay'};
  const pc1 = new RTCPeerConnection(cfg), pc2 = new RTCPeerConnection(cfg);
  pc1.onicecandidate = e => { if (e.candidate) pc2.addIceCandidate(e.candidate); };
  pc2.onicecandidate = e => { if (e.candidate) pc1.addIceCandidate(e.candidate); };
  const media = await navigator.mediaDevices.getUserMedia({audio: true, video: {width: 320, height: 240}});
  for (const t of media.getTracks()) pc1.addTrack(t, media);
  const dc = pc1.createDataChannel('chat');
  const echoes = [];
  dc.onmessage = m => echoes.push(m.data);
  pc2.ondatachannel = e => { e.channel.onmessage = m => e.channel.send('echo:' + m.data); };
  const offer = await pc1.createOffer();
  await pc1.setLocalDescription(offer);
  await pc2.setRemoteDescription(offer);
  const back = await navigator.mediaDevices.getUserMedia({audio: true});
  pc2.addTrack(back.getAudioTracks()[0], back);
  const answer = await pc2.createAnswer();
  await pc2.setLocalDescription(answer);
  await pc1.setRemoteDescription(answer);
  await new Promise((resolve, reject) => {
    if (dc.readyState === 'open') resolve();
    dc.onopen = resolve;
    setTimeout(() => reject(new Error('data channel not open: ' + pc1.iceConnectionState)), 20000);
  });
  for (let i = 0; i < 20; i++) dc.send('msg' + i);
  const inbound = async pc => {
    const out = {audio: 0, video: 0};
    (await pc.getStats()).forEach(r => { if (r.type === 'inbound-rtp') out[r.kind] += r.bytesReceived; });
    return out;
  };
  const selected = async pc => {
    const stats = await pc.getStats();
    const types = [];
    stats.forEach(r => {
      if (r.type === 'transport' && r.selectedCandidatePairId) {
        const pair = stats.get(r.selectedCandidatePairId);
        types.push(stats.get(pair.localCandidateId).candidateType, stats.get(pair.remoteCandidateId).candidateType);
      }
    });
    return types;
  };
  const deadline = Date.now() + 15000;
  let in1 = {}, in2 = {};
  while (Date.now() < deadline) {
    in1 = await inbound(pc1); in2 = await inbound(pc2);
    if (echoes.length === 20 && in2.audio > 4000 && in2.video > 20000 && in1.audio > 4000) break;
    await new Promise(r => setTimeout(r, 250));
  }
  const result = {echoes: echoes.length, in1, in2, types1: await selected(pc1), types2: await selected(pc2)};
  pc1.close(); pc2.close();
  for (const t of media.getTracks().concat(back.getTracks())) t.stop();
  return result;
}
"""


async def scenario() -> dict[str, object]:
    """Runs inside the namespace: sipedge TURN + a page server + Chromium."""
    from aiohttp import web
    from playwright.async_api import async_playwright

    from sipedge.config.turn import TurnConfig
    from sipedge.server.stun_turn import TurnService
    from sipedge.turn.auth import StaticUsers

    subprocess.run(["ip", "link", "set", "lo", "up"], check=True, timeout=10)
    cfg = TurnConfig(
        listen=["udp:127.0.0.1:3478", "tcp:127.0.0.1:3478"],
        realm=REALM,
        relay_ipv4="127.0.0.1",
        port_min=50000,
        port_max=50999,
        allow_peers=["127.0.0.0/8"],
    )
    svc = TurnService.create(cfg, users=StaticUsers(REALM, {USER: PASSWORD}))
    await svc.start()
    app = web.Application()

    async def page(_: web.Request) -> web.Response:
        return web.Response(text="<!doctype html><title>sipedge relay test</title>", content_type="text/html")

    app.router.add_get("/", page)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 8080)
    await site.start()
    results: dict[str, object] = {}
    try:
        async with async_playwright() as p:
            browser = await p.chromium.launch(executable_path="/usr/bin/chromium", args=FLAGS)
            try:
                for transport in ("udp", "tcp"):
                    before = svc.stats()
                    pg = await browser.new_page()
                    await pg.goto("http://127.0.0.1:8080/")
                    r = await asyncio.wait_for(
                        pg.evaluate(
                            SCENARIO_JS,
                            {"url": f"turn:127.0.0.1:3478?transport={transport}", "username": USER, "credential": PASSWORD},
                        ),
                        45,
                    )
                    after = svc.stats()
                    r["relayed_bytes"] = int(after["turn_bytes_to_peer"]) - int(before["turn_bytes_to_peer"])
                    r["allocations"] = int(after["turn_allocations_total"]) - int(before["turn_allocations_total"])
                    results[transport] = r
                    await pg.close()
            finally:
                await browser.close()
    finally:
        await runner.cleanup()
        await svc.stop()
    return results


def _can_unshare() -> bool:
    if shutil.which("unshare") is None or shutil.which("ip") is None or os.geteuid() != 0:
        return False
    r = subprocess.run(["unshare", "--net", "true"], capture_output=True, timeout=10)
    return r.returncode == 0


@pytest.mark.browser
@pytest.mark.timeout(120)
def test_chromium_relay_only_through_sipedge() -> None:
    if shutil.which("chromium") is None:
        pytest.skip("Debian chromium not installed")
    pytest.importorskip("playwright.async_api")
    if not _can_unshare():
        pytest.skip("needs root and unshare for a private network namespace")
    proc = subprocess.run(
        ["unshare", "--net", "--pid", "--mount-proc", "--fork", sys.executable, __file__],
        capture_output=True, text=True, timeout=110,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    for transport in ("udp", "tcp"):
        r = results[transport]
        assert r["echoes"] == 20, r
        assert r["types1"] == ["relay", "relay"] and r["types2"] == ["relay", "relay"], r
        assert r["in2"]["audio"] > 1000 and r["in2"]["video"] > 5000 and r["in1"]["audio"] > 1000, r
        assert r["allocations"] >= 2 and r["relayed_bytes"] > 40000, r


if __name__ == "__main__":
    print(json.dumps(asyncio.run(scenario())))
