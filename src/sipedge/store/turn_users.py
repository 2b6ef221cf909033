"""Long-term TURN users in SQLite: keys only (MD5 and SHA-256 of user:realm:password).

Implements :class:`sipedge.turn.auth.UserStore`. The password is never stored.
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

from ..errors import StorageError
from ..stun import integrity
from ..turn.auth import UserKeys, keys_for_password

_SCHEMA = """
CREATE TABLE IF NOT EXISTS turn_users (
    username   TEXT NOT NULL,
    realm      TEXT NOT NULL,
    key_md5    BLOB NOT NULL,
    key_sha256 BLOB NOT NULL,
    userhash   BLOB NOT NULL,
    PRIMARY KEY (username, realm)
);
CREATE INDEX IF NOT EXISTS turn_users_userhash ON turn_users (userhash);
"""


class TurnUserStore:
    """A SQLite table of TURN users; safe to call from one event loop thread."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            if str(path) != ":memory:":
                self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(str(path), check_same_thread=False)
            self._db.executescript(_SCHEMA)
        except (sqlite3.Error, OSError) as exc:
            raise StorageError(f"cannot open TURN user database {path}: {exc}") from exc
        self._lock = threading.Lock()

    def close(self) -> None:
        self._db.close()

    def add(self, username: str, realm: str, password: str) -> None:
        """Add or replace a user (the password only feeds the key derivation)."""
        keys = keys_for_password(username, username, realm, password)
        uh = integrity.userhash(username, realm)
        try:
            with self._lock, self._db:
                self._db.execute(
                    "INSERT OR REPLACE INTO turn_users VALUES (?, ?, ?, ?, ?)",
                    (username, realm, keys.md5, keys.sha256, uh),
                )
        except sqlite3.Error as exc:
            raise StorageError(f"cannot add TURN user {username!r}: {exc}") from exc

    def delete(self, username: str, realm: str) -> bool:
        try:
            with self._lock, self._db:
                cur = self._db.execute(
                    "DELETE FROM turn_users WHERE username = ? AND realm = ?", (username, realm)
                )
        except sqlite3.Error as exc:
            raise StorageError(f"cannot delete TURN user {username!r}: {exc}") from exc
        return cur.rowcount > 0

    def list(self, realm: str | None = None) -> list[tuple[str, str]]:
        q = "SELECT username, realm FROM turn_users"
        args: tuple[str, ...] = ()
        if realm is not None:
            q += " WHERE realm = ?"
            args = (realm,)
        with self._lock:
            return [(str(u), str(r)) for u, r in self._db.execute(q + " ORDER BY realm, username", args)]

    def lookup(self, username: str, realm: str) -> UserKeys | None:
        try:
            with self._lock:
                row = self._db.execute(
                    "SELECT key_md5, key_sha256 FROM turn_users WHERE username = ? AND realm = ?",
                    (username, realm),
                ).fetchone()
        except sqlite3.Error as exc:
            raise StorageError(f"TURN user lookup failed: {exc}") from exc
        if row is None:
            return None
        return UserKeys(username, bytes(row[0]), bytes(row[1]))

    def lookup_userhash(self, userhash: bytes, realm: str) -> str | None:
        """The username whose USERHASH (RFC 8489 §14.4) this is, if any."""
        with self._lock:
            row = self._db.execute(
                "SELECT username FROM turn_users WHERE userhash = ? AND realm = ?", (userhash, realm)
            ).fetchone()
        return None if row is None else str(row[0])
