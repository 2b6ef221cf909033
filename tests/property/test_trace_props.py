"""Whatever messages reach the trace, in any order, its bounds hold, every kept call shows
its messages in the order they came, and listing or showing never raises."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from sipedge.proxy.trace import TraceStore

CALL_IDS = st.sampled_from(["a", "b", "c", "d", "e"])
HEADERS = st.sampled_from(["From: <sip:x@y>;tag=1", "To: <sip:z@y>", "CSeq: 1 INVITE", "CSeq: x", "f:", "t"])
FIRST = st.sampled_from(["INVITE sip:b@x SIP/2.0", "SIP/2.0 200 OK", "SIP/2.0 999", "SIP/2.0 180 x", "", "\xff"])


@st.composite
def messages(draw: st.DrawFn) -> bytes:
    if draw(st.booleans()):
        return draw(st.binary(max_size=300))
    lines = [draw(FIRST), *draw(st.lists(HEADERS, max_size=4)), f"Call-ID: {draw(CALL_IDS)}"]
    return ("\r\n".join(draw(st.permutations(lines))) + "\r\n\r\n").encode("utf-8", "replace") + draw(
        st.binary(max_size=200))


@settings(max_examples=200, deadline=None)
@given(st.lists(messages(), max_size=60), st.integers(1, 4), st.integers(1, 6), st.integers(1, 120))
def test_bounds_and_order_hold(batch: list[bytes], calls: int, per_call: int, max_bytes: int) -> None:
    store = TraceStore(max_calls=calls, max_messages=per_call, max_bytes=max_bytes)
    for n, data in enumerate(batch):
        store.record(data, "in" if n % 2 else "out", "udp", ("127.0.0.1", 5060), ("127.0.0.1", 5070 + n), float(n))
    summaries = store.calls()
    assert len(summaries) == len(store) <= calls
    assert [s["last"] for s in summaries] == sorted((s["last"] for s in summaries), reverse=True)
    for s in summaries:
        shown = store.show(s["call_id"])
        assert shown is not None and 0 < len(shown) <= per_call
        assert [m["seq"] for m in shown] == sorted(m["seq"] for m in shown)
        assert all(len(m["message"].encode("utf-8", "replace")) <= 3 * max_bytes for m in shown)
        assert s["messages"] >= len(shown)
    stats = store.stats()
    assert stats["trace_messages"] + stats["trace_no_call_id"] == len(batch)
