"""Named interfaces and the ng ``direction`` flag: bridging two networks through the relay
(rtpengine's ``--interface=priv/... --interface=pub/...`` with ``direction=[priv, pub]``)."""

from __future__ import annotations

import random
import re

import pytest

from sipedge.media.ng import flags_from_request
from sipedge.media.ports import RangePortAllocator
from sipedge.media.relay import Flags, MediaRelay, RelayConfig, RelayError
from sipedge.media.rtp import RtpPacket


class Recording(RangePortAllocator):
    """Remembers the interface each block was asked for."""

    def __init__(self) -> None:
        super().__init__(30000, 30099, random.Random(3))
        self.on: dict[int, str] = {}

    def allocate(self, count: int, interface: str = "") -> int | None:
        base = super().allocate(count, interface)
        if base is not None:
            self.on[base] = interface
        return base


def sdp(ip: str, port: int) -> bytes:
    return (f"v=0\r\no=- 1 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\n"
            f"m=audio {port} RTP/AVP 0\r\n").encode()


def addr_port(body: bytes) -> tuple[str, int]:
    ip = re.search(rb"c=IN IP4 (\S+)", body)
    port = re.search(rb"m=audio (\d+)", body)
    assert ip and port
    return ip.group(1).decode(), int(port.group(1))


def relay() -> tuple[MediaRelay, Recording]:
    alloc = Recording()
    cfg = RelayConfig(advertised_address="10.0.0.5", interfaces=(("priv", "10.0.0.5"), ("pub", "203.0.113.10")))
    return MediaRelay(cfg, alloc), alloc


def test_direction_puts_each_side_on_its_interface_and_media_crosses() -> None:
    r, alloc = relay()
    flags = Flags(direction=("priv", "pub"))
    to_b = r.offer("c", "a", sdp("10.0.0.20", 4000), 0.0, flags)  # A on the private side
    to_a = r.answer("c", "a", "b", sdp("198.51.100.7", 6000), 0.0)  # no direction: remembered
    b_ip, b_port = addr_port(to_b)
    a_ip, a_port = addr_port(to_a)
    assert (b_ip, a_ip) == ("203.0.113.10", "10.0.0.5")  # each party sees its own network's address
    assert alloc.on[b_port] == "pub" and alloc.on[a_port] == "priv"
    pkt = RtpPacket(0, 1, 160, 9, bytes(160)).serialize()
    assert r.receive(pkt, a_port, ("10.0.0.20", 4000), 1.0) == (b_port, ("198.51.100.7", 6000), pkt)
    assert r.receive(pkt, b_port, ("198.51.100.7", 6000), 1.0) == (a_port, ("10.0.0.20", 4000), pkt)
    # a re-offer from B needs no direction either: the ports (and interfaces) stay
    again = r.offer("c", "b", sdp("198.51.100.7", 6000), 2.0, to_tag="a")
    assert addr_port(again) == (a_ip, a_port)


def test_without_direction_everything_is_on_the_first_interface() -> None:
    r, alloc = relay()
    to_b = r.offer("d", "a", sdp("10.0.0.20", 4000), 0.0)
    assert addr_port(to_b)[0] == "10.0.0.5" and set(alloc.on.values()) == {""}


def test_unknown_interface_is_488_and_legacy_names_pass() -> None:
    r, _ = relay()
    with pytest.raises(RelayError) as exc:
        r.offer("e", "a", sdp("10.0.0.20", 4000), 0.0, Flags(direction=("priv", "dmz")))
    assert exc.value.hint == (488, "Unknown media interface") and r.calls() == []
    out = r.offer("f", "a", sdp("10.0.0.20", 4000), 0.0, Flags(direction=("internal", "external")))
    assert addr_port(out)[0] == "10.0.0.5"


def test_ng_direction_spellings() -> None:
    assert flags_from_request({"direction": [b"priv", b"pub"]}).direction == ("priv", "pub")
    assert flags_from_request({"flags": [b"direction=priv", b"direction=pub"]}).direction == ("priv", "pub")
    with pytest.raises(RelayError):
        flags_from_request({"direction": [b"priv"]})
