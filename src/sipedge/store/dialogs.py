"""Keeping of dialogs and CDRs (``proxy.dialog.DialogStore``) in SQLite or PostgreSQL.

Two tables in the same database as the location service (schema version 2, see
``store.schema``): ``dialog``, one row per call the proxy follows (its state as a
JSON object, written through on every change and deleted when the call ends, so a
restart loads the calls back), and ``cdr``, one row per call attempt. With
``[accounting] jsonl`` each record is also appended to that file as one JSON line.

The relay's media totals of a call (``CallDeleted.totals``) reach :meth:`media_totals`
on their own schedule: before the CDR (a BYE deletes the media before its 200 ends the
call) they are kept for it; after it they join it (still waiting to be written, or in its
row). With write-back (``[dialog] db_flush_interval``) changes are committed in batches.
"""

from __future__ import annotations

import json
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..config.dialog import AccountingConfig
from ..errors import StorageError
from ..proxy.dialog import Cdr, Dialog
from .schema import Database

log = logging.getLogger(__name__)

CDR_FIELDS = ("call_id", "start", "answer", "end", "duration", "caller", "callee", "user", "source", "status",
              "reason", "ended_by", "from_tag", "to_tag", "media")
_CDR_COLUMNS = ", ".join(f'"{f}"' for f in CDR_FIELDS)  # "end" and "user" are reserved words
MAX_PENDING_TOTALS = 10_000


class SqliteDialogStore:
    """:class:`~sipedge.proxy.dialog.DialogStore` on a database of either engine.

    Write-through by default; with ``write_back`` the changes wait in memory for
    :meth:`flush` (``[dialog] db_flush_interval``), which commits them all in one
    transaction: a few SQLite transactions per call cost more than the call's SIP work.
    """

    def __init__(self, db: Database, accounting: AccountingConfig | None = None, *,
                 write_back: bool = False) -> None:
        self.db = db
        self.accounting = accounting or AccountingConfig()
        self.write_back = write_back
        self._pending: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._directions: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._dirty: dict[str, Dialog | None] = {}  # write-back: the latest of each call (None: gone)
        self._records: list[dict[str, Any]] = []  # write-back: CDRs to insert
        self.counters: dict[str, int] = {"cdr_write_errors": 0, "dialog_write_errors": 0}
        # a worker of several (docs/workers.md) loads only the calls whose Call-ID it owns
        self.owns: Callable[[str], bool] | None = None

    # -- dialogs ----------------------------------------------------------------------
    def load_dialogs(self) -> list[Dialog]:
        with self.db.read() as c:
            rows = c.execute("SELECT call_id, data FROM dialog").fetchall()
        out = []
        for call_id, data in rows:
            if self.owns is not None and not self.owns(call_id):
                continue
            try:
                out.append(Dialog.from_json(json.loads(data)))
            except (ValueError, TypeError, KeyError) as exc:
                log.warning("x dialog %s in %s not loaded (damaged row): %s", call_id, self.db.name, exc)
        return out

    def save_dialog(self, dialog: Dialog) -> None:
        self._dirty[dialog.call_id] = dialog
        if not self.write_back:
            self.flush()

    def delete_dialog(self, call_id: str) -> None:
        self._dirty[call_id] = None
        if not self.write_back:
            self.flush()

    # -- CDRs ---------------------------------------------------------------------------
    def add_cdr(self, cdr: Cdr) -> None:
        record = cdr.to_json()
        totals = self._pending.pop(cdr.call_id, None)
        if totals is not None:
            record["media"] = totals
        self._records.append(record)
        if not self.write_back:
            self.flush()

    def flush(self) -> int:
        """Commit what waits (one transaction) and append the CDRs' JSON lines; what
        fails to commit waits for the next flush. Returns the rows written."""
        dirty, records = self._dirty, self._records
        if not dirty and not records:
            return 0
        self._dirty, self._records = {}, []
        now = time.time()
        try:
            with self.db.transaction() as c:
                for call_id, dialog in dirty.items():
                    if dialog is None:
                        c.execute("DELETE FROM dialog WHERE call_id = ?", (call_id,))
                    else:
                        c.execute("INSERT INTO dialog (call_id, data, updated_at) VALUES (?, ?, ?) ON CONFLICT (call_id) "
                                  "DO UPDATE SET data = excluded.data, updated_at = excluded.updated_at",
                                  (call_id, json.dumps(dialog.to_json()), now))
                if self.accounting.database:
                    c.executemany(
                        f"INSERT INTO cdr ({_CDR_COLUMNS}) VALUES ({', '.join('?' * len(CDR_FIELDS))})",
                        [tuple(json.dumps(r[f]) if f == "media" else r[f] for f in CDR_FIELDS) for r in records],
                    )
        except StorageError as exc:  # calls go on; kept for the next flush (newer changes win)
            self.counters["dialog_write_errors"] += 1
            log.warning("x dialogs and CDRs not written, kept for the next flush: %s", exc)
            self._dirty = {**dirty, **self._dirty}
            self._records = records + self._records
            if len(self._records) > MAX_PENDING_TOTALS:
                self.counters["cdr_write_errors"] += len(self._records) - MAX_PENDING_TOTALS
                del self._records[:-MAX_PENDING_TOTALS]
            return 0
        if self.accounting.jsonl and records:
            try:
                with Path(self.accounting.jsonl).open("a", encoding="utf-8") as f:
                    f.writelines(json.dumps(r, sort_keys=True) + "\n" for r in records)
            except OSError as exc:
                self.counters["cdr_write_errors"] += len(records)
                log.warning("x %d CDR(s) not appended to %s: %s", len(records), self.accounting.jsonl, exc.strerror)
        return len(dirty) + len(records)

    def media_directions(self, call_id: str, directions: dict[str, Any]) -> None:
        """What each party sent (by tag), taken just before the relay deletes the call:
        it joins the totals that :meth:`media_totals` gets next."""
        self._directions[call_id] = directions
        _bound(self._directions)

    def media_totals(self, call_id: str, totals: dict[str, Any]) -> None:
        """The relay's totals of ``call_id``: into its CDR (waiting or written), or kept for
        the CDR to come."""
        directions = self._directions.pop(call_id, None)
        if directions:
            totals = {**totals, "directions": directions}
        for record in reversed(self._records):
            if record["call_id"] == call_id and not record["media"]:
                record["media"] = totals
                return
        if self.accounting.database:
            try:
                with self.db.transaction() as c:
                    cur = c.execute(
                        "UPDATE cdr SET media = ? WHERE id = (SELECT MAX(id) FROM cdr WHERE call_id = ?) "
                        "AND media = '{}'", (json.dumps(totals), call_id))
                    if cur.rowcount:
                        return
            except StorageError as exc:
                self.counters["cdr_write_errors"] += 1
                log.warning("x media totals of %s not written: %s", call_id, exc)
                return
        self._pending[call_id] = totals
        _bound(self._pending)


def _bound(pending: OrderedDict[str, Any]) -> None:
    while len(pending) > MAX_PENDING_TOTALS:
        pending.popitem(last=False)


def read_cdrs(db: Database, since: float | None = None, user: str | None = None,
              limit: int | None = None) -> list[dict[str, Any]]:
    """CDRs, newest first: from ``since`` (epoch seconds), of ``user`` (the authenticated
    caller, or the caller/callee URI containing it)."""
    where: list[str] = []
    args: list[object] = []
    if since is not None:
        where.append("start >= ?")
        args.append(since)
    if user:
        find = "instr" if db.dialect == "sqlite" else "strpos"
        where.append(f'("user" = ? OR {find}(caller, ?) > 0 OR {find}(callee, ?) > 0)')
        args += [user, user, user]
    sql = f"SELECT {_CDR_COLUMNS} FROM cdr"
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " ORDER BY id DESC"
    if limit is not None:
        sql += " LIMIT ?"
        args.append(limit)
    with db.read() as c:
        rows = c.execute(sql, args).fetchall()
    out = []
    for row in rows:
        record = dict(zip(CDR_FIELDS, row, strict=True))
        try:
            record["media"] = json.loads(record["media"])
        except ValueError:
            record["media"] = {}
        out.append(record)
    return out


__all__ = ["SqliteDialogStore", "read_cdrs"]
