"""Random signalling sequences (offers, re-offers, answers from several forks, deletes,
timeouts, packets) never crash the relay, and every port comes back when calls end."""

from __future__ import annotations

import random
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from sipedge.errors import ParseError
from sipedge.media.ports import RangePortAllocator
from sipedge.media.relay import Flags, MediaRelay, RelayConfig, RelayError


def sdp(host: str, port: int, streams: int, mux: bool, ice: bool) -> bytes:
    out = f"v=0\r\no=- 1 1 IN IP4 {host}\r\ns=-\r\nc=IN IP4 {host}\r\nt=0 0\r\n"
    if ice and streams > 1:  # WebRTC style: everything in one BUNDLE group
        out += "a=group:BUNDLE " + " ".join(str(i) for i in range(streams)) + "\r\n"
    for i in range(streams):
        out += f"m=audio {port + 2 * i if port else 0} RTP/AVP 0\r\na=mid:{i}\r\n"
        if mux:
            out += "a=rtcp-mux\r\n"
        if ice:
            out += f"a=ice-ufrag:u{i}\r\na=ice-pwd:p{i}xxxxxxxxxxxxxxxxxxxxxx\r\n"
            out += f"a=candidate:1 1 udp 2130706431 {host} {port} typ host\r\n"
    return out.encode()


calls = st.sampled_from(["c1", "c2"])
tags = st.sampled_from(["a", "b", "c", "d"])
op = st.one_of(
    st.tuples(st.just("offer"), calls, tags, st.none() | tags, st.integers(0, 3), st.booleans(), st.booleans(),
              st.sampled_from([None, "remove", "force", "relay", "force-relay", "auto"]),
              st.sampled_from([(), ("require",), ("demux",)]),
              st.sampled_from([None, ("priv", "pub"), ("pub", "pub"), ("internal", "external"), ("priv", "dmz")]),
              st.booleans()),
    st.tuples(st.just("answer"), calls, tags, tags, st.integers(0, 3), st.booleans(), st.booleans(),
              st.sampled_from([None, "remove", "force", "relay"]), st.just(())),
    st.tuples(st.just("delete"), calls, st.none() | tags, st.none() | tags, st.booleans()),
    st.tuples(st.just("packet"), st.integers(0, 20), st.integers(0, 3), st.binary(max_size=20)),
    st.tuples(st.just("time"), st.floats(0, 100)),
)


@settings(max_examples=150, deadline=None)
@given(st.lists(op, max_size=25))
def test_random_signalling_keeps_ports_balanced(ops: list[tuple[Any, ...]]) -> None:
    alloc = RangePortAllocator(40000, 40029, random.Random(0))  # 15 pairs: exhaustion happens
    r = MediaRelay(RelayConfig(timeout=30.0, interfaces=(("priv", "10.9.0.1"), ("pub", "203.0.113.9"))), alloc)
    now = 0.0
    for o in ops:
        kind = o[0]
        try:
            if kind == "offer":
                _, call, frm, to, n, mux, ice, mode, rmux, direction, session_c = o
                flags = Flags(ice=mode, rtcp_mux=rmux, direction=direction, replace_session_connection=session_c)
                r.offer(call, frm, sdp("10.0.0.1", 2000, n, mux, ice), now, flags, to)
            elif kind == "answer":
                _, call, frm, to, n, mux, ice, mode, _ = o
                r.answer(call, frm, to, sdp("10.0.0.2", 4000, n, mux, ice), now, Flags(ice=mode))
            elif kind == "delete":
                _, call, frm, to, branch = o
                r.delete(call, now, frm, to, branch)
            elif kind == "packet":
                _, which, src, data = o
                ports = r.ports
                if ports:
                    r.receive(data, ports[which % len(ports)], (f"10.0.0.{src}", 2000), now)
            elif kind == "time":
                now += o[1]
                r.handle_timer(now)
        except (ParseError, RelayError):
            pass
        # invariant: bound ports are exactly the allocated blocks (no leak, no stray socket)
        assert {p & ~1 for p in r.ports} == alloc.allocated
    for call in r.calls():
        r.delete(call, now)
    assert r.ports == []
    assert alloc.in_use == 0
    assert r.get_timer() is None
