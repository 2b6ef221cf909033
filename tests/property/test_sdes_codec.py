"""Hypothesis: the SDES key parameter codec (RFC 4568 §6.1) round-trips, and arbitrary
text parses or raises ParseError, nothing else."""

from __future__ import annotations

import base64

from hypothesis import given
from hypothesis import strategies as st

from sipedge.errors import ParseError
from sipedge.media.srtp import PROFILE_KEY_LENGTHS, SDES_SUITES, SdesKeyParams
from sipedge.sdp import Crypto, SessionDescription

suites = st.sampled_from(sorted(SDES_SUITES))
lifetimes = st.one_of(
    st.none(),
    st.integers(1, 2**48),
    st.integers(0, 48).map(lambda n: 2**n),
)
mkis = st.one_of(
    st.none(),
    st.integers(1, 128).flatmap(lambda n: st.tuples(st.integers(0, min(256**n - 1, 2**128)), st.just(n))),
)


@st.composite
def params_for_suite(draw: st.DrawFn) -> tuple[str, SdesKeyParams]:
    suite = draw(suites)
    key_len, salt_len = PROFILE_KEY_LENGTHS[SDES_SUITES[suite]]
    key = draw(st.binary(min_size=key_len + salt_len, max_size=key_len + salt_len))
    return suite, SdesKeyParams(key, draw(lifetimes), draw(mkis))


@given(params_for_suite())
def test_round_trip(case: tuple[str, SdesKeyParams]) -> None:
    suite, params = case
    assert SdesKeyParams.parse(params.serialize(), suite) == params


@given(suites, st.binary(max_size=64))
def test_wrong_length_is_a_parse_error(suite: str, key: bytes) -> None:
    key_len, salt_len = PROFILE_KEY_LENGTHS[SDES_SUITES[suite]]
    text = "inline:" + base64.b64encode(key).decode()
    try:
        params = SdesKeyParams.parse(text, suite)
    except ParseError as exc:
        assert len(key) != key_len + salt_len
        assert "bytes of key and salt" in str(exc) or "empty key" in str(exc)
    else:
        assert params.key == key and len(key) == key_len + salt_len


keyish = st.text(alphabet="ABCDEFabcdef0123456789+/=|:^;", max_size=80)


@given(st.one_of(st.text(max_size=80), keyish.map(lambda t: "inline:" + t)), st.one_of(st.none(), suites, st.text(max_size=20)))
def test_arbitrary_text_parses_or_raises_parse_error(text: str, suite: str | None) -> None:
    try:
        params = SdesKeyParams.parse(text, suite)
    except ParseError:
        return
    assert SdesKeyParams.parse(params.serialize()) == params


session_params = st.lists(st.sampled_from(["KDR=1", "WSH=128", "UNENCRYPTED_SRTP", "FEC_ORDER=FEC_SRTP"]), max_size=3)


@given(st.integers(0, 999999999), params_for_suite(), session_params)
def test_crypto_attribute_round_trips_through_sdp(tag: int, case: tuple[str, SdesKeyParams],
                                                  extra: list[str]) -> None:
    """An a=crypto line (RFC 4568 §9.1) in a media section parses back to the same tag,
    suite, key parameter and session parameters."""
    suite, params = case
    line = Crypto(tag, suite, str(params), tuple(extra))
    text = ("v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n"
            f"m=audio 2000 RTP/SAVP 0\r\na=crypto:{line}\r\n")
    desc = SessionDescription.parse(text.encode())
    assert desc.media[0].crypto == [line]
    assert desc.serialize() == text.encode()
    assert SdesKeyParams.parse(desc.media[0].crypto[0].key_params, suite) == params
