"""docs/routing.md's worked example, run against a ProxyCore without sockets: bytes in,
bytes out. Proves user routing modules load from a file and drive the proxy."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from sipedge._common.clock import FakeClock
from sipedge.config import Config, parse_config
from sipedge.errors import ConfigError
from sipedge.proxy.core import ProxyCore
from sipedge.proxy.identity import Identity, Listener
from sipedge.proxy.location import MemoryLocationStore, MemorySubscriberStore
from sipedge.proxy.routing import load_router
from sipedge.sip import auth as digest
from sipedge.sip import message as m
from sipedge.sip.flow import Flow, Target

DOC = Path(__file__).resolve().parents[3] / "docs" / "routing.md"
ME = ("127.0.0.1", 5060)
PHONE = Flow("udp", ME, ("127.0.0.1", 6000))


def example_module(tmp_path: Path) -> Path:
    code = re.search(r"```python\n(.*?)```", DOC.read_text(), re.S)
    assert code, "docs/routing.md lost its worked example"
    path = tmp_path / "my_routing.py"
    path.write_text(code.group(1))
    return path


def make_core(tmp_path: Path, config: Config | None = None) -> ProxyCore:
    config = config or parse_config({"auth": {"invite": False, "register": False}})
    subscribers = MemorySubscriberStore()
    subscribers.add("alice", "127.0.0.1", "alice-pw")
    return ProxyCore(
        config,
        Identity([Listener("udp", *ME)]),
        MemoryLocationStore(),
        subscribers,
        load_router(str(example_module(tmp_path))),
        FakeClock(),
        secret=b"k" * 32,
    )


def invite(uri: str, cseq: int = 1, credentials: str = "") -> bytes:
    auth = f"Proxy-Authorization: {credentials}\r\n" if credentials else ""
    return (
        f"INVITE {uri} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:6000;branch=z9hG4bKex{cseq}\r\nMax-Forwards: 70\r\n"
        "From: <sip:alice@127.0.0.1>;tag=a\r\nTo: <" + uri + f">\r\nCall-ID: ex1\r\nCSeq: {cseq} INVITE\r\n"
        f"Contact: <sip:alice@127.0.0.1:6000>\r\n{auth}Content-Length: 0\r\n\r\n"
    ).encode()


def authenticated_invite(core: ProxyCore, uri: str) -> None:
    """INVITE, take the 407's challenge, INVITE again with digest credentials."""
    core.receive(invite(uri), PHONE, 1000.0)
    challenge = next(
        r for r in (m.parse(s.data) for s in core.outgoing()) if isinstance(r, m.Response) and r.status == 407
    )
    ch = digest.Challenge.parse(challenge.get_all("proxy-authenticate")[0])
    cred = digest.authorize(ch, username="alice", password="alice-pw", method="INVITE", uri=uri, cnonce="c0ffee")
    core.receive(invite(uri, 2, str(cred)), PHONE, 1000.1)


def test_example_sends_plus1_numbers_to_the_trunk(tmp_path: Path) -> None:
    core = make_core(tmp_path)
    authenticated_invite(core, "sip:+15551234@127.0.0.1")
    sent = core.outgoing()
    to_trunk = [s for s in sent if s.target == Target("udp", "127.0.0.1", 5070)]
    assert to_trunk, sent
    req = m.parse(to_trunk[0].data)
    assert isinstance(req, m.Request)
    assert req.uri == "sip:+15551234@127.0.0.1:5070"
    stamp = core.route_stamp.stamp(req.get("call-id") or "", req.from_.tag or "")
    assert req.get_all("record-route") == [f"<sip:127.0.0.1:5060;lr;sg={stamp}>"]


def test_example_answers_unknown_users_404(tmp_path: Path) -> None:
    core = make_core(tmp_path)
    authenticated_invite(core, "sip:nobody@127.0.0.1")
    finals = [m.parse(s.data) for s in core.outgoing()]
    assert any(isinstance(r, m.Response) and r.status == 404 for r in finals)


def test_a_module_that_decides_nothing_gets_500(tmp_path: Path) -> None:
    mod = tmp_path / "lazy.py"
    mod.write_text("def request_route(ctx):\n    pass\n")
    core = make_core(tmp_path)
    core.router = load_router(str(mod))
    core.receive(invite("sip:bob@127.0.0.1"), PHONE, 1000.0)
    replies = [m.parse(s.data) for s in core.outgoing()]
    assert any(isinstance(r, m.Response) and r.status == 500 and r.reason == "No Route Decision" for r in replies)


def test_a_module_that_raises_gets_500_and_the_core_keeps_serving(tmp_path: Path) -> None:
    mod = tmp_path / "buggy.py"
    mod.write_text("def request_route(ctx):\n    raise RuntimeError('oops')\n")
    core = make_core(tmp_path)
    core.router = load_router(str(mod))
    core.receive(invite("sip:bob@127.0.0.1"), PHONE, 1000.0)
    replies = [m.parse(s.data) for s in core.outgoing()]
    assert any(isinstance(r, m.Response) and r.status == 500 for r in replies)
    assert core.stats()["sip_routing_errors"] == 1


def test_loading_errors_name_the_problem(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such file"):
        load_router(str(tmp_path / "absent.py"))
    bad = tmp_path / "norr.py"
    bad.write_text("x = 1\n")
    with pytest.raises(ConfigError, match="must define request_route"):
        load_router(str(bad))
    with pytest.raises(ConfigError, match="failed to import"):
        load_router("sipedge.no_such_module")


def test_consume_credentials_drops_ours_and_keeps_other_realms(tmp_path: Path) -> None:
    """Kamailio's consume_credentials(): after auth_check the proxy's own
    Proxy-Authorization is removed; one for a downstream realm goes on (RFC 3261 §22.3)."""
    mod = tmp_path / "consume.py"
    mod.write_text(
        "from sipedge.proxy.context import BranchTarget\n"
        "from sipedge.sip.flow import Target\n"
        "def request_route(ctx):\n"
        "    if not ctx.auth_check():\n"
        "        return\n"
        "    ctx.consume_credentials()\n"
        "    ctx.relay([BranchTarget(dest=Target('udp', '127.0.0.1', 5070))])\n"
    )
    core = make_core(tmp_path)
    core.router = load_router(str(mod))
    uri = "sip:+15551234@127.0.0.1"
    core.receive(invite(uri), PHONE, 1000.0)
    challenge = next(
        r for r in (m.parse(s.data) for s in core.outgoing()) if isinstance(r, m.Response) and r.status == 407
    )
    ch = digest.Challenge.parse(challenge.get_all("proxy-authenticate")[0])
    ours = digest.authorize(ch, username="alice", password="alice-pw", method="INVITE", uri=uri, cnonce="c0ffee")
    theirs = 'Digest username="alice", realm="trunk.example", nonce="n1", uri="' + uri + '", response="00"'
    data = invite(uri, 2, str(ours)).replace(b"Content-Length", f"Proxy-Authorization: {theirs}\r\nContent-Length".encode())
    core.receive(data, PHONE, 1000.1)
    forwarded = [m.parse(s.data) for s in core.outgoing() if s.target == Target("udp", "127.0.0.1", 5070)]
    assert forwarded and isinstance(forwarded[0], m.Request)
    assert forwarded[0].get_all("proxy-authorization") == [theirs]
