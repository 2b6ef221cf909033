"""The proxy's response-time histogram (``ProxyCore.histograms``, /metrics
``sip_response_seconds``): arrival to the first final response, per method class, on the
core's clock; forked 2xx after the first final are not timed again."""

from __future__ import annotations

from pathlib import Path

import pytest

from sipedge.proxy.core import ProxyCore

from .test_forking import CALLER, INVITE, answer, branches, core_with, upstream


def counts(core: ProxyCore) -> dict[str, tuple[int, float]]:
    return {labels["method"]: (h.count, h.sum) for _, labels, h in core.histograms()}


def test_an_invite_is_timed_once_from_its_arrival_to_its_first_final(tmp_path: Path) -> None:
    core, clock = core_with(tmp_path, {7001: 1.0, 7002: 1.0})
    arrived = clock.now
    core.receive(INVITE, CALLER, arrived)
    sent = branches(core)
    clock.advance(0.5)
    answer(core, sent[7001], 7001, 180, clock.now)  # provisional: not final
    assert counts(core)["INVITE"] == (0, 0.0)
    clock.advance(1.5)
    answer(core, sent[7001], 7001, 200, clock.now)
    clock.advance(1.0)
    answer(core, sent[7002], 7002, 200, clock.now)  # a second 2xx of the fork: relayed, not timed
    assert [r.status for r in upstream(core)].count(200) == 2
    n, total = counts(core)["INVITE"]
    assert n == 1 and total == pytest.approx(2.0)
    assert counts(core)["other"][0] == 0 and counts(core)["REGISTER"][0] == 0


def test_a_local_reply_is_timed_under_its_method_class(tmp_path: Path) -> None:
    core, clock = core_with(tmp_path, {})
    options = INVITE.replace(b"INVITE sip:bob", b"OPTIONS sip:nobody").replace(b"1 INVITE", b"1 OPTIONS")
    core.receive(options, CALLER, clock.now)
    assert any(r.status >= 200 for r in upstream(core))
    n, total = counts(core)["other"]
    assert n == 1 and total == 0.0  # the same input: the fake clock did not move
