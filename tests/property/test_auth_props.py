"""Property tests for digest auth: parsers raise only ParseError; round trips verify."""

from __future__ import annotations

import string

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sipedge.errors import ParseError
from sipedge.sip.auth import (
    AuthResult,
    Challenge,
    Credentials,
    DigestAuth,
    authorize,
    ha1,
    parse_auth_params,
)

FAST = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SECRET = b"k" * 32
NOW = 1_700_000_000.0

# text that looks like an auth header often enough to reach deep branches
_CHARS = 'Digest username="realm,nonce=\\ uri response qop=auth nc=0001\t\r\n*\'%'
_alphabet = st.sampled_from([*_CHARS, "\x00", "\x7f", "\u00e9", "\ud800"])
header_like = st.one_of(
    st.text(max_size=200),
    st.lists(_alphabet, max_size=120).map("".join),
    st.lists(st.sampled_from(['Digest ', 'username="a"', 'realm=r', ', ', ',', '"', '\\', '=', 'nc=00000001',
                              'qop=auth', 'cnonce="c"', 'uri="sip:x"', 'response="0"', 'nonce="n"',
                              "username*=UTF-8''%C3", ' ', 'x']), max_size=30).map("".join),
)


@FAST
@given(header_like)
def test_garbage_raises_only_parse_error(text: str) -> None:
    for parse in (parse_auth_params, Credentials.parse, Challenge.parse):
        try:
            parse(text)
        except ParseError:
            pass


@FAST
@given(header_like)
def test_verify_never_raises(text: str) -> None:
    auth = DigestAuth(SECRET)
    out = auth.verify(text, method="REGISTER", realm="r", now=NOW,
                      ha1_lookup=lambda u, r, a: ha1(u, r, "pw", a), request_uri="sip:x")
    assert isinstance(out.result, AuthResult)


quoted_text = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n\x7f"
                           + "".join(chr(i) for i in range(0x20) if i != 9)),
    max_size=30,
)
token = st.text(alphabet=string.ascii_letters + string.digits + "-.!%*_+`'~", min_size=1, max_size=12)


@FAST
@given(
    username=quoted_text, realm=quoted_text, nonce=quoted_text, uri=quoted_text,
    response=quoted_text, algorithm=st.one_of(token, quoted_text.filter(bool)),
    qop=st.one_of(st.none(), token), nc=st.integers(0, 2**32 - 1), cnonce=quoted_text.filter(bool),
    opaque=st.one_of(st.none(), quoted_text),
    extra=st.dictionaries(token.map(str.lower).filter(lambda k: k not in {
        "username", "username*", "realm", "nonce", "uri", "response", "algorithm", "qop", "nc",
        "cnonce", "opaque", "userhash"}), quoted_text, max_size=3),
)
def test_credentials_round_trip(username: str, realm: str, nonce: str, uri: str, response: str,
                                algorithm: str, qop: str | None, nc: int, cnonce: str,
                                opaque: str | None, extra: dict[str, str]) -> None:
    c = Credentials(username=username, realm=realm, nonce=nonce, uri=uri, response=response,
                    algorithm=algorithm, qop=qop, nc=f"{nc:08x}" if qop else "",
                    cnonce=cnonce if qop else "", opaque=opaque, extra=extra)
    assert Credentials.parse(str(c)) == c


@FAST
@given(realm=quoted_text, nonce=quoted_text, algorithm=token,
       qop=st.lists(st.sampled_from(["auth", "auth-int"]), unique=True).map(tuple),
       stale=st.booleans(), opaque=st.one_of(st.none(), quoted_text))
def test_challenge_round_trip(realm: str, nonce: str, algorithm: str, qop: tuple[str, ...],
                              stale: bool, opaque: str | None) -> None:
    ch = Challenge(realm=realm, nonce=nonce, algorithm=algorithm, qop=qop, stale=stale, opaque=opaque)
    assert Challenge.parse(str(ch)) == ch


@FAST
@given(user=quoted_text.filter(bool), password=st.text(max_size=30), realm=quoted_text,
       method=token, alg=st.integers(0, 1), uri=st.sampled_from(["sip:example.com", "sip:bob@h.org;transport=tcp", "sips:[::1]:5061"]),
       cnonce=quoted_text.filter(bool), offset=st.floats(0, 299))
def test_client_response_verifies(user: str, password: str, realm: str, method: str, alg: int,
                                  uri: str, cnonce: str, offset: float) -> None:
    auth = DigestAuth(SECRET, algorithms=["SHA-256", "MD5"])
    values = auth.challenges(realm, NOW)
    cred = authorize(Challenge.parse(values[alg]), username=user, password=password,
                     method=method, uri=uri, cnonce=cnonce)
    lookup = lambda u, r, a: ha1(u, r, password, a) if u == user else None  # noqa: E731
    out = auth.verify(str(cred), method=method, realm=realm, now=NOW + offset,
                      ha1_lookup=lookup, request_uri=uri)
    assert out.result is AuthResult.OK and out.username == user
    again = auth.verify(str(cred), method=method, realm=realm, now=NOW + offset,
                        ha1_lookup=lookup, request_uri=uri)
    assert again.result is AuthResult.REPLAY
    late = auth.verify(str(cred), method=method, realm=realm, now=NOW + 301, ha1_lookup=lookup,
                       request_uri=uri)
    assert late.result is AuthResult.STALE
