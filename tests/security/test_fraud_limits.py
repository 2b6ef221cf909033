"""Fail2ban, scanners, rate limits and the toll-fraud guard, through ``sipedge serve``
with real UDP clients on loopback addresses of their own (``trusted = []`` where the
source must count)."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers.metrics import metrics
from helpers.sipserver import Server, running_server
from helpers.ua import UA
from sipedge.sip import message as m

USERS = {"alice": "alice-pw", "bob": "bob-pw"}
OUR_DOMAIN = 'domains = ["127.0.0.1"]'  # so 127.0.0.99 is a foreign destination


def ua(server: Server, source: str, user: str = "alice", password: str = "") -> UA:
    return UA("udp", (server.host, server.udp), user, server.host, password, host=source)


def final(u: UA, req: m.Request, timeout: float = 1.5) -> int | None:
    u.send(req)
    try:
        return u.expect_final(timeout).status
    except AssertionError:
        return None  # unanswered


def options(u: UA, server: Server, headers: dict[str, str] | None = None) -> int | None:
    return final(u, u.build("OPTIONS", f"sip:{server.host}:{server.udp}", headers=headers))


def guess(u: UA, server: Server) -> int | None:
    """A REGISTER answered with credentials of a wrong password, against a real nonce."""
    req = u.build("REGISTER", f"sip:{server.host}", to=u.aor, headers={"Expires": "60"})
    u.send(req)
    try:
        first = u.expect_final(1.5)
    except AssertionError:
        return None
    if first.status != 401:
        return first.status
    return final(u, u.authorize(req, first))


# -- fail2ban in-process --------------------------------------------------------------------
@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    flood = ("[sip.flood]\ntrusted = []\nmax_auth_failures = 3\nmax_user_auth_failures = 6\n"
             "auth_window = 60.0\nmax_requests = 1000\n")
    with running_server(tmp_path_factory.mktemp("fail2ban"), users=USERS, log_level="info", extra=flood) as s:
        yield s


def test_a_password_guesser_is_banned_after_max_auth_failures(guarded: Server) -> None:
    before = metrics(guarded)
    guesser = ua(guarded, "127.0.0.4", password="not-it")
    try:
        assert [guess(guesser, guarded) for _ in range(3)] == [401, 401, 401]
        assert guess(guesser, guarded) is None  # the 4th failure bans: no answer, now or later
        assert options(guesser, guarded) is None
    finally:
        guesser.close()
    after = metrics(guarded)
    assert after["sip_auth_failure_bans"] - before["sip_auth_failure_bans"] == 1
    assert "source 127.0.0.4 banned for 60 s: failed digest responses" in guarded.log_text()
    right = ua(guarded, "127.0.0.5", password=USERS["alice"])
    try:
        assert right.register().status == 200  # the user is not locked out
    finally:
        right.close()


def test_guesses_spread_over_many_sources_get_one_try_each_past_the_user_limit(guarded: Server) -> None:
    answers = []
    for i in range(10):  # one wrong guess each for bob, from ten addresses
        u = ua(guarded, f"127.0.1.{i + 1}", user="bob", password="guess")
        try:
            answers.append(guess(u, guarded))
            answers.append(options(u, guarded))  # banned or not, after its guess
        finally:
            u.close()
    # the first six failures for bob count up; from the seventh on, each source is banned
    assert answers[:12] == [401, 200] * 6, answers
    assert answers[12:] == [None, None] * 4, answers
    right = ua(guarded, "127.0.1.99", user="bob", password=USERS["bob"])
    try:
        assert right.register().status == 200
    finally:
        right.close()


def test_scanners_are_dropped_unanswered_and_banned(guarded: Server) -> None:
    before = metrics(guarded)
    scanner = ua(guarded, "127.0.0.6")
    try:
        assert options(scanner, guarded, {"User-Agent": "friendly-scanner"}) is None
        assert options(scanner, guarded) is None  # banned: its next request too
    finally:
        scanner.close()
    honest = ua(guarded, "127.0.0.7")
    try:
        assert options(honest, guarded, {"User-Agent": "Linphone/5.2 (a friendly phone)"}) == 200
    finally:
        honest.close()
    after = metrics(guarded)
    assert after["sip_scanners_dropped"] - before["sip_scanners_dropped"] == 1
    assert "source 127.0.0.6 banned for 60 s: its User-Agent names a SIP scanner" in guarded.log_text()


# -- rate limits ----------------------------------------------------------------------------
@contextlib.contextmanager
def limited(tmp: Path, algorithm: str, limits: str, per_source: str = "[]", interval: float = 30.0) -> Iterator[Server]:
    cfg = (f'[sip.ratelimit]\nalgorithm = "{algorithm}"\ninterval = {interval}\nlimits = {limits}\n'
           f"per_source = {per_source}\n[sip.flood]\ntrusted = []\n")
    with running_server(tmp, users=USERS, log_level="info", extra=cfg) as s:
        yield s


def test_taildrop_limits_in_total_and_per_source_with_503_retry_after_and_reason(tmp_path: Path) -> None:
    with limited(tmp_path, "taildrop", '["OPTIONS:8"]', '["OPTIONS:3"]') as s:
        a, b, c = ua(s, "127.0.0.21"), ua(s, "127.0.0.22"), ua(s, "127.0.0.23")
        try:
            assert [options(a, s) for _ in range(4)] == [200, 200, 200, 503]  # per source
            assert [options(b, s) for _ in range(3)] == [200, 200, 200]
            assert [options(c, s) for _ in range(2)] == [200, 503]  # 8 in total (start-up OPTIONS too)
            c.send(c.build("OPTIONS", f"sip:{s.host}:{s.udp}"))
            resp = c.expect_final(2)
            assert resp.status == 503 and resp.reason == "Rate Limited"
            assert resp.get("retry-after") == "30"
            assert resp.get("reason") == 'SIP;cause=503;text="OPTIONS rate limit"'
            # ACK and CANCEL are never limited, other methods have no pipe here
            assert final(a, a.build("MESSAGE", f"sip:bob@{s.host}"), 2) in (401, 407, 404, 480)
        finally:
            for u in (a, b, c):
                u.close()
        assert metrics(s)["sip_ratelimit_dropped"] >= 3


def test_red_sheds_load_progressively_from_half_the_rate(tmp_path: Path) -> None:
    with limited(tmp_path, "red", '["OPTIONS:20"]') as s:
        u = ua(s, "127.0.0.24")
        try:
            answers = [options(u, s) for _ in range(40)]
        finally:
            u.close()
        # the start-up OPTIONS was the pipe's first request, so these are its 2nd..41st
        passed = answers.count(200)
        assert answers[:9] == [200] * 9  # nothing dropped up to half the rate
        assert answers[19:] == [503] * 21  # everything past the rate
        assert 9 < passed < 19, answers  # and a growing share in between


class Flood(threading.Thread):
    """A bounded burst of datagrams that raises the host's inbound packet rate."""

    def __init__(self, target: tuple[str, int], seconds: float, rate: int) -> None:
        super().__init__(daemon=True)
        self.target, self.seconds, self.rate = target, seconds, rate

    def run(self) -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.26", 0))
            start = time.monotonic()
            while time.monotonic() - start < self.seconds:
                for _ in range(self.rate // 100):
                    s.sendto(b"\r\n\r\n", self.target)  # keepalives: cheap, never answered
                time.sleep(0.01)


def test_network_algorithm_follows_the_hosts_inbound_packet_rate(tmp_path: Path) -> None:
    with limited(tmp_path, "network", '["OPTIONS:2000"]', interval=0.5) as s:
        u = ua(s, "127.0.0.25")
        try:
            time.sleep(1.2)  # a quiet second measured
            assert options(u, s) == 200
            flood = Flood((s.host, s.udp), seconds=3.0, rate=8000)
            flood.start()
            time.sleep(1.5)
            during = [options(u, s) for _ in range(3)]
            flood.join()
        finally:
            u.close()
        assert 503 in during, during


# -- per destination and toll fraud ---------------------------------------------------------
class Carrier(threading.Thread):
    """A foreign destination on 127.0.0.99 answering every INVITE 486 (and its ACK)."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.99", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.invites = 0
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                data, addr = self.sock.recvfrom(65535)
            except TimeoutError:
                continue
            msg = m.parse(data)
            if isinstance(msg, m.Request) and msg.method == "INVITE":
                self.invites += 1
                self.sock.sendto(m.make_response(msg, 486, to_tag="carrier").serialize(), addr)

    def close(self) -> None:
        self.stop.set()
        self.join(2)
        self.sock.close()


def _call_abroad(alice: UA, carrier: Carrier) -> int | None:
    invite = alice.build("INVITE", f"sip:+4790000000@127.0.0.99:{carrier.port}")
    alice.send(invite)
    first = alice.expect_final(3)
    if first.status != 407:
        return first.status
    alice.send(alice.authorize(invite, first))
    return alice.expect_final(3).status


@contextlib.contextmanager
def calling_abroad(tmp: Path, cfg: str) -> Iterator[tuple[Server, Carrier, UA, UA]]:
    """``sipedge serve`` (domain 127.0.0.1) with ``cfg``, a carrier on 127.0.0.99, and
    alice's and bob's UAs; the server's log must show no traceback."""
    carrier = Carrier()
    carrier.start()
    try:
        with running_server(tmp, users=USERS, log_level="info", extra=cfg, sip=OUR_DOMAIN) as s:
            alice = ua(s, "127.0.0.1", password=USERS["alice"])
            bob = ua(s, "127.0.0.1", user="bob", password=USERS["bob"])
            try:
                yield s, carrier, alice, bob
            finally:
                alice.close()
                bob.close()
            assert "Traceback" not in s.log_text()
    finally:
        carrier.close()


def test_requests_to_one_foreign_destination_are_rate_limited(tmp_path: Path) -> None:
    with calling_abroad(tmp_path, "[sip.ratelimit]\ninterval = 60.0\nper_destination = 2\n") as (_, carrier, alice, bob):
        assert [_call_abroad(alice, carrier) for _ in range(2)] == [486, 486]
        assert _call_abroad(bob, carrier) == 503  # the destination's pipe is full
        assert _call_abroad(alice, carrier) == 503
        assert carrier.invites == 2


def test_the_toll_fraud_guard_refuses_past_max_foreign_calls(tmp_path: Path) -> None:
    with calling_abroad(tmp_path, "[sip.fraud]\nmax_foreign_calls = 2\nwindow = 600.0\n") as (s, carrier, alice, bob):
        assert [_call_abroad(alice, carrier) for _ in range(3)] == [486, 486, 403]
        assert _call_abroad(bob, carrier) == 486  # per user
        local = alice.build("INVITE", f"sip:bob@{s.host}")  # calls at home still go
        alice.send(local)
        first = alice.expect_final(3)
        alice.send(alice.authorize(local, first))
        assert alice.expect_final(3).status == 480  # bob is not registered
        assert metrics(s)["sip_fraud_refused"] == 1
        assert "alice: foreign call refused, over sip.fraud.max_foreign_calls" in s.log_text()
        assert carrier.invites == 3
