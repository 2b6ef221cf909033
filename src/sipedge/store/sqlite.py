"""SQLite backends: the location service and the subscriber table in one file.

:class:`SqliteDatabase` opens (and on first use creates) the file in WAL mode and brings
its schema up to date through numbered migrations recorded in ``schema_version``.
:class:`SqliteLocationStore` answers lookups from an in-memory copy (no disk I/O on the
call path), loaded at open so bindings survive a restart, and writes through to the file;
or, in write-back mode, commits the changes of a whole interval in one transaction.
:class:`SqliteSubscriberStore` keeps HA1 hashes only.

A write-through write is one transaction: it commits whole or not at all, and the cache
changes only after the commit. Any sqlite failure surfaces as
:class:`~sipedge.errors.StorageError` naming the file.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..errors import StorageError
from ..proxy.location import (
    Binding,
    DuplicateSubscriber,
    FlowIndex,
    order_bindings,
    subscriber_hashes,
)
from . import schema
from .schema import MIGRATIONS, SCHEMA_VERSION, Database

_HA1_COLUMNS = {"MD5": "ha1_md5", "SHA-256": "ha1_sha256"}


class SqliteDatabase:
    """One SQLite file, opened in WAL mode with its schema migrated.

    Safe to share between threads (one connection behind a lock); cheap enough to call
    from the event loop because WAL with ``synchronous=NORMAL`` does not fsync per commit.
    The schema is always brought up to date at open (one process owns an embedded file).
    """

    dialect = "sqlite"

    def __init__(self, path: str | Path, *, timeout: float = 5.0, migrate: bool = True) -> None:
        self.path = Path(path)
        self.name = str(self.path)
        self._lock = threading.RLock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(f"cannot create directory {self.path.parent}: {exc.strerror}") from exc
        try:
            self._conn = sqlite3.connect(
                str(self.path), timeout=timeout, isolation_level=None, check_same_thread=False
            )
        except sqlite3.Error as exc:
            raise StorageError(f"cannot open database {self.path}: {exc}") from exc
        try:
            self._conn.execute("PRAGMA journal_mode=WAL").fetchone()
            self._conn.execute("PRAGMA synchronous=NORMAL")
            self._conn.execute("PRAGMA foreign_keys=ON")
            self.migrations_applied = self.migrate() if migrate else []
        except sqlite3.Error as exc:
            self._conn.close()
            raise StorageError(
                f"cannot use database {self.path}: {exc} (not a sipedge SQLite file, or damaged; "
                "move it away to start with an empty one)"
            ) from exc
        except StorageError:
            self._conn.close()
            raise

    # -- schema ------------------------------------------------------------------
    def migrate(self) -> list[int]:
        """Bring the schema up to date in one transaction; returns the versions applied
        (``sipedge serve`` and the CLI open a file migrated unless told not to)."""
        with self.transaction() as c:
            return schema.migrate(c, self.dialect, self.name)

    @property
    def schema_version(self) -> int:
        with self.read() as c:
            if c.execute("SELECT 1 FROM sqlite_master WHERE name = 'schema_version'").fetchone() is None:
                return 0
            return schema.current_version(c)

    # -- access ----------------------------------------------------------------------
    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """A write transaction: commits on success, rolls back on any error; sqlite
        errors become StorageError."""
        with self._lock:
            c = self._conn
            try:
                c.execute("BEGIN IMMEDIATE")
                try:
                    yield c
                    c.execute("COMMIT")
                except BaseException:
                    if c.in_transaction:
                        c.execute("ROLLBACK")
                    raise
            except sqlite3.Error as exc:
                raise StorageError(f"database {self.path}: {exc}") from exc

    @contextmanager
    def read(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            try:
                yield self._conn
            except sqlite3.Error as exc:
                raise StorageError(f"database {self.path}: {exc}") from exc

    def close(self) -> None:
        with self._lock:
            try:
                self._conn.close()
            except sqlite3.Error as exc:  # pragma: no cover - close rarely fails
                raise StorageError(f"database {self.path}: {exc}") from exc

    def __enter__(self) -> SqliteDatabase:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_COLUMNS = (
    "aor, contact, expires_at, q, call_id, cseq, received, path, instance, reg_id, flow, "
    "user_agent, socket, seq"
)


def _db_text(s: str) -> str | bytes:
    """Text from the wire as SQLite can take it. The SIP parser keeps bytes that are not
    UTF-8 (an old phone's Latin-1 User-Agent) as surrogate escapes, which sqlite3 refuses
    to encode; such a value is stored as its original bytes and read back by _py_text
    to the same string."""
    if s.isascii():
        return s
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        return s.encode("utf-8", "surrogateescape")
    return s


def _storable(s: str) -> bool:
    """Can ``s`` be a TEXT value on both engines (UTF-8, no NUL)?"""
    return "\x00" not in s and not isinstance(_db_text(s), bytes)


def _py_text(v: object) -> str:
    return v.decode("utf-8", "surrogateescape") if isinstance(v, bytes) else str(v)


def _row(b: Binding, seq: int) -> tuple[object, ...]:
    t = _db_text
    return (
        t(b.aor), t(b.contact), b.expires_at, b.q, t(b.call_id), b.cseq, t(b.received), json.dumps(list(b.path)),
        t(b.instance), b.reg_id, t(b.flow), t(b.user_agent), t(b.socket), seq,
    )


def _write_row(c: sqlite3.Connection, b: Binding, seq: int) -> None:
    c.execute(f"INSERT OR REPLACE INTO location ({_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)", _row(b, seq))


def _delete_row(c: sqlite3.Connection, aor: str, contact: str) -> None:
    c.execute("DELETE FROM location WHERE aor = ? AND contact = ?", (_db_text(aor), _db_text(contact)))


def _binding(row: tuple[Any, ...]) -> tuple[int, Binding]:
    (aor, contact, expires_at, q, call_id, cseq, received, path, instance, reg_id, flow,
     user_agent, socket, seq) = row
    try:
        path_list = json.loads(_py_text(path))
    except ValueError:
        path_list = []
    if not isinstance(path_list, list):
        path_list = []
    t = _py_text
    return int(seq), Binding(
        aor=t(aor), contact=t(contact), expires_at=float(expires_at), q=float(q),
        call_id=t(call_id), cseq=int(cseq), received=t(received),
        path=tuple(str(p) for p in path_list), instance=t(instance), reg_id=int(reg_id),
        flow=t(flow), user_agent=t(user_agent), socket=t(socket),
    )


class SqliteLocationStore:
    """:class:`~sipedge.proxy.location.LocationStore` on SQLite with an in-memory cache.

    The cache is loaded at construction; writes by other processes after that are not
    seen until :meth:`reload` (one sipedge process owns a file's location table).

    Write-through (default, usrloc ``db_mode=1``): every change is committed before it
    shows in the cache, so a 200 OK means the binding is on disk. Write-back
    (``write_back=True``, usrloc ``db_mode=2``): changes show at once and wait in
    memory, last state per contact, until :meth:`flush` commits them all in one
    transaction; the owner calls it on a timer and at shutdown, and a crash loses what
    was not flushed. A failed flush keeps the changes for the next one.
    """

    def __init__(self, db: SqliteDatabase, *, write_back: bool = False) -> None:
        self.db = db
        self.write_back = write_back
        self._by_aor: dict[str, dict[str, tuple[int, Binding]]] = {}
        self._flows = FlowIndex()
        self._seq = 0
        # write-back: (aor, contact) -> its row to write, or None to delete it
        self._unflushed: dict[tuple[str, str], tuple[int, Binding] | None] = {}
        self._stats = {"location_db_writes": 0, "location_db_errors": 0}
        self.reload()

    def flush(self) -> int:
        """Commit the write-back changes in one transaction; returns how many rows it
        wrote or deleted (0 in write-through mode: nothing waits)."""
        if not self._unflushed:
            return 0
        changes, self._unflushed = self._unflushed, {}
        try:
            with self._write() as c:
                for (aor, contact), row in changes.items():
                    if row is None:
                        _delete_row(c, aor, contact)
                    else:
                        _write_row(c, row[1], row[0])
        except Exception as exc:
            for key, row in changes.items():  # newer changes made meanwhile win
                self._unflushed.setdefault(key, row)
            if isinstance(exc, StorageError):
                raise
            raise StorageError(f"database {self.db.path}: location write-back failed: {exc!r}") from exc
        return len(changes)

    def reload(self) -> None:
        self.flush()
        with self.db.read() as c:
            rows = c.execute(f"SELECT {_COLUMNS} FROM location").fetchall()
        by_aor: dict[str, dict[str, tuple[int, Binding]]] = {}
        seq = 0
        self._flows.clear()
        for row in rows:
            s, b = _binding(row)
            by_aor.setdefault(b.aor, {})[b.contact] = (s, b)
            self._flows.add(b)
            seq = max(seq, s)
        self._by_aor = by_aor
        self._seq = seq

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        try:
            with self.db.transaction() as c:
                yield c
        except StorageError:
            self._stats["location_db_errors"] += 1
            raise
        self._stats["location_db_writes"] += 1

    # -- LocationStore -------------------------------------------------------------
    def lookup(self, aor: str, now: float) -> list[Binding]:
        entries = self._by_aor.get(aor)
        if not entries:
            return []
        return order_bindings(sb for sb in entries.values() if sb[1].expires_at > now)

    def put(self, binding: Binding) -> None:
        entries = self._by_aor.get(binding.aor, {})
        # the same contact is overwritten by INSERT OR REPLACE; others it replaces go
        replaced = [c for c, (_, b) in entries.items() if binding.replaces(b) and c != binding.contact]
        seq = self._seq + 1
        if self.write_back:
            for contact in replaced:
                self._unflushed[(binding.aor, contact)] = None
            self._unflushed[(binding.aor, binding.contact)] = (seq, binding)
        else:
            with self._write() as c:
                for contact in replaced:
                    _delete_row(c, binding.aor, contact)
                _write_row(c, binding, seq)
        self._seq = seq
        entries = self._by_aor.setdefault(binding.aor, {})
        for contact in [*replaced, binding.contact]:
            old = entries.pop(contact, None)
            if old is not None:
                self._flows.discard(old[1])
        entries[binding.contact] = (seq, binding)
        self._flows.add(binding)

    def remove(self, aor: str, contact: str) -> None:
        if self.write_back:
            self._unflushed[(aor, contact)] = None
        else:
            with self._write() as c:
                _delete_row(c, aor, contact)
        entries = self._by_aor.get(aor)
        if entries is not None:
            gone = entries.pop(contact, None)
            if gone is not None:
                self._flows.discard(gone[1])
            if not entries:
                del self._by_aor[aor]

    def remove_aor(self, aor: str) -> None:
        if self.write_back:
            # the cache holds every row of the file (and every change since the flush)
            for contact in self._by_aor.get(aor, {}):
                self._unflushed[(aor, contact)] = None
        else:
            with self._write() as c:
                c.execute("DELETE FROM location WHERE aor = ?", (_db_text(aor),))
        for _, b in self._by_aor.pop(aor, {}).values():
            self._flows.discard(b)

    def purge_expired(self, now: float) -> int:
        if not self.write_back:
            with self._write() as c:
                c.execute("DELETE FROM location WHERE expires_at <= ?", (now,))
        n = 0
        for aor in list(self._by_aor):
            entries = self._by_aor[aor]
            for contact in [k for k, (_, b) in entries.items() if b.expires_at <= now]:
                self._flows.discard(entries.pop(contact)[1])
                if self.write_back:
                    self._unflushed[(aor, contact)] = None
                n += 1
            if not entries:
                del self._by_aor[aor]
        return n

    def bindings(self, now: float) -> list[Binding]:
        out: list[Binding] = []
        for aor in sorted(self._by_aor):
            out.extend(self.lookup(aor, now))
        return out

    def count(self, aor: str, now: float) -> int:
        entries = self._by_aor.get(aor)
        if not entries:
            return 0
        return sum(1 for _, b in entries.values() if b.expires_at > now)

    def on_flow(self, flow: str) -> list[Binding]:
        return self._flows.find(flow, self._by_aor)

    def stats(self) -> dict[str, int | float]:
        return {
            "location_aors": len(self._by_aor),
            "location_bindings": sum(len(e) for e in self._by_aor.values()),
            "location_db_unflushed": len(self._unflushed),
            **self._stats,
        }


class SqliteSubscriberStore:
    """:class:`~sipedge.proxy.location.SubscriberStore` on either engine's database (HA1
    hashes only; its SQL is the same on SQLite and PostgreSQL).

    Queried on every lookup, so users added by ``sipedge user add`` while the server runs
    are seen at once.
    """

    def __init__(self, db: Database) -> None:
        self.db = db

    def ha1(self, username: str, realm: str, algorithm: str) -> str | None:
        column = _HA1_COLUMNS.get(algorithm)
        if column is None or not _storable(username) or not _storable(realm):
            return None  # not UTF-8, or a NUL: no subscriber has that name
        with self.db.read() as c:
            row = c.execute(
                f"SELECT {column} FROM subscriber WHERE username = ? AND domain = ?",
                (username, realm.lower()),
            ).fetchone()
        return None if row is None else str(row[0])

    def add(self, username: str, domain: str, password: str) -> None:
        d = domain.lower()
        h = subscriber_hashes(username, d, password)
        with self.db.transaction() as c:
            cur = c.execute(
                "INSERT INTO subscriber (username, domain, ha1_md5, ha1_sha256, created_at) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT (username, domain) DO NOTHING",
                (username, d, h["MD5"], h["SHA-256"], time.time()),
            )
            if cur.rowcount == 0:  # (one statement: two nodes adding at once cannot both win)
                raise DuplicateSubscriber(f"user {username}@{d} already exists")

    def delete(self, username: str, domain: str) -> bool:
        with self.db.transaction() as c:
            cur = c.execute(
                "DELETE FROM subscriber WHERE username = ? AND domain = ?", (username, domain.lower())
            )
            return cur.rowcount > 0

    def set_password(self, username: str, domain: str, password: str) -> bool:
        d = domain.lower()
        h = subscriber_hashes(username, d, password)
        with self.db.transaction() as c:
            cur = c.execute(
                "UPDATE subscriber SET ha1_md5 = ?, ha1_sha256 = ? WHERE username = ? AND domain = ?",
                (h["MD5"], h["SHA-256"], username, d),
            )
            return cur.rowcount > 0

    def list(self, domain: str | None = None) -> list[tuple[str, str]]:
        with self.db.read() as c:
            if domain is None:
                rows = c.execute("SELECT username, domain FROM subscriber").fetchall()
            else:
                rows = c.execute(
                    "SELECT username, domain FROM subscriber WHERE domain = ?", (domain.lower(),)
                ).fetchall()
        return sorted(((str(u), str(d)) for u, d in rows), key=lambda ud: (ud[1], ud[0]))

    def exists(self, username: str, domain: str) -> bool:
        with self.db.read() as c:
            row = c.execute(
                "SELECT 1 FROM subscriber WHERE username = ? AND domain = ?", (username, domain.lower())
            ).fetchone()
        return row is not None


__all__ = [
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "SqliteDatabase",
    "SqliteLocationStore",
    "SqliteSubscriberStore",
]
