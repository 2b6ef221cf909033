"""The SIPp scenarios of tests/sipp/ pass against Debian kamailio as a reference server.

This proves the scenarios themselves (so a failure against sipedge points at sipedge), and
the kamailio set-up the benchmark compares against. Kamailio runs with a generated config
(bench/kamailio_ref.py) on free loopback ports: UDP and TCP on one, TLS on another. SIPp
has no TLS; for TLS it goes through the bridges in bench/sipp_runner.py (SippFlows).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.kamailio_ref import KamailioRef, kamailio_bin  # noqa: E402
from bench.sipp_runner import SippFlows, SippResult, sipp_bin  # noqa: E402

from helpers.sippcallee import registered_uas  # noqa: E402

pytestmark = [
    pytest.mark.sipp,
    pytest.mark.kamailio,
    pytest.mark.timeout(60),
    pytest.mark.skipif(sipp_bin() is None, reason="sipp not installed (sip-tester)"),
    pytest.mark.skipif(kamailio_bin() is None, reason="kamailio not installed"),
]

DOMAIN = "ref.test"
USERS = {"alice": "alice-pw", "bob": "bob-pw", "carol": "carol-pw"}


def _ok(r: SippResult) -> None:
    assert r.ok, r.explain()


@pytest.fixture(scope="module")
def kamailio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KamailioRef]:
    k = KamailioRef(domain=DOMAIN, users=USERS, transports=("udp", "tcp", "tls"), children=1,
                    workdir=tmp_path_factory.mktemp("kamailio"))
    k.start()
    try:
        yield k
    finally:
        k.stop()


@pytest.fixture(params=["udp", "tcp", "tls"])
def flows(request: pytest.FixtureRequest, kamailio: KamailioRef, tmp_path: Path) -> Iterator[SippFlows]:
    """SIPp over each transport; TLS through SippFlows' TCP<->TLS bridges."""
    target = kamailio.tls_target if request.param == "tls" else kamailio.target
    with SippFlows(target, DOMAIN, tmp_path, transport=request.param) as f:
        yield f


@pytest.fixture
def bob(flows: SippFlows) -> Iterator[str]:
    """A SIPp UAS registered as bob; yields its contact host:port."""
    with registered_uas(flows, "bob", USERS["bob"]) as contact:
        yield contact


def test_register_with_digest(flows: SippFlows) -> None:
    r = flows.register("alice", USERS["alice"], "127.0.0.1:5999")
    _ok(r)
    log = _messages(r)
    assert "401 Unauthorized" in log and "Authorization: Digest" in log


def test_deregister(flows: SippFlows) -> None:
    _ok(flows.register("alice", USERS["alice"], "127.0.0.1:5998"))
    r = flows.register("alice", USERS["alice"], "127.0.0.1:5998", expires=0)
    _ok(r)


def test_register_refresh_and_remove(flows: SippFlows) -> None:
    _ok(flows.register_cycle("carol", USERS["carol"], "127.0.0.1:5997"))


def test_call_through_proxy(flows: SippFlows, bob: str) -> None:
    r = flows.call("alice", USERS["alice"], "bob", talk_ms=50)
    _ok(r)
    log = _messages(r)
    assert "407 Proxy Authentication Required" in log
    assert "Record-Route:" in log and "BYE sip:" in log
    if flows.transport == "tls":  # the proxy saw TLS (the bridge), not SIPp's TCP
        assert ";transport=tls" in log


def test_cancel_before_answer(flows: SippFlows, bob: str) -> None:
    r = flows.cancel("alice", USERS["alice"], "bob")
    _ok(r)
    assert "487 Request Terminated" in _messages(r)


def test_unknown_user_404(flows: SippFlows) -> None:
    _ok(flows.expect("alice", USERS["alice"], "nobody", 404))


def test_unauthenticated_invite_407(flows: SippFlows) -> None:
    _ok(flows.expect("alice", USERS["alice"], "bob", 407))


def test_wrong_status_fails(flows: SippFlows) -> None:
    """uac_expect.xml really checks: expecting 486 where the proxy says 404 fails."""
    r = flows.expect("alice", USERS["alice"], "nobody", 486)
    assert not r.ok and r.failed == 1, r.explain()


def _messages(r: SippResult) -> str:
    return "".join(p.read_text(errors="replace") for p in r.workdir.glob("*_messages.log"))
