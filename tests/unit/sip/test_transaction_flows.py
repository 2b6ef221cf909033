"""RFC 3665 basic call flows through three transaction layers (Alice, a stateful proxy,
Bob) joined by a simulated lossy UDP network: session set-up and BYE (§3.2), busy (§3.8)
with the hop-by-hop ACK, CANCEL before answer, and retransmissions recovering lost
messages. FakeClock only, no sockets."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from sipedge._common.clock import FakeClock
from sipedge.config.sip import TimersConfig
from sipedge.sip.flow import Flow, Target
from sipedge.sip.message import Request, make_response, parse
from sipedge.sip.transaction import TransactionLayer
from sipedge.sip.txevents import (
    AckReceived,
    CancelReceived,
    RequestReceived,
    ResponseReceived,
    TransactionKey,
    TxEvent,
)

ALICE = ("192.0.2.101", 5060)
PROXY = ("192.0.2.1", 5060)
BOB = ("192.0.2.102", 5060)
TIMERS = TimersConfig(t1=0.5, t2=4.0, t4=5.0)


def invite(method: str = "INVITE", branch: str = "z9hG4bKnashds8", cseq: int = 1) -> Request:
    text = (
        f"{method} sip:bob@biloxi.example.com SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP client.atlanta.example.com:5060;branch={branch}\r\n"
        "Max-Forwards: 70\r\n"
        "Route: <sip:ss1.atlanta.example.com;lr>\r\n"
        "From: Alice <sip:alice@atlanta.example.com>;tag=9fxced76sl\r\n"
        "To: Bob <sip:bob@biloxi.example.com>\r\n"
        "Call-ID: 3848276298220188511@atlanta.example.com\r\n"
        f"CSeq: {cseq} {method}\r\n"
        "Contact: <sip:alice@client.atlanta.example.com;transport=udp>\r\n"
        "Content-Length: 0\r\n\r\n"
    )
    r = parse(text.encode())
    assert isinstance(r, Request)
    return r


@dataclass
class Node:
    name: str
    addr: tuple[str, int]
    tl: TransactionLayer = field(default_factory=lambda: TransactionLayer(TIMERS))
    seen: list[TxEvent] = field(default_factory=list)


class Net:
    """Moves every Send to the node at its address; ``drop`` may lose a datagram."""

    def __init__(self, clock: FakeClock, *nodes: Node) -> None:
        self.clock = clock
        self.nodes = {n.addr: n for n in nodes}
        self.drop: Callable[[Node, bytes], bool] = lambda node, data: False
        self.wire: list[tuple[str, str, str]] = []  # (from, to, first line)
        self.tu: dict[str, Callable[[Node, TxEvent], None]] = {}

    def pump(self) -> None:
        moved = True
        while moved:
            moved = False
            for node in self.nodes.values():
                for ev in node.tl.events():
                    node.seen.append(ev)
                    if node.name in self.tu:
                        self.tu[node.name](node, ev)
                    moved = True
                for send in node.tl.outgoing():
                    moved = True
                    dest = send.flow.remote if send.flow else (send.target.host, send.target.port)  # type: ignore[union-attr]
                    peer = self.nodes[dest]
                    line = send.data.split(b"\r\n", 1)[0].decode()
                    if self.drop(node, send.data):
                        self.wire.append((node.name, peer.name, "LOST " + line))
                        continue
                    self.wire.append((node.name, peer.name, line))
                    msg = parse(send.data)
                    peer.tl.receive(msg, Flow("udp", peer.addr, node.addr), self.clock.now)

    def run(self, seconds: float) -> None:
        end = self.clock.now + seconds
        while True:
            self.pump()
            due = [t for n in self.nodes.values() if (t := n.tl.get_timer()) is not None]
            if not due or min(due) > end:
                break
            self.clock.now = max(self.clock.now, min(due))
            for n in self.nodes.values():
                n.tl.handle_timer(self.clock.now)
        self.clock.now = end
        self.pump()

    def idle(self) -> bool:
        return all(len(n.tl) == 0 and n.tl.get_timer() is None for n in self.nodes.values())


class Proxy:
    """The smallest stateful proxy TU: one target (Bob), hop-by-hop Via, CANCEL mapping."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.down: dict[TransactionKey, TransactionKey] = {}  # client key -> server key
        self.up: dict[TransactionKey, TransactionKey] = {}  # server key -> client key
        self.n = 0

    def _branch(self) -> str:
        self.n += 1
        return f"z9hG4bKss1.{self.n}"

    def __call__(self, node: Node, ev: TxEvent) -> None:
        tl, now = node.tl, 0.0
        if isinstance(ev, RequestReceived):
            fwd = ev.request.copy()
            fwd.add(
                "Via",
                f"SIP/2.0/UDP ss1.atlanta.example.com:5060;branch={self._branch()}",
                first=True,
            )
            fwd.remove("route")
            ckey = tl.send_request(fwd, Target("udp", *BOB), now)
            self.down[ckey] = ev.key
            self.up[ev.key] = ckey
        elif isinstance(ev, ResponseReceived) and ev.key in self.down:
            resp = ev.response.copy()
            resp.pop_first("via")
            if resp.status != 100:
                tl.respond(self.down[ev.key], resp, now)
        elif isinstance(ev, CancelReceived):
            tl.respond(ev.cancel_key, make_response(ev.request, 200 if ev.invite_key else 481), now)
            if ev.invite_key is not None:
                tl.cancel(self.up[ev.invite_key], now)
        elif isinstance(ev, AckReceived) and ev.key is None:
            fwd = ev.request.copy()
            fwd.add(
                "Via",
                f"SIP/2.0/UDP ss1.atlanta.example.com:5060;branch={self._branch()}",
                first=True,
            )
            tl.send_stateless(fwd, Target("udp", *BOB))


def setup(bob_tu: Callable[[Node, TxEvent], None]) -> tuple[FakeClock, Net, Node, Node, Node]:
    clock = FakeClock(1000.0)
    alice, proxy, bob = Node("alice", ALICE), Node("proxy", PROXY), Node("bob", BOB)
    net = Net(clock, alice, proxy, bob)
    net.tu["proxy"] = Proxy(proxy)
    net.tu["bob"] = bob_tu
    return clock, net, alice, proxy, bob


def statuses(node: Node) -> list[int]:
    return [ev.response.status for ev in node.seen if isinstance(ev, ResponseReceived)]


def answering_bob(final: int) -> Callable[[Node, TxEvent], None]:
    def tu(node: Node, ev: TxEvent) -> None:
        if isinstance(ev, RequestReceived):
            if ev.request.method == "INVITE":
                node.tl.respond(ev.key, make_response(ev.request, 180, to_tag="314159"), 0.0)
                node.tl.respond(ev.key, make_response(ev.request, final, to_tag="314159"), 0.0)
            else:
                node.tl.respond(ev.key, make_response(ev.request, 200, to_tag="314159"), 0.0)

    return tu


def test_rfc3665_3_2_session_established_and_torn_down() -> None:
    clock, net, alice, proxy, bob = setup(answering_bob(200))
    akey = alice.tl.send_request(invite(), Target("udp", *PROXY), clock.now)
    net.run(0)
    assert statuses(alice) == [100, 180, 200]
    ok = [ev for ev in alice.seen if isinstance(ev, ResponseReceived)][-1].response
    assert ok.get_all("via") == [invite().get("via")]  # the proxy's Via was taken off
    # Alice's core ACKs the 2xx itself (a new transaction-less request, new branch)
    ack = invite("ACK", branch="z9hG4bKnashds9")
    ack.set("To", ok.get("to") or "")
    alice.tl.send_stateless(ack, Target("udp", *PROXY))
    net.run(0)
    assert [type(e) for e in bob.seen if isinstance(e, AckReceived)] == [AckReceived]
    # BYE from Alice, answered by Bob through the proxy
    bye = invite("BYE", branch="z9hG4bKnashds10", cseq=2)
    bye.set("To", ok.get("to") or "")
    bkey = alice.tl.send_request(bye, Target("udp", *PROXY), clock.now)
    net.run(0)
    assert [ev.key for ev in alice.seen if isinstance(ev, ResponseReceived)][-1] == bkey
    assert statuses(alice)[-1] == 200
    net.run(64 * 0.5 + 1)
    assert net.idle(), [n.tl.stats() for n in net.nodes.values()]
    assert akey.method == "INVITE"
    assert not any("LOST" in w[2] for w in net.wire)
    assert [w for w in net.wire if w[2].startswith("SIP/2.0 100")] == [
        ("proxy", "alice", "SIP/2.0 100 Trying"),
        ("bob", "proxy", "SIP/2.0 100 Trying"),
    ]


def test_rfc3665_3_8_busy_with_hop_by_hop_acks() -> None:
    clock, net, alice, proxy, bob = setup(answering_bob(486))
    alice.tl.send_request(invite(), Target("udp", *PROXY), clock.now)
    net.run(0)
    assert statuses(alice) == [100, 180, 486]
    acks = [w for w in net.wire if w[2].startswith("ACK")]
    # the proxy ACKs Bob's 486, Alice's transaction ACKs the proxy's: hop by hop
    assert acks == [
        ("proxy", "bob", "ACK sip:bob@biloxi.example.com SIP/2.0"),
        ("alice", "proxy", "ACK sip:bob@biloxi.example.com SIP/2.0"),
    ]
    assert not [e for n in (proxy, bob) for e in n.seen if isinstance(e, AckReceived)]
    net.run(40)
    assert net.idle()


def test_lost_486_and_lost_invite_recovered_by_retransmission() -> None:
    clock, net, alice, proxy, bob = setup(answering_bob(486))
    lost: list[str] = []

    def drop(node: Node, data: bytes) -> bool:
        first = data.split(b"\r\n", 1)[0].decode()
        key = f"{node.name}:{first}"
        if (
            key
            in ("alice:INVITE sip:bob@biloxi.example.com SIP/2.0", "proxy:SIP/2.0 486 Busy Here")
            and key not in lost
        ):
            lost.append(key)
            return True
        return False

    net.drop = drop
    alice.tl.send_request(invite(), Target("udp", *PROXY), clock.now)
    net.run(0.4)
    assert not proxy.seen  # the INVITE was lost
    net.run(0.2)  # Timer A at T1 re-sends it
    assert [type(e) for e in proxy.seen][:1] == [RequestReceived]
    net.run(0.6)  # Timer G at T1 re-sends the lost 486
    assert statuses(alice) == [100, 180, 486]
    assert len(lost) == 2
    assert len([w for w in net.wire if w[:2] == ("alice", "proxy") and w[2].startswith("ACK")]) == 1
    net.run(40)
    assert net.idle()


def test_cancel_before_answer_gets_487() -> None:
    def bob_tu(node: Node, ev: TxEvent) -> None:
        if isinstance(ev, RequestReceived) and ev.request.method == "INVITE":
            node.tl.respond(ev.key, make_response(ev.request, 180, to_tag="314159"), 0.0)
        elif isinstance(ev, CancelReceived):
            assert ev.invite_key is not None
            node.tl.respond(ev.cancel_key, make_response(ev.request, 200), 0.0)
            inv = node.tl.request(ev.invite_key)
            assert inv is not None
            node.tl.respond(ev.invite_key, make_response(inv, 487, to_tag="314159"), 0.0)

    clock, net, alice, proxy, bob = setup(bob_tu)
    akey = alice.tl.send_request(invite(), Target("udp", *PROXY), clock.now)
    net.run(1)
    assert statuses(alice) == [100, 180]
    assert alice.tl.cancel(akey, clock.now)
    net.run(0)
    assert statuses(alice) == [100, 180, 487]
    cancels = [w for w in net.wire if w[2].startswith("CANCEL")]
    assert [(a, b) for a, b, _ in cancels] == [("alice", "proxy"), ("proxy", "bob")]
    assert [type(e) for e in bob.seen].count(CancelReceived) == 1
    net.run(40)
    assert net.idle()
