"""The regex fast path of the auth-param reader agrees with the careful reader."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from sipedge.errors import ParseError
from sipedge.sip.auth import _parse_fast, _parse_slow

TOKEN = st.text(alphabet="abcXYZ019-._~!%", min_size=1, max_size=8)
QUOTED_CHARS = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x2FF), max_size=12)


@st.composite
def headers(draw: st.DrawFn) -> str:
    parts = []
    for name in draw(st.lists(TOKEN, max_size=6)):
        if draw(st.booleans()):
            v = draw(QUOTED_CHARS).replace("\\", "\\\\").replace('"', '\\"')
            parts.append(f'{name}{draw(st.sampled_from(["=", " = "]))}"{v}"')
        else:
            parts.append(f"{name}={draw(TOKEN)}")
    sep = draw(st.sampled_from([", ", ",", " , ", ",,"]))
    return "Digest " + sep.join(parts) + draw(st.sampled_from(["", " ", ","]))


@given(headers())
def test_fast_equals_slow_on_wellformed(text: str) -> None:
    fast = _parse_fast(text)
    try:
        slow = _parse_slow(text)
    except ParseError:
        assert fast is None
        return
    assert fast is None or fast == slow


@given(st.text(max_size=80))
def test_fast_never_accepts_what_slow_rejects(text: str) -> None:
    fast = _parse_fast("Digest " + text)
    try:
        slow = _parse_slow("Digest " + text)
    except ParseError:
        assert fast is None
        return
    assert fast is None or fast == slow
