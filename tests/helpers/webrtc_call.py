"""Calls between a WebRTC endpoint (aiortc: full ICE, DTLS-SRTP, over SIP on a WebSocket)
and a plain SIP phone (a UDP user agent sending and receiving PCMU RTP) through a real
``sipedge serve`` (or any SIP proxy with UDP and WebSocket listeners: :class:`Routing`
says how to reach it and the other side), for the bridge tests. Run inside a network namespace that has only
loopback and a veth with ``HOST`` (aioice never gathers 127.0.0.1): the test starts it
with ``unshare --net`` and reads the JSON line :func:`main` prints.

    python -c "from helpers.webrtc_call import main; main('browser-calls-phone', '/tmp/x')"
"""

from __future__ import annotations

import array
import asyncio
import fractions
import json
import math
import os
import re
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from aiortc import MediaStreamTrack, RTCPeerConnection, RTCSessionDescription
from av import AudioFrame

from helpers.sipserver import Server, running_server
from helpers.ua import UA, in_dialog
from sipedge.sip import message as m

HOST = "192.0.2.1"
USERS = {"alice": "alice-pw", "bob": "bob-pw"}
SDP_TYPE = {"Content-Type": "application/sdp"}


def _ulaw(sample: int) -> int:
    """G.711 mu-law of one 16-bit sample (for the phone's tone; a test fixture, not media code)."""
    sign = 0x80 if sample < 0 else 0
    sample = min(abs(sample), 32635) + 132
    exponent = max(0, sample.bit_length() - 8)
    mantissa = (sample >> (exponent + 3)) & 0x0F
    return ~(sign | (exponent << 4) | mantissa) & 0xFF


TONE_ULAW = bytes(_ulaw(int(8000 * math.sin(2 * math.pi * 440 * n / 8000))) for n in range(160))
SILENT_ULAW = {0xFF, 0x7F, 0xFE, 0x7E}


class SipProxy(Protocol):
    """Where the UAs send their SIP: UDP for the phone, WebSocket for the browser, both on
    ``host`` (also the domain of their AORs). :class:`Server` is one."""

    host: str
    udp: int
    ws: int


class Tone(MediaStreamTrack):
    """A 440 Hz tone, 20 ms frames at 48 kHz, paced in real time."""

    kind = "audio"

    def __init__(self) -> None:
        super().__init__()
        self.pts = 0
        self.start = 0.0

    async def recv(self) -> AudioFrame:
        if not self.start:
            self.start = time.monotonic()
        wait = self.start + self.pts / 48000 - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        samples = array.array("h", (int(8000 * math.sin(2 * math.pi * 440 * n / 48000))
                                    for n in range(self.pts, self.pts + 960)))
        frame = AudioFrame(format="s16", layout="mono", samples=960)
        frame.planes[0].update(samples.tobytes())
        frame.sample_rate = 48000
        frame.pts = self.pts
        frame.time_base = fractions.Fraction(1, 48000)
        self.pts += 960
        return frame


class Phone:
    """A plain SIP phone: a UDP UA for bob and an RTP socket that sends a PCMU tone to
    where the SDP it got says and counts what it receives."""

    def __init__(self, server: SipProxy, address: str | None = None, user: str = "bob") -> None:
        self.address = address or server.host  # its own (another, behind a NAT)
        self.ua = UA("udp", (server.host, server.udp), user, server.host, USERS[user], host=self.address)
        self.rtp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.rtp.bind((self.address, 0))
        self.rtp.settimeout(0.1)
        self.port = self.rtp.getsockname()[1]
        self.received = 0
        self.voiced = 0
        self.payload_types: set[int] = set()
        self.sources: set[tuple[str, int]] = set()
        self.dest: tuple[str, int] | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def sdp(self, session: int = 1, refuse_video: bool = False) -> bytes:
        """An audio-only phone's SDP (``refuse_video``: answering an offer with video, whose
        m=video line it refuses with port 0, RFC 3264 §6)."""
        video = "m=video 0 RTP/AVP 96\r\na=rtpmap:96 VP8/90000\r\n" if refuse_video else ""
        return (
            f"v=0\r\no=bob {session} {session} IN IP4 {self.address}\r\ns=-\r\nc=IN IP4 {self.address}\r\nt=0 0\r\n"
            f"m=audio {self.port} RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\n"
            "a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\na=ptime:20\r\na=sendrecv\r\n"
            f"{video}"
        ).encode()

    def start(self, remote_sdp: bytes) -> None:
        text = remote_sdp.decode()
        host = re.search(r"^c=IN IP4 (\S+)", text, re.M)
        port = re.search(r"^m=audio (\d+)", text, re.M)
        assert host is not None and port is not None, text
        self.dest = (host.group(1), int(port.group(1)))
        self._thread.start()

    def _run(self) -> None:
        seq, ts, ssrc = 1, 0, 0x5EED
        next_send = time.monotonic()
        deadline = time.monotonic() + 60  # bounded
        while not self._stop.is_set() and time.monotonic() < deadline:
            now = time.monotonic()
            if now >= next_send and self.dest is not None:
                self.rtp.sendto(struct.pack("!BBHII", 0x80, 0, seq & 0xFFFF, ts, ssrc) + TONE_ULAW, self.dest)
                seq, ts, next_send = seq + 1, ts + 160, next_send + 0.02
            try:
                data, source = self.rtp.recvfrom(2048)
            except (TimeoutError, OSError):
                continue
            if len(data) > 12 and data[0] >> 6 == 2:
                self.received += 1
                self.payload_types.add(data[1] & 0x7F)
                self.sources.add((source[0], source[1]))
                if set(data[12:]) - SILENT_ULAW:
                    self.voiced += 1
                self.heard(data)

    def heard(self, packet: bytes) -> None:
        """Each RTP packet received (a hook for variants that decode it)."""

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)
        self.rtp.close()


class Browser:
    """aiortc behind a SIP-over-WebSocket UA for alice: sends a tone, measures what it hears."""

    def __init__(self, server: SipProxy, video: bool = False, turn: tuple[str, str, str] | None = None,
                 user: str = "alice") -> None:
        self.ua = UA("ws", (server.host, server.ws), user, server.host, USERS[user], host=server.host)
        if turn is None:
            self.pc = RTCPeerConnection()
        else:  # relay-only ICE through this TURN server (url, username, credential)
            from aiortc import RTCConfiguration, RTCIceServer
            from aiortc.rtcconfiguration import RTCIceTransportPolicy

            url, username, credential = turn
            self.pc = RTCPeerConnection(RTCConfiguration(
                iceServers=[RTCIceServer(urls=url, username=username, credential=credential)],
                iceTransportPolicy=RTCIceTransportPolicy.RELAY))
        self.pc.addTrack(Tone())
        if video:  # a camera too: the offer gets a second m= line in its BUNDLE group
            from aiortc.mediastreams import VideoStreamTrack

            self.pc.addTrack(VideoStreamTrack())
        self.frames = 0
        self.voiced = 0
        self.loudest = 0.0  # the highest mean |sample| of a frame heard
        self.listeners: list[asyncio.Task[None]] = []
        self.pc.on("track", self._on_track)

    def _on_track(self, track: MediaStreamTrack) -> None:
        if track.kind != "audio":
            return

        async def listen() -> None:
            while True:
                try:
                    frame = await track.recv()
                except Exception:
                    return
                self.frames += 1
                pcm = array.array("h", bytes(frame.planes[0])[: frame.samples * 2 * len(frame.layout.channels)])
                level = sum(abs(x) for x in pcm) / len(pcm) if pcm else 0.0
                self.loudest = max(self.loudest, level)
                if level > 200:
                    self.voiced += 1

        self.listeners.append(asyncio.ensure_future(listen()))

    async def offer(self) -> bytes:
        await self.pc.setLocalDescription(await self.pc.createOffer())
        return self.pc.localDescription.sdp.encode()

    async def answer(self, offer: bytes) -> bytes:
        await self.pc.setRemoteDescription(RTCSessionDescription(offer.decode(), "offer"))
        await self.pc.setLocalDescription(await self.pc.createAnswer())
        return self.pc.localDescription.sdp.encode()

    async def accept(self, answer: bytes) -> None:
        await self.pc.setRemoteDescription(RTCSessionDescription(answer.decode(), "answer"))


class Baresip:
    """Debian baresip-core as bob on UDP: G.711 only, a sine tone as its microphone
    (``ausine``), and everything it decodes dumped to WAV files (``sndfile``) so the test
    can tell the browser's tone from silence. Auto-answers calls."""

    def __init__(self, server: Server, folder: Path, sdes: bool = False) -> None:
        from helpers.ports import free_port

        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        port = free_port(server.host)
        (folder / "config").write_text(
            f"sip_listen {server.host}:{port}\nnet_interface v0\nmodule_path /usr/lib/baresip/modules\n"
            "module g711.so\nmodule ausine.so\nmodule aubridge.so\nmodule sndfile.so\nmodule_app account.so\n"
            + ("module srtp.so\n" if sdes else "") +
            f"module_app menu.so\naudio_source ausine,440\naudio_player aubridge,sink\nsnd_path {folder}\n"
            "ausrc_srate 48000\nauplay_srate 48000\nausrc_channels 2\nauplay_channels 2\n"  # ausine: 48 kHz stereo
        )
        (folder / "accounts").write_text(
            f"<sip:bob@{server.host}>;auth_pass={USERS['bob']};answermode=auto;regint=300;"
            f'audio_codecs=PCMU/8000/1;outbound="sip:{server.host}:{server.udp};transport=udp"'
            + (";mediaenc=srtp-mand" if sdes else "") + "\n"
        )
        self.server = server
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, *commands: str) -> None:
        args = ["baresip", "-f", str(self.folder)]
        for c in commands:
            args += ["-e", c]
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=(self.folder / "out.log").open("wb"),
                                     stderr=subprocess.STDOUT)

    def registered(self) -> bool:
        return b"200 OK" in (self.folder / "out.log").read_bytes()

    def decoded_energy(self) -> float:
        """Mean absolute sample of what baresip decoded (the browser's tone), 0 without it."""
        dumps = sorted(self.folder.glob("dump-*-dec.wav"))
        if not dumps:
            return 0.0
        data = dumps[-1].read_bytes()[44:]  # 16-bit PCM after the RIFF header
        pcm = array.array("h", data[: len(data) // 2 * 2])
        return sum(abs(x) for x in pcm) / len(pcm) if pcm else 0.0

    def stop(self) -> str:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        return (self.folder / "out.log").read_text(errors="replace")


def _invite_with_auth(ua: UA, uri: str, body: bytes) -> tuple[m.Request, m.Response]:
    """INVITE (without SDP when ``body`` is empty: a late offer), its 407 answered."""
    req = ua.build("INVITE", uri, headers=SDP_TYPE if body else None, body=body)
    ua.send(req)
    first = ua.expect_final(10)
    if first.status == 407:
        ack = ua.build("ACK", uri, to_tag=first.to.tag)
        ack.set("CSeq", f"{req.cseq.number} ACK")
        ack.replace_first("via", req.get("via") or "")
        ua.send(ack)
        req = ua.authorize(req, first)
        ua.send(req)
        first = ua.expect_final(10)
    return req, first


def _send_authorized_invite(ua: UA, uri: str, body: bytes) -> None:
    """INVITE, its 407 answered with credentials; returns once the authorized INVITE is
    out, before any provisional response (the caller reads those itself)."""
    req = ua.build("INVITE", uri, headers=SDP_TYPE, body=body)
    ua.send(req)
    challenge = ua.expect(407, 10)
    ua.send(ua.authorize(req, challenge))


async def _until(pred: Any, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if pred():
            return True
        await asyncio.sleep(0.1)
    return bool(pred())


@dataclass
class Routing:
    """How a scenario's calls get through ``proxy``: whether the UAs register first, the
    Request-URIs of the phone and the browser (default: their AORs at ``proxy.host``),
    and where the relay's counters come from (``stats``)."""

    proxy: SipProxy
    stats: Callable[[], dict[str, float]]
    register: bool = True
    phone_uri: Callable[[Phone], str] | None = None
    browser_uri: Callable[[Browser], str] | None = None

    def to_phone(self, phone: Phone) -> str:
        return self.phone_uri(phone) if self.phone_uri else f"sip:bob@{self.proxy.host}"

    def to_browser(self, browser: Browser) -> str:
        return self.browser_uri(browser) if self.browser_uri else f"sip:alice@{self.proxy.host}"


def sipedge_routing(server: Server) -> Routing:
    """``sipedge serve``: both register, calls go to their AORs, counters from /metrics."""
    return Routing(server, lambda: _metrics(server))


def _metrics(server: Server) -> dict[str, float]:
    with urllib.request.urlopen(f"http://{server.host}:{server.http}/metrics", timeout=5) as r:
        text = r.read().decode()
    return {k: float(v) for k, v in re.findall(r"^sipedge_(\w+) (\S+)$", text, re.M)}


def _attack(relay_port: int) -> int:
    """A stranger on the browser's relay port: a DTLS ClientHello, garbage and truncated
    DTLS records, SRTP-looking packets with no valid tag. Returns how many it sent."""
    hello = bytes.fromhex("16feff0000000000000000002f010000230000000000000023fefd") + bytes(32) + b"\x00\x00\x02\xc0\x2b\x01\x00"
    packets = [hello, b"\x16\xfe\xfd\x00\x00garbage", b"\x17\xfe", bytes([0x80, 0]) + bytes(30),
               bytes([0x80, 200]) + bytes(40)] * 5
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((HOST, 0))
        for p in packets:
            s.sendto(p, (HOST, relay_port))
    return len(packets)


def _media_port(sdp: str) -> int:
    found = re.search(r"^m=audio (\d+)", sdp, re.M)
    assert found is not None
    return int(found.group(1))


During = Callable[["Browser", "Phone", dict[str, Any]], Awaitable[None]]


async def browser_calls_phone(route: Routing, tamper: str = "", browser: Browser | None = None,
                              phone: Phone | None = None, during: During | None = None) -> dict[str, Any]:
    """``tamper``: "attack" (a stranger sends DTLS and SRTP to the browser's relay port
    while the call runs), "fingerprint" (the browser's SDP names a certificate it does
    not have), "video" (the browser sends audio and video to an audio-only phone), "turn"
    (the browser's ICE is relay-only, through sipedge's own TURN server). ``during``:
    awaited once media flows, before the BYE (it may add to the result)."""
    browser = browser or Browser(route.proxy, video=tamper == "video", turn=TURN if tamper == "turn" else None)
    phone = phone or Phone(route.proxy)
    out: dict[str, Any] = {}
    try:
        if route.register:
            assert (await asyncio.to_thread(browser.ua.register)).status == 200
            assert (await asyncio.to_thread(phone.ua.register)).status == 200
        offer = await browser.offer()
        if tamper == "fingerprint":
            # every one of them (aiortc offers sha-256, sha-384 and sha-512: any match would do)
            offer = re.sub(rb"(a=fingerprint:\S+ )([0-9A-Fa-f:]+)",
                           lambda mt: mt.group(1) + re.sub(rb"[0-9A-Fa-f]", b"0", mt.group(2)), offer)
        invite_task = asyncio.create_task(asyncio.to_thread(
            _invite_with_auth, browser.ua, route.to_phone(phone), offer))
        inv = await asyncio.to_thread(phone.ua.wait, "INVITE", 10)
        assert isinstance(inv, m.Request)
        out["offer_to_phone"] = inv.body.decode()
        phone.ua.answer(inv, 180)
        phone.ua.answer(inv, 200, body=phone.sdp(refuse_video=tamper == "video"), headers=SDP_TYPE)
        _, ok = await invite_task
        out["status"] = ok.status
        out["answer_to_browser"] = ok.body.decode()
        routes = list(reversed(ok.get_all("record-route")))
        browser.ua.send(in_dialog(browser.ua, "ACK", ok, routes, cseq=ok.cseq.number))
        phone.start(inv.body)
        await browser.accept(ok.body)
        if tamper == "fingerprint":
            await asyncio.sleep(3)  # long enough for media, had it been let through
        else:
            await _until(lambda: phone.voiced > 50 and browser.voiced > 25, 15)
        if tamper == "rtcp":  # the phone sends no RTCP: the relay reports to the browser
            await asyncio.sleep(6)
            stats = await browser.pc.getSenders()[0].getStats()
            remote = [r for r in stats.values() if getattr(r, "type", "") == "remote-inbound-rtp"]
            out["remote_inbound_packets"] = remote[0].packetsReceived if remote else None
        if tamper == "attack":
            out["attack_sent"] = _attack(_media_port(out["answer_to_browser"]))
            heard = phone.voiced
            await _until(lambda: phone.voiced > heard + 50, 10)
            out["voiced_after_attack"] = phone.voiced - heard
        if during is not None:
            await during(browser, phone, out)
        out.update(_report(browser, phone, route))
        bye = in_dialog(browser.ua, "BYE", ok, routes)
        browser.ua.send(bye)
        got = await asyncio.to_thread(phone.ua.wait, "BYE", 5)
        assert isinstance(got, m.Request)
        phone.ua.answer(got, 200)
        out["bye"] = (await asyncio.to_thread(browser.ua.expect_final)).status
    finally:
        await browser.pc.close()
        phone.stop()
    out["metrics_after"] = route.stats()
    return out


async def phone_calls_browser(route: Routing, browser: Browser | None = None,
                              phone: Phone | None = None) -> dict[str, Any]:
    browser, phone = browser or Browser(route.proxy), phone or Phone(route.proxy)
    out: dict[str, Any] = {}
    try:
        if route.register:
            assert (await asyncio.to_thread(browser.ua.register)).status == 200
            assert (await asyncio.to_thread(phone.ua.register)).status == 200
        invite_task = asyncio.create_task(asyncio.to_thread(
            _invite_with_auth, phone.ua, route.to_browser(browser), phone.sdp()))
        inv = await asyncio.to_thread(browser.ua.wait, "INVITE", 10)
        assert isinstance(inv, m.Request)
        out["offer_to_browser"] = inv.body.decode()
        answer = await browser.answer(inv.body)
        browser.ua.answer(inv, 200, body=answer, headers=SDP_TYPE)
        _, ok = await invite_task
        out["status"] = ok.status
        out["answer_to_phone"] = ok.body.decode()
        routes = list(reversed(ok.get_all("record-route")))
        phone.ua.send(in_dialog(phone.ua, "ACK", ok, routes, cseq=ok.cseq.number))
        phone.start(ok.body)
        await _until(lambda: phone.voiced > 50 and browser.voiced > 25, 15)
        out.update(_report(browser, phone, route))
        phone.ua.send(in_dialog(phone.ua, "BYE", ok, routes))
        got = await asyncio.to_thread(browser.ua.wait, "BYE", 5)
        assert isinstance(got, m.Request)
        browser.ua.answer(got, 200)
        out["bye"] = (await asyncio.to_thread(phone.ua.expect_final)).status
    finally:
        await browser.pc.close()
        phone.stop()
    out["metrics_after"] = route.stats()
    return out


def _report(browser: Browser, phone: Phone, route: Routing) -> dict[str, Any]:
    return {
        "phone_received": phone.received, "phone_voiced": phone.voiced,
        "phone_payload_types": sorted(phone.payload_types), "phone_sources": sorted(phone.sources),
        "browser_frames": browser.frames, "browser_voiced": browser.voiced,
        "ice": browser.pc.iceConnectionState, "connection": browser.pc.connectionState,
        "metrics": route.stats(),
    }


async def browser_calls_baresip(server: Server, folder: Path) -> dict[str, Any]:
    browser, phone = Browser(server), Baresip(server, folder / "baresip")
    out: dict[str, Any] = {}
    try:
        assert (await asyncio.to_thread(browser.ua.register)).status == 200
        phone.start()
        assert await _until(phone.registered, 10), phone.stop()
        offer = await browser.offer()
        _, ok = await asyncio.to_thread(_invite_with_auth, browser.ua, f"sip:bob@{server.host}", offer)
        out["status"] = ok.status
        out["answer_to_browser"] = ok.body.decode()
        routes = list(reversed(ok.get_all("record-route")))
        browser.ua.send(in_dialog(browser.ua, "ACK", ok, routes, cseq=ok.cseq.number))
        await browser.accept(ok.body)
        await _until(lambda: browser.voiced > 50, 15)
        await asyncio.sleep(1)
        out["browser_frames"], out["browser_voiced"] = browser.frames, browser.voiced
        out["ice"], out["connection"] = browser.pc.iceConnectionState, browser.pc.connectionState
        out["metrics"] = _metrics(server)
        browser.ua.send(in_dialog(browser.ua, "BYE", ok, routes))
        out["bye"] = (await asyncio.to_thread(browser.ua.expect_final)).status
        await asyncio.sleep(0.5)
        out["baresip_energy"] = phone.decoded_energy()
    finally:
        await browser.pc.close()
        out["baresip_log"] = phone.stop()[-3000:]
    return out


async def baresip_calls_browser(server: Server, folder: Path, sdes: bool = False) -> dict[str, Any]:
    browser, phone = Browser(server), Baresip(server, folder / "baresip", sdes=sdes)
    out: dict[str, Any] = {}
    try:
        assert (await asyncio.to_thread(browser.ua.register)).status == 200
        phone.start(f"/dial sip:alice@{server.host}")
        inv = await asyncio.to_thread(browser.ua.wait, "INVITE", 15)
        assert isinstance(inv, m.Request)
        out["offer_to_browser"] = inv.body.decode()
        browser.ua.answer(inv, 200, body=await browser.answer(inv.body))
        ack = await asyncio.to_thread(browser.ua.wait, "ACK", 10)
        out["acked"] = isinstance(ack, m.Request)
        await _until(lambda: browser.voiced > 50, 15)
        await asyncio.sleep(1)
        out["browser_frames"], out["browser_voiced"] = browser.frames, browser.voiced
        out["ice"], out["connection"] = browser.pc.iceConnectionState, browser.pc.connectionState
        out["metrics"] = _metrics(server)
    finally:
        await browser.pc.close()
        out["baresip_log"] = phone.stop()[-3000:]
    out["baresip_energy"] = phone.decoded_energy()
    return out


def _reinvite_from_callee(phone: Phone, inv: m.Request, ok: m.Response, body: bytes, cseq: int) -> m.Request:
    """The callee's own re-INVITE in the dialog ``inv``/``ok`` set up: to the caller's
    Contact, along the Record-Route set in the order the callee got it."""
    contacts = inv.contacts
    assert isinstance(contacts, list)
    ua = phone.ua
    req = m.Request("INVITE", str(contacts[0].uri))
    req.add("Via", f"SIP/2.0/UDP {ua.hostport};branch=z9hG4bK{uuid.uuid4().hex[:12]};rport")
    req.add("Max-Forwards", "70")
    req.add("From", f"<sip:bob@{HOST}>;tag={ok.to.tag}")
    req.add("To", f"{inv.get('from')}")
    req.add("Call-ID", inv.call_id)
    req.add("CSeq", f"{cseq} INVITE")
    req.add("Contact", ua.contact)
    for rr in inv.get_all("record-route"):
        req.add("Route", rr)
    req.add("Content-Type", "application/sdp")
    req.body = body
    return req


async def early_media_then_hold(server: Server) -> dict[str, Any]:
    """The phone answers 183 with SDP (early media, RFC 3960) and talks before the 200;
    after the 200 it puts the browser on hold (re-INVITE sendonly) and resumes
    (sendrecv). One DTLS association serves it all."""
    browser, phone = Browser(server), Phone(server)
    out: dict[str, Any] = {}
    try:
        assert (await asyncio.to_thread(browser.ua.register)).status == 200
        assert (await asyncio.to_thread(phone.ua.register)).status == 200
        offer = await browser.offer()
        await asyncio.to_thread(_send_authorized_invite, browser.ua, f"sip:bob@{server.host}", offer)
        inv = await asyncio.to_thread(phone.ua.wait, "INVITE", 10)
        assert isinstance(inv, m.Request)
        early = phone.ua.answer(inv, 183, body=phone.sdp())
        got_183 = await asyncio.to_thread(browser.ua.wait, lambda x: isinstance(x, m.Response) and x.status == 183, 10)
        assert isinstance(got_183, m.Response)
        await browser.accept(got_183.body)  # (aiortc takes the early answer as final: fine here)
        phone.start(inv.body)
        await _until(lambda: browser.voiced > 25 and phone.voiced > 25, 15)
        out["early_browser_voiced"], out["early_phone_voiced"] = browser.voiced, phone.voiced
        phone.ua.answer(inv, 200, body=phone.sdp(), to_tag=early.to.tag)
        ok = await asyncio.to_thread(browser.ua.expect_final, 10)
        out["status"] = ok.status
        routes = list(reversed(ok.get_all("record-route")))
        browser.ua.send(in_dialog(browser.ua, "ACK", ok, routes, cseq=ok.cseq.number))
        for step, (direction, cseq) in enumerate((("sendonly", 10), ("sendrecv", 11))):
            body = phone.sdp(session=2 + step).replace(b"a=sendrecv", f"a={direction}".encode())
            phone.ua.send(_reinvite_from_callee(phone, inv, ok, body, cseq))
            re_offer = await asyncio.to_thread(browser.ua.wait, "INVITE", 10)
            assert isinstance(re_offer, m.Request)
            out[f"reoffer_{direction}"] = re_offer.body.decode()
            answer = await browser.answer(re_offer.body)
            browser.ua.answer(re_offer, 200, body=answer, to_tag=browser.ua.tag)
            re_ok = await asyncio.to_thread(phone.ua.expect_final, 10)
            out[f"reinvite_{direction}"] = re_ok.status
            heard = browser.voiced
            await _until(lambda heard=heard: browser.voiced > heard + 25, 10)
            out[f"browser_voiced_after_{direction}"] = browser.voiced - heard
        out.update(_report(browser, phone, sipedge_routing(server)))
    finally:
        await browser.pc.close()
        phone.stop()
    return out


SCENARIOS: dict[str, Callable[[Routing], Any]] = {
    "browser-calls-phone": browser_calls_phone,
    "phone-calls-browser": phone_calls_browser,
    "stranger-on-the-browser-port": lambda route: browser_calls_phone(route, "attack"),
    "wrong-fingerprint": lambda route: browser_calls_phone(route, "fingerprint"),
    "browser-with-video-calls-audio-phone": lambda route: browser_calls_phone(route, "video"),
    "relay-only-browser-calls-phone": lambda route: browser_calls_phone(route, "turn"),
    "relay-reports-rtcp-to-the-browser": lambda route: browser_calls_phone(route, "rtcp"),
}
SERVER_SCENARIOS = {"early-media-then-hold": early_media_then_hold}
FOLDER_SCENARIOS = {
    "browser-calls-baresip": browser_calls_baresip,
    "baresip-calls-browser": baresip_calls_browser,
    # baresip with mediaenc=srtp-mand offers RTP/SAVP with SDES keys: bridged SDES <-> DTLS
    "sdes-baresip-calls-browser": lambda server, folder: baresip_calls_browser(server, folder, sdes=True),
}


TURN_SECRET = "bridge-test-secret"
TURN: tuple[str, str, str] = ("", "", "")  # set by main() for the relay-only scenario


def _turn_section() -> str:
    """sipedge's TURN server on HOST with a REST secret, and the browser's credential for
    it (RFC 8489 long-term credentials in the TURN REST form: expiry:user and its HMAC)."""
    import base64
    import hashlib
    import hmac

    from helpers.ports import free_port

    global TURN
    port = free_port(HOST)
    username = f"{int(time.time()) + 3600}:alice"
    password = base64.b64encode(hmac.new(TURN_SECRET.encode(), username.encode(), hashlib.sha1).digest()).decode()
    TURN = (f"turn:{HOST}:{port}?transport=udp", username, password)
    return (f'\n[turn]\nenabled = true\nlisten = ["udp:{HOST}:{port}"]\nrelay_ipv4 = "{HOST}"\n'
            f'secrets = ["{TURN_SECRET}"]\nallow_peers = ["192.0.2.0/24"]\nport_min = 50000\nport_max = 50100\n')


def main(scenario: str, tmp: str, routing: Path | None = None) -> None:
    """``routing``: a routing module instead of the default one."""
    turn = _turn_section() if scenario.startswith("relay-only") else ""
    if routing is not None:
        turn += f'\n[routing]\nmodule = "{routing}"\n'

    async def run() -> dict[str, Any]:
        with running_server(Path(tmp), host=HOST, users=USERS, log_level=os.environ.get("SIPEDGE_LOG", "info"),
                            web='metrics_allow = ["192.0.2.0/24"]',
                            extra=f'\n[media]\nlisten = "{HOST}"\n{turn}') as server:
            try:
                if scenario in FOLDER_SCENARIOS:
                    return await FOLDER_SCENARIOS[scenario](server, Path(tmp))
                if scenario in SERVER_SCENARIOS:
                    return await SERVER_SCENARIOS[scenario](server)
                return await SCENARIOS[scenario](sipedge_routing(server))
            finally:
                sys.stderr.write(server.log_text()[-6000:])

    print(json.dumps(asyncio.run(run())), flush=True)
