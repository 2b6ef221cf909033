"""The default routing's codec choice across the WebRTC bridge (docs/webrtc.md): PCMU and
PCMA added for transcoding towards a phone when the browser offers neither, Opus added
towards a browser when the phone offers none; nothing added otherwise."""

from __future__ import annotations

import pytest

from sipedge.proxy.default_routing import TO_BROWSER, TO_PHONE, with_transcoding


def offer(formats: str, rtpmaps: str = "") -> bytes:
    return (f"v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n"
            f"m=audio 4000 RTP/AVP {formats}\r\n{rtpmaps}").encode()


@pytest.mark.parametrize(("body", "added"), [
    (offer("111", "a=rtpmap:111 opus/48000/2\r\n"), ("PCMU", "PCMA")),
    (offer("111 0", "a=rtpmap:111 opus/48000/2\r\n"), ()),  # PCMU by its static number
    (offer("111 8", "a=rtpmap:111 opus/48000/2\r\na=rtpmap:8 PCMA/8000\r\n"), ()),
    (b"not an sdp", ()),
])
def test_towards_a_phone(body: bytes, added: tuple[str, ...]) -> None:
    flags = with_transcoding(TO_PHONE, body, ("PCMU", "PCMA"), unless=("pcmu", "pcma"))
    assert flags.codec_transcode == added
    assert flags.transport_protocol == "RTP/AVP"


@pytest.mark.parametrize(("body", "added"), [
    (offer("0 101", "a=rtpmap:101 telephone-event/8000\r\n"), ("opus",)),
    (offer("9"), ("opus",)),
    (offer("0 96", "a=rtpmap:96 OPUS/48000/2\r\n"), ()),
])
def test_towards_a_browser(body: bytes, added: tuple[str, ...]) -> None:
    flags = with_transcoding(TO_BROWSER, body, ("opus",), unless=("opus",))
    assert flags.codec_transcode == added
    assert flags.transport_protocol == "UDP/TLS/RTP/SAVPF"
