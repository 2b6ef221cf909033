"""A SIPp UAS registered as a subscriber, for the SIPp call tests."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from bench.sipp_runner import SippFlows, stop_process


@contextlib.contextmanager
def registered_uas(flows: SippFlows, user: str, password: str) -> Iterator[str]:
    """Start a SIPp UAS, register it as ``user``; yields its contact host:port, and
    de-registers it at the end (a stale contact would be forked to by the next test,
    and time out there)."""
    uas, contact = flows.start_uas()
    try:
        r = flows.register(user, password, contact)
        assert r.ok, r.explain()
        yield contact
        r = flows.register(user, password, contact, expires=0)
        assert r.ok, r.explain()
    finally:
        stop_process(uas)
