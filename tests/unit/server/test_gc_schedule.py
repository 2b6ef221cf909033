"""The garbage-collector schedule of ``sipedge serve``, and the property it rests on:
the SIP hot path frees everything by reference counting (no reference cycles)."""

from __future__ import annotations

import asyncio
import gc
import sys
from pathlib import Path

from sipedge.server.gcschedule import GcSchedule

ROOT = Path(__file__).resolve().parents[3]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.sip_core_bench import Harness, call, register_pair  # noqa: E402


def test_the_schedule_replaces_cpythons_full_collections_and_gives_them_back() -> None:
    before = gc.get_threshold()

    async def main() -> GcSchedule:
        schedule = GcSchedule(0.02)
        schedule.start()
        try:
            assert gc.get_threshold()[:2] == before[:2]  # young generations as CPython does
            assert gc.get_threshold()[2] > 10**8  # CPython never starts a full one
            assert gc.get_freeze_count() > 0  # start-up objects are out of every pass
            await asyncio.sleep(0.2)
        finally:
            await schedule.stop()
        return schedule

    schedule = asyncio.run(main())
    assert schedule.collections >= 3
    stats = schedule.stats()
    assert stats["gc_full_collections"] == schedule.collections
    assert 0 < stats["gc_full_max_pause_seconds"] < 1
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0


def test_interval_zero_keeps_cpythons_schedule() -> None:
    before = gc.get_threshold()

    async def main() -> None:
        schedule = GcSchedule(0)
        schedule.start()
        assert gc.get_threshold() == before and gc.get_freeze_count() == 0
        await schedule.stop()

    asyncio.run(main())
    assert gc.get_threshold() == before


def test_registrations_and_calls_make_no_reference_cycles(tmp_path: Path) -> None:
    """Digest REGISTER pairs and authenticated calls (INVITE..BYE) through the default
    routing, every transaction run to its end: not one object is left for the cycle
    collector. A cycle here would be memory held until the next scheduled pass."""
    h = Harness(tmp_path)
    for i in range(30):  # warm-up: caches and lazily built objects
        register_pair(h, i)
        call(h, i)
    h.advance(40.0)
    gc.collect()
    gc.disable()
    try:
        for i in range(30, 230):
            register_pair(h, i)
            call(h, i)
            h.advance(0.01)
        h.advance(40.0)  # past Timer J/L/M: every transaction ended
        found = gc.collect()
    finally:
        gc.enable()
    assert len(h.core.tl) == 0
    assert found == 0


def test_a_lingering_call_leaves_little_for_the_collector_to_walk(tmp_path: Path) -> None:
    """Once answered, transactions linger 32 s (UDP) as parked tuples the collector does
    not track (``sip/transaction.py``), and the proxy keeps a settled INVITE's winner as a
    tuple of atoms for its 2xx retransmissions (``proxy/core.py`` ``Accepted``). It was 51
    objects per call before lingering transactions were trimmed, 35 before they were
    parked, 16 before INVITEs were settled; REGISTER pairs leave nothing at all."""
    h = Harness(tmp_path)
    for i in range(30):
        register_pair(h, i)
        call(h, i)
    h.advance(40.0)
    gc.collect()
    before = len(gc.get_objects())
    n = 300
    for i in range(30, 30 + n):
        register_pair(h, i)
        h.advance(0.001)  # every transaction is still lingering
    gc.collect()
    gc.collect()  # nested tuples are untracked inside out
    per_register = (len(gc.get_objects()) - before) / n
    assert len(h.core.tl) >= n
    assert per_register < 0.2, per_register
    before = len(gc.get_objects())
    for i in range(30, 30 + n):
        call(h, i)
        h.advance(0.001)
    h.dialog_store.flush()  # the CDRs go to the database once a second
    gc.collect()
    gc.collect()
    per_call = (len(gc.get_objects()) - before) / n
    assert len(h.core.tl) >= 5 * n and len(h.core._accepted) >= n
    assert per_call < 1.0, per_call  # 0.7: entries of the bounded URI parse caches
