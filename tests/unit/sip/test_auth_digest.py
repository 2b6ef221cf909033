"""Digest authentication: RFC vectors, challenges, nonces, verification outcomes."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest

from sipedge.errors import ParseError, UsageError
from sipedge.sip.auth import (
    AuthResult,
    Challenge,
    Credentials,
    DigestAuth,
    MemoryNonceStore,
    NonceState,
    authorize,
    compute_response,
    ha1,
    parse_auth_params,
    select_credentials,
)

VECTORS = Path(__file__).resolve().parents[2] / "vectors" / "auth"
RFC_VECTORS = ["rfc2617-3.5.json", "rfc7616-3.9.1-md5.json", "rfc7616-3.9.1-sha256.json"]
SECRET = b"0123456789abcdef0123456789abcdef"
NOW = 1_700_000_000.0
REALM = "example.com"
RURI = "sip:example.com"


def load(name: str) -> dict[str, str]:
    data: dict[str, str] = json.loads((VECTORS / name).read_text(encoding="utf-8"))
    return data


# -- RFC vectors -----------------------------------------------------------------


@pytest.mark.parametrize("name", RFC_VECTORS)
def test_vector_response(name: str) -> None:
    v = load(name)
    key = ha1(v["username"], v["realm"], v["password"], v["algorithm"])
    got = compute_response(
        algorithm=v["algorithm"], ha1_hex=key, nonce=v["nonce"], method=v["method"],
        uri=v["uri"], qop=v["qop"], nc=v["nc"], cnonce=v["cnonce"],
    )
    assert got == v["response"]


@pytest.mark.parametrize("name", RFC_VECTORS)
def test_vector_parse_credentials(name: str) -> None:
    v = load(name)
    c = Credentials.parse(v["authorization"])
    assert (c.username, c.realm, c.nonce, c.uri) == (v["username"], v["realm"], v["nonce"], v["uri"])
    assert (c.qop, c.nc, c.cnonce, c.opaque) == (v["qop"], v["nc"], v["cnonce"], v["opaque"])
    assert c.response == v["response"]
    assert c.algorithm == v["algorithm"]
    # re-serialized, it parses to the same value
    assert Credentials.parse(str(c)) == c


@pytest.mark.parametrize("name", RFC_VECTORS)
def test_vector_challenge_and_client(name: str) -> None:
    v = load(name)
    ch = Challenge.parse(v["challenge"])
    assert (ch.realm, ch.nonce, ch.opaque) == (v["realm"], v["nonce"], v["opaque"])
    assert ch.qop == ("auth", "auth-int")
    assert ch.algorithm == v["algorithm"]
    assert Challenge.parse(str(ch)) == ch
    cred = authorize(ch, username=v["username"], password=v["password"], method=v["method"],
                     uri=v["uri"], cnonce=v["cnonce"])
    assert cred.response == v["response"]
    assert cred.nc == v["nc"] and cred.qop == "auth"


def test_vector_username_star() -> None:
    v = load("rfc7616-3.9.2-username-star.json")
    c = Credentials.parse(v["authorization"])
    assert c.username == "J\u00e4s\u00f8n Doe"
    assert c.algorithm == "SHA-512-256" and c.realm == v["realm"] and c.response == v["response"]
    assert c.userhash is False
    hashlib = pytest.importorskip("hashlib")
    if "sha512_256" not in hashlib.algorithms_available:
        return
    def h(s: str) -> str:
        return hashlib.new("sha512_256", s.encode()).hexdigest()
    a1 = h(f"{c.username}:{c.realm}:Secret, or not?")
    a2 = h(f"GET:{c.uri}")
    assert h(f"{a1}:{c.nonce}:{c.nc}:{c.cnonce}:{c.qop}:{a2}") == v["response"]


@pytest.mark.parametrize("case", json.loads((VECTORS / "invalid.json").read_text(encoding="utf-8")))
def test_invalid_vectors(case: dict[str, str]) -> None:
    with pytest.raises(ParseError) as info:
        Credentials.parse(case["value"])
    assert case["error"] in str(info.value)
    assert info.value.hint == (400, "Bad Authorization header")


# -- grammar -----------------------------------------------------------------------


def test_auth_params_grammar() -> None:
    scheme, p, quoted = parse_auth_params(
        'digest  USERNAME="a\\"b,c" ,, Realm=tok , empty="", x = "y z"  ,'
    )
    assert scheme == "digest"
    assert p == {"username": 'a"b,c', "realm": "tok", "empty": "", "x": "y z"}
    assert quoted == {"username", "empty", "x"}


def test_scheme_only() -> None:
    assert parse_auth_params("Digest") == ("Digest", {}, frozenset())


def test_too_long() -> None:
    with pytest.raises(ParseError):
        parse_auth_params("Digest a=" + "b" * 9000)


# -- server side ---------------------------------------------------------------------


class Users:
    def __init__(self, users: dict[str, str], realm: str = REALM) -> None:
        self.users = users
        self.realm = realm
        self.calls: list[tuple[str, str, str]] = []

    def __call__(self, username: str, realm: str, algorithm: str) -> str | None:
        self.calls.append((username, realm, algorithm))
        pw = self.users.get(username)
        return None if pw is None or realm != self.realm else ha1(username, realm, pw, algorithm)


def counter_source() -> object:
    c = itertools.count()
    return lambda n: next(c).to_bytes(n, "big")


def make_auth(**kw: object) -> DigestAuth:
    return DigestAuth(SECRET, token_source=counter_source(), **kw)  # type: ignore[arg-type]


def answer(auth: DigestAuth, now: float = NOW, *, alg_index: int = 0, password: str = "pw",
           user: str = "alice", method: str = "REGISTER", uri: str = RURI, nc: int = 1,
           stale: bool = False) -> str:
    values = auth.challenges(REALM, now, stale=stale)
    ch = Challenge.parse(values[alg_index])
    return str(authorize(ch, username=user, password=password, method=method, uri=uri,
                         cnonce="abcdef", nc=nc))


def test_challenges_sha256_first_one_nonce() -> None:
    auth = make_auth()
    values = auth.challenges(REALM, NOW)
    chs = [Challenge.parse(v) for v in values]
    assert [c.algorithm for c in chs] == ["SHA-256", "MD5"]
    # an explicit order is kept (MD5 first for clients that read only the first challenge)
    md5_first = make_auth(algorithms=["md5", "SHA-256", "MD5"])
    assert [Challenge.parse(v).algorithm for v in md5_first.challenges(REALM, NOW)] == ["MD5", "SHA-256"]
    assert chs[0].nonce == chs[1].nonce
    assert all(c.qop == ("auth",) and c.realm == REALM and not c.stale for c in chs)
    assert Challenge.parse(auth.challenges(REALM, NOW, stale=True)[0]).stale
    assert values[0].startswith('Digest realm="example.com", nonce="')


@pytest.mark.parametrize("alg_index", [0, 1])
def test_round_trip_ok(alg_index: int) -> None:
    auth = make_auth()
    users = Users({"alice": "pw"})
    out = auth.verify(answer(auth, alg_index=alg_index), method="REGISTER", realm=REALM,
                      now=NOW + 1, ha1_lookup=users, request_uri=RURI)
    assert out.result is AuthResult.OK and out.ok
    assert out.username == "alice"
    assert out.algorithm == ("SHA-256", "MD5")[alg_index]
    assert users.calls == [("alice", REALM, out.algorithm)]
    assert auth.stats()["auth_ok"] == 1 and auth.stats()["auth_challenges"] == 1


def test_sess_and_auth_int() -> None:
    auth = make_auth(algorithms=["SHA-256-sess", "MD5"])
    nonce = auth.new_nonce(NOW)
    cases = (("SHA-256-sess", "auth"), ("SHA-256-sess", "auth-int"), ("MD5", "auth-int"))
    for nc, (alg, qop) in enumerate(cases, start=1):
        ch = Challenge(realm=REALM, nonce=nonce, algorithm=alg, qop=(qop,))
        cred = authorize(ch, username="alice", password="pw", method="MESSAGE", uri=RURI,
                         cnonce="c" + qop, nc=nc, body=b"hello")
        out = auth.verify(str(cred), method="MESSAGE", realm=REALM, now=NOW,
                          ha1_lookup=Users({"alice": "pw"}), request_uri=RURI, body=b"hello")
        assert out.result is AuthResult.OK, (alg, qop)
        assert out.algorithm == alg
    # auth-int over a different body fails
    ch = Challenge(realm=REALM, nonce=nonce, algorithm="MD5", qop=("auth-int",))
    cred = authorize(ch, username="alice", password="pw", method="MESSAGE", uri=RURI,
                     cnonce="x", body=b"hello")
    out = auth.verify(cred, method="MESSAGE", realm=REALM, now=NOW,
                      ha1_lookup=Users({"alice": "pw"}), body=b"tampered")
    assert out.result is AuthResult.BAD_RESPONSE


def test_no_qop_rfc2069_style() -> None:
    auth = make_auth()
    ch = Challenge(realm=REALM, nonce=auth.new_nonce(NOW), algorithm="MD5")
    cred = authorize(ch, username="alice", password="pw", method="INVITE", uri="sip:bob@example.com",
                     cnonce="unused")
    assert cred.qop is None and cred.nc == ""
    out = auth.verify(str(cred), method="INVITE", realm=REALM, now=NOW,
                      ha1_lookup=Users({"alice": "pw"}), request_uri="sip:bob@example.com")
    assert out.result is AuthResult.OK


def test_missing_and_malformed() -> None:
    auth = make_auth()
    users = Users({"alice": "pw"})
    assert auth.verify(None, method="REGISTER", realm=REALM, now=NOW, ha1_lookup=users).result is AuthResult.MISSING
    out = auth.verify('Digest username="x', method="REGISTER", realm=REALM, now=NOW, ha1_lookup=users)
    assert out.result is AuthResult.MALFORMED and "unterminated" in out.detail
    assert out.result.reply() == (400, "Bad Authorization header")
    assert users.calls == []


def test_wrong_password_and_unknown_user() -> None:
    auth = make_auth()
    users = Users({"alice": "pw"})
    out = auth.verify(answer(auth, password="nope"), method="REGISTER", realm=REALM, now=NOW, ha1_lookup=users)
    assert out.result is AuthResult.BAD_RESPONSE
    assert out.result.reply() == (401, "Unauthorized")
    assert out.result.reply(proxy=True) == (407, "Proxy Authentication Required")
    out = auth.verify(answer(auth, user="mallory"), method="REGISTER", realm=REALM, now=NOW, ha1_lookup=users)
    assert out.result is AuthResult.UNKNOWN_USER and out.username == "mallory"
    assert out.result.challenge and not out.result.stale


def test_wrong_method_fails() -> None:
    auth = make_auth()
    out = auth.verify(answer(auth, method="REGISTER"), method="INVITE", realm=REALM, now=NOW,
                      ha1_lookup=Users({"alice": "pw"}))
    assert out.result is AuthResult.BAD_RESPONSE


def test_realm_mismatch() -> None:
    auth = make_auth()
    out = auth.verify(answer(auth), method="REGISTER", realm="other.org", now=NOW,
                      ha1_lookup=Users({"alice": "pw"}))
    assert out.result is AuthResult.REALM_MISMATCH


def test_uri_mismatch_and_equivalence() -> None:
    auth = make_auth(check_uri=True)
    users = Users({"alice": "pw"})
    cred = answer(auth, uri="sip:bob@Example.COM;transport=tcp", method="INVITE")
    ok = auth.verify(cred, method="INVITE", realm=REALM, now=NOW, ha1_lookup=users,
                     request_uri="sip:bob@example.com")
    assert ok.result is AuthResult.OK
    cred = answer(auth, uri="sip:carol@example.com", method="INVITE")
    bad = auth.verify(cred, method="INVITE", realm=REALM, now=NOW, ha1_lookup=users,
                      request_uri="sip:bob@example.com")
    assert bad.result is AuthResult.URI_MISMATCH
    assert bad.result.reply() is not None and bad.result.reply()[0] == 400  # type: ignore[index]
    lax = make_auth(check_uri=False)
    cred = answer(lax, uri="sip:carol@example.com", method="INVITE")
    out = lax.verify(cred, method="INVITE", realm=REALM, now=NOW, ha1_lookup=users,
                     request_uri="sip:bob@example.com")
    assert out.result is AuthResult.OK


def test_replay_rejected_and_out_of_order_window() -> None:
    auth = make_auth()
    users = Users({"alice": "pw"})
    ch = Challenge.parse(auth.challenges(REALM, NOW)[0])

    def send(nc: int) -> AuthResult:
        cred = authorize(ch, username="alice", password="pw", method="REGISTER", uri=RURI,
                         cnonce="cn", nc=nc)
        return auth.verify(str(cred), method="REGISTER", realm=REALM, now=NOW, ha1_lookup=users).result

    assert send(1) is AuthResult.OK
    assert send(1) is AuthResult.REPLAY
    assert send(3) is AuthResult.OK
    assert send(2) is AuthResult.OK  # late but inside the window
    assert send(2) is AuthResult.REPLAY
    assert send(100) is AuthResult.OK
    assert send(3) is AuthResult.REPLAY  # fell out of the window
    assert AuthResult.REPLAY.stale and AuthResult.REPLAY.challenge


def test_wrong_response_does_not_burn_nc() -> None:
    auth = make_auth()
    users = Users({"alice": "pw"})
    ch = Challenge.parse(auth.challenges(REALM, NOW)[0])
    bad = authorize(ch, username="alice", password="x", method="REGISTER", uri=RURI, cnonce="c")
    good = authorize(ch, username="alice", password="pw", method="REGISTER", uri=RURI, cnonce="c")
    assert auth.verify(bad, method="REGISTER", realm=REALM, now=NOW, ha1_lookup=users).result is AuthResult.BAD_RESPONSE
    assert auth.verify(good, method="REGISTER", realm=REALM, now=NOW, ha1_lookup=users).result is AuthResult.OK


def test_expired_nonce_is_stale_only_with_right_password() -> None:
    auth = make_auth(nonce_lifetime=60.0)
    users = Users({"alice": "pw"})
    cred = answer(auth, NOW)
    assert auth.verify(cred, method="REGISTER", realm=REALM, now=NOW + 60, ha1_lookup=users).result is AuthResult.OK
    cred = answer(auth, NOW, nc=2)
    out = auth.verify(cred, method="REGISTER", realm=REALM, now=NOW + 61, ha1_lookup=users)
    assert out.result is AuthResult.STALE and out.result.stale and out.username == "alice"
    wrong = answer(auth, NOW, password="bad")
    assert auth.verify(wrong, method="REGISTER", realm=REALM, now=NOW + 61, ha1_lookup=users).result is AuthResult.BAD_RESPONSE


def test_nonce_states() -> None:
    auth = make_auth(nonce_lifetime=10.0, clock_skew=5.0)
    n = auth.new_nonce(NOW)
    assert len(n) == 43
    assert auth.nonce_state(n, NOW) is NonceState.VALID
    assert auth.nonce_state(n, NOW - 5) is NonceState.VALID
    assert auth.nonce_state(n, NOW - 6) is NonceState.STALE
    assert auth.nonce_state(n, NOW + 11) is NonceState.STALE
    assert auth.nonce_state("", NOW) is NonceState.INVALID
    assert auth.nonce_state("\u00e9" * 43, NOW) is NonceState.INVALID
    assert auth.nonce_state("!" * 43, NOW) is NonceState.INVALID
    assert auth.new_nonce(NOW) != n  # fresh randomness each time


def test_tampered_nonce_is_bad() -> None:
    auth = make_auth()
    users = Users({"alice": "pw"})
    nonce = auth.new_nonce(NOW)
    for i in (0, 10, 20, 42):
        flipped = nonce[:i] + ("A" if nonce[i] != "A" else "B") + nonce[i + 1 :]
        assert auth.nonce_state(flipped, NOW) is NonceState.INVALID
        ch = Challenge(realm=REALM, nonce=flipped, algorithm="SHA-256", qop=("auth",))
        cred = authorize(ch, username="alice", password="pw", method="REGISTER", uri=RURI, cnonce="c")
        out = auth.verify(cred, method="REGISTER", realm=REALM, now=NOW, ha1_lookup=users)
        assert out.result is AuthResult.BAD_RESPONSE and out.detail == "nonce not ours"
    # a nonce from another secret (another deployment) is not ours either
    other = DigestAuth(b"x" * 32)
    assert auth.nonce_state(other.new_nonce(NOW), NOW) is NonceState.INVALID


def test_shared_secret_across_nodes_and_rotation() -> None:
    node_a = make_auth()
    node_b = make_auth()
    users = Users({"alice": "pw"})
    cred = answer(node_a)
    assert node_b.verify(cred, method="REGISTER", realm=REALM, now=NOW, ha1_lookup=users).result is AuthResult.OK
    rotated = DigestAuth([b"n" * 32, SECRET])
    assert rotated.nonce_state(node_a.new_nonce(NOW), NOW) is NonceState.STALE
    out = rotated.verify(answer(node_a), method="REGISTER", realm=REALM, now=NOW, ha1_lookup=users)
    assert out.result is AuthResult.STALE


def test_algorithm_not_offered_and_userhash() -> None:
    auth = make_auth(algorithms=["SHA-256"])
    nonce = auth.new_nonce(NOW)
    ch = Challenge(realm=REALM, nonce=nonce, algorithm="MD5", qop=("auth",))
    cred = authorize(ch, username="alice", password="pw", method="REGISTER", uri=RURI, cnonce="c")
    out = auth.verify(cred, method="REGISTER", realm=REALM, now=NOW, ha1_lookup=Users({"alice": "pw"}))
    assert out.result is AuthResult.MALFORMED
    text = str(cred).replace("algorithm=MD5", "algorithm=SHA-512-256")
    assert auth.verify(text, method="REGISTER", realm=REALM, now=NOW, ha1_lookup=Users({})).result is AuthResult.MALFORMED
    text = str(cred).replace("algorithm=MD5", "algorithm=sha-256") + ", userhash=true"
    assert auth.verify(text, method="REGISTER", realm=REALM, now=NOW, ha1_lookup=Users({})).result is AuthResult.MALFORMED
    text = str(cred).replace("algorithm=MD5", "algorithm=SHA-256").replace("qop=auth", "qop=bogus")
    assert auth.verify(text, method="REGISTER", realm=REALM, now=NOW, ha1_lookup=Users({})).result is AuthResult.MALFORMED


def test_sess_without_qop_is_malformed() -> None:
    auth = make_auth(algorithms=["MD5-sess"])
    text = (f'Digest username="alice", realm="{REALM}", nonce="{auth.new_nonce(NOW)}", uri="{RURI}", '
            'response="00", algorithm=MD5-sess')
    assert auth.verify(text, method="REGISTER", realm=REALM, now=NOW, ha1_lookup=Users({})).result is AuthResult.MALFORMED


def test_constructor_checks() -> None:
    with pytest.raises(UsageError):
        DigestAuth(b"short")
    with pytest.raises(UsageError):
        DigestAuth(SECRET, algorithms=["SHA-512"])
    with pytest.raises(UsageError):
        DigestAuth(SECRET, algorithms=[])
    with pytest.raises(UsageError):
        MemoryNonceStore(0)
    with pytest.raises(UsageError):
        authorize(Challenge(realm="r", nonce="n", algorithm="SHA-512"), username="u", password="p",
                  method="REGISTER", uri="sip:r", cnonce="c")


def test_memory_nonce_store_bounded() -> None:
    store = MemoryNonceStore(max_nonces=3)
    for n in "abcd":
        assert store.check_and_record(n, 1)
    assert len(store) == 3 and store.evicted == 1
    assert not store.check_and_record("d", 1)
    assert store.check_and_record("a", 1)  # evicted, so unknown again
    assert not store.check_and_record("b", 0)
    assert store.check_and_record("b", 1000)
    assert not store.check_and_record("b", 1000)


def test_select_credentials() -> None:
    a = 'Digest username="u", realm="a.org", nonce="n", uri="sip:x", response="r"'
    b = 'Digest username="u", realm="b.org", nonce="n", uri="sip:x", response="r"'
    assert select_credentials([a, b], "b.org") == b
    assert select_credentials([a, b], "c.org") == a
    assert select_credentials(['Digest x="', a], "c.org") == 'Digest x="'
    assert select_credentials([], "a.org") is None
    assert select_credentials(iter([a]), "a.org") == a
