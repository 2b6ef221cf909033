"""Property: any interleaving of requests, retransmissions, responses, TU answers, CANCELs,
transport errors and timer firings never raises, and every transaction ends by
64*T1 + T4 after its last input (with Timer C no longer than T4). Hypothesis drives a
FakeClock; no sockets, no sleeps."""

from __future__ import annotations

from dataclasses import dataclass, field

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sipedge._common.clock import FakeClock
from sipedge.config.sip import TimersConfig
from sipedge.sip.flow import Flow, Target
from sipedge.sip.message import Request, Response, make_response, parse
from sipedge.sip.transaction import TransactionLayer
from sipedge.sip.txevents import (
    AckReceived,
    CancelReceived,
    RequestReceived,
    ResponseReceived,
    Terminated,
    TransactionKey,
    TxState,
)

T1, T2, T4, TC = 0.5, 4.0, 5.0, 4.0
BOUND = 64 * T1 + T4
UDP = Flow("udp", ("127.0.0.1", 5060), ("192.0.2.10", 5070))
TCP = Flow("tcp", ("127.0.0.1", 5060), ("192.0.2.10", 40000), 7)

# server-side requests: (method, branch or None for RFC 2543, flow)
SERVER: list[tuple[str, str | None, Flow]] = [
    ("INVITE", "z9hG4bKs0", UDP),
    ("OPTIONS", "z9hG4bKs1", UDP),
    ("INVITE", "z9hG4bKs2", TCP),
    ("INVITE", None, UDP),
    ("BYE", "z9hG4bKs4", TCP),
]
# client-side requests: (method, branch, destination)
CLIENT: list[tuple[str, str, Flow | Target]] = [
    ("INVITE", "z9hG4bKc0", Target("udp", "192.0.2.20", 5060)),
    ("OPTIONS", "z9hG4bKc1", Target("udp", "192.0.2.20", 5060)),
    ("INVITE", "z9hG4bKc2", Target("tcp", "192.0.2.20", 5060)),
    ("REGISTER", "z9hG4bKc3", Flow("tcp", ("127.0.0.1", 5060), ("192.0.2.20", 5060), 9)),
]


def request(
    method: str,
    branch: str | None,
    reliable: bool,
    cseq_method: str | None = None,
    to_tag: str | None = None,
    cseq: int = 1,
) -> Request:
    via = f"SIP/2.0/{'TCP' if reliable else 'UDP'} peer.example:5070" + (
        f";branch={branch}" if branch else ""
    )
    to = "<sip:bob@example.com>" + (f";tag={to_tag}" if to_tag else "")
    text = (
        f"{method} sip:bob@example.com SIP/2.0\r\nVia: {via}\r\nMax-Forwards: 70\r\n"
        f"To: {to}\r\nFrom: <sip:alice@example.com>;tag=a1\r\nCall-ID: prop@example\r\n"
        f"CSeq: {cseq} {cseq_method or method}\r\nContent-Length: 0\r\n\r\n"
    )
    r = parse(text.encode())
    assert isinstance(r, Request)
    return r


def response(req: Request, status: int, tag: str) -> Response:
    r = parse(make_response(req, status, to_tag=tag).serialize())
    assert isinstance(r, Response)
    return r


@dataclass
class World:
    clock: FakeClock = field(default_factory=lambda: FakeClock(1000.0))
    tl: TransactionLayer = field(
        default_factory=lambda: TransactionLayer(TimersConfig(t1=T1, t2=T2, t4=T4, timer_c=TC))
    )
    last_input: dict[TransactionKey, float] = field(default_factory=dict)
    client_keys: dict[int, TransactionKey] = field(default_factory=dict)
    opened: dict[TransactionKey, int] = field(default_factory=dict)
    closed: dict[TransactionKey, int] = field(default_factory=dict)

    def touch(self, key: TransactionKey | None) -> None:
        if key is not None:
            self.last_input[key] = self.clock.now

    def drain(self) -> None:
        self.tl.outgoing()
        for ev in self.tl.events():
            if isinstance(ev, RequestReceived):
                self.opened[ev.key] = self.opened.get(ev.key, 0) + 1
                self.touch(ev.key)
            elif isinstance(ev, CancelReceived):
                self.opened[ev.cancel_key] = self.opened.get(ev.cancel_key, 0) + 1
                self.touch(ev.cancel_key)
            elif isinstance(ev, Terminated):
                self.closed[ev.key] = self.closed.get(ev.key, 0) + 1
                started = self.last_input.get(ev.key)
                assert started is not None, ev
                assert self.clock.now <= started + BOUND + 1e-6, (ev, started, self.clock.now)
            elif isinstance(ev, ResponseReceived | AckReceived):
                pass

    def step(self, action: tuple[str, int, int, int]) -> None:
        kind, i, status, dt = action
        tl, now = self.tl, self.clock.now
        if kind == "tick":  # time passes; the adapter fires each timer when it is due
            end = now + dt / 4
            while (t := tl.get_timer()) is not None and t <= end:
                self.clock.now = max(self.clock.now, t)
                tl.handle_timer(self.clock.now)
                self.drain()
            self.clock.now = end
        elif kind == "skip":
            t = tl.get_timer()
            if t is not None:
                self.clock.now = max(self.clock.now, t)
                tl.handle_timer(self.clock.now)
        elif kind == "srv_req":
            method, branch, flow = SERVER[i % len(SERVER)]
            tl.receive(request(method, branch, flow.reliable), flow, now)
            key = self._server_key(i)
            if key is not None and tl.state(key) is not None:
                self.touch(key)
        elif kind == "srv_ack":
            method, branch, flow = SERVER[i % len(SERVER)]
            if method == "INVITE":
                tl.receive(
                    request("ACK", branch, flow.reliable, to_tag=f"t{status % 2}"), flow, now
                )
                self.touch(self._server_key(i))
        elif kind == "srv_cancel":
            method, branch, flow = SERVER[i % len(SERVER)]
            tl.receive(request("CANCEL", branch, flow.reliable), flow, now)
        elif kind == "srv_respond":
            key = self._server_key(i)
            if key is not None:
                req = tl.request(key)
                if req is not None:
                    tl.respond(key, make_response(req, status, to_tag=f"t{status % 2}"), now)
                    self.touch(key)
        elif kind == "cli_send":
            j = i % len(CLIENT)
            method, branch, dest = CLIENT[j]
            key = TransactionKey(True, branch, method)
            if tl.state(key) is None:
                self.client_keys[j] = tl.send_request(
                    request(method, branch, dest.reliable), dest, now
                )
                self.opened[key] = self.opened.get(key, 0) + 1
                self.touch(key)
        elif kind == "cli_resp":
            j = i % len(CLIENT)
            method, branch, dest = CLIENT[j]
            req = request(method, branch, dest.reliable)
            tl.receive(response(req, status, f"t{dt % 3}"), UDP, now)
            self.touch(self.client_keys.get(j))
        elif kind == "cli_cancel":
            key = self.client_keys.get(i % len(CLIENT))
            if key is not None and key.method == "INVITE":
                tl.cancel(key, now)
                self.touch(key)
        elif kind == "terr":
            keys = list(self.opened)
            if keys:
                key = keys[i % len(keys)]
                tl.transport_error(key, now)
                self.touch(key)
        self.drain()

    def _server_key(self, i: int) -> TransactionKey | None:
        method, branch, _flow = SERVER[i % len(SERVER)]
        for key in self.opened:
            if key.client or key.method != method:
                continue
            if branch is None and key.branch.startswith("2543."):
                return key
            if key.branch == branch:
                return key
        return None

    def finish(self) -> None:
        """The TU answers what it still owes (its last input), then time runs out."""
        for i, (method, _b, _f) in enumerate(SERVER):
            key = self._server_key(i)
            if method == "INVITE" and key is not None and self.tl.state(key) is TxState.PROCEEDING:
                req = self.tl.request(key)
                assert req is not None
                self.tl.respond(key, make_response(req, 480, to_tag="end"), self.clock.now)
                self.touch(key)
        self.drain()
        for _ in range(10_000):
            t = self.tl.get_timer()
            if t is None:
                break
            self.clock.now = max(self.clock.now, t)
            self.tl.handle_timer(self.clock.now)
            self.drain()
        assert self.tl.get_timer() is None
        assert len(self.tl) == 0, self.tl.stats()
        assert self.opened == self.closed


STATUSES = st.sampled_from([100, 180, 183, 200, 202, 302, 404, 486, 487, 503, 603])
FINALS = st.sampled_from([200, 302, 486, 487, 603])
INDEX = st.integers(0, 4)
Action = tuple[str, int, int, int]
ACTIONS = st.tuples(
    st.sampled_from(
        [
            "tick",
            "tick",
            "skip",
            "srv_req",
            "srv_req",
            "srv_ack",
            "srv_ack",
            "srv_cancel",
            "srv_respond",
            "srv_respond",
            "cli_send",
            "cli_resp",
            "cli_resp",
            "cli_resp",
            "cli_cancel",
            "terr",
        ]
    ),
    INDEX,
    STATUSES,
    st.integers(0, 40),
)
# whole exchanges, so that deep states (Confirmed, Accepted, Completed) are reached often;
# random single actions interleave with them
SERVER_EXCHANGE = st.builds(
    lambda i, s, tag: [("srv_req", i, 100, 0), ("srv_respond", i, s, 0), ("srv_ack", i, tag, 0)],
    INDEX,
    FINALS,
    FINALS,
)
CLIENT_EXCHANGE = st.builds(
    lambda j, s, t: [("cli_send", j, 100, 0), ("cli_resp", j, 180, t), ("cli_resp", j, s, t)],
    INDEX,
    FINALS,
    st.integers(0, 2),
)
CANCEL_EXCHANGE = st.builds(
    lambda j, i: [
        ("cli_send", j, 100, 0),
        ("cli_resp", j, 183, 0),
        ("cli_cancel", j, 100, 0),
        ("srv_req", i, 100, 0),
        ("srv_cancel", i, 100, 0),
    ],
    INDEX,
    INDEX,
)
PROGRAM = st.lists(
    st.one_of(ACTIONS.map(lambda a: [a]), SERVER_EXCHANGE, CLIENT_EXCHANGE, CANCEL_EXCHANGE),
    min_size=3,
    max_size=30,
).map(lambda parts: [a for part in parts for a in part])


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(PROGRAM)
def test_random_interleavings_never_raise_and_always_terminate(actions: list[Action]) -> None:
    world = World()
    for action in actions:
        world.step(action)
    world.finish()


HEADERS = ["Via", "CSeq", "Call-ID", "From", "To", "Max-Forwards"]
GARBAGE = st.sampled_from(
    ["", ";;;", "<", "SIP/2.0/UDP", "x y z", "1", "99999999999 INVITE", '"', "<sip:a>;tag="]
)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["INVITE", "ACK", "CANCEL", "OPTIONS", "resp"]),
            st.sampled_from(HEADERS),
            st.one_of(st.none(), GARBAGE),
            st.booleans(),
        ),
        min_size=1,
        max_size=12,
    )
)
def test_garbled_messages_never_raise(items: list[tuple[str, str, str | None, bool]]) -> None:
    """Requests and responses with a missing or garbled key header become a 400, a
    MessageDropped, a StrayResponse or a transaction, never an exception."""
    tl = TransactionLayer(TimersConfig(t1=T1, t2=T2, t4=T4, timer_c=TC))
    now = 1000.0
    for method, header, value, branchless in items:
        base = request(
            "INVITE" if method == "resp" else method, None if branchless else "z9hG4bKg", False
        )
        msg: Request | Response = base
        if method == "resp":
            msg = make_response(base, 486, to_tag="x")
        if value is None:
            msg.remove(header)
        else:
            msg.set(header, value)
        tl.receive(msg, UDP, now)
        for ev in tl.events():
            if isinstance(ev, RequestReceived):
                tl.respond(ev.key, make_response(ev.request, 500, to_tag="y"), now)
        tl.outgoing()
        now += 1
        tl.handle_timer(now)
    while (t := tl.get_timer()) is not None:
        tl.handle_timer(t)
    assert len(tl) == 0
