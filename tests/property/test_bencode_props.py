"""Bencode: values round-trip; arbitrary bytes decode or raise ParseError; the ng server
answers any datagram with a reply or a drop, never an exception."""

from __future__ import annotations

import random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sipedge.errors import ParseError
from sipedge.media import bencode
from sipedge.media.ng import NgServer
from sipedge.media.ports import RangePortAllocator
from sipedge.media.relay import MediaRelay, RelayConfig

values: st.SearchStrategy[Any] = st.recursive(
    st.integers(-(2**63), 2**63) | st.binary(max_size=20),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.binary(max_size=8), inner, max_size=5),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(values)
def test_round_trip(v: Any) -> None:
    assert bencode.decode(bencode.encode(v)) == v


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=60))
def test_garbage(data: bytes) -> None:
    try:
        bencode.decode(data)
    except ParseError:
        pass


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=1, max_value=6000), st.booleans(), st.randoms(use_true_random=False))
def test_integer_digits_bounded(digits: int, negative: bool, rnd: random.Random) -> None:
    """Up to MAX_INT_DIGITS digits decode to the number; more raise ParseError, never the
    ValueError of Python's int-string limit."""
    text = str(rnd.randint(1, 9)) + "".join(str(rnd.randint(0, 9)) for _ in range(digits - 1))
    data = b"i" + (b"-" if negative else b"") + text.encode() + b"e"
    if digits <= bencode.MAX_INT_DIGITS:
        assert bencode.decode(data) == (-1 if negative else 1) * int(text)
    else:
        with pytest.raises(ParseError):
            bencode.decode(data)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=10), values)
def test_ng_server_never_raises(cookie: bytes, body: Any) -> None:
    srv = NgServer(MediaRelay(RelayConfig(), RangePortAllocator(30000, 30009, random.Random(0))))
    srv.handle(cookie + b" " + bencode.encode(body), 0.0)
    srv.handle(cookie + b" " + bencode.encode({b"command": b"offer", b"call-id": b"x", b"from-tag": b"y", b"sdp": body if isinstance(body, bytes) else b""}), 0.0)
