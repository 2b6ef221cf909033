"""Opening the database that ``[database] url`` names, and the location store on it.

The one place that chooses an engine: ``sipedge serve`` and every CLI command call
:func:`open_database` (or :func:`open_url` for a ``--db`` argument). A plain path or
``sqlite:///path`` is a SQLite file (migrated at open); ``postgresql://…`` is a
PostgreSQL database behind a pool (docs/storage.md).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..config import Config, DatabaseConfig
from ..errors import ConfigError, StorageError
from .schema import SCHEMA_VERSION, Database

if TYPE_CHECKING:
    from .postgres import PgLocationStore
    from .sqlite import SqliteLocationStore


def is_postgresql(url: str) -> bool:
    return url.startswith(("postgresql://", "postgres://"))


def open_url(url: str, options: DatabaseConfig | None = None, *, migrate: bool | None = None,
             check: bool = True) -> Database:
    """The database at ``url`` (a SQLite path, ``sqlite:///path`` or a PostgreSQL URL),
    with ``options``' pool and timeouts. ``migrate`` None: a SQLite file is migrated, a
    PostgreSQL database as ``options.migrate`` says. ``check``: a schema that is not
    this sipedge's is refused (StorageError saying to run ``sipedge db migrate``)."""
    opts = options or DatabaseConfig()
    db: Database
    if is_postgresql(url):
        from .postgres import PgDatabase

        db = PgDatabase(
            url, pool_size=opts.pool_size, connect_timeout=opts.connect_timeout,
            statement_timeout=opts.statement_timeout,
            migrate=opts.migrate == "auto" if migrate is None else migrate,
        )
    else:
        if "://" in url and not url.startswith("sqlite:///"):
            raise ConfigError(f"database {url.split('://', 1)[0]}:// URLs are not supported: use a SQLite "
                              "path, sqlite:///path or postgresql://")
        from .sqlite import SqliteDatabase

        db = SqliteDatabase(url.removeprefix("sqlite://"), migrate=migrate is not False)
    if check:
        version = db.schema_version
        if version != SCHEMA_VERSION:
            db.close()
            raise StorageError(
                f"database {db.name} has schema version {version}, this sipedge uses {SCHEMA_VERSION}: "
                'run `sipedge db migrate` (or set [database] migrate = "auto")'
            )
    return db


def open_database(config: Config, url: str | None = None, *, migrate: bool | None = None,
                  check: bool = True) -> Database:
    """The database at ``url`` (a CLI's ``--db``: a path or URL) when given, else that of
    ``config`` (``[database] url``; empty = ``<data_dir>/sipedge.db``)."""
    if not url:
        url = config.database.url
        if not is_postgresql(url):
            url = str(config.database_path)
    return open_url(url, config.database, migrate=migrate, check=check)


def open_location(db: Database, *, write_back: bool = False) -> SqliteLocationStore | PgLocationStore:
    """The location service on ``db``: SQLite's cached store (write-through or write-back)
    or PostgreSQL's, which reads the shared table on every lookup."""
    if db.dialect == "postgresql":
        if write_back:
            raise ConfigError(
                '[registrar] db_mode = "write-back" keeps bindings in one node\'s memory; with a '
                "PostgreSQL database every lookup reads the table: use write-through"
            )
        from .postgres import PgDatabase, PgLocationStore

        assert isinstance(db, PgDatabase)
        return PgLocationStore(db)
    from .sqlite import SqliteDatabase, SqliteLocationStore

    assert isinstance(db, SqliteDatabase)
    return SqliteLocationStore(db, write_back=write_back)


__all__ = ["is_postgresql", "open_database", "open_location", "open_url"]
