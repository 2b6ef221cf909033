"""TURN credentials: long-term users, the TURN REST API scheme, and stateless nonces.

- Long-term users (RFC 8489 §9.2): the server keeps key = MD5(user:realm:password) (and
  the SHA-256 variant), never the password. A backend implements :class:`UserStore`.
- TURN REST API (draft-uberti-behave-turn-rest, as coturn's ``use-auth-secret``): the
  username is ``<expiry unix time>:<user>`` and the password is
  base64(HMAC-SHA1(shared secret, username)). Several secrets may be valid at once (rotation).
- Nonces are stateless: expiry and an HMAC over (expiry, the client's 5-tuple), so a
  nonce (or a whole captured request) replayed from another transport address, even a
  new port on the same host, or after its lifetime is answered 438 Stale Nonce.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from ..stun import attributes as at
from ..stun import integrity


@dataclass(frozen=True, slots=True)
class UserKeys:
    """The keys a user may authenticate with; ``account`` is what quotas count."""

    account: str
    md5: bytes
    sha256: bytes | None = None
    username: str = ""
    """The USERNAME authenticated (set by the server core once integrity checked)."""

    def key(self, algorithm: int) -> bytes | None:
        if algorithm == at.PasswordAlgorithmCode.SHA256:
            return self.sha256
        return self.md5


class UserStore(Protocol):
    """Long-term credential backend (the SQLite store implements it). A store that also
    has ``lookup_userhash(userhash, realm) -> str | None`` enables RFC 8489 USERHASH."""

    def lookup(self, username: str, realm: str) -> UserKeys | None: ...


class CredentialProvider(Protocol):
    """All keys that may be valid for ``username`` (several REST secrets may apply)."""

    def candidates(self, username: str, realm: str) -> list[UserKeys]: ...

    def username_for_hash(self, userhash: bytes, realm: str) -> str | None: ...


def keys_for_password(account: str, username: str, realm: str, password: str) -> UserKeys:
    return UserKeys(
        account,
        integrity.long_term_key(username, realm, password),
        integrity.long_term_key(username, realm, password, at.PasswordAlgorithmCode.SHA256),
    )


class StaticUsers:
    """In-memory users (tests, ``[turn] users`` in config); keeps only keys."""

    def __init__(self, realm: str, users: dict[str, str] | None = None) -> None:
        self._keys: dict[tuple[str, str], UserKeys] = {}
        for name, password in (users or {}).items():
            self.add(name, realm, password)

    def add(self, username: str, realm: str, password: str) -> None:
        self._keys[(username, realm)] = keys_for_password(username, username, realm, password)

    def lookup(self, username: str, realm: str) -> UserKeys | None:
        return self._keys.get((username, realm))

    def lookup_userhash(self, userhash: bytes, realm: str) -> str | None:
        for (name, r) in self._keys:
            if r == realm and integrity.userhash(name, r) == userhash:
                return name
        return None


def rest_password(secret: str, username: str) -> str:
    """The TURN REST API password: base64(HMAC-SHA1(secret, username))."""
    mac = hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    return base64.b64encode(mac).decode("ascii")


def rest_username(expiry: int, user: str = "") -> str:
    return f"{expiry}:{user}" if user else str(expiry)


def ice_servers(urls: Sequence[str], secret: str, user: str, ttl: int, wall_now: float) -> dict[str, object]:
    """A WebRTC ``RTCConfiguration``-style document with time-limited REST credentials.

    ``{"iceServers": [{"urls": [...stun:...]}, {"urls": [...turn:...], "username": ...,
    "credential": ...}], "ttl": ttl, "expires": unix time}``. STUN URLs need no
    credentials and are listed apart, as browsers accept either way.
    """
    expiry = int(wall_now) + ttl
    username = rest_username(expiry, user)
    stun = [u for u in urls if u.startswith("stun")]
    turn = [u for u in urls if u.startswith("turn")]
    servers: list[dict[str, object]] = []
    if stun:
        servers.append({"urls": stun})
    if turn:
        servers.append(
            {"urls": turn, "username": username, "credential": rest_password(secret, username)}
        )
    return {"iceServers": servers, "ttl": ttl, "expires": expiry}


class RestCredentials:
    """Time-limited credentials derived from shared secrets (several for rotation)."""

    def __init__(self, secrets: Sequence[str], wall_clock: Callable[[], float]) -> None:
        self._secrets = [s for s in secrets if s]
        self._wall = wall_clock

    def candidates(self, username: str, realm: str) -> list[UserKeys]:
        if not self._secrets:
            return []
        stamp, _, user = username.partition(":")
        if not (stamp.isascii() and stamp.isdigit()):  # str.isdigit() also takes '²'
            return []
        if int(stamp) < self._wall():
            return []
        account = user or username
        return [
            keys_for_password(account, username, realm, rest_password(s, username))
            for s in self._secrets
        ]

    def username_for_hash(self, userhash: bytes, realm: str) -> str | None:
        return None  # REST usernames change with every expiry: no anonymity


class Credentials:
    """REST secrets first (when the username looks like one), then the user store."""

    def __init__(self, store: UserStore | None = None, rest: RestCredentials | None = None) -> None:
        self._store = store
        self._rest = rest

    def candidates(self, username: str, realm: str) -> list[UserKeys]:
        out: list[UserKeys] = []
        if self._rest is not None:
            out.extend(self._rest.candidates(username, realm))
        if self._store is not None:
            found = self._store.lookup(username, realm)
            if found is not None:
                out.append(found)
        return out

    @property
    def supports_userhash(self) -> bool:
        return callable(getattr(self._store, "lookup_userhash", None))

    def username_for_hash(self, userhash: bytes, realm: str) -> str | None:
        finder = getattr(self._store, "lookup_userhash", None)
        if finder is None:
            return None
        name = finder(userhash, realm)
        return name if isinstance(name, str) else None


class NonceFactory:
    """Stateless nonces bound to one client flow, valid for ``lifetime`` seconds.

    ``bound_to`` names the flow (the server core passes its 5-tuple), as coturn keeps a
    nonce per session: a request captured on one flow and replayed from another is
    stale there, so it cannot use up its user's quota.
    """

    def __init__(self, secret: bytes, lifetime: float, features: at.SecurityFeatures | None) -> None:
        self._secret = secret
        self.lifetime = lifetime
        self._prefix = (at.NONCE_COOKIE + features.encode()) if features else ""

    def _mac(self, expiry: int, bound_to: str) -> str:
        return hmac.new(self._secret, f"{expiry}|{bound_to}".encode(), hashlib.sha256).hexdigest()[:16]

    def make(self, bound_to: str, now: float) -> str:
        expiry = int(now + self.lifetime)
        return f"{self._prefix}{expiry:x}-{self._mac(expiry, bound_to)}"

    def valid(self, nonce: str, bound_to: str, now: float) -> bool:
        if not nonce.startswith(self._prefix):
            return False
        body = nonce[len(self._prefix) :]
        stamp, _, mac = body.partition("-")
        try:
            expiry = int(stamp, 16)
        except ValueError:
            return False
        if not hmac.compare_digest(mac, self._mac(expiry, bound_to)):
            return False
        return now <= expiry
