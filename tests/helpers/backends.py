"""The store contract's backends as pytest fixtures: each test runs once per engine.

``database`` is a fresh, migrated database of each engine (SQLite file, PostgreSQL on
the session's real server). ``location_factory`` makes fresh location stores of each
kind; to add a backend (Redis), add one opener to :data:`LOCATION_OPENERS`: it gets the
test's request and a temporary directory and returns a new store and what closes it.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from sipedge.config.redis import RedisConfig
from sipedge.proxy.location import LocationStore
from sipedge.store.backend import open_location, open_url
from sipedge.store.redis import RedisLink, RedisLocationStore
from sipedge.store.schema import Database

DATABASES = ("sqlite", "postgresql")
_n = itertools.count(1)
_redis_db = itertools.cycle(range(1, 16))  # redisserver.py starts it with 16 databases


def open_test_database(kind: str, request: pytest.FixtureRequest, tmp: Path) -> Database:
    """A new empty database of ``kind``, migrated."""
    if kind == "sqlite":
        return open_url(str(tmp / f"db{next(_n)}" / "sipedge.db"))
    if kind == "postgresql":
        return open_url(request.getfixturevalue("pg_server").create_database())
    raise ValueError(kind)


def _sqlite(write_back: bool) -> Callable[[pytest.FixtureRequest, Path], tuple[LocationStore, Callable[[], Any]]]:
    def opener(request: pytest.FixtureRequest, tmp: Path) -> tuple[LocationStore, Callable[[], Any]]:
        db = open_test_database("sqlite", request, tmp)
        return open_location(db, write_back=write_back), db.close

    return opener


def _postgresql(request: pytest.FixtureRequest, tmp: Path) -> tuple[LocationStore, Callable[[], Any]]:
    db = open_test_database("postgresql", request, tmp)
    return open_location(db), db.close


def _redis(request: pytest.FixtureRequest, tmp: Path) -> tuple[LocationStore, Callable[[], Any]]:
    server = request.getfixturevalue("redis_server")
    if server.proc is None:  # a test stopped it and failed before restarting it
        server.start()
    url = server.url.rsplit("/", 1)[0] + f"/{next(_redis_db)}"
    link = RedisLink(RedisConfig(url=url))
    link.client.flushdb()
    return RedisLocationStore(link), link.close


LOCATION_OPENERS: dict[str, Callable[[pytest.FixtureRequest, Path], tuple[LocationStore, Callable[[], Any]]]] = {
    "sqlite": _sqlite(False),
    "sqlite-write-back": _sqlite(True),
    "postgresql": _postgresql,
    "redis": _redis,
}


@pytest.fixture(params=DATABASES)
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    db = open_test_database(request.param, request, tmp_path)
    try:
        yield db
    finally:
        db.close()


@pytest.fixture(params=list(LOCATION_OPENERS))
def location_factory(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[[], LocationStore]]:
    """Call it for a new, empty location store of the parameter's kind."""
    with contextlib.ExitStack() as stack:
        def make() -> LocationStore:
            store, close = LOCATION_OPENERS[request.param](request, tmp_path)
            stack.callback(close)
            return store

        yield make


__all__ = ["DATABASES", "LOCATION_OPENERS", "database", "location_factory", "open_test_database"]
