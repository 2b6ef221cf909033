"""The location store shared by several worker processes (docs/workers.md).

:class:`~sipedge.store.sqlite.SqliteLocationStore` keeps every binding in memory and
assumes one process owns the file. With ``general.workers`` > 1 each worker writes the
bindings of the REGISTERs it handles (write-through: committed before the 200 OK), and a
lookup by any other worker must see them: every read of an AOR here first reloads that
AOR's rows from the file (SQLite WAL: readers never wait for the writer), so the cache is
only ever as old as the read that uses it.
"""

from __future__ import annotations

from ..proxy.location import Binding
from .sqlite import _COLUMNS, SqliteLocationStore, _binding, _db_text


class SharedSqliteLocationStore(SqliteLocationStore):
    """Write-through only; every AOR read refreshed from the file."""

    def _refresh(self, aor: str) -> None:
        with self.db.read() as c:
            rows = c.execute(f"SELECT {_COLUMNS} FROM location WHERE aor = ?", (_db_text(aor),)).fetchall()
        for _, b in self._by_aor.pop(aor, {}).values():
            self._flows.discard(b)
        if not rows:
            return
        entries = self._by_aor[aor] = {}
        for row in rows:
            s, b = _binding(row)
            entries[b.contact] = (s, b)
            self._flows.add(b)
            self._seq = max(self._seq, s)

    def lookup(self, aor: str, now: float) -> list[Binding]:
        self._refresh(aor)
        return super().lookup(aor, now)

    def count(self, aor: str, now: float) -> int:
        self._refresh(aor)
        return super().count(aor, now)

    def put(self, binding: Binding) -> None:
        self._refresh(binding.aor)  # what another worker saved for this AOR is replaced too
        super().put(binding)

    def remove_aor(self, aor: str) -> None:
        self._refresh(aor)
        super().remove_aor(aor)

    def bindings(self, now: float) -> list[Binding]:
        self.reload()
        return super().bindings(now)

    def on_flow(self, flow: str) -> list[Binding]:
        self.reload()
        return super().on_flow(flow)
