"""SIPp (Debian sip-tester) against a real ``sipedge serve``: the issue's call flows over
UDP, TCP and TLS. The same scenarios pass against Kamailio in
test_sipp_kamailio_ref.py, so a failure here points at sipedge.

This SIPp build has no TLS, so for TLS a small bridge carries SIPp's TCP over TLS:
the caller's leg (SIPp -> TCP -> bridge -> TLS -> sipedge) and the callee's leg
(sipedge -> TLS -> bridge -> TCP -> SIPp UAS). Everything sipedge sees is TLS.
"""

from __future__ import annotations

import ssl
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers.sipserver import Server, running_server

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.sipp_runner import SippFlows, SippResult, StreamBridge, sipp_bin, stop_process  # noqa: E402

pytestmark = [
    pytest.mark.sipp,
    pytest.mark.timeout(90),
    pytest.mark.skipif(sipp_bin() is None, reason="sipp not installed (scripts/setup test installs sip-tester)"),
]

USERS = {"alice": "alice-pw", "bob": "bob-pw", "carol": "carol-pw"}
DOMAIN = "127.0.0.1"


def _ok(r: SippResult) -> None:
    assert r.ok, r.explain()


def _messages(r: SippResult) -> str:
    return "".join(p.read_text(errors="replace") for p in r.workdir.glob("*_messages.log"))


@pytest.fixture(scope="module", params=[1, 2], ids=["workers1", "workers2"])
def server(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[Server]:
    """One process, and a supervisor of two workers (docs/workers.md)."""
    general = f"workers = {request.param}"
    with running_server(tmp_path_factory.mktemp("sipp-sipedge"), users=USERS, general=general) as s:
        yield s


class Leg:
    """How SIPp reaches sipedge on one transport (with TLS bridges when needed)."""

    def __init__(self, server: Server, transport: str, root: Path) -> None:
        self.transport = transport
        self.bridges: list[StreamBridge] = []
        if transport == "tls":
            client = ssl.create_default_context()
            client.check_hostname = False
            client.verify_mode = ssl.CERT_NONE
            up = StreamBridge((server.host, server.tls), upstream_ssl=client).start()
            self.bridges.append(up)
            self.flows = SippFlows(f"{server.host}:{up.port}", DOMAIN, root, transport="tcp")
            cert = server.data_dir / "tls" / "cert.pem"
            key = server.data_dir / "tls" / "key.pem"
            self.server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            self.server_ctx.load_cert_chain(cert, key)
        else:
            self.flows = SippFlows(f"{server.host}:{server.udp}", DOMAIN, root, transport=transport)

    def callee(self) -> tuple[object, str]:
        """Start a SIPp UAS; returns (process, contact host:port[;transport=...])."""
        proc, contact = self.flows.start_uas()
        if self.transport != "tls":
            return proc, contact
        host, _, port = contact.split(";")[0].rpartition(":")
        down = StreamBridge((host, int(port)), listen_ssl=self.server_ctx).start()
        self.bridges.append(down)
        return proc, f"{host}:{down.port};transport=tls"

    def close(self) -> None:
        for b in self.bridges:
            b.stop()


@pytest.fixture(params=["udp", "tcp", "tls"])
def leg(request: pytest.FixtureRequest, server: Server, tmp_path: Path) -> Iterator[Leg]:
    leg = Leg(server, request.param, tmp_path)
    try:
        yield leg
    finally:
        leg.close()


@pytest.fixture
def bob(leg: Leg) -> Iterator[str]:
    uas, contact = leg.callee()
    try:
        _ok(leg.flows.register("bob", USERS["bob"], contact))
        yield contact
        _ok(leg.flows.register("bob", USERS["bob"], contact, expires=0))
    finally:
        stop_process(uas)  # type: ignore[arg-type]


def test_register_with_digest(leg: Leg) -> None:
    r = leg.flows.register("alice", USERS["alice"], "127.0.0.1:5999")
    _ok(r)
    log = _messages(r)
    assert "401 Unauthorized" in log and "Authorization: Digest" in log


def test_register_refresh_and_remove(leg: Leg) -> None:
    _ok(leg.flows.register_cycle("carol", USERS["carol"], "127.0.0.1:5997"))


def test_call_through_proxy(leg: Leg, bob: str) -> None:
    r = leg.flows.call("alice", USERS["alice"], "bob", talk_ms=50)
    _ok(r)
    log = _messages(r)
    assert "407 Proxy Authentication Required" in log
    assert "Record-Route:" in log and "BYE sip:" in log


def test_cancel_before_answer(leg: Leg, bob: str) -> None:
    r = leg.flows.cancel("alice", USERS["alice"], "bob")
    _ok(r)
    assert "487 Request Terminated" in _messages(r)


def test_unknown_user_404(leg: Leg) -> None:
    _ok(leg.flows.expect("alice", USERS["alice"], "nobody", 404))


def test_unauthenticated_invite_407(leg: Leg) -> None:
    _ok(leg.flows.expect("alice", USERS["alice"], "bob", 407))
