"""``sipedge db export`` / ``db import``: every table of an installation as JSON lines.

The file starts with a header line ``{"sipedge_export": 1, "schema_version": N,
"dialect": ...}``, then one line per row, ``{"table": T, "row": {column: value}}``, in
the order of :data:`~sipedge.store.schema.TABLES`. Bytes (TURN keys, location text that
is not UTF-8) are written as ``{"$bytes": base64}``. The same file imports into either
engine: the location row's text is stored as each engine keeps it (SQLite ``TEXT``,
PostgreSQL ``BYTEA``), so an installation moves from SQLite to PostgreSQL (or back)
without losing a row or changing a byte.

An import is one transaction into a database at this sipedge's schema version whose
tables are all empty: it applies whole or not at all, and it never merges. A line that
is not what an export writes (unknown table or column, bad JSON) stops it, naming the
line.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterable, Iterator
from typing import Any, TextIO

from ..errors import StorageError
from .schema import SCHEMA_VERSION, TABLES, Connection, Database

FORMAT = 1
_LOCATION_TEXT = frozenset(
    ("aor", "contact", "call_id", "received", "instance", "flow", "user_agent", "socket")
)


def _encode(value: Any) -> Any:
    if isinstance(value, memoryview):
        value = bytes(value)
    if isinstance(value, bytes):
        return {"$bytes": base64.b64encode(value).decode("ascii")}
    return value


def _decode(value: Any, where: str) -> Any:
    if isinstance(value, dict):
        data = value.get("$bytes")
        if len(value) != 1 or not isinstance(data, str):
            raise StorageError(f"{where}: a value that is an object must be {{\"$bytes\": BASE64}}")
        try:
            return base64.b64decode(data, validate=True)
        except binascii.Error:
            raise StorageError(f"{where}: $bytes is not base64") from None
    if isinstance(value, list):
        raise StorageError(f"{where}: a list is no column value")
    return value


def _location_text(value: Any, dialect: str) -> Any:
    """A location text column as ``dialect`` keeps it (see store.schema)."""
    if dialect == "postgresql":
        return value.encode("utf-8", "surrogateescape") if isinstance(value, str) else value
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return value  # SQLite keeps bytes that are not UTF-8 as they came
    return value


def _exported_text(value: Any) -> Any:
    if isinstance(value, memoryview):
        value = bytes(value)
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return value
    return value


def _columns(c: Connection, table: str) -> list[str]:
    cur = c.execute(f"SELECT * FROM {table} WHERE 1 = 0")
    return [str(d[0]) for d in cur.description]


def _export(db: Database) -> Iterator[tuple[str, str]]:
    """(table or "" for the header, line) of the export of ``db``, read in one
    transaction: a consistent copy."""
    version = _version(db)
    with db.transaction() as c:
        if db.dialect == "postgresql":  # one snapshot for every table
            c.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        yield "", json.dumps({"sipedge_export": FORMAT, "schema_version": version, "dialect": db.dialect})
        for table in TABLES:
            names = _columns(c, table)
            quoted = ", ".join(f'"{n}"' for n in names)
            for row in c.execute(f"SELECT {quoted} FROM {table}").fetchall():
                values = {}
                for name, value in zip(names, row, strict=True):
                    if table == "location" and name in _LOCATION_TEXT:
                        value = _exported_text(value)
                    values[name] = _encode(value)
                yield table, json.dumps({"table": table, "row": values}, sort_keys=True)


def _version(db: Database) -> int:
    version = db.schema_version
    if version != SCHEMA_VERSION:
        raise StorageError(f"database {db.name} has schema version {version}, not {SCHEMA_VERSION}: "
                           "run `sipedge db migrate` first")
    return version


def export_to(db: Database, out: TextIO) -> dict[str, int]:
    """Write the export of ``db`` to ``out``; returns the rows per table."""
    counts = dict.fromkeys(TABLES, 0)
    for table, line in _export(db):
        out.write(line + "\n")
        if table:
            counts[table] += 1
    return counts


def _rows(lines: Iterable[str]) -> Iterator[tuple[int, str, dict[str, Any]]]:
    header_seen = False
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except ValueError as exc:
            raise StorageError(f"line {n}: not JSON ({exc})") from None
        if not isinstance(item, dict):
            raise StorageError(f"line {n}: not a JSON object")
        if not header_seen:
            if item.get("sipedge_export") != FORMAT:
                raise StorageError(f"line {n}: not a sipedge export (its first line names the format)")
            if item.get("schema_version") != SCHEMA_VERSION:
                raise StorageError(
                    f"line {n}: exported at schema version {item.get('schema_version')!r}, this sipedge "
                    f"imports version {SCHEMA_VERSION}: migrate the source and export again"
                )
            header_seen = True
            continue
        table, row = item.get("table"), item.get("row")
        if table not in TABLES or not isinstance(row, dict):
            raise StorageError(f"line {n}: expected {{\"table\": one of {', '.join(TABLES)}, \"row\": {{...}}}}")
        yield n, str(table), row
    if not header_seen:
        raise StorageError("empty file: not a sipedge export")


def import_from(db: Database, lines: Iterable[str]) -> dict[str, int]:
    """Import an export into ``db`` (empty, at this schema version) in one transaction;
    returns the rows per table."""
    _version(db)
    counts = dict.fromkeys(TABLES, 0)
    with db.transaction() as c:
        columns = {t: set(_columns(c, t)) for t in TABLES}
        for table in TABLES:
            if c.execute(f"SELECT 1 FROM {table} LIMIT 1").fetchone() is not None:
                raise StorageError(f"database {db.name}: table {table} is not empty; import only into a "
                                   "new database")
        for n, table, row in _rows(lines):
            unknown = set(row) - columns[table]
            if unknown or not row:
                raise StorageError(f"line {n}: table {table} has no column {', '.join(sorted(unknown)) or '(none)'}")
            names = sorted(row)
            values = []
            for name in names:
                value = _decode(row[name], f"line {n}")
                if table == "location" and name in _LOCATION_TEXT:
                    value = _location_text(value, db.dialect)
                values.append(value)
            c.execute(
                f"INSERT INTO {table} ({', '.join(f'{chr(34)}{x}{chr(34)}' for x in names)}) "
                f"VALUES ({', '.join('?' * len(names))})",
                values,
            )
            counts[table] += 1
        if db.dialect == "postgresql":  # the next ids and binding order follow the imported rows
            c.execute("SELECT setval(pg_get_serial_sequence('cdr', 'id'), COALESCE(MAX(id), 0) + 1, false) FROM cdr")
            c.execute("SELECT setval('location_seq', COALESCE(MAX(seq), 0) + 1, false) FROM location")
    return counts


__all__ = ["export_to", "import_from"]
