"""Long-term TURN users in the database: keys only (MD5 and SHA-256 of user:realm:password).

Implements :class:`sipedge.turn.auth.UserStore` on a database of either engine (table
``turn_users``, schema version 2); given a path instead, it opens that SQLite file
(``[turn] users_db``) and closes it with itself. The password is never stored.
"""

from __future__ import annotations

from pathlib import Path

from ..stun import integrity
from ..turn.auth import UserKeys, keys_for_password
from .schema import Database


class TurnUserStore:
    """The ``turn_users`` table; safe to call from one event loop thread."""

    def __init__(self, db: Database | str | Path, *, owns: bool = False) -> None:
        """``owns``: :meth:`close` closes ``db`` (always so for a path)."""
        if isinstance(db, str | Path):
            from .sqlite import SqliteDatabase

            self.db: Database = SqliteDatabase(db)
            self._owned = True
        else:
            self.db, self._owned = db, owns

    def close(self) -> None:
        if self._owned:
            self.db.close()

    def add(self, username: str, realm: str, password: str) -> None:
        """Add or replace a user (the password only feeds the key derivation)."""
        keys = keys_for_password(username, username, realm, password)
        uh = integrity.userhash(username, realm)
        with self.db.transaction() as c:
            c.execute(
                "INSERT INTO turn_users (username, realm, key_md5, key_sha256, userhash) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT (username, realm) DO UPDATE SET key_md5 = excluded.key_md5, "
                "key_sha256 = excluded.key_sha256, userhash = excluded.userhash",
                (username, realm, keys.md5, keys.sha256, uh),
            )

    def delete(self, username: str, realm: str) -> bool:
        with self.db.transaction() as c:
            cur = c.execute("DELETE FROM turn_users WHERE username = ? AND realm = ?", (username, realm))
            return cur.rowcount > 0

    def list(self, realm: str | None = None) -> list[tuple[str, str]]:
        q = "SELECT username, realm FROM turn_users"
        args: tuple[str, ...] = ()
        if realm is not None:
            q += " WHERE realm = ?"
            args = (realm,)
        with self.db.read() as c:
            rows = c.execute(q + " ORDER BY realm, username", args).fetchall()
        return [(str(u), str(r)) for u, r in rows]

    def lookup(self, username: str, realm: str) -> UserKeys | None:
        if "\x00" in username or "\x00" in realm:
            return None  # no such user (and no TEXT value may hold a NUL)
        with self.db.read() as c:
            row = c.execute(
                "SELECT key_md5, key_sha256 FROM turn_users WHERE username = ? AND realm = ?", (username, realm)
            ).fetchone()
        if row is None:
            return None
        return UserKeys(username, bytes(row[0]), bytes(row[1]))

    def lookup_userhash(self, userhash: bytes, realm: str) -> str | None:
        """The username whose USERHASH (RFC 8489 §14.4) this is, if any."""
        if "\x00" in realm:
            return None
        with self.db.read() as c:
            row = c.execute(
                "SELECT username FROM turn_users WHERE userhash = ? AND realm = ?", (userhash, realm)
            ).fetchone()
        return None if row is None else str(row[0])
