"""ALTERNATE-SERVER across two ``sipedge serve`` TURN nodes on 127.0.0.1 and 127.0.0.2
sharing a TURN REST secret: coturn's turnutils_uclient follows the 300 Try Alternate of
the loaded node to the other and relays there without loss; two nodes that name each
other never bounce a client for ever (uclient stops after one redirect, as RFC 8489 §10
asks of clients; a client that follows every redirect from the same socket is served by
the node that sent it away, sipedge's own guard); and ``alternate_domain`` reaches a TLS
client as ALTERNATE-DOMAIN in the 300 (RFC 8489 §14.16), and only a TLS client.

(uclient follows a 300 to the first allocation it asks for, and then asks the new
server for all of them: the load is put on A by another client first.)"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers.ports import free_port
from helpers.sipserver import Server, running_server
from integration.test_ctl import ctl
from sipedge.stun import attributes as at
from sipedge.stun import integrity
from sipedge.stun import message as sm
from sipedge.stun.message import Message, Method
from sipedge.turn.auth import rest_password, rest_username

pytestmark = pytest.mark.timeout(90)

if shutil.which("turnutils_uclient") is None or shutil.which("turnutils_peer") is None:
    pytest.skip("turnutils_uclient not installed (Debian coturn)", allow_module_level=True)

SECRET = "alternate-secret"
REALM = "sipedge"


@contextlib.contextmanager
def turn_node(tmp: Path, host: str, turn_port: int, alternates: list[str], threshold: int,
              more: str = "", tls_port: int = 0) -> Iterator[Server]:
    low = free_port(host) & ~1
    tls = f', "tls:{host}:{tls_port}"' if tls_port else ""
    turn = (
        f'\n[turn]\nenabled = true\nlisten = ["udp:{host}:{turn_port}"{tls}]\nrelay_ipv4 = "{host}"\n'
        f'port_min = {low}\nport_max = {low + 20}\nsecrets = ["{SECRET}"]\nallow_peers = ["127.0.0.0/8"]\n'
        f"alternate_servers = {alternates!r}\nalternate_threshold = {threshold}\n".replace("'", '"') + more
    )
    with running_server(tmp, host=host, extra=turn, web="enabled = false", log_level="info") as s:
        yield s


@contextlib.contextmanager
def two_nodes(tmp: Path, threshold_a: int, b_redirects_to_a: bool) -> Iterator[tuple[Server, Server, int]]:
    """A on 127.0.0.1 names B as its alternate; B on 127.0.0.2 names A when asked (drain)."""
    pa, pb = free_port("127.0.0.1"), free_port("127.0.0.2")
    b_alts = [f"127.0.0.1:{pa}"] if b_redirects_to_a else []
    with turn_node(tmp / "b", "127.0.0.2", pb, b_alts, 0) as b, \
            turn_node(tmp / "a", "127.0.0.1", pa, [f"127.0.0.2:{pb}"], threshold_a) as a:
        yield a, b, pa


def turn_stats(server: Server) -> dict[str, float]:
    stats: dict[str, float] = ctl(server, "stats", "turn_")
    return stats


@contextlib.contextmanager
def peer() -> Iterator[int]:
    port = free_port()
    proc = subprocess.Popen(["turnutils_peer", "-L", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.3)
    try:
        yield port
    finally:
        proc.kill()
        proc.wait()


def uclient(port: int, peer_port: int) -> str:
    """Two clients relaying to each other (-y), REST credentials, 20 messages each way."""
    out = subprocess.run(
        ["turnutils_uclient", "-y", "-W", SECRET, "-u", "rest", "-p", str(port), "-e", "127.0.0.1",
         "-r", str(peer_port), "-n", "20", "-m", "1", "-l", "170", "-z", "5", "127.0.0.1"],
        capture_output=True, text=True, timeout=40, env={**os.environ},
    )
    return out.stdout + out.stderr


def relayed_without_loss(out: str) -> bool:
    """uclient's totals: at least the 40 messages asked for, each one echoed, none lost.

    (On a loaded machine uclient may run a second sending round and report 80: the
    count grows, the echo and the loss line are what prove the relay.)"""
    totals = re.findall(r"tot_send_msgs=(\d+), tot_recv_msgs=(\d+)\n", out)
    if not totals or "Total lost packets 0 " not in out:
        return False
    sent, received = map(int, totals[-1])
    return sent == received >= 40


class FollowingClient:
    """A TURN client on one UDP socket that follows every 300 (REST credentials)."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(2.0)
        self.username = rest_username(int(time.time()) + 3600, "follower")
        self.key = integrity.long_term_key(self.username, REALM, rest_password(SECRET, self.username))

    def ask(self, server: tuple[str, int], data: bytes) -> Message:
        self.sock.sendto(data, server)
        reply, _ = self.sock.recvfrom(65535)
        return Message.parse(reply)

    def allocate(self, server: tuple[str, int]) -> Message:
        attrs: list[at.Attribute] = [at.RequestedTransport(17)]
        challenge = self.ask(server, sm.request(Method.ALLOCATE, os.urandom(12), attrs).serialize())
        nonce = challenge.get(at.Nonce)
        assert challenge.error_code == 401 and nonce is not None
        signed = sm.request(Method.ALLOCATE, os.urandom(12),
                            [*attrs, at.Username(self.username), at.Realm(REALM), at.Nonce(nonce.value)])
        return self.ask(server, signed.serialize(self.key))


class TlsClient(FollowingClient):
    """The same client over one TLS connection (a TURN ``tls`` listener)."""

    def __init__(self, server: tuple[str, int]) -> None:
        super().__init__()
        self.sock.close()
        ctx = ssl.create_default_context()
        ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE  # the node's self-signed certificate
        self.sock = ctx.wrap_socket(socket.create_connection(server, 2.0))

    def ask(self, server: tuple[str, int], data: bytes) -> Message:
        self.sock.sendall(data)  # over a stream: one message after another, framed by their length
        head = self._read(sm.HEADER_SIZE)
        return Message.parse(head + self._read(int.from_bytes(head[2:4], "big")))

    def _read(self, n: int) -> bytes:
        out = b""
        while len(out) < n:
            chunk = self.sock.recv(n - len(out))
            assert chunk, "the TURN server closed the connection"
            out += chunk
        return out


def test_allocations_above_the_threshold_go_to_the_alternate_node(tmp_path: Path) -> None:
    """A takes one allocation (threshold 1), then sends uclient to B, where it relays."""
    with two_nodes(tmp_path, threshold_a=1, b_redirects_to_a=False) as (a, b, pa), peer() as peer_port:
        holder = FollowingClient()
        first = holder.allocate(("127.0.0.1", pa))
        assert first.error_code is None  # below the threshold: served by A
        out = uclient(pa, peer_port)
        assert "error 300 (Try Alternate)" in out, out[-2000:]
        assert relayed_without_loss(out), out[-2000:]
        sa, sb = turn_stats(a), turn_stats(b)
        assert sa["turn_allocations_total"] == 1 and sa["turn_redirects"] >= 1, sa
        assert sb["turn_allocations_total"] >= 4 and sb["turn_redirects"] == 0, sb
        holder.sock.close()


def test_two_nodes_naming_each_other_never_bounce_a_client(tmp_path: Path) -> None:
    with two_nodes(tmp_path, threshold_a=0, b_redirects_to_a=True) as (a, b, pa), peer() as peer_port:
        # coturn's client follows one redirect, gets a second 300 and gives up
        uclient(pa, peer_port)
        sa, sb = turn_stats(a), turn_stats(b)
        assert sa["turn_redirects"] >= 1 and sb["turn_redirects"] >= 1
        assert sa["turn_allocations_total"] == sb["turn_allocations_total"] == 0
        # a client that follows every redirect: A -> B -> A, and A serves it this time
        c = FollowingClient()
        where = ("127.0.0.1", pa)
        hops = []
        for _ in range(4):
            reply = c.allocate(where)
            hops.append(where)
            alt = reply.get(at.AlternateServer)
            if reply.error_code != 300:
                break
            assert reply.check_integrity(c.key) and alt is not None  # RFC 8489: a 300 is signed
            where = alt.address
        assert reply.error_code is None and reply.get(at.XorRelayedAddress) is not None
        assert [h[0] for h in hops] == ["127.0.0.1", "127.0.0.2", "127.0.0.1"]
        assert turn_stats(a)["turn_redirect_loops_avoided"] == 1
        c.sock.close()


@pytest.mark.parametrize("domain", ["turn2.example.net", ""])
def test_alternate_domain_is_sent_to_tls_clients_when_set(tmp_path: Path, domain: str) -> None:
    """``[turn] alternate_domain``: a draining node's 300 to an Allocate over TLS carries
    ALTERNATE-DOMAIN (RFC 8489 §14.16) with that name beside ALTERNATE-SERVER, signed; not
    when unset, and never over UDP (the attribute is for clients that check a certificate)."""
    port, tls_port = free_port("127.0.0.1"), free_port("127.0.0.1")
    more = f'alternate_domain = "{domain}"\n' if domain else ""
    with turn_node(tmp_path, "127.0.0.1", port, ["127.0.0.2:5349"], 0, more, tls_port) as node:
        over_tls = TlsClient(("127.0.0.1", tls_port))
        over_udp = FollowingClient()
        try:
            for client, where in ((over_tls, tls_port), (over_udp, port)):
                reply = client.allocate(("127.0.0.1", where))
                assert reply.error_code == 300 and reply.check_integrity(client.key)
                alt = reply.get(at.AlternateServer)
                assert alt is not None and alt.address == ("127.0.0.2", 5349)
                named = reply.get(at.AlternateDomain)
                if client is over_tls and domain:
                    assert named is not None and named.value == domain
                else:
                    assert named is None
            assert turn_stats(node)["turn_redirects"] == 2
        finally:
            over_tls.sock.close()
            over_udp.sock.close()
