"""Digest authentication through `sipedge serve` (RFC 7616/8760): SHA-256 offered first
and used, nonces that expire (stale=true, then the retry with the fresh nonce passes) and
nonce-count replay refused."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from helpers.sipserver import Server, running_server
from helpers.ua import UA, _params
from sipedge.sip import message as m

USERS = {"alice": "alice-pw", "bob": "bob-pw", "carol": "carol-pw"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    extra = '[auth]\nalgorithms = ["SHA-256", "MD5"]\nnonce_lifetime = 1.0\n'
    with running_server(tmp_path_factory.mktemp("digest"), extra=extra, users=USERS) as s:
        yield s


def ua(server: Server, user: str) -> UA:
    return UA("udp", (server.host, server.udp), user, server.host, USERS[user])


def challenged(server: Server, client: UA) -> tuple[m.Request, m.Response]:
    """A REGISTER and the 401 it got."""
    req = client.build("REGISTER", f"sip:{server.host}", to=client.aor, headers={"Expires": "300"})
    client.send(req)
    return req, client.expect(401)


def test_sha256_is_offered_first_and_accepted(server: Server) -> None:
    alice = ua(server, "alice")
    try:
        req, challenge = challenged(server, alice)
        offered = [_params(v).get("algorithm") for v in challenge.get_all("WWW-Authenticate")]
        assert offered == ["SHA-256", "MD5"]
        again = alice.authorize(req, challenge)
        assert "algorithm=SHA-256" in (again.get("authorization") or "")
        alice.send(again)
        assert alice.expect_final().status == 200
    finally:
        alice.close()


def test_an_expired_nonce_is_stale_and_the_fresh_one_passes(server: Server) -> None:
    bob = ua(server, "bob")
    try:
        req, old = challenged(server, bob)
        time.sleep(1.5)  # past nonce_lifetime
        bob.send(bob.authorize(req, old))
        stale = bob.expect_final()
        assert stale.status == 401
        assert "stale=true" in stale.get_all("WWW-Authenticate")[0].lower()
        bob.send(bob.authorize(req, stale))
        assert bob.expect_final().status == 200
    finally:
        bob.close()


def test_a_replayed_nonce_count_is_refused(server: Server) -> None:
    carol = ua(server, "carol")
    try:
        req, challenge = challenged(server, carol)
        carol.send(carol.authorize(req, challenge))
        assert carol.expect_final().status == 200
        carol.send(carol.authorize(req, challenge))  # same nonce, nc=00000001 again
        replay = carol.expect_final()
        assert replay.status == 401  # refused; a fresh nonce (stale=true: the password was right)
        fresh = _params(replay.get_all("WWW-Authenticate")[0])
        assert fresh["nonce"] != _params(challenge.get_all("WWW-Authenticate")[0])["nonce"]
        carol.send(carol.authorize(req, replay))
        assert carol.expect_final().status == 200
    finally:
        carol.close()
