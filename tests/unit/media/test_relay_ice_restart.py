"""ICE restart across the WebRTC bridge, in the relay core with real DTLS on both ends:
the browser (a second ``DtlsContext``, in the DTLS client role as Chromium takes it)
re-offers with new ICE credentials and the same fingerprint; the relay answers with new
ICE credentials of its own, keeps the DTLS association and its SRTP keys (Chromium sends
no new ClientHello after an ICE restart) and counts ``media_ice_restarts``. A new
fingerprint still starts a new association. And a phone's audio-only offer reaches the
browser with a BUNDLE group (Chromium with ``max-bundle`` refuses one without)."""

from __future__ import annotations

import random
import re
import struct
from pathlib import Path

from helpers.ice_check import binding_request
from sipedge.media.ports import RangePortAllocator
from sipedge.media.relay import Flags, MediaRelay, RelayConfig
from sipedge.media.srtp import SrtpTransform
from sipedge.server.dtls import DtlsContext

BROWSER = ("203.0.113.20", 50000)
PHONE = ("198.51.100.9", 4000)
TO_PHONE = Flags(transport_protocol="RTP/AVP", ice="remove", rtcp_mux=("demux",))
TO_BROWSER = Flags(transport_protocol="UDP/TLS/RTP/SAVPF", ice="force", rtcp_mux=("require",))


def browser_sdp(fingerprint: str, ufrag: str = "brow", version: int = 1, setup: str = "actpass") -> bytes:
    return (
        f"v=0\r\no=- 1 {version} IN IP4 203.0.113.20\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0\r\n"
        "m=audio 50000 UDP/TLS/RTP/SAVPF 0\r\nc=IN IP4 203.0.113.20\r\na=mid:0\r\n"
        f"a=ice-ufrag:{ufrag}\r\na=ice-pwd:{ufrag}passwordbrowser00000\r\n"
        f"a=fingerprint:sha-256 {fingerprint}\r\na=setup:{setup}\r\na=rtcp-mux\r\n"
        "a=rtpmap:0 PCMU/8000\r\n"
    ).encode()


def phone_sdp(version: int = 1) -> bytes:
    return (
        f"v=0\r\no=p 1 {version} IN IP4 198.51.100.9\r\ns=-\r\nc=IN IP4 198.51.100.9\r\nt=0 0\r\n"
        "m=audio 4000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
    ).encode()


def rtp(seq: int) -> bytes:
    return struct.pack("!BBHII", 0x80, 0, seq, seq * 160, 0xB0B) + bytes([seq & 0xFF]) * 160


def _attr(sdp: str, name: str) -> str:
    found = re.search(rf"^a={name}:(.+?)\r?$", sdp, re.M)
    assert found is not None, sdp
    return found.group(1)


def _port(sdp: str | bytes) -> int:
    text = sdp.decode() if isinstance(sdp, bytes) else sdp
    found = re.search(r"^m=audio (\d+)", text, re.M)
    assert found is not None, text
    return int(found.group(1))


def _relay(tmp: Path) -> tuple[MediaRelay, DtlsContext, DtlsContext]:
    relay_ctx, browser_ctx = DtlsContext(tmp / "relay"), DtlsContext(tmp / "browser")
    r = MediaRelay(RelayConfig(advertised_address="192.0.2.1"), RangePortAllocator(40000, 40099, random.Random(5)),
                   dtls=relay_ctx)
    return r, relay_ctx, browser_ctx


def _checked(r: MediaRelay, to_browser: str, now: float) -> None:
    """An ICE check from the browser with the credentials ``to_browser`` gave it."""
    check = binding_request(_attr(to_browser, "ice-ufrag"), _attr(to_browser, "ice-pwd"))
    assert r.receive(check, _port(to_browser), BROWSER, now) is not None


def _browser_dials(r: MediaRelay, relay_ctx: DtlsContext, browser_ctx: DtlsContext) -> tuple[str, int, SrtpTransform]:
    """The browser's offer, the phone's answer, an ICE check and the browser's DTLS client
    handshake with the relay (passive, the default answer to ``actpass``)."""
    to_phone = r.offer("c", "browser", browser_sdp(browser_ctx.fingerprint.value), 0.0, TO_PHONE)
    to_browser = r.answer("c", "browser", "phone", phone_sdp(), 0.1, TO_PHONE.for_answer()).decode()
    assert "a=setup:passive" in to_browser
    _checked(r, to_browser, 0.2)
    browser = browser_ctx("client", [relay_ctx.fingerprint])
    flights = browser.start(0.3)
    for _ in range(6):
        for datagram in flights:
            assert r.receive(datagram, _port(to_browser), BROWSER, 0.3) is None
        flights = [d for _p, _dest, out in r.output() for d in browser.receive(out, 0.3)]
        if browser.keys is not None and r.stats()["media_dtls_established"]:
            break
    assert browser.keys is not None and r.stats()["media_dtls_established"] == 1
    return to_browser, _port(to_phone), SrtpTransform(browser.keys)


def _media_both_ways(r: MediaRelay, srtp: SrtpTransform, browser_port: int, phone_port: int, seq: int,
                     now: float) -> None:
    wire = srtp.protect(rtp(seq), False)
    assert wire is not None
    assert r.receive(wire, browser_port, BROWSER, now) == (phone_port, PHONE, rtp(seq))
    sent = r.receive(rtp(seq + 1000), phone_port, PHONE, now)
    assert sent is not None and sent[:2] == (browser_port, BROWSER)
    assert srtp.unprotect(sent[2], False) == rtp(seq + 1000)


def test_an_ice_restart_keeps_the_dtls_association_and_gives_new_credentials(tmp_path: Path) -> None:
    r, relay_ctx, browser_ctx = _relay(tmp_path)
    to_browser, phone_port, srtp = _browser_dials(r, relay_ctx, browser_ctx)
    browser_port = _port(to_browser)
    _media_both_ways(r, srtp, browser_port, phone_port, 1, 0.4)

    # Chromium's pc.restartIce(): new ufrag/pwd, the same certificate, setup actpass again
    r.offer("c", "browser", browser_sdp(browser_ctx.fingerprint.value, ufrag="bro2", version=2), 1.0, TO_PHONE)
    again = r.answer("c", "browser", "phone", phone_sdp(version=2), 1.1, TO_PHONE.for_answer()).decode()
    assert _attr(again, "ice-ufrag") != _attr(to_browser, "ice-ufrag")
    assert _attr(again, "ice-pwd") != _attr(to_browser, "ice-pwd")
    assert _attr(again, "fingerprint") == _attr(to_browser, "fingerprint") and "a=setup:passive" in again
    assert _port(again) == browser_port
    stats = r.stats()
    assert stats["media_ice_restarts"] == 1
    assert stats["media_dtls_associations"] == 1 and stats["media_dtls_established"] == 1

    _checked(r, again, 1.2)  # the new credentials are the ones checked
    _media_both_ways(r, srtp, browser_port, phone_port, 2, 1.3)  # the old keys still work
    assert r.stats()["media_srtp_not_ready"] == 0 and r.stats()["media_srtp_dropped"] == 0

    # a plain re-offer (hold/resume, same ICE credentials) restarts nothing
    r.offer("c", "browser", browser_sdp(browser_ctx.fingerprint.value, ufrag="bro2", version=3), 2.0, TO_PHONE)
    r.answer("c", "browser", "phone", phone_sdp(version=3), 2.1, TO_PHONE.for_answer())
    assert r.stats()["media_ice_restarts"] == 1 and r.stats()["media_dtls_associations"] == 1


def test_a_new_fingerprint_still_starts_a_new_association(tmp_path: Path) -> None:
    r, relay_ctx, browser_ctx = _relay(tmp_path)
    _browser_dials(r, relay_ctx, browser_ctx)
    other = DtlsContext(tmp_path / "other")
    r.offer("c", "browser", browser_sdp(other.fingerprint.value, ufrag="bro2", version=2), 1.0, TO_PHONE)
    r.answer("c", "browser", "phone", phone_sdp(version=2), 1.1, TO_PHONE.for_answer())
    assert r.stats()["media_dtls_associations"] == 2


def test_a_phones_audio_only_offer_reaches_the_browser_in_a_bundle_group(tmp_path: Path) -> None:
    r, _relay_ctx, browser_ctx = _relay(tmp_path)
    to_browser = r.offer("c", "phone", phone_sdp(), 0.0, TO_BROWSER).decode()
    assert "a=group:BUNDLE 0\r\n" in to_browser and "a=mid:0" in to_browser
    answer = browser_sdp(browser_ctx.fingerprint.value, setup="active")
    to_phone = r.answer("c", "phone", "browser", answer, 0.1, TO_BROWSER.for_answer()).decode()
    assert "a=group" not in to_phone and " RTP/AVP " in to_phone
