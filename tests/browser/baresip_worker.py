"""JsSIP in Chromium and Debian baresip call each other through ``sipedge serve``, run by
``netns.run_scenario(..., worker=WORKER)`` inside a loopback-only namespace.

    baresip_worker.py SCENARIO OUTDIR

Chromium (fake devices: a beeping microphone, a test-pattern camera) runs the softphone
page over WS; baresip (G.711 only, the ``ausine`` tone as microphone, what it decodes
dumped to WAV by ``sndfile``, a ``ctrl_tcp`` socket to hang up) registers over UDP. Both
use 127.0.0.1 (Chromium with ``--allow-loopback-in-peer-connection``). The server runs
with its defaults, except MD5-only digest, which JsSIP needs (see worker.py).

Scenarios (each writes what it saw to OUTDIR/result.json, as worker.py does):
- ``browser-calls-baresip`` / ``browser-calls-baresip-baresip-hangs-up``: the browser
  dials bob; media both ways; the browser (or baresip) hangs up.
- ``baresip-calls-browser`` / ``baresip-calls-browser-browser-hangs-up``: baresip dials
  alice, the page answers; media both ways; baresip (or the browser) hangs up.
- ``video-to-audio-phone``: the browser calls with audio and video; baresip refuses the
  video (port 0); audio both ways.
- ``ice-restart``: mid-call the browser restarts ICE (re-INVITE with new credentials);
  media goes on afterwards.
- ``browser-calls-baresip-over-wss``: as ``browser-calls-baresip``, the page registered
  over WSS (sipedge's self-signed certificate; Chromium ``--ignore-certificate-errors``).
- ``relay-only-browser-calls-baresip``: as ``browser-calls-baresip``, with the TURN role
  on (worker.py's ``turn_section``): the page gets TURN credentials from
  /turn/ice-servers with alice's SIP password and calls with ``iceTransportPolicy:
  "relay"``, so every packet between Chromium and the relay goes through sipedge's TURN.

After the media, every scenario where the browser calls records the candidate types of
the pair Chromium's ICE selected (``selected``).

With a third argument, the name of the private namespace of ``helpers.netns.nat_topology``,
the worker runs on its public side and Chromium behind the NAT (:func:`behind_nat`).
"""

from __future__ import annotations

import array
import contextlib
import json
import re
import socket
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

TESTS = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(TESTS))

from browser.worker import (  # noqa: E402
    CHROMIUM,
    MD5_ONLY,
    Phone,
    Recorder,
    Setup,
    main,
    turn_section,
    wait_until,
)
from helpers.ports import free_port  # noqa: E402
from helpers.sipserver import Server  # noqa: E402
from helpers.webrtc_call import Baresip  # noqa: E402

# Chromium's inbound and outbound audio bytes and the energy of what it decoded
STATS_JS = """async () => {
  const s = window.phone.session, pc = s && s.connection;
  if (!pc) return null;
  const out = {inbound: 0, outbound: 0, energy: 0};
  (await pc.getStats()).forEach((r) => {
    if (r.kind !== "audio") return;
    if (r.type === "inbound-rtp") { out.inbound += r.bytesReceived || 0; out.energy += r.totalAudioEnergy || 0; }
    if (r.type === "outbound-rtp") out.outbound += r.bytesSent || 0;
  });
  return out;
}"""
SDP_JS = """() => {
  const pc = window.phone.session.connection;
  return {local: pc.localDescription.sdp, remote: pc.remoteDescription.sdp};
}"""
# the browser calls with a camera too, or relay-only through the TURN servers the page got
# from /turn/ice-servers (the page itself dials audio only, with every candidate type)
CALL_JS = """async ({target, video, relay}) => {
  const pcConfig = {iceServers: relay ? await window.phone.iceServers : [], bundlePolicy: "max-bundle",
                    rtcpMuxPolicy: "require"};
  if (relay) pcConfig.iceTransportPolicy = "relay";
  window.phone.ua.call(target, {mediaConstraints: {audio: true, video}, pcConfig});
}"""
# the candidate types of the pair Chromium's ICE selected
SELECTED_JS = """async () => {
  const stats = await window.phone.session.connection.getStats(), out = [];
  stats.forEach((r) => {
    if (r.type !== "transport" || !r.selectedCandidatePairId) return;
    const pair = stats.get(r.selectedCandidatePairId);
    out.push({local: stats.get(pair.localCandidateId).candidateType,
              remote: stats.get(pair.remoteCandidateId).candidateType});
  });
  return out;
}"""
# JsSIP re-INVITE with an ICE restart offer: resolves true once its 200 OK is applied
ICE_RESTART_JS = """() => new Promise((resolve) => {
  const s = window.phone.session;
  setTimeout(() => resolve(false), 10000);
  const started = s.renegotiate({rtcOfferConstraints: {iceRestart: true}}, () => resolve(true));
  if (!started) resolve(false);
})"""
MEDIA_SECONDS = 3.0


class Bob(Baresip):
    """:class:`Baresip` on 127.0.0.1 (no veth here), with a ``ctrl_tcp`` socket."""

    def __init__(self, server: Server, folder: Path) -> None:
        super().__init__(server, folder)
        self.ctrl = free_port(server.host)
        config = (folder / "config").read_text().replace("net_interface v0", f"net_interface {server.host}")
        (folder / "config").write_text(config + f"module_app ctrl_tcp.so\nctrl_tcp_listen {server.host}:{self.ctrl}\n")

    def command(self, command: str) -> None:
        """One ctrl_tcp command (a netstring of JSON); its reply is not needed."""
        body = json.dumps({"command": command, "params": "", "token": "t"}).encode()
        with socket.create_connection((self.server.host, self.ctrl), timeout=3) as s:
            s.sendall(b"%d:%s," % (len(body), body))
            s.recv(4096)

    def log(self) -> str:
        return (self.folder / "out.log").read_text(errors="replace")

    def dump(self) -> Path | None:
        dumps = sorted(self.folder.glob("dump-*-dec.wav"))
        return dumps[-1] if dumps else None

    def dump_size(self) -> int:
        d = self.dump()
        return d.stat().st_size if d else 0

    def energy(self, since: int = 44) -> float:
        """Mean |sample| of what baresip decoded after byte ``since`` of its dump."""
        d = self.dump()
        data = d.read_bytes()[max(since, 44):] if d else b""
        pcm = array.array("h", data[: len(data) // 2 * 2])
        return sum(abs(x) for x in pcm) / len(pcm) if pcm else 0.0

    def call_ended(self) -> bool:
        return "terminated" in self.log() or "session closed" in self.log()


def metrics(server: Server) -> dict[str, float]:
    with urllib.request.urlopen(f"http://{server.host}:{server.http}/metrics", timeout=5) as r:
        text = r.read().decode()
    return {k: float(v) for k, v in re.findall(r"^sipedge_(\w+) (\S+)$", text, re.M)}


def stats(alice: Phone) -> dict[str, float]:
    got = alice.page.evaluate(STATS_JS)
    if got is None:
        raise AssertionError("the browser has no peer connection")
    return dict(got)


def media_both_ways(rec: Recorder, alice: Phone, bob: Bob, name: str) -> None:
    """Chromium's inbound and outbound bytes and decoded energy grow over MEDIA_SECONDS,
    and what baresip decodes in that time is not silence."""
    wait_until(lambda: stats(alice)["inbound"] > 0 and stats(alice)["outbound"] > 0, 8.0, "RTP both ways in Chromium")
    first, size = stats(alice), bob.dump_size()
    time.sleep(MEDIA_SECONDS)
    later = stats(alice)
    rec.step(name, first=first, later=later, baresip_energy=bob.energy(since=size),
             baresip_dumped=bob.dump_size() - size)


def sip_url(server: Server, scheme: str) -> str:
    return f"{scheme}://{server.host}:{server.wss if scheme == 'wss' else server.ws}"


def register_both(rec: Recorder, alice: Phone, bob: Bob, server: Server, scheme: str = "ws") -> None:
    alice.register(sip_url(server, scheme), server.host)
    alice.wait_state("reg-state", "registered")
    wait_until(bob.registered, 10.0, "baresip's REGISTER answered")
    rec.step("registered")


def hang_up(rec: Recorder, alice: Phone, bob: Bob, by: str) -> None:
    if by == "browser":
        alice.page.click("#hangup")
    else:
        bob.command("hangup")
    alice.wait_state("call-state", "ended")
    wait_until(bob.call_ended, 8.0, "baresip's call to end")
    rec.step("ended", browser=alice.call_state(), by=by)


@contextlib.contextmanager
def parties(rec: Recorder, browser: Any, server: Server, outdir: Path) -> Iterator[tuple[Phone, Bob]]:
    """alice's page and bob's baresip; afterwards baresip's log and the counters go into
    the result."""
    bob = Bob(server, outdir / "baresip")
    alice = Phone(browser, server, "alice", outdir)
    try:
        yield alice, bob
    finally:
        alice.close()
        rec.result["baresip_log"] = bob.stop()[-3000:]
        rec.result["metrics"] = metrics(server)


def confirmed(rec: Recorder, alice: Phone) -> None:
    """The page shows the call established; its local and remote SDP go into the result."""
    alice.wait_state("call-state", "confirmed", "failed", "ended", timeout_ms=15000)
    if alice.call_state()["state"] != "confirmed":
        raise AssertionError(f"the call between the browser and baresip was not established: {alice.call_state()}")
    rec.step("confirmed", sdp=alice.page.evaluate(SDP_JS))


def browser_calls(video: bool = False, restart: bool = False, by: str = "browser",
                  scheme: str = "ws", relay: bool = False) -> Callable[..., None]:
    def scenario(rec: Recorder, browser: Any, server: Server, outdir: Path) -> None:
        with parties(rec, browser, server, outdir) as (alice, bob):
            bob.start()
            register_both(rec, alice, bob, server, scheme)
            target = f"sip:bob@{server.host}"
            if video or relay:
                alice.page.evaluate(CALL_JS, {"target": target, "video": video, "relay": relay})
            else:
                alice.page.fill("#target", target)
                alice.page.click("#dial")
            confirmed(rec, alice)
            media_both_ways(rec, alice, bob, "media")
            rec.step("selected", pairs=alice.page.evaluate(SELECTED_JS))
            if restart:
                ice_restart(rec, alice, bob, server)
            hang_up(rec, alice, bob, by)
    return scenario


def ice_restart(rec: Recorder, alice: Phone, bob: Bob, server: Server) -> None:
    before = metrics(server)
    done = alice.page.evaluate(ICE_RESTART_JS)
    rec.step("restarted", done=done, sdp=alice.page.evaluate(SDP_JS), metrics_before=before,
             metrics_after=metrics(server))
    if not done:
        raise AssertionError("JsSIP's ICE-restart re-INVITE did not complete")
    media_both_ways(rec, alice, bob, "media_after_restart")


def baresip_calls(by: str = "baresip") -> Callable[..., None]:
    def scenario(rec: Recorder, browser: Any, server: Server, outdir: Path) -> None:
        with parties(rec, browser, server, outdir) as (alice, bob):
            alice.register(sip_url(server, "ws"), server.host)
            alice.wait_state("reg-state", "registered")
            bob.start(f"/dial sip:alice@{server.host}")
            alice.wait_state("call-state", "incoming", timeout_ms=15000)
            rec.step("incoming", caller=alice.page.text_content("#incoming-from"))
            alice.page.click("#answer")
            confirmed(rec, alice)
            media_both_ways(rec, alice, bob, "media")
            hang_up(rec, alice, bob, by)
    return scenario


SCENARIOS: dict[str, tuple[Callable[..., None], str]] = {
    "browser-calls-baresip": (browser_calls(), MD5_ONLY),
    "browser-calls-baresip-baresip-hangs-up": (browser_calls(by="baresip"), MD5_ONLY),
    "baresip-calls-browser": (baresip_calls(), MD5_ONLY),
    "baresip-calls-browser-browser-hangs-up": (baresip_calls(by="browser"), MD5_ONLY),
    "video-to-audio-phone": (browser_calls(video=True), MD5_ONLY),
    "ice-restart": (browser_calls(restart=True), MD5_ONLY),
    "browser-calls-baresip-over-wss": (browser_calls(scheme="wss"), MD5_ONLY),
    # sipedge's TURN relays to its own media relay on loopback, which peer safety denies
    # by default
    "relay-only-browser-calls-baresip": (browser_calls(relay=True),
                                         MD5_ONLY + turn_section() + 'allow_peers = ["127.0.0.0/8"]\n'),
}

NAT_SERVER = "203.0.113.2"  # the public side of helpers.netns.nat_topology (Chromium: 192.168.77.2)


def behind_nat(private_ns: str, outdir: Path) -> Setup:
    """The worker, sipedge and baresip on the public side; Chromium alone in ``private_ns``
    behind the masquerading router (Playwright starts it through a wrapper that enters
    the namespace; its pipe to the driver crosses namespaces). The relay listens on the
    public address; the page is a secure context though not on loopback, by a flag."""
    wrapper = outdir / "chromium-behind-nat"
    wrapper.write_text(f'#!/bin/sh\nexec ip netns exec {private_ns} {CHROMIUM} "$@"\n')
    wrapper.chmod(0o755)
    return Setup(host=NAT_SERVER, extra=f'\n[media]\nlisten = "{NAT_SERVER}"\n',
                 web='metrics_allow = ["203.0.113.0/24"]', chromium=str(wrapper),
                 args=lambda server: [f"--unsafely-treat-insecure-origin-as-secure=http://{NAT_SERVER}:{server.http}"])


if __name__ == "__main__":  # SCENARIO OUTDIR [PRIVATE_NS: Chromium behind a NAT]
    sys.exit(main(SCENARIOS, behind_nat(sys.argv[3], Path(sys.argv[2])) if len(sys.argv) > 3 else None))
