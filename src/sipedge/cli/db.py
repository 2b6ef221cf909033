"""``sipedge db status|migrate|export|import``: the schema and the data of the database.

The database is ``[database] url`` of ``--config`` (or ``--db PATH|URL``): a SQLite file
or PostgreSQL (docs/storage.md). ``export FILE`` writes every table as JSON lines;
``import FILE`` loads such a file into a new (empty) database of either engine, which
is how an installation moves from SQLite to PostgreSQL.
"""

from __future__ import annotations

import argparse
import sys
from contextlib import closing
from pathlib import Path

from ..config import load_config
from ..errors import Error
from ..store import transfer
from ..store.backend import open_database
from ..store.schema import MIGRATIONS, SCHEMA_VERSION, TABLES, Database


class DbCommandError(Error):
    """A mistake the user can fix; printed as one line, exit status 2."""


def _open(args: argparse.Namespace, *, migrate: bool | None = None, check: bool = True) -> Database:
    return open_database(load_config(args.config), args.db, migrate=migrate, check=check)


def _out(text: str) -> None:
    sys.stdout.write(text + "\n")


def cmd_status(args: argparse.Namespace) -> int:
    with closing(_open(args, migrate=False, check=False)) as db:
        version = db.schema_version
        _out(f"database {db.name} ({db.dialect})")
        _out(f"schema version {version} of {SCHEMA_VERSION}")
        for m in MIGRATIONS:
            if m.version > version:
                _out(f"  pending {m.version}: {m.description}")
        if version == SCHEMA_VERSION:
            with db.read() as c:
                for table in TABLES:
                    (n,) = c.execute(f"SELECT COUNT(*) FROM {table}").fetchone()
                    _out(f"  {table}: {int(n)} rows")
    return 0 if version == SCHEMA_VERSION else 1


def cmd_migrate(args: argparse.Namespace) -> int:
    with closing(_open(args, migrate=False, check=False)) as db:
        applied = db.migrate()
        if applied:
            _out(f"database {db.name}: applied migration(s) {', '.join(map(str, applied))}; "
                 f"schema version {SCHEMA_VERSION}")
        else:
            _out(f"database {db.name}: already at schema version {SCHEMA_VERSION}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    with closing(_open(args)) as db:
        if args.file == "-":
            counts = transfer.export_to(db, sys.stdout)
        else:
            try:
                with Path(args.file).open("w", encoding="utf-8") as f:
                    counts = transfer.export_to(db, f)
            except OSError as exc:
                raise DbCommandError(f"cannot write {args.file}: {exc.strerror}") from None
    sys.stderr.write(f"exported {_summary(counts)}\n")
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    try:
        f = sys.stdin if args.file == "-" else Path(args.file).open(encoding="utf-8")  # noqa: SIM115
    except OSError as exc:
        raise DbCommandError(f"cannot read {args.file}: {exc.strerror}") from None
    with f, closing(_open(args, migrate=True)) as db:
        counts = transfer.import_from(db, f)
    _out(f"imported into {db.name}: {_summary(counts)}")
    return 0


def _summary(counts: dict[str, int]) -> str:
    return ", ".join(f"{n} {table}" for table, n in counts.items())


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("db", help="database schema and data (status, migrate, export, import)")
    sub = parser.add_subparsers(dest="db_command", metavar="ACTION", required=True)
    for name, func, text in (
        ("status", cmd_status, "schema version, pending migrations and rows per table (exit 1: not current)"),
        ("migrate", cmd_migrate, "bring the schema up to date"),
        ("export", cmd_export, "write every table as JSON lines to FILE (- = standard output)"),
        ("import", cmd_import, "load an export (FILE, - = standard input) into an empty database"),
    ):
        p = sub.add_parser(name, help=text)
        if name in ("export", "import"):
            p.add_argument("file", metavar="FILE")
        p.add_argument("--config", "-c", help="the server's TOML config (names the database)")
        p.add_argument("--db", metavar="PATH|URL", help="SQLite file or postgresql:// URL (overrides the config)")
        p.set_defaults(func=func)


__all__ = ["DbCommandError", "register"]
