"""PostgreSQL backends: the database (a psycopg 3 connection pool) and the location service.

Why psycopg 3's synchronous API: the store contract is synchronous because the sans-I/O
proxy core calls ``lookup``/``put`` inline, exactly as it calls SQLite; psycopg 3 binds
parameters on the server, has a maintained pool (``psycopg_pool``) and binary wheels.
asyncpg would force an asynchronous store contract on the core.

:class:`PgDatabase` speaks the same :class:`~sipedge.store.schema.Database` contract as
SQLite: every ``transaction()`` is one PostgreSQL transaction on a pooled connection,
statements are written with ``?`` placeholders (translated once per statement), and every
failure is a :class:`~sipedge.errors.StorageError`.

When the server goes away: the statement under way fails (500 for its request, no
half-written row: its transaction rolls back), one warning is logged, and the database is
marked down. While it is down requests fail at once instead of waiting on the network;
at most once per backoff interval (0.1 s doubling to 2 s) one request tries again, and
the pool reconnects in the background; the first success logs that the database is back.

:class:`PgLocationStore` keeps no per-node cache (Kamailio usrloc ``db_mode=3``): every
lookup reads the table and every change is one transaction, so several sipedge nodes
sharing one database see each other's registrations at once.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
import psycopg_pool

from ..errors import StorageError
from ..proxy.location import Binding, order_bindings
from . import schema

log = logging.getLogger(__name__)
# The pool logs every failed reconnection attempt; our own two lines say when the
# database goes away and when it is back.
logging.getLogger("psycopg.pool").setLevel(logging.ERROR)

BACKOFF_FIRST = 0.1
BACKOFF_MAX = 2.0
MIGRATION_LOCK = 0x5195ED6E  # pg_advisory_xact_lock key: one node migrates at a time


def redact(url: str) -> str:
    """``url`` without its password (for messages and logs)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "postgresql://?"
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}"))


_QMARK_CACHE: dict[str, str] = {}


def _pg_sql(sql: str) -> str:
    """``?`` placeholders as psycopg's ``%s`` (sipedge's statements hold no literal ``?``)."""
    out = _QMARK_CACHE.get(sql)
    if out is None:
        out = _QMARK_CACHE[sql] = sql.replace("%", "%%").replace("?", "%s")
    return out


class _PgConnection:
    """A pooled connection as :class:`~sipedge.store.schema.Connection`."""

    __slots__ = ("_conn",)

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self._conn = conn

    def execute(self, sql: str, parameters: Any = (), /) -> psycopg.Cursor[Any]:
        return self._conn.execute(_pg_sql(sql), parameters)

    def executemany(self, sql: str, parameters: Any, /) -> None:
        with self._conn.cursor() as cur:
            cur.executemany(_pg_sql(sql), parameters)


class PgDatabase:
    """A pool of connections to one PostgreSQL database, its schema migrated at open
    unless ``migrate`` is False."""

    dialect = "postgresql"

    def __init__(self, url: str, *, pool_size: int = 4, connect_timeout: float = 5.0,
                 statement_timeout: float = 2.0, migrate: bool = True) -> None:
        self.url = url
        self.name = redact(url)
        self.connect_timeout = connect_timeout
        self._lock = threading.Lock()
        self._down_since: float | None = None
        self._retry_at = 0.0
        self._backoff = BACKOFF_FIRST
        self.counters = {"db_errors": 0, "db_unavailable": 0, "db_reconnects": 0}
        libpq_timeout = max(2, math.ceil(connect_timeout))  # libpq's least useful value is 2 s
        settings = f"-c statement_timeout={int(statement_timeout * 1000)}"
        try:
            self._pool: psycopg_pool.ConnectionPool[psycopg.Connection[Any]] = psycopg_pool.ConnectionPool(
                url, min_size=1, max_size=pool_size, open=False, timeout=connect_timeout, name="sipedge",
                reconnect_timeout=max(5.0, connect_timeout),
                kwargs={"autocommit": True, "connect_timeout": libpq_timeout, "options": settings, "application_name": "sipedge",
                        "tcp_user_timeout": int(connect_timeout * 1000), "keepalives_idle": 10,
                        "keepalives_interval": 5, "keepalives_count": 2},
            )
            self._pool.open(wait=True, timeout=connect_timeout)
        except (psycopg.Error, psycopg_pool.PoolTimeout) as exc:
            self._close_quietly()
            raise StorageError(f"cannot connect to database {self.name}: {_reason(exc)}") from exc
        try:
            self.migrations_applied = self.migrate() if migrate else []
        except StorageError:
            self._close_quietly()
            raise

    # -- schema ---------------------------------------------------------------------
    def migrate(self) -> list[int]:
        """Bring the schema up to date (several nodes starting at once take turns)."""
        with self.transaction() as c:
            c.execute("SELECT pg_advisory_xact_lock(?)", (MIGRATION_LOCK,))
            return schema.migrate(c, self.dialect, self.name)

    @property
    def schema_version(self) -> int:
        with self.transaction() as c:
            c.execute(schema.SCHEMA_VERSION_TABLE.format(real="DOUBLE PRECISION"))
            return schema.current_version(c)

    # -- access -----------------------------------------------------------------------
    @contextmanager
    def transaction(self) -> Iterator[schema.Connection]:
        """One transaction on a pooled connection: commits on success, rolls back on any
        error; psycopg errors and an unreachable server become StorageError."""
        with self._connection(transaction=True) as c:
            yield c

    @contextmanager
    def read(self) -> Iterator[schema.Connection]:
        """Statements that change nothing, each on its own (autocommit: one round trip
        per lookup, no BEGIN/COMMIT)."""
        with self._connection(transaction=False) as c:
            yield c

    @contextmanager
    def _connection(self, *, transaction: bool) -> Iterator[schema.Connection]:
        self._gate()
        conn: psycopg.Connection[Any] | None = None
        try:
            with self._pool.connection(timeout=self._checkout_timeout()) as conn:
                if transaction:
                    with conn.transaction():
                        yield _PgConnection(conn)
                else:
                    yield _PgConnection(conn)
        except psycopg_pool.PoolTimeout as exc:
            self._failed(f"no connection within {self.connect_timeout:g} s")
            raise StorageError(f"database {self.name} unavailable: no connection") from exc
        except psycopg.Error as exc:
            self.counters["db_errors"] += 1
            if conn is None or conn.broken or conn.closed:
                self._failed(_reason(exc))
                raise StorageError(f"database {self.name} unavailable: {_reason(exc)}") from exc
            raise StorageError(f"database {self.name}: {_reason(exc)}") from exc
        self._succeeded()

    def _checkout_timeout(self) -> float:
        """While down, a retry only looks for a connection the pool has made meanwhile
        (asking starts the pool reconnecting): the event loop never waits on the network."""
        return self.connect_timeout if self._down_since is None else min(0.05, self.connect_timeout)

    def _gate(self) -> None:
        with self._lock:
            if self._down_since is None:
                return
            now = time.monotonic()
            if now < self._retry_at:
                self.counters["db_unavailable"] += 1
                raise StorageError(
                    f"database {self.name} unavailable for {now - self._down_since:.1f} s (reconnecting)"
                )
            self._retry_at = now + self._backoff  # this caller tries; others wait for it
            self._backoff = min(self._backoff * 2, BACKOFF_MAX)

    def _failed(self, reason: str) -> None:
        with self._lock:
            first = self._down_since is None
            if first:
                self._down_since = time.monotonic()
                self._retry_at = self._down_since + self._backoff
        if first:
            log.warning("x database %s unavailable (%s): requests that need it fail until it is back",
                        self.name, reason)
            # the pool's idle connections died with the server: replace them in the background
            threading.Thread(target=self._check_pool, name="sipedge-db-check", daemon=True).start()

    def _check_pool(self) -> None:
        try:
            self._pool.check()
        except Exception:  # pragma: no cover - check() handles its own connection errors
            log.debug("pool check failed", exc_info=True)

    def _succeeded(self) -> None:
        if self._down_since is None:
            return
        with self._lock:
            since, self._down_since = self._down_since, None
            self._backoff = BACKOFF_FIRST
        if since is not None:
            self.counters["db_reconnects"] += 1
            log.warning("+ database %s is back after %.1f s", self.name, time.monotonic() - since)

    def stats(self) -> dict[str, int | float]:
        return {**self.counters, "db_down": int(self._down_since is not None)}

    def _close_quietly(self) -> None:
        try:
            self._pool.close(timeout=1.0)
        except Exception:  # pragma: no cover
            log.debug("closing the pool failed", exc_info=True)

    def close(self) -> None:
        self._close_quietly()

    def __enter__(self) -> PgDatabase:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


_COLUMNS = (
    "aor, contact, expires_at, q, call_id, cseq, received, path, instance, reg_id, flow, "
    "user_agent, socket, seq"
)
_UPSERT = (
    "INSERT INTO location (aor, contact, expires_at, q, call_id, cseq, received, path, instance, reg_id, "
    "flow, user_agent, socket, seq) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?, nextval('location_seq')) "
    "ON CONFLICT (aor, contact) DO UPDATE SET expires_at = EXCLUDED.expires_at, q = EXCLUDED.q, "
    "call_id = EXCLUDED.call_id, cseq = EXCLUDED.cseq, received = EXCLUDED.received, path = EXCLUDED.path, "
    "instance = EXCLUDED.instance, reg_id = EXCLUDED.reg_id, flow = EXCLUDED.flow, "
    "user_agent = EXCLUDED.user_agent, socket = EXCLUDED.socket, seq = EXCLUDED.seq"
)


def _b(s: str) -> bytes:
    return s.encode("utf-8", "surrogateescape")


def _s(v: object) -> str:
    return bytes(v).decode("utf-8", "surrogateescape") if isinstance(v, bytes | memoryview) else str(v)


def _binding(row: tuple[Any, ...]) -> tuple[int, Binding]:
    (aor, contact, expires_at, q, call_id, cseq, received, path, instance, reg_id, flow,
     user_agent, socket, seq) = row
    try:
        path_list = json.loads(path)
    except ValueError:
        path_list = []
    if not isinstance(path_list, list):
        path_list = []
    return int(seq), Binding(
        aor=_s(aor), contact=_s(contact), expires_at=float(expires_at), q=float(q), call_id=_s(call_id),
        cseq=int(cseq), received=_s(received), path=tuple(str(p) for p in path_list), instance=_s(instance),
        reg_id=int(reg_id), flow=_s(flow), user_agent=_s(user_agent), socket=_s(socket),
    )


class PgLocationStore:
    """:class:`~sipedge.proxy.location.LocationStore` read and written in PostgreSQL.

    ``put`` is one transaction: the bindings it replaces by (+sip.instance, reg-id) are
    deleted and its own row upserted, ordered newest by a database sequence that every
    node shares. There is no write-back mode (a node's memory is no shared state).
    """

    write_back = False

    def __init__(self, db: PgDatabase) -> None:
        self.db = db

    def flush(self) -> int:
        return 0

    def reload(self) -> None:
        """Nothing to reload: every lookup reads the database."""

    def lookup(self, aor: str, now: float) -> list[Binding]:
        with self.db.read() as c:
            rows = c.execute(f"SELECT {_COLUMNS} FROM location WHERE aor = ? AND expires_at > ?",
                             (_b(aor), now)).fetchall()
        return order_bindings(_binding(r) for r in rows)

    def put(self, binding: Binding) -> None:
        b = binding
        row = (_b(b.aor), _b(b.contact), b.expires_at, b.q, _b(b.call_id), b.cseq, _b(b.received),
               json.dumps(list(b.path)), _b(b.instance), b.reg_id, _b(b.flow), _b(b.user_agent), _b(b.socket))
        with self.db.transaction() as c:
            if b.instance:
                c.execute("DELETE FROM location WHERE aor = ? AND contact <> ? AND instance = ? AND reg_id = ?",
                          (row[0], row[1], row[8], b.reg_id))
            c.execute(_UPSERT, row)

    def remove(self, aor: str, contact: str) -> None:
        with self.db.transaction() as c:
            c.execute("DELETE FROM location WHERE aor = ? AND contact = ?", (_b(aor), _b(contact)))

    def remove_aor(self, aor: str) -> None:
        with self.db.transaction() as c:
            c.execute("DELETE FROM location WHERE aor = ?", (_b(aor),))

    def purge_expired(self, now: float) -> int:
        with self.db.transaction() as c:
            return c.execute("DELETE FROM location WHERE expires_at <= ?", (now,)).rowcount

    def bindings(self, now: float) -> list[Binding]:
        with self.db.read() as c:
            rows = c.execute(f"SELECT {_COLUMNS} FROM location WHERE expires_at > ?", (now,)).fetchall()
        by_aor: dict[str, list[tuple[int, Binding]]] = {}
        for r in rows:
            sb = _binding(r)
            by_aor.setdefault(sb[1].aor, []).append(sb)
        return [b for aor in sorted(by_aor) for b in order_bindings(by_aor[aor])]

    def count(self, aor: str, now: float) -> int:
        with self.db.read() as c:
            row = c.execute("SELECT COUNT(*) FROM location WHERE aor = ? AND expires_at > ?",
                            (_b(aor), now)).fetchone()
        return int(row[0])

    def on_flow(self, flow: str) -> list[Binding]:
        if not flow:
            return []
        with self.db.read() as c:
            rows = c.execute(f"SELECT {_COLUMNS} FROM location WHERE flow = ?", (_b(flow),)).fetchall()
        return [_binding(r)[1] for r in rows]

    def stats(self) -> dict[str, int | float]:
        out = dict(self.db.stats())
        try:
            with self.db.read() as c:
                aors, n = c.execute("SELECT COUNT(DISTINCT aor), COUNT(*) FROM location").fetchone()
        except StorageError:
            return out
        return {**out, "location_aors": int(aors), "location_bindings": int(n)}


__all__ = ["PgDatabase", "PgLocationStore", "redact"]
