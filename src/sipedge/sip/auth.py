"""Digest authentication for SIP (RFC 2617, RFC 7616, RFC 8760), sans-I/O.

The server side is :class:`DigestAuth`: it builds challenge header values
(``WWW-Authenticate`` / ``Proxy-Authenticate``, one per offered algorithm, in the
configured order, SHA-256 first by default)
and verifies ``Authorization`` / ``Proxy-Authorization`` values against a caller-supplied
``ha1_lookup(username, realm, algorithm)``. Nothing here reads the clock, the RNG or a
database: ``now`` (wall-clock epoch seconds, so nodes agree), the token source and the
secret are passed in.

Nonces are stateless and self-verifying: ``timestamp | random | HMAC(secret)``, so any
node that shares the secret accepts them. An expired nonce with an otherwise correct
response gives :attr:`AuthResult.STALE` (reply with ``stale=true``). Nonce-count replay
protection goes through a :class:`NonceStore` (in memory here; Redis later).

Parsing (:meth:`Credentials.parse`, :meth:`Challenge.parse`) raises only
:class:`~sipedge.errors.ParseError`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
import struct
import urllib.parse
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Protocol

from .._common.ids import TokenSource
from ..errors import ParseError, UsageError
from .uri import SipUri

# -- algorithms --------------------------------------------------------------

_HASHES: dict[str, str] = {"MD5": "md5", "SHA-256": "sha256"}
ALGORITHMS: tuple[str, ...] = ("SHA-256", "SHA-256-sess", "MD5", "MD5-sess")
"""Every algorithm we can verify, canonical spelling."""

HA1Lookup = Callable[[str, str, str], "str | None"]
"""``ha1_lookup(username, realm, algorithm) -> HA1 hex or None``; ``algorithm`` is the
base algorithm (``"MD5"`` or ``"SHA-256"``): -sess variants use the same stored HA1."""


def canonical_algorithm(name: str) -> str | None:
    """``"sha-256"`` -> ``"SHA-256"``; ``None`` when we do not support it."""
    low = name.strip().lower()
    for alg in ALGORITHMS:
        if alg.lower() == low:
            return alg
    return None


def base_algorithm(algorithm: str) -> str:
    """``"SHA-256-sess"`` -> ``"SHA-256"``."""
    return algorithm[:-5] if algorithm.endswith("-sess") else algorithm


def _h(algorithm: str, data: str | bytes) -> str:
    name = _HASHES.get(base_algorithm(algorithm))
    if name is None:
        raise UsageError(f"unsupported digest algorithm {algorithm!r}")
    raw = data.encode("utf-8") if isinstance(data, str) else data
    return hashlib.new(name, raw).hexdigest()


def ha1(username: str, realm: str, password: str, algorithm: str = "MD5") -> str:
    """``H(username:realm:password)``, the value a subscriber store keeps."""
    return _h(algorithm, f"{username}:{realm}:{password}")


def compute_response(
    *,
    algorithm: str,
    ha1_hex: str,
    nonce: str,
    method: str,
    uri: str,
    qop: str | None = None,
    nc: str = "",
    cnonce: str = "",
    body: bytes = b"",
) -> str:
    """The ``response`` value (RFC 7616 §3.4.1), from the base HA1 (not the -sess one)."""
    if algorithm.endswith("-sess"):
        ha1_hex = _h(algorithm, f"{ha1_hex}:{nonce}:{cnonce}")
    if qop == "auth-int":
        ha2 = _h(algorithm, f"{method}:{uri}:{_h(algorithm, body)}")
    else:
        ha2 = _h(algorithm, f"{method}:{uri}")
    if qop:
        return _h(algorithm, f"{ha1_hex}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}")
    return _h(algorithm, f"{ha1_hex}:{nonce}:{ha2}")


# -- auth-param grammar (RFC 7235 §2.1 / RFC 3261 §25.1) ---------------------

_TCHARS = frozenset("!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
_WS = " \t\r\n"  # header values arrive unfolded; tolerate raw LWS too
_MAX_LEN = 8192


def _bad(msg: str) -> ParseError:
    return ParseError(msg, (400, "Bad Authorization header"))


def _token(text: str, i: int) -> tuple[str, int]:
    j = i
    n = len(text)
    while j < n and text[j] in _TCHARS:
        j += 1
    return text[i:j], j


def _skip_ws(text: str, i: int) -> int:
    n = len(text)
    while i < n and text[i] in _WS:
        i += 1
    return i


def _quoted(text: str, i: int) -> tuple[str, int]:
    """``text[i] == '"'``; returns the unescaped content and the index after the quote."""
    out: list[str] = []
    i += 1
    n = len(text)
    while i < n:
        c = text[i]
        if c == "\\":
            if i + 1 >= n:
                break
            nxt = text[i + 1]
            if nxt in "\r\n" or (ord(nxt) < 0x20 and nxt != "\t") or ord(nxt) == 0x7F:
                raise _bad("control character in quoted string")
            out.append(nxt)
            i += 2
            continue
        if c == '"':
            return "".join(out), i + 1
        if (ord(c) < 0x20 and c != "\t") or ord(c) == 0x7F:
            raise _bad("control character in quoted string")
        out.append(c)
        i += 1
    raise _bad("unterminated quoted string")


_TOKEN_RE = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_FAST_HEAD = re.compile(r"[ \t\r\n]*(" + _TOKEN_RE + r")[ \t\r\n]+")
_FAST_PARAM = re.compile(
    r"(" + _TOKEN_RE + r")[ \t\r\n]*=[ \t\r\n]*"
    r'(?:"((?:[^"\\\x00-\x08\x0a-\x1f\x7f]|\\[\t\x20-\x7e\x80-\U0010ffff])*)"|(' + _TOKEN_RE + r"))"
    r"[ \t\r\n]*(?:,[ \t\r\n,]*|$)"
)
_UNESCAPE = re.compile(r"\\(.)")


def parse_auth_params(text: str) -> tuple[str, dict[str, str], frozenset[str]]:
    """Split ``Scheme name=value, name="quoted", ...`` into the scheme, a dict of
    lowercased names to unquoted values, and the set of names whose value was quoted.

    Empty list elements are allowed (``a=1,,b=2``); duplicates and garbage are not.
    Well-formed values take a regex fast path; anything else goes through the
    character-by-character reader, which names the problem.
    """
    if isinstance(text, str) and len(text) <= _MAX_LEN:
        fast = _parse_fast(text)
        if fast is not None:
            return fast
    return _parse_slow(text)


def _parse_fast(text: str) -> tuple[str, dict[str, str], frozenset[str]] | None:
    head = _FAST_HEAD.match(text)
    if head is None:
        return None
    i, n = head.end(), len(text)
    params: dict[str, str] = {}
    quoted: set[str] = set()
    while i < n:
        m = _FAST_PARAM.match(text, i)
        if m is None:
            return None
        key = m.group(1).lower()
        if key in params:
            return None
        q = m.group(2)
        if q is not None:
            params[key] = _UNESCAPE.sub(r"\1", q) if "\\" in q else q
            quoted.add(key)
        else:
            params[key] = m.group(3)
        i = m.end()
    return head.group(1), params, frozenset(quoted)


def _parse_slow(text: str) -> tuple[str, dict[str, str], frozenset[str]]:
    if not isinstance(text, str):
        raise _bad("header value is not text")
    if len(text) > _MAX_LEN:
        raise _bad("authentication header too long")
    i = _skip_ws(text, 0)
    scheme, i = _token(text, i)
    if not scheme:
        raise _bad("missing authentication scheme")
    n = len(text)
    if i < n and text[i] not in _WS:
        raise _bad(f"bad character after scheme {scheme!r}")
    params: dict[str, str] = {}
    quoted: set[str] = set()
    expect_item = True
    i = _skip_ws(text, i)
    while i < n:
        c = text[i]
        if c == ",":
            expect_item = True
            i = _skip_ws(text, i + 1)
            continue
        if not expect_item:
            raise _bad(f"missing ',' before {text[i:i + 20]!r}")
        name, j = _token(text, i)
        if not name:
            raise _bad(f"bad parameter at {text[i:i + 20]!r}")
        j = _skip_ws(text, j)
        if j >= n or text[j] != "=":
            raise _bad(f"parameter {name!r} without '='")
        j = _skip_ws(text, j + 1)
        if j < n and text[j] == '"':
            value, j = _quoted(text, j)
            quoted.add(name.lower())
        else:
            value, j = _token(text, j)
            if not value:
                raise _bad(f"parameter {name!r} has no value")
        key = name.lower()
        if key in params:
            raise _bad(f"duplicate parameter {name!r}")
        params[key] = value
        expect_item = False
        i = _skip_ws(text, j)
    return scheme, params, frozenset(quoted)


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _token_or_quoted(value: str) -> str:
    return value if value and set(value) <= _TCHARS else _quote(value)


_NC_HEX = frozenset("0123456789abcdefABCDEF")


def _ext_value(value: str) -> str:
    """RFC 5987/8187 ``username*`` value: ``UTF-8''percent-encoded``."""
    charset, sep, rest = value.partition("'")
    _lang, sep2, encoded = rest.partition("'")
    if not sep or not sep2 or charset.lower() != "utf-8":
        raise _bad("username* must be UTF-8''<percent-encoded>")
    try:
        return urllib.parse.unquote(encoded, encoding="utf-8", errors="strict")
    except UnicodeDecodeError as exc:
        raise _bad("username* is not valid UTF-8") from exc


@dataclass(frozen=True, slots=True)
class Credentials:
    """A parsed ``Authorization`` / ``Proxy-Authorization`` Digest value."""

    username: str
    realm: str
    nonce: str
    uri: str
    response: str
    algorithm: str = "MD5"  # as sent (case kept); canonical via canonical_algorithm()
    qop: str | None = None
    nc: str = ""
    cnonce: str = ""
    opaque: str | None = None
    userhash: bool = False
    extra: dict[str, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> Credentials:
        scheme, p, _ = parse_auth_params(text)
        if scheme.lower() != "digest":
            raise _bad(f"unsupported authentication scheme {scheme!r}")
        username: str | None
        if "username*" in p:
            if "username" in p:
                raise _bad("both username and username*")
            username = _ext_value(p.pop("username*"))
        else:
            username = p.pop("username", None)
        missing = [k for k in ("realm", "nonce", "uri", "response") if k not in p]
        if missing or username is None:
            names = (["username"] if username is None else []) + missing
            raise _bad("Digest credentials without " + ", ".join(names))
        qop = p.pop("qop", None)
        nc = p.pop("nc", "")
        cnonce = p.pop("cnonce", "")
        if qop is not None:
            if not qop:
                raise _bad("empty qop")
            if not cnonce or len(nc) != 8 or not set(nc) <= _NC_HEX:
                raise _bad("qop needs cnonce and an 8-hex-digit nc")
        userhash = p.pop("userhash", "false").lower() == "true"
        return cls(
            username=username,
            realm=p.pop("realm"),
            nonce=p.pop("nonce"),
            uri=p.pop("uri"),
            response=p.pop("response"),
            algorithm=p.pop("algorithm", "MD5"),
            qop=qop,
            nc=nc,
            cnonce=cnonce,
            opaque=p.pop("opaque", None),
            userhash=userhash,
            extra=p,
        )

    def __str__(self) -> str:
        parts = [f"username={_quote(self.username)}", f"realm={_quote(self.realm)}",
                 f"nonce={_quote(self.nonce)}", f"uri={_quote(self.uri)}",
                 f"response={_quote(self.response)}",
                 f"algorithm={_token_or_quoted(self.algorithm)}"]
        if self.qop is not None:
            parts += [f"qop={_token_or_quoted(self.qop)}", f"nc={_token_or_quoted(self.nc)}",
                      f"cnonce={_quote(self.cnonce)}"]
        if self.opaque is not None:
            parts.append(f"opaque={_quote(self.opaque)}")
        if self.userhash:
            parts.append("userhash=true")
        parts += [f"{k}={_quote(v)}" for k, v in self.extra.items()]
        return "Digest " + ", ".join(parts)

    @property
    def nc_value(self) -> int:
        return int(self.nc, 16) if self.nc else 0


@dataclass(frozen=True, slots=True)
class Challenge:
    """A parsed ``WWW-Authenticate`` / ``Proxy-Authenticate`` Digest value."""

    realm: str
    nonce: str
    algorithm: str = "MD5"
    qop: tuple[str, ...] = ()
    stale: bool = False
    opaque: str | None = None
    userhash: bool = False
    extra: dict[str, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> Challenge:
        scheme, p, _ = parse_auth_params(text)
        if scheme.lower() != "digest":
            raise _bad(f"unsupported authentication scheme {scheme!r}")
        if "realm" not in p or "nonce" not in p:
            raise _bad("Digest challenge without realm or nonce")
        qop = tuple(q.strip() for q in p.pop("qop", "").split(",") if q.strip())
        return cls(
            realm=p.pop("realm"),
            nonce=p.pop("nonce"),
            algorithm=p.pop("algorithm", "MD5"),
            qop=qop,
            stale=p.pop("stale", "false").lower() == "true",
            opaque=p.pop("opaque", None),
            userhash=p.pop("userhash", "false").lower() == "true",
            extra=p,
        )

    def __str__(self) -> str:
        parts = [f"realm={_quote(self.realm)}", f"nonce={_quote(self.nonce)}"]
        if self.opaque is not None:
            parts.append(f"opaque={_quote(self.opaque)}")
        parts.append(f"algorithm={_token_or_quoted(self.algorithm)}")
        if self.qop:
            parts.append(f"qop={_quote(','.join(self.qop))}")
        if self.stale:
            parts.append("stale=true")
        if self.userhash:
            parts.append("userhash=true")
        parts += [f"{k}={_quote(v)}" for k, v in self.extra.items()]
        return "Digest " + ", ".join(parts)


def authorize(
    challenge: Challenge,
    *,
    username: str,
    password: str,
    method: str,
    uri: str,
    cnonce: str,
    nc: int = 1,
    body: bytes = b"",
) -> Credentials:
    """The client side: credentials answering ``challenge`` (qop=auth when offered)."""
    algorithm = canonical_algorithm(challenge.algorithm)
    if algorithm is None:
        raise UsageError(f"unsupported digest algorithm {challenge.algorithm!r}")
    qop: str | None = None
    if "auth" in challenge.qop:
        qop = "auth"
    elif "auth-int" in challenge.qop:
        qop = "auth-int"
    nc_text = f"{nc:08x}" if qop else ""
    key = ha1(username, challenge.realm, password, algorithm)
    response = compute_response(
        algorithm=algorithm, ha1_hex=key, nonce=challenge.nonce, method=method, uri=uri,
        qop=qop, nc=nc_text, cnonce=cnonce if qop else "", body=body,
    )
    return Credentials(
        username=username, realm=challenge.realm, nonce=challenge.nonce, uri=uri,
        response=response, algorithm=challenge.algorithm, qop=qop, nc=nc_text,
        cnonce=cnonce if qop else "", opaque=challenge.opaque,
    )


# -- nonce-count replay protection -------------------------------------------


class NonceStore(Protocol):
    """Remembers which nonce-counts each nonce has used (shared by nodes via Redis)."""

    def check_and_record(self, nonce: str, nc: int) -> bool:
        """True, and remember it, when ``nc`` was never seen for ``nonce``; else False."""
        ...


class MemoryNonceStore:
    """In-memory :class:`NonceStore` bounded to ``max_nonces`` (oldest evicted).

    Per nonce it keeps the highest nc and a 64-bit window below it, so requests that
    arrive slightly out of order (forked UDP retransmissions) still pass, while a count
    below the window or already seen is a replay.
    """

    WINDOW = 64

    def __init__(self, max_nonces: int = 100_000) -> None:
        if max_nonces < 1:
            raise UsageError("max_nonces must be >= 1")
        self.max_nonces = max_nonces
        self._seen: OrderedDict[str, tuple[int, int]] = OrderedDict()
        self.evicted = 0

    def check_and_record(self, nonce: str, nc: int) -> bool:
        if nc < 1:
            return False
        entry = self._seen.get(nonce)
        if entry is None:
            self._seen[nonce] = (nc, 1)
            if len(self._seen) > self.max_nonces:
                self._seen.popitem(last=False)
                self.evicted += 1
            return True
        top, mask = entry
        if nc > top:
            shift = nc - top
            mask = ((mask << shift) | 1) & ((1 << self.WINDOW) - 1) if shift < self.WINDOW else 1
            self._seen[nonce] = (nc, mask)
            return True
        offset = top - nc
        if offset >= self.WINDOW or mask & (1 << offset):
            return False
        self._seen[nonce] = (top, mask | (1 << offset))
        return True

    def __len__(self) -> int:
        return len(self._seen)


# -- verification --------------------------------------------------------------


class AuthResult(Enum):
    """Outcome of :meth:`DigestAuth.verify`; ``reply`` says what to answer."""

    OK = "ok"
    MISSING = "missing"  # no credentials for our realm: challenge
    MALFORMED = "malformed"  # unparsable or unsupported: 400
    STALE = "stale"  # right password, expired (or old-secret) nonce: challenge stale=true
    UNKNOWN_USER = "unknown_user"  # challenge again (do not reveal which part was wrong)
    BAD_RESPONSE = "bad_response"  # wrong password or forged nonce: challenge again
    REPLAY = "replay"  # nonce-count reused: challenge with a fresh nonce, stale=true
    REALM_MISMATCH = "realm_mismatch"  # credentials for another realm: challenge
    URI_MISMATCH = "uri_mismatch"  # digest-uri is not the Request-URI: 400

    @property
    def challenge(self) -> bool:
        """Answer 401/407 with a challenge."""
        return self not in (AuthResult.OK, AuthResult.MALFORMED, AuthResult.URI_MISMATCH)

    @property
    def stale(self) -> bool:
        """The challenge should carry ``stale=true`` (no need to ask the user again)."""
        return self in (AuthResult.STALE, AuthResult.REPLAY)

    def reply(self, proxy: bool = False) -> tuple[int, str] | None:
        """``(status, reason)`` to answer with, or None for OK."""
        if self is AuthResult.OK:
            return None
        if self is AuthResult.MALFORMED:
            return (400, "Bad Authorization header")
        if self is AuthResult.URI_MISMATCH:
            return (400, "Authorization URI does not match Request-URI")
        return (407, "Proxy Authentication Required") if proxy else (401, "Unauthorized")


@dataclass(frozen=True, slots=True)
class AuthOutcome:
    result: AuthResult
    username: str = ""
    realm: str = ""
    algorithm: str = ""
    detail: str = ""  # for the log line; never contains a secret

    @property
    def ok(self) -> bool:
        return self.result is AuthResult.OK


class NonceState(Enum):
    VALID = "valid"
    STALE = "stale"  # ours but expired, or made with a retired secret
    INVALID = "invalid"  # not ours, or tampered with


_NONCE_RAW = 8 + 8 + 16  # timestamp (ms) | random | HMAC-SHA256 truncated


def _uri_key(text: str) -> tuple[str, ...]:
    """A comparison key for a SIP URI (scheme, user, host case-folded, port); other
    URIs compare as stripped text."""
    try:
        u = SipUri.parse(text)
    except ParseError:
        return ("raw", text.strip())
    return (u.scheme, u.user or "", u.host.lower(), str(u.port or ""))


class DigestAuth:
    """Server-side digest authentication: challenges, nonces, verification, counters.

    ``secret``: the HMAC key for nonces, or a sequence whose first item signs and whose
    others (retired keys) are still recognised, giving STALE instead of BAD_RESPONSE.

    ``check_uri``: compare the digest ``uri`` with the Request-URI (RFC 2617 §3.2.2.5,
    a SHOULD) and answer URI_MISMATCH. Off by default, as in Kamailio: real clients put
    other things there (SIPp 3.6 sends ``sip:<remote host>:<port>``), and the response
    already covers the uri, while nonce-counts stop replays.
    """

    def __init__(
        self,
        secret: bytes | Sequence[bytes],
        *,
        nonce_lifetime: float = 300.0,
        algorithms: Iterable[str] = ("SHA-256", "MD5"),
        nonce_store: NonceStore | None = None,
        token_source: TokenSource = secrets.token_bytes,
        clock_skew: float = 30.0,
        check_uri: bool = False,
    ) -> None:
        keys = [secret] if isinstance(secret, bytes | bytearray) else list(secret)
        if not keys or any(not isinstance(k, bytes | bytearray) or len(k) < 16 for k in keys):
            raise UsageError("digest nonce secret must be at least 16 bytes")
        self._keys = [bytes(k) for k in keys]
        offered: list[str] = []
        for a in algorithms:
            c = canonical_algorithm(a)
            if c is None:
                raise UsageError(f"unsupported digest algorithm {a!r}; use one of {', '.join(ALGORITHMS)}")
            offered.append(c)
        if not offered:
            raise UsageError("offer at least one digest algorithm")
        # Offered in the caller's order. The default puts SHA-256 first (RFC 8760 §2.4:
        # the preferred one first), but clients that read only the first challenge and know
        # only MD5 (JsSIP, SIP.js, SIPp 3.6) then fail: such deployments list MD5 first.
        self.algorithms = tuple(dict.fromkeys(offered))
        self.nonce_lifetime = nonce_lifetime
        self.nonce_store = nonce_store if nonce_store is not None else MemoryNonceStore()
        self._token_source = token_source
        self.clock_skew = clock_skew
        self.check_uri = check_uri
        self._stats: dict[str, int] = {"auth_challenges": 0}
        for r in AuthResult:
            self._stats[f"auth_{r.value}"] = 0

    # -- nonces ----------------------------------------------------------------
    def _mac(self, key: bytes, head: bytes) -> bytes:
        return hmac.digest(key, head, "sha256")[:16]  # one-shot, in OpenSSL

    def new_nonce(self, now: float) -> str:
        head = struct.pack(">Q", max(0, int(now * 1000))) + self._token_source(8)[:8].ljust(8, b"\0")
        raw = head + self._mac(self._keys[0], head)
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")

    def nonce_state(self, nonce: str, now: float) -> NonceState:
        if len(nonce) != 43:
            return NonceState.INVALID
        try:
            raw = base64.urlsafe_b64decode(nonce + "=")
        except (ValueError, UnicodeEncodeError):
            return NonceState.INVALID
        if len(raw) != _NONCE_RAW or base64.urlsafe_b64encode(raw).rstrip(b"=") != nonce.encode():
            return NonceState.INVALID
        head, mac = raw[:16], raw[16:]
        for i, key in enumerate(self._keys):
            if hmac.compare_digest(mac, self._mac(key, head)):
                if i > 0:
                    return NonceState.STALE
                issued = struct.unpack(">Q", head[:8])[0] / 1000.0
                age = now - issued
                if age < -self.clock_skew or age > self.nonce_lifetime:
                    return NonceState.STALE
                return NonceState.VALID
        return NonceState.INVALID

    # -- challenges ------------------------------------------------------------
    def challenges(self, realm: str, now: float, stale: bool = False) -> list[str]:
        """Header values for WWW-Authenticate / Proxy-Authenticate: one per offered
        algorithm in the configured order, sharing one fresh nonce, qop="auth"."""
        nonce = self.new_nonce(now)
        self._stats["auth_challenges"] += 1
        return [
            str(Challenge(realm=realm, nonce=nonce, algorithm=alg, qop=("auth",), stale=stale))
            for alg in self.algorithms
        ]

    # -- verification ------------------------------------------------------------
    def verify(
        self,
        credentials: str | Credentials | None,
        *,
        method: str,
        realm: str,
        now: float,
        ha1_lookup: HA1Lookup,
        request_uri: str | None = None,
        body: bytes = b"",
    ) -> AuthOutcome:
        out = self._verify(credentials, method, realm, now, ha1_lookup, request_uri, body)
        self._stats[f"auth_{out.result.value}"] += 1
        return out

    def _verify(
        self,
        credentials: str | Credentials | None,
        method: str,
        realm: str,
        now: float,
        ha1_lookup: HA1Lookup,
        request_uri: str | None,
        body: bytes,
    ) -> AuthOutcome:
        if credentials is None:
            return AuthOutcome(AuthResult.MISSING, realm=realm)
        if isinstance(credentials, str):
            try:
                cred = Credentials.parse(credentials)
            except ParseError as exc:
                return AuthOutcome(AuthResult.MALFORMED, realm=realm, detail=str(exc))
        else:
            cred = credentials
        user = cred.username
        if cred.realm != realm:
            return AuthOutcome(AuthResult.REALM_MISMATCH, user, realm, detail=f"realm {cred.realm!r}")
        algorithm = canonical_algorithm(cred.algorithm)
        if algorithm is None or base_algorithm(algorithm) not in {base_algorithm(a) for a in self.algorithms}:
            return AuthOutcome(AuthResult.MALFORMED, user, realm, detail=f"algorithm {cred.algorithm!r} not offered")
        if cred.qop not in (None, "auth", "auth-int"):
            return AuthOutcome(AuthResult.MALFORMED, user, realm, algorithm, f"qop {cred.qop!r}")
        if algorithm.endswith("-sess") and cred.qop is None:
            return AuthOutcome(AuthResult.MALFORMED, user, realm, algorithm, "-sess needs qop")
        if cred.userhash:
            return AuthOutcome(AuthResult.MALFORMED, user, realm, algorithm, "userhash not offered")
        if self.check_uri and request_uri is not None and _uri_key(cred.uri) != _uri_key(request_uri):
            return AuthOutcome(AuthResult.URI_MISMATCH, user, realm, algorithm, f"uri {cred.uri!r}")
        state = self.nonce_state(cred.nonce, now)
        if state is NonceState.INVALID:
            return AuthOutcome(AuthResult.BAD_RESPONSE, user, realm, algorithm, "nonce not ours")
        key = ha1_lookup(user, realm, base_algorithm(algorithm))
        if key is None:
            return AuthOutcome(AuthResult.UNKNOWN_USER, user, realm, algorithm)
        expected = compute_response(
            algorithm=algorithm, ha1_hex=key.lower(), nonce=cred.nonce, method=method,
            uri=cred.uri, qop=cred.qop, nc=cred.nc, cnonce=cred.cnonce, body=body,
        )
        if not hmac.compare_digest(expected.encode(), cred.response.lower().encode("utf-8", "replace")):
            return AuthOutcome(AuthResult.BAD_RESPONSE, user, realm, algorithm, "wrong response")
        if state is NonceState.STALE:
            return AuthOutcome(AuthResult.STALE, user, realm, algorithm)
        if cred.qop is not None and not self.nonce_store.check_and_record(cred.nonce, cred.nc_value):
            return AuthOutcome(AuthResult.REPLAY, user, realm, algorithm, f"nc {cred.nc} reused")
        return AuthOutcome(AuthResult.OK, user, realm, algorithm)

    def stats(self) -> dict[str, int | float]:
        return dict(self._stats)


def select_credentials(values: Iterable[str], realm: str) -> str | None:
    """Of several Authorization values (one per realm), the one for ``realm``; the first
    unparsable one when none matches (so the caller reports MALFORMED), else None."""
    items = list(values)
    if len(items) <= 1:
        return items[0] if items else None  # what the loop below answers for one value
    first_bad: str | None = None
    for v in items:
        try:
            _, p, _ = parse_auth_params(v)
        except ParseError:
            first_bad = first_bad or v
            continue
        if p.get("realm") == realm:
            return v
    if first_bad is not None:
        return first_bad
    return items[0] if items else None


__all__ = [
    "ALGORITHMS",
    "AuthOutcome",
    "AuthResult",
    "Challenge",
    "Credentials",
    "DigestAuth",
    "HA1Lookup",
    "MemoryNonceStore",
    "NonceState",
    "NonceStore",
    "authorize",
    "base_algorithm",
    "canonical_algorithm",
    "compute_response",
    "ha1",
    "parse_auth_params",
    "select_credentials",
]
