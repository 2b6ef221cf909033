"""NAT keepalives of a real server process (``sipedge serve``) on
loopback, with raw-socket user agents: SIP OPTIONS pings keep contacts that answer and
remove those that stay silent (nathelper ``keepalive_timeout``), and a dialog endpoint of
an unregistered caller (nat_traversal) is pinged again after a restart, until its BYE;
a subscriber's endpoint until a terminated NOTIFY."""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from helpers.ports import free_port
from helpers.sipserver import wait_ready
from helpers.ua import UA
from sipedge.sip import message as m

ROOT = Path(__file__).resolve().parents[2]
HOST = "127.0.0.1"


def write_config(tmp: Path, port: int) -> Path:
    cfg = tmp / "sipedge.toml"
    cfg.write_text(
        f"""
[general]
data_dir = "{tmp / 'data'}"
log_level = "debug"

[sip]
listen = ["udp:{HOST}:{port}"]

[sip.timers]
t1 = 0.1

[auth]
register = false
invite = false

[web]
enabled = false

[nat]
keepalive_interval = 0.2
keepalive_method = "OPTIONS"
keepalive_timeout = 1.0
ping_from = "sip:pinger@test.invalid"
ping_headers = ["X-Keepalive: yes"]
"""
    )
    return cfg


@contextlib.contextmanager
def server(cfg: Path, port: int, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    with log.open("ab") as logf:
        proc = subprocess.Popen([sys.executable, "-m", "sipedge.cli", "serve", "--config", str(cfg)],
                                stdout=logf, stderr=subprocess.STDOUT, env=env)
    try:
        try:
            wait_ready(HOST, port, proc)
        except RuntimeError as exc:
            raise AssertionError(log.read_text(errors="replace")[-3000:]) from exc
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


def contacts(db: Path) -> set[str]:
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=2)) as c:
        return {str(r[0]) for r in c.execute("SELECT contact FROM location")}


def nated_register(ua: UA, private: str) -> None:
    """REGISTER with a private Contact, as a phone behind a NAT does."""
    req = ua.build("REGISTER", f"sip:{ua.domain}", to=ua.aor, headers={"Expires": "300"})
    req.set("Contact", f"<sip:{ua.user}@{private}>")
    ua.send(req)
    assert ua.expect_final().status == 200


def pings(ua: UA, seconds: float, answer: bool) -> list[m.Request]:
    """Collect (and maybe answer) the keepalive OPTIONS arriving for ``seconds``."""
    got: list[m.Request] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        ua._pump()
        for msg in list(ua.inbox):
            if isinstance(msg, m.Request) and msg.method == "OPTIONS":
                ua.inbox.remove(msg)
                got.append(msg)
                if answer:
                    ua.answer(msg, 200)
    return got


def test_sip_pings_keep_answering_contacts_and_drop_silent_ones(tmp_path: Path) -> None:
    port = free_port(HOST)
    cfg = write_config(tmp_path, port)
    with server(cfg, port, tmp_path / "sipedge.log"):
        alice = UA("udp", (HOST, port), "alice", HOST)
        bob = UA("udp", (HOST, port), "bob", HOST)
        try:
            nated_register(alice, "192.168.1.20:5060")
            nated_register(bob, "192.168.1.21:5060")
            got_alice: list[m.Request] = []
            got_bob: list[m.Request] = []
            deadline = time.monotonic() + 2.0
            while time.monotonic() < deadline:
                got_alice += pings(alice, 0.05, answer=True)
                got_bob += pings(bob, 0.05, answer=False)
            db = tmp_path / "data" / "sipedge.db"
            assert contacts(db) == {"sip:alice@192.168.1.20:5060"}  # bob was removed
            assert len(got_alice) >= 5
            assert 3 <= len(got_bob) <= 7  # pinged until 1 s of silence, then forgotten
            ping = got_alice[0]
            assert ping.uri == "sip:alice@192.168.1.20:5060"
            assert ping.from_.uri is not None and str(ping.from_.uri) == "sip:pinger@test.invalid"
            assert ping.get("x-keepalive") == "yes"
            assert len(ping.vias) == 1 and ping.top_via.port == port
        finally:
            alice.close()
            bob.close()


def test_dialog_endpoint_of_unregistered_caller_survives_restart(tmp_path: Path) -> None:
    port = free_port(HOST)
    cfg = write_config(tmp_path, port)
    log = tmp_path / "sipedge.log"
    bob = UA("udp", (HOST, port), "bob", HOST)
    carol = UA("udp", (HOST, port), "carol", HOST)
    try:
        with server(cfg, port, log):
            assert bob.register().status == 200  # public: Contact is its source
            invite = carol.build("INVITE", f"sip:bob@{HOST}", headers={"Content-Type": "application/sdp"},
                                 body=b"v=0\r\no=- 1 1 IN IP4 192.168.1.22\r\ns=-\r\nc=IN IP4 192.168.1.22\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n")
            invite.set("Contact", "<sip:carol@192.168.1.22:5060>")  # behind a NAT, never registered
            carol.send(invite)
            inv = bob.wait("INVITE")
            assert isinstance(inv, m.Request)
            assert "alias=127.0.0.1~" in (inv.get("contact") or "")
            bob.answer(inv, 200)
            ok = carol.expect(200)
            routes = list(reversed(ok.get_all("record-route")))
            bob_contact = ok.contacts
            assert isinstance(bob_contact, list)
            ack = carol.build("ACK", str(bob_contact[0].uri), to=f"sip:bob@{HOST}", to_tag=ok.to.tag)
            ack.set("CSeq", f"{invite.cseq.number} ACK")
            for r in routes:
                ack.add("Route", r)
            carol.send(ack)
            assert pings(carol, 0.7, answer=True)  # the dialog keeps carol's binding open
        pings(carol, 0.1, answer=False)  # sent before the server stopped
        assert pings(carol, 0.5, answer=False) == []  # server down
        with server(cfg, port, log):
            assert pings(carol, 0.7, answer=True)  # restored from the database
            assert pings(bob, 0.1, answer=True) == []  # bob is not NATed: never pinged
            bye = carol.build("BYE", str(bob_contact[0].uri), to=f"sip:bob@{HOST}", to_tag=ok.to.tag)
            for r in routes:
                bye.add("Route", r)
            carol.send(bye)
            got = bob.wait("BYE")
            assert isinstance(got, m.Request)
            bob.answer(got, 200)
            assert carol.expect(200).status == 200
            pings(carol, 0.3, answer=True)  # one in flight may still arrive
            assert pings(carol, 0.6, answer=True) == []  # the dialog ended: no more pings
    finally:
        bob.close()
        carol.close()
    stats = [ln for ln in log.read_text(errors="replace").splitlines() if "shutting down; keepalive" in ln]
    assert len(stats) == 2
    assert "'dialog_endpoints': 1" in stats[0] and "'keepalive_endpoints': 0" in stats[1]


def notify(bob: UA, subscribe: m.Request, state: str) -> None:
    """bob, the notifier, sends a NOTIFY in the subscription's dialog, along its route
    set (the Record-Route of the SUBSCRIBE), to the subscriber's Contact."""
    contact = subscribe.contacts
    assert isinstance(contact, list)
    req = bob.build("NOTIFY", str(contact[0].uri), to=str(subscribe.from_.uri), to_tag=subscribe.from_.tag,
                    headers={"Event": "presence", "Subscription-State": state})
    req.set("Call-ID", subscribe.call_id)
    req.set("From", f"<{subscribe.to.uri}>;tag={bob.tag}")
    for r in subscribe.get_all("record-route"):
        req.add("Route", r)
    bob.send(req)


def test_subscription_endpoint_is_pinged_until_a_terminated_notify(tmp_path: Path) -> None:
    """nat_traversal's subscription reason, end to end: an unregistered subscriber
    behind a NAT is pinged while its accepted SUBSCRIBE lasts, through NOTIFYs, and no
    more once a NOTIFY says ``Subscription-State: terminated``."""
    port = free_port(HOST)
    cfg = write_config(tmp_path, port)
    log = tmp_path / "sipedge.log"
    bob = UA("udp", (HOST, port), "bob", HOST)
    carol = UA("udp", (HOST, port), "carol", HOST)
    try:
        with server(cfg, port, log):
            assert bob.register().status == 200
            assert pings(carol, 0.6, answer=True) == []  # not an endpoint yet
            sub = carol.build("SUBSCRIBE", f"sip:bob@{HOST}", headers={"Event": "presence", "Expires": "60"})
            sub.set("Contact", "<sip:carol@192.168.1.23:5060>")  # behind a NAT, never registered
            carol.send(sub)
            seen = bob.wait("SUBSCRIBE")
            assert isinstance(seen, m.Request)
            ok = m.make_response(seen, 200, to_tag=bob.tag)
            for rr in seen.get_all("record-route"):
                ok.add("Record-Route", rr)
            ok.add("Contact", bob.contact)
            ok.add("Expires", "60")
            bob.send(ok)
            assert carol.expect(200).cseq.method == "SUBSCRIBE"
            notify(bob, seen, "active;expires=60")
            got = carol.wait("NOTIFY")
            assert isinstance(got, m.Request)
            carol.answer(got, 200)
            assert bob.wait(lambda x: isinstance(x, m.Response) and x.cseq.method == "NOTIFY").status == 200
            assert len(pings(carol, 0.8, answer=True)) >= 2  # the subscription keeps carol's NAT open
            notify(bob, seen, "terminated;reason=timeout")
            got = carol.wait("NOTIFY")
            assert isinstance(got, m.Request)
            carol.answer(got, 200)
            pings(carol, 0.3, answer=True)  # one in flight may still arrive
            assert pings(carol, 0.6, answer=True) == []
    finally:
        bob.close()
        carol.close()
    stats = [ln for ln in log.read_text(errors="replace").splitlines() if "shutting down; keepalive" in ln]
    assert len(stats) == 1 and "'subscribed_endpoints': 0" in stats[0]
