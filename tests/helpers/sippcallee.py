"""SIPp for the call tests: the marks of a SIPp test module, and a SIPp UAS registered
as a subscriber. Importing it puts the repository root on ``sys.path`` (for ``bench``)."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.sipp_runner import SippFlows, SippResult, sipp_bin, stop_process  # noqa: E402

__all__ = ["SippFlows", "SippResult", "registered_uas", "sipp_marks"]


def sipp_marks(timeout: float) -> list[Any]:
    """``pytestmark`` of a module of SIPp tests."""
    return [
        pytest.mark.sipp,
        pytest.mark.timeout(timeout),
        pytest.mark.skipif(sipp_bin() is None, reason="sipp not installed (scripts/setup test installs sip-tester)"),
    ]


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
