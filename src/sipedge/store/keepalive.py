"""Keeping of NAT keepalive endpoints (``proxy.keepalive.EndpointStore``) in SQLite or
PostgreSQL.

One table, ``nat_keepalive``, in the same database as the location service (schema
version 2, see ``store.schema``), one row per endpoint (its flow token), with
the registration expiry and the subscriptions and dialogs as JSON objects of key ->
expiry (wall-clock epoch seconds). Rows are written through on every change, so a
restart (or a crash) finds what was being kept alive.
"""

from __future__ import annotations

import json
import time

from ..errors import StorageError
from ..proxy.keepalive import Endpoint
from .schema import Database


def _times(text: object) -> dict[str, float]:
    try:
        data = json.loads(str(text))
    except ValueError:
        return {}
    if not isinstance(data, dict):
        return {}
    out: dict[str, float] = {}
    for k, v in data.items():
        if isinstance(v, int | float) and not isinstance(v, bool):
            out[str(k)] = float(v)
    return out


class SqliteEndpointStore:
    """:class:`~sipedge.proxy.keepalive.EndpointStore` on a database of either engine."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def load(self) -> list[Endpoint]:
        with self.db.read() as c:
            rows = c.execute(
                "SELECT token, registered_until, subscriptions, dialogs FROM nat_keepalive"
            ).fetchall()
        return [
            Endpoint(str(tok), float(reg), _times(subs), _times(dlgs)) for tok, reg, subs, dlgs in rows
        ]

    def save(self, endpoint: Endpoint) -> None:
        with self.db.transaction() as c:
            c.execute(
                "INSERT INTO nat_keepalive (token, registered_until, subscriptions, dialogs, updated_at) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT (token) DO UPDATE SET "
                "registered_until = excluded.registered_until, subscriptions = excluded.subscriptions, "
                "dialogs = excluded.dialogs, updated_at = excluded.updated_at",
                (
                    endpoint.token,
                    endpoint.registered_until,
                    json.dumps(endpoint.subscriptions, sort_keys=True),
                    json.dumps(endpoint.dialogs, sort_keys=True),
                    time.time(),
                ),
            )

    def delete(self, token: str) -> None:
        with self.db.transaction() as c:
            c.execute("DELETE FROM nat_keepalive WHERE token = ?", (token,))


__all__ = ["SqliteEndpointStore", "StorageError"]
