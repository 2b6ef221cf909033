"""``media.remote`` as a pool: one ``sipedge serve`` proxy spreads calls over two real
``sipedge media serve`` relays on 127.0.0.1 and 127.0.0.2 (weights 1 and 2), keeps each
call on its relay (re-INVITEs included), takes a SIGKILLed relay out by ng ping and puts it
back when it answers again, and retries an offer that fails or times out on the next relay.

Which relay carries a call is read from the SDP the parties get: each relay advertises its
own address. Media is checked to flow through it both ways."""

from __future__ import annotations

import contextlib
import signal
import socket
import struct
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from helpers.metrics import metrics
from helpers.ports import free_port
from helpers.rtpengine import INSTALLED as RTPENGINE_INSTALLED
from helpers.rtpengine import running_rtpengine, wait_pong
from helpers.sipserver import SIPEDGE, Server, running_server
from helpers.ua import UA
from integration.test_ctl import api, ctl, token_of
from integration.test_proxy_media import in_dialog, media_of, natted_invite, rtp, sdp, udp_socket
from sipedge.sip import message as m

USERS = {f"u{i}": f"u{i}-pw" for i in range(80)}  # two per call, each call its own
NODE_HOSTS = ("127.0.0.1", "127.0.0.2")


@dataclass
class Node:
    host: str
    ng: int
    args: list[str]
    log: Path
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(self.args, stdout=subprocess.DEVNULL, stderr=self.log.open("ab"))
        wait_pong(self.ng, self.proc, self.log, host=self.host)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(5)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


@contextlib.contextmanager
def media_pool(tmp: Path, ping_interval: float, node_extra: tuple[str, str] = ("", "")) -> Iterator[
        tuple[Server, list[Node]]]:
    """Two relays (weight 1 on 127.0.0.1, weight 2 on 127.0.0.2) behind one proxy."""
    nodes = []
    for i, host in enumerate(NODE_HOSTS):
        low = free_port(host) & ~1
        cfg = tmp / f"node{i}.toml"
        cfg.write_text(f'[general]\ndata_dir = "{tmp}/node{i}"\n[media]\nlisten = "{host}"\n'
                       f"port_min = {low}\nport_max = {low + 40}\n{node_extra[i]}\n")
        ng = free_port(host)
        nodes.append(Node(host, ng, [SIPEDGE, "media", "serve", "--config", str(cfg), "--ng-listen", f"{host}:{ng}"],
                          tmp / f"node{i}.log"))
    try:
        for node in nodes:
            node.start()
        remote = f'["{nodes[0].host}:{nodes[0].ng}", "{nodes[1].host}:{nodes[1].ng};weight=2"]'
        extra = f"\n[media]\nremote = {remote}\nping_interval = {ping_interval}\nremote_timeout = 0.5\n"
        with running_server(tmp / "proxy", users=USERS, extra=extra) as proxy:
            yield proxy, nodes
    finally:
        for node in nodes:
            node.stop()


@dataclass
class Call:
    caller: UA
    callee: UA
    ok: m.Response
    a_rtp: socket.socket
    b_rtp: socket.socket
    relay: str  # the relay's address both SDPs point at
    to_a: int  # the relay port the caller sends to
    to_b: int

    def talk(self, first: int) -> None:
        """Five packets each way through the relay (the caller first: it latches)."""
        for seq in range(first, first + 5):
            self.a_rtp.sendto(rtp(seq), (self.relay, self.to_a))
        got = sorted(struct.unpack("!H", self.b_rtp.recvfrom(2048)[0][2:4])[0] for _ in range(5))
        assert got == list(range(first, first + 5))
        for seq in range(first + 100, first + 105):
            self.b_rtp.sendto(rtp(seq), (self.relay, self.to_b))
        got = sorted(struct.unpack("!H", self.a_rtp.recvfrom(2048)[0][2:4])[0] for _ in range(5))
        assert got == list(range(first + 100, first + 105))

    def reinvite(self, port: int = 4002) -> str:
        """A re-INVITE with a new offer from the caller; the relay both new SDPs name."""
        req = in_dialog(self.caller, "INVITE", self.ok, body=sdp("192.168.77.2", port))
        self.caller.send(req)
        seen = self.callee.wait("INVITE")
        assert isinstance(seen, m.Request)
        towards_callee, self.to_b = media_of(seen.body)
        self.callee.answer(seen, 200, body=sdp("127.0.0.1", self.b_rtp.getsockname()[1]))
        ok = self.caller.wait(lambda x: isinstance(x, m.Response) and x.status == 200
                              and x.cseq.number == req.cseq.number)
        assert isinstance(ok, m.Response)
        ack = in_dialog(self.caller, "ACK", self.ok)
        ack.set("CSeq", f"{req.cseq.number} ACK")
        self.caller.send(ack)
        relay, self.to_a = media_of(ok.body)  # (rtpengine may hand out new ports)
        assert relay == towards_callee
        return towards_callee

    def hang_up(self) -> None:
        self.caller.send(in_dialog(self.caller, "BYE", self.ok))
        got = self.callee.wait("BYE")
        assert isinstance(got, m.Request)
        self.callee.answer(got, 200)
        self.caller.expect(200)
        self.close()

    def close(self) -> None:
        for s in (self.a_rtp, self.b_rtp):
            s.close()
        self.caller.close()
        self.callee.close()


_next_user = iter(range(0, len(USERS), 2))


def place_call(server: Server) -> Call:
    i = next(_next_user)
    caller = UA("udp", (server.host, server.udp), f"u{i}", server.host, USERS[f"u{i}"])
    callee = UA("udp", (server.host, server.udp), f"u{i + 1}", server.host, USERS[f"u{i + 1}"])
    a_rtp, b_rtp = udp_socket(), udp_socket()
    _, seen = natted_invite(caller, callee)
    relay, to_b = media_of(seen.body)
    callee.answer(seen, 200, body=sdp("127.0.0.1", b_rtp.getsockname()[1]))
    ok = caller.expect(200)
    relay_a, to_a = media_of(ok.body)
    assert relay_a == relay and relay in NODE_HOSTS
    return Call(caller, callee, ok, a_rtp, b_rtp, relay, to_a, to_b)


def nodes_of(server: Server) -> dict[str, dict[str, object]]:
    return {row["node"].rsplit(":", 1)[0]: row for row in ctl(server, "media", "nodes")}


def wait_state(server: Server, host: str, state: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while nodes_of(server)[host]["state"] != state:
        assert time.monotonic() < deadline, f"{host} never became {state}: {nodes_of(server)} {metrics(server)}"
        time.sleep(0.1)


def test_calls_spread_by_weight_and_stick_to_their_relay(tmp_path: Path) -> None:
    with media_pool(tmp_path, ping_interval=0.5) as (proxy, _):
        calls = [place_call(proxy) for _ in range(3)]
        try:
            assert Counter(c.relay for c in calls) == {"127.0.0.1": 1, "127.0.0.2": 2}
            for i, c in enumerate(calls):
                c.talk(10 * i)
            rows = nodes_of(proxy)
            assert [(rows[h]["state"], rows[h]["weight"], rows[h]["calls"]) for h in NODE_HOSTS] == [
                ("up", 1, 1), ("up", 2, 2)]
            # re-INVITEs: the round robin has moved on, each call stays on its relay
            for i, c in enumerate(calls):
                assert c.reinvite() == c.relay
                time.sleep(0.1)
                c.talk(100 + 10 * i)
            status, body = api(proxy, "/api/media.nodes", token_of(proxy))
            assert status == 200 and [r["calls"] for r in body["result"]] == [1, 2]
            counters = metrics(proxy)
            assert counters["media_pool_offers"] == 6 and counters["media_pool_retries"] == 0
            assert counters["media_pool_nodes"] == 2 and counters["media_pool_nodes_up"] == 2
            assert counters["media_pool_calls"] == 3
        finally:
            for c in calls:
                c.hang_up()
        assert [nodes_of(proxy)[h]["calls"] for h in NODE_HOSTS] == [0, 0]
        assert metrics(proxy)["media_pool_calls"] == 0


def test_a_killed_relay_is_taken_out_by_ping_and_put_back_when_it_answers(tmp_path: Path) -> None:
    with media_pool(tmp_path, ping_interval=0.3) as (proxy, nodes):
        calls = [place_call(proxy) for _ in range(3)]
        on_first = next(c for c in calls if c.relay == "127.0.0.1")
        nodes[1].kill()
        wait_state(proxy, "127.0.0.2", "down")
        on_first.talk(0)  # the call in progress on the live relay is untouched
        later = [place_call(proxy) for _ in range(3)]
        assert [c.relay for c in later] == ["127.0.0.1"] * 3
        nodes[1].start()
        wait_state(proxy, "127.0.0.2", "up")
        back = [place_call(proxy) for _ in range(3)]
        assert "127.0.0.2" in {c.relay for c in back}
        for c in back:
            c.talk(50)
        counters = metrics(proxy)
        assert counters["media_pool_node_down"] == 1 and counters["media_pool_node_up"] == 1
        assert counters["media_pool_ping_failures"] >= 1
        assert "media node 127.0.0.2" in proxy.log_text()
        on_first.talk(80)
        for c in (*calls, *later, *back):
            c.close()


def test_an_offer_that_times_out_is_retried_on_the_next_relay(tmp_path: Path) -> None:
    """No ping within the test (every 60 s): the relay killed after the first ping is found
    out by the offer sent to it, which times out and goes to the other relay. With both
    killed, an offer tries each once and the call is refused 503."""
    with media_pool(tmp_path, ping_interval=60) as (proxy, nodes):
        nodes[1].kill()
        calls = [place_call(proxy) for _ in range(2)]  # one of two picks is the heavier relay
        assert [c.relay for c in calls] == ["127.0.0.1"] * 2
        rows = nodes_of(proxy)
        assert rows["127.0.0.2"]["state"] == "down" and rows["127.0.0.2"]["failures"] == 1
        assert metrics(proxy)["media_pool_retries"] == 1
        calls[0].talk(0)
        # with no relay left, each is tried once and the call gets 503
        nodes[0].kill()
        i = next(_next_user)
        caller = UA("udp", (proxy.host, proxy.udp), f"u{i}", proxy.host, USERS[f"u{i}"])
        callee = UA("udp", (proxy.host, proxy.udp), f"u{i + 1}", proxy.host, USERS[f"u{i + 1}"])
        assert callee.register().status == 200
        inv = caller.build("INVITE", callee.aor, body=sdp("192.168.77.2", 4000),
                           headers={"Content-Type": "application/sdp"})
        caller.send(inv)
        caller.send(caller.authorize(inv, caller.expect(407)))
        assert caller.expect_final(10).status == 503
        assert not [x for x in callee.inbox if isinstance(x, m.Request)]
        for ua in (caller, callee):
            ua.close()
        for c in calls:
            c.close()


def test_an_offer_a_full_relay_refuses_is_retried_on_the_next(tmp_path: Path) -> None:
    """The relay on 127.0.0.2 takes one call (its media.max_calls); the next offer it gets
    is refused ("too many calls") and goes to 127.0.0.1. A refusal does not take it out."""
    with media_pool(tmp_path, ping_interval=0.5, node_extra=("", "max_calls = 1")) as (proxy, _):
        calls = [place_call(proxy) for _ in range(3)]  # picks: .2, .1, .2 (refused) -> .1
        assert [c.relay for c in calls] == ["127.0.0.2", "127.0.0.1", "127.0.0.1"]
        rows = nodes_of(proxy)
        assert rows["127.0.0.2"]["state"] == "up" and rows["127.0.0.2"]["failures"] == 1
        assert metrics(proxy)["media_pool_retries"] == 1
        calls[2].talk(0)
        for c in calls:
            c.hang_up()


@pytest.mark.skipif(not RTPENGINE_INSTALLED, reason="rtpengine not installed (rtpengine-daemon)")
def test_a_pool_of_two_rtpengines_spreads_and_sticks(tmp_path: Path) -> None:
    """The same with Debian's rtpengine-daemon as both relays."""
    (tmp_path / "r1").mkdir()
    (tmp_path / "r2").mkdir()
    low1, low2 = free_port("127.0.0.1") & ~1, free_port("127.0.0.2") & ~1
    with running_rtpengine(tmp_path / "r1", low1, low1 + 40) as ng1, \
            running_rtpengine(tmp_path / "r2", low2, low2 + 40, host="127.0.0.2") as ng2:
        remote = f'["127.0.0.1:{ng1}", "127.0.0.2:{ng2};weight=2"]'
        extra = f"\n[media]\nremote = {remote}\nping_interval = 0.5\n"
        with running_server(tmp_path / "proxy", users=USERS, extra=extra) as proxy:
            calls = [place_call(proxy) for _ in range(3)]
            try:
                assert Counter(c.relay for c in calls) == {"127.0.0.1": 1, "127.0.0.2": 2}
                for i, c in enumerate(calls):
                    c.talk(10 * i)
                    assert c.reinvite(4000) == c.relay  # (the same offer again: a session refresh)
                    time.sleep(0.1)
                    c.talk(100 + 10 * i)
                assert [nodes_of(proxy)[h]["calls"] for h in NODE_HOSTS] == [1, 2]
            finally:
                for c in calls:
                    c.hang_up()
