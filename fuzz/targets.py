"""Fuzz targets: each takes the fuzzer's bytes and drives a real parser *and* the core
that consumes it, as the server would. A crash is any exception other than the
:class:`~sipedge.errors.ParseError` the parsers promise, a core counting an internal
error (``sip_routing_errors``), or a broken invariant (a parsed message that does not
survive its own serialization, a request the ng server leaves unanswered).

Seeds come from the repository's own vectors (tests/vectors: RFC 4475, RFC 5769, SDP
from real clients) plus a few built here, so every run starts deep in the grammar.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

from sipedge._common.clock import FakeClock
from sipedge.config import parse_config
from sipedge.errors import ParseError
from sipedge.media import bencode
from sipedge.media.ng import NgServer
from sipedge.media.ports import RangePortAllocator
from sipedge.media.relay import MediaRelay, RelayConfig
from sipedge.proxy.core import ProxyCore
from sipedge.proxy.identity import Identity, Listener
from sipedge.proxy.location import MemoryLocationStore, MemorySubscriberStore
from sipedge.proxy.routing import load_router
from sipedge.sdp import model as sdp
from sipedge.sip import message as sip
from sipedge.sip.flow import Flow
from sipedge.sip.framing import StreamFramer
from sipedge.stun import attributes as at
from sipedge.stun import integrity
from sipedge.stun import message as stun
from sipedge.turn.auth import Credentials, RestCredentials, StaticUsers
from sipedge.turn.ports import RangeAllocator
from sipedge.turn.server import Flow as TurnFlow
from sipedge.turn.server import ServerConfig, ToClient, TurnServer

VECTORS = Path(__file__).resolve().parents[1] / "tests" / "vectors"
ME = ("127.0.0.1", 5060)


class Crash(AssertionError):
    """An invariant broken by an input (the fuzzer reports it with the input)."""


def _check(ok: bool, what: str) -> None:
    if not ok:
        raise Crash(what)


# -- SIP: the codec, the stream framer and ProxyCore with the default routing ---------------
class SipTarget:
    """``parse`` (datagram and stream), serialize and parse again, the stream framer fed
    in two pieces, and ``ProxyCore.receive`` over UDP and TCP with time moving on."""

    def __init__(self) -> None:
        self.clock = FakeClock()
        subscribers = MemorySubscriberStore()
        subscribers.add("alice", "127.0.0.1", "alice-pw")
        self.core = ProxyCore(
            parse_config({"sip": {"flood": {"max_requests": 0, "max_challenges": 0}}}),
            Identity([Listener("udp", *ME), Listener("tcp", *ME)]),
            MemoryLocationStore(), subscribers, load_router("sipedge.proxy.default_routing"),
            self.clock, secret=b"f" * 32,
        )
        self.flows = (Flow("udp", ME, ("192.0.2.9", 5070)), Flow("tcp", ME, ("192.0.2.9", 40000), 1))

    def __call__(self, data: bytes) -> None:
        for stream in (False, True):
            try:
                msg = sip.parse(data, stream=stream)
            except ParseError:
                continue
            _touch_sip(msg)
            again = sip.parse(msg.serialize(), stream=stream)  # must not raise
            _check(type(again) is type(msg), "serialize changed the message kind")
        framer = StreamFramer(max_size=65535)
        cut = len(data) // 2
        for piece in (data[:cut], data[cut:]):
            try:
                framer.feed(piece)
            except ParseError:
                break
        core = self.core
        before = core.counters["sip_routing_errors"]
        for flow in self.flows:
            core.receive(data, flow, self.clock.now)
            core.outgoing()
            core.media_jobs()
        self.clock.advance(0.25)
        core.handle_timer(self.clock.now)
        core.outgoing()
        _check(core.counters["sip_routing_errors"] == before, "routing raised (sip_routing_errors)")

    @staticmethod
    def seeds() -> Iterator[bytes]:
        for path in sorted((VECTORS / "sip" / "rfc4475").glob("*.dat")):
            yield path.read_bytes()


def _touch_sip(msg: sip.Message) -> None:
    """Read what the proxy reads; a ParseError here is a clean refusal."""
    for read in (lambda: msg.vias, lambda: msg.cseq, lambda: msg.from_, lambda: msg.to,
                 lambda: msg.call_id, lambda: msg.contacts, lambda: msg.max_forwards,
                 lambda: msg.expires, lambda: msg.content_length,
                 lambda: msg.name_addrs("route"), lambda: msg.name_addrs("record-route")):
        try:
            read()
        except ParseError:
            pass
    if isinstance(msg, sip.Request):
        try:
            msg.ruri  # noqa: B018 - parsing is the point
        except ParseError:
            pass


# -- SDP: the parser, and the relay's offer/answer rewriting through the ng protocol -------
def _bencoded(body: dict[str, Any]) -> bytes:
    return bencode.encode(cast(bencode.Value, body))


def _ng_server() -> NgServer:
    relay = MediaRelay(RelayConfig(advertised_address="203.0.113.1"),
                       RangePortAllocator(30000, 30999, random.Random(1)))
    return NgServer(relay, wall_clock=lambda: 1_700_000_000.0)


class SdpTarget:
    """``sdp.parse``, serialize and parse again, then the SDP as an ng ``offer`` and
    ``answer`` (the relay's RFC 3264 rewriting); every ng request gets a reply."""

    def __init__(self) -> None:
        self.ng = _ng_server()
        self.n = 0

    def __call__(self, data: bytes) -> None:
        try:
            desc = sdp.parse(data)
        except ParseError:
            pass
        else:
            for i, section in enumerate(desc.media):
                desc.media_direction(i)
                for name in ("connection", "fingerprints", "crypto"):
                    try:
                        getattr(section, name)
                    except ParseError:
                        pass
            sdp.parse(desc.serialize())  # must not raise
        self.n += 1
        call = f"c{self.n % 64}"
        for command, extra in (("offer", {}), ("answer", {"to-tag": "t"})):
            body = {"command": command, "call-id": call, "from-tag": "f", "sdp": data, **extra}
            reply = self.ng.handle(b"k%d " % self.n + _bencoded(body), float(self.n))
            _check(reply is not None, f"ng {command} left unanswered")
        if self.n % 64 == 0:
            self.ng.handle(b"d%d " % self.n + _bencoded({"command": "delete", "call-id": call}),
                           float(self.n))

    @staticmethod
    def seeds() -> Iterator[bytes]:
        for path in sorted((VECTORS / "sdp").glob("*.sdp")):
            yield path.read_bytes()


# -- bencode: the codec and the whole ng server --------------------------------------------
class BencodeTarget:
    """``bencode.decode`` (and encode of what it decoded, which must decode to the same),
    then ``NgServer.handle`` of the bytes with a cookie: always a reply."""

    def __init__(self) -> None:
        self.ng = _ng_server()
        self.n = 0

    def __call__(self, data: bytes) -> None:
        try:
            value = bencode.decode(data)
        except ParseError:
            pass
        else:
            _check(bencode.decode(bencode.encode(value)) == value, "bencode round trip differs")
        self.n += 1
        reply = self.ng.handle(b"c%d " % self.n + data, float(self.n))
        _check(reply is not None, "ng request left unanswered")
        self.ng.handle(data, float(self.n))  # whatever comes, cookie or not

    @staticmethod
    def seeds() -> Iterator[bytes]:
        yield b"d7:command4:pinge"
        yield _bencoded({"command": "offer", "call-id": "x", "from-tag": "a",
                              "sdp": (VECTORS / "sdp" / "sip_phone_g711_offer.sdp").read_bytes(),
                              "flags": ["trust-address"], "replace": ["origin"], "ICE": "remove"})
        yield _bencoded({"command": "query", "call-id": "x"})
        yield b"li1ei-2e4:spame"


# -- STUN/TURN: the codec and the TURN server core ------------------------------------------
_SEALS = (at.MessageIntegrity, at.MessageIntegritySha256, at.Fingerprint)


class StunTarget:
    """``stun.Message.parse`` (and serialize of what parsed), then the TURN server core:
    ``handle_client`` over UDP and TCP, ChannelData, a peer's datagram. A request that
    parses is also sent again signed with a user's valid credentials and a fresh nonce,
    so the fuzzer reaches what only an authenticated client can (Allocate, Refresh,
    CreatePermission, ChannelBind with its attributes) rather than stopping at 401."""

    def __init__(self) -> None:
        self.clock = FakeClock()
        rng = random.Random(5)
        users = StaticUsers("example.org", {"alice": "secret"})
        self.turn = TurnServer(
            ServerConfig(realm="example.org", relay_ipv4="127.0.0.1"),
            Credentials(users, RestCredentials(["s3cret"], self.clock.wall)),
            RangeAllocator(49152, 49152 + 255, rng),
            token_source=lambda n: rng.randbytes(n),
        )
        self.flows = (TurnFlow("udp", ("127.0.0.1", 3478), ("192.0.2.5", 5000)),
                      TurnFlow("tcp", ("127.0.0.1", 3478), ("192.0.2.5", 5001)))
        self.key = integrity.long_term_key("alice", "example.org", "secret")
        self.nonces: dict[TurnFlow, str] = {}

    def __call__(self, data: bytes) -> None:
        try:
            msg = stun.Message.parse(data)
        except ParseError:
            pass
        else:
            msg.unknown_required()
            msg.error_code  # noqa: B018 - decoding is the point
            # what parsed serializes and parses again (less the integrity attributes:
            # the original's padding bytes, RFC 5769's spaces, are not ours)
            plain = tuple(a for a in msg.attributes if not isinstance(a, _SEALS))
            stun.Message.parse(stun.Message(msg.method, msg.cls, msg.transaction_id, plain).serialize())
            if msg.cls is stun.Class.REQUEST:
                self._signed(msg.method, msg.transaction_id, plain)
        turn, now = self.turn, self.clock.now
        for flow in self.flows:
            turn.handle_client(flow, data, now)
        turn.handle_peer(("127.0.0.1", 49152), ("192.0.2.7", 4000), data, now)
        self.clock.advance(1.0)
        turn.handle_timer(self.clock.now)

    def _signed(self, method: int, tid: bytes, attrs: tuple[at.Attribute, ...]) -> None:
        creds = (at.Username, at.Realm, at.Nonce, at.Userhash, at.PasswordAlgorithm)
        rest = [a for a in attrs if not isinstance(a, creds)]
        flow = self.flows[0]
        for _ in range(2):  # a stale nonce is renewed once
            nonce = self.nonces.get(flow)
            if nonce is None:
                bare = stun.request(stun.Method.ALLOCATE, tid, [at.RequestedTransport(17)])
                nonce = self._nonce_of(self.turn.handle_client(flow, bare.serialize(), self.clock.now))
                if nonce is None:
                    return
                self.nonces[flow] = nonce
            req = stun.request(method, tid, [*rest, at.Username("alice"), at.Realm("example.org"),
                                             at.Nonce(nonce)])
            actions = self.turn.handle_client(flow, req.serialize(self.key), self.clock.now)
            fresh = self._nonce_of(actions)
            if fresh is None or fresh == nonce:
                return
            self.nonces[flow] = fresh

    @staticmethod
    def _nonce_of(actions: list[Any]) -> str | None:
        for action in actions:
            if isinstance(action, ToClient):
                try:
                    reply = stun.Message.parse(action.data)
                except ParseError:
                    return None
                if reply.error_code in (401, 438) and (n := reply.get(at.Nonce)) is not None:
                    return n.value
        return None

    @staticmethod
    def seeds() -> Iterator[bytes]:
        tid = bytes(12)
        yield stun.request(stun.Method.ALLOCATE, tid, [at.RequestedTransport(17)]).serialize()
        peer = at.XorPeerAddress("127.0.0.1", 4000)
        yield stun.request(stun.Method.CREATE_PERMISSION, tid, [peer]).serialize()
        yield stun.request(stun.Method.CHANNEL_BIND, tid, [at.ChannelNumber(0x4000), peer]).serialize()
        yield stun.request(stun.Method.REFRESH, tid, [at.Lifetime(0)]).serialize()
        for path in sorted((VECTORS / "stun").glob("*.hex")):
            yield bytes.fromhex("".join(path.read_text().split()))
        yield bytes.fromhex("40000004deadbeef")  # ChannelData


# -- WebSocket: the server connection (websockets' sans-I/O protocol + ours) -----------------
class _Transport(asyncio.Transport):
    """Enough of a transport for :class:`~sipedge.server.ws.WsConnection`: bytes sent go
    nowhere, closing is remembered."""

    def __init__(self) -> None:
        super().__init__()
        self.closed = False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("192.0.2.3", 40001), "sockname": ME}.get(name, default)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        pass

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True


HANDSHAKE = (
    b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
    b"Sec-WebSocket-Protocol: sip\r\n\r\n"
)


def _ws_frame(payload: bytes, opcode: int = 1, fin: bool = True) -> bytes:
    mask = b"\x01\x02\x03\x04"
    n = len(payload)
    head = bytes([(0x80 if fin else 0) | opcode])
    head += bytes([0x80 | n]) if n < 126 else bytes([0x80 | 126]) + n.to_bytes(2, "big")
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


class WsTarget:
    """A WebSocket connection of a real (not started) TransportLayer: the fuzzer's bytes
    after a valid upgrade (frames), and as the upgrade request itself."""

    def __init__(self) -> None:
        from sipedge.server.transport import TransportLayer
        from sipedge.server.ws import WsConnection, WsOptions

        self.loop = asyncio.new_event_loop()
        self.messages: list[bytes] = []
        config = parse_config({"sip": {"listen": ["ws:127.0.0.1:0"]}}).sip

        async def make_layer() -> TransportLayer:  # it takes the running loop
            return TransportLayer(config, lambda data, flow: self.messages.append(data))

        self.layer = self.loop.run_until_complete(make_layer())
        self.make: Callable[[], WsConnection] = lambda: WsConnection(self.layer, "ws", WsOptions())

    def __call__(self, data: bytes) -> None:
        self.loop.run_until_complete(self._one(data))  # a loop pass also clears its timers

    async def _one(self, data: bytes) -> None:
        for prefix in (HANDSHAKE, b""):
            conn = self.make()
            conn.connection_made(_Transport())
            conn.data_received(prefix + data)
            conn.eof_received()
            conn.connection_lost(None)
        self.messages.clear()

    @staticmethod
    def seeds() -> Iterator[bytes]:
        invite = (VECTORS / "sip" / "rfc4475" / "wsinv.dat")
        body = invite.read_bytes() if invite.exists() else b"OPTIONS sip:x SIP/2.0\r\n\r\n"
        yield _ws_frame(body[:120])
        yield _ws_frame(b"\r\n\r\n")
        yield _ws_frame(b"abc", opcode=1, fin=False) + _ws_frame(b"def", opcode=0)
        yield _ws_frame(b"\xff\xfe", opcode=1)
        yield _ws_frame(b"", opcode=9) + _ws_frame(b"\x03\xe8", opcode=8)


TARGETS: dict[str, Callable[[], Any]] = {
    "sip": SipTarget,
    "sdp": SdpTarget,
    "bencode": BencodeTarget,
    "stun": StunTarget,
    "ws": WsTarget,
}
