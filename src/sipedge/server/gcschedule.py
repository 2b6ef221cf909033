"""When ``sipedge serve`` runs full garbage collections.

CPython's own schedule runs a full collection whenever the objects that survived the
young generations reach a quarter of the old ones. A loaded SIP server keeps every
transaction for 32 s after its final response (Timer J/L/M over UDP), so survivors pile
up at the message rate and full collections come every few seconds. Each one walks all
live transactions, messages and calls: measured here (``bench.sip_bench``), pauses of
0.2-1 s that made clients retransmit, 1.7 times the CPU per call and a third of the
call rate the server reached with collection off.

The hot path makes no reference cycles (``tests/unit/test_gc_schedule.py`` holds it to
that), so reference counting frees a finished transaction at once and a full collection
finds next to nothing. The schedule therefore keeps the cheap young-generation
collections, never lets CPython start a full one, and runs one itself every
``general.gc_interval`` seconds for the rare cycles (exception tracebacks, closed
connections' objects). Objects from start-up are frozen out of every collection.
``gc_interval = 0`` keeps CPython's own schedule.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time

log = logging.getLogger("sipedge.gc")

# A third threshold CPython never reaches: it counts young (generation 1) collections.
_NEVER = 1_000_000_000


class GcSchedule:
    """Full collections every ``interval`` seconds on the running loop (none if 0)."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._saved: tuple[int, int, int] | None = None
        self._task: asyncio.Task[None] | None = None
        self.collections = 0
        self.cycles_collected = 0
        self.last_pause = 0.0
        self.max_pause = 0.0

    def start(self) -> None:
        """Call once the server is up, from the loop: what exists now lives as long as
        the process, so it is frozen out of every later collection."""
        if self.interval <= 0:
            return
        gc.collect()
        gc.freeze()
        self._saved = gc.get_threshold()
        gc.set_threshold(self._saved[0], self._saved[1], _NEVER)
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            self.collect()

    def collect(self) -> int:
        """One full collection, timed; returns the unreachable objects it found."""
        t = time.perf_counter()
        found = gc.collect()
        pause = time.perf_counter() - t
        self.collections += 1
        self.cycles_collected += found
        self.last_pause = pause
        self.max_pause = max(self.max_pause, pause)
        log.debug("full garbage collection: %d unreachable objects, %.1f ms", found, pause * 1e3)
        return found

    async def stop(self) -> None:
        """Back to CPython's schedule (tests run servers in-process too)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._saved is not None:
            gc.set_threshold(*self._saved)
            gc.unfreeze()
            self._saved = None

    def stats(self) -> dict[str, int | float]:
        return {
            "gc_full_collections": self.collections,
            "gc_full_unreachable_objects": self.cycles_collected,
            "gc_full_last_pause_seconds": round(self.last_pause, 6),
            "gc_full_max_pause_seconds": round(self.max_pause, 6),
        }
