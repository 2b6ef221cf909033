"""Two ``sipedge serve`` nodes (127.0.0.1 and 127.0.0.2) sharing one real redis-server
through ``[redis]``: a registration on A is found by B (its lookup routes a call, ``ctl ul
show`` lists it), a digest nonce A issued is accepted by B, a flooder banned on A is
refused by B (and ``ctl ban rm`` on B lets it back on A), a source's requests to A and
B fill one ``[sip.ratelimit]`` pipe, a node with another ``prefix`` on the same Redis
sees neither A's and B's bindings nor their bans, a TURN user's allocations are
counted over both nodes, and Redis stopped under the running servers gives 500 and a log
line, then service back by itself once it restarts."""

from __future__ import annotations

import asyncio
import json
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis as redis_py

from helpers.ports import free_port
from helpers.redisserver import RedisServer
from helpers.sipserver import Server, add_users, cli, running_server
from helpers.ua import UA
from sipedge.sip import message as m
from sipedge.turn.auth import rest_password, rest_username

aioice_turn = pytest.importorskip("aioice.turn")
pytestmark = pytest.mark.timeout(90)

DOMAIN = "cluster.test"
USERS = {"alice": "alice-pw", "bob": "bob-pw", "carol": "carol-pw"}
TURN_SECRET = "cluster-turn-secret"
FLOOD_LIMIT = 40
INFO_RATE = 6  # [sip.ratelimit] per_source, per minute: counted over both nodes


@pytest.fixture(scope="module")
def redis() -> Iterator[RedisServer]:
    """A redis-server of this module's own: a test here stops and restarts it."""
    with tempfile.TemporaryDirectory(prefix="sipedge-redis-cluster-") as tmp:
        server = RedisServer(Path(tmp))
        try:
            server.start()
        except (OSError, RuntimeError) as exc:
            pytest.skip(f"no redis-server: {exc}")
        try:
            yield server
        finally:
            server.stop()


def node_config(redis: RedisServer, host: str) -> str:
    turn_port = free_port(host)
    low = free_port(host) & ~1
    return f"""
[redis]
url = "{redis.url}"
retry_min = 0.1
retry_max = 0.5
sync_interval = 0.2

[sip.flood]
trusted = []
max_requests = {FLOOD_LIMIT}
ban_time = 60

[sip.ratelimit]
per_source = ["INFO:{INFO_RATE}"]
interval = 60

[turn]
enabled = true
listen = ["udp:{host}:{turn_port}"]
relay_ipv4 = "{host}"
port_min = {low}
port_max = {low + 10}
secrets = ["{TURN_SECRET}"]
allow_peers = ["127.0.0.0/8"]
max_allocations_per_user = 2
"""


@pytest.fixture(scope="module")
def nodes(redis: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Server]]:
    tmp = tmp_path_factory.mktemp("cluster")
    sip = f'domains = ["{DOMAIN}"]'
    with (
        running_server(tmp / "a", "127.0.0.1", extra=node_config(redis, "127.0.0.1"), sip=sip, log_level="info") as a,
        running_server(tmp / "b", "127.0.0.2", extra=node_config(redis, "127.0.0.2"), sip=sip, log_level="info") as b,
    ):
        for s in (a, b):  # subscribers stay in each node's SQLite file
            add_users(s.config, DOMAIN, USERS)
        yield a, b


def ua(server: Server, user: str, host: str = "127.0.0.1") -> UA:
    return UA("udp", (server.host, server.udp), user, DOMAIN, USERS.get(user, ""), host=host)


def ctl(server: Server, *args: str) -> Any:
    proc = cli(["ctl", "--config", str(server.config), "--json", *args], check=False)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def api(server: Server, name: str, **params: str) -> Any:
    """The same commands as :func:`ctl`, over the node's HTTP API (no CLI process to start)."""
    token = (server.data_dir / "admin.token").read_text().strip()
    req = urllib.request.Request(f"http://{server.host}:{server.http}/api/{name}", data=json.dumps(params).encode(),
                                 headers={"Authorization": f"Bearer {token}"}, method="POST")
    with urllib.request.urlopen(req, timeout=5) as r:
        return json.loads(r.read())["result"]


def options(client: UA, server: Server, timeout: float = 1.0) -> int | None:
    client.send(client.build("OPTIONS", f"sip:{server.host}:{server.udp}"))
    try:
        return client.expect_final(timeout).status
    except AssertionError:
        return None


def eventually(check: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "not within the time allowed"
        time.sleep(0.1)


def test_a_registration_on_a_is_found_by_b(nodes: tuple[Server, Server]) -> None:
    a, b = nodes
    alice, bob = ua(a, "alice"), ua(b, "bob")
    try:
        assert alice.register().status == 200
        shown = ctl(b, "ul", "show", f"alice@{DOMAIN}")
        assert [x["contact"] for x in shown] == [alice.contact.strip("<>")]
        invite = bob.build("INVITE", f"sip:alice@{DOMAIN}")
        bob.send(invite)
        first = bob.expect_final()
        if first.status == 407:
            bob.send(bob.authorize(invite, first))
        seen = alice.wait("INVITE")  # B looked alice up in Redis and sent the call to her
        assert isinstance(seen, m.Request)
        # through A, which holds her flow (sip.node_path "auto": on with Redis, docs/cluster.md)
        assert [src for msg, src in alice.arrivals if msg is seen] == [(a.host, a.udp)]
        alice.server = (a.host, a.udp)  # the answer goes back the way the INVITE came
        alice.answer(seen, 486)
        assert bob.expect_final().status == 486
        alice.wait("ACK")
        alice.server = (a.host, a.udp)
        alice.register(expires=0)
        assert ctl(a, "ul", "dump") == [] and ctl(b, "ul", "dump") == []
    finally:
        alice.close()
        bob.close()


def test_a_nonce_from_a_is_accepted_by_b(nodes: tuple[Server, Server]) -> None:
    a, b = nodes
    on_a, on_b = ua(a, "carol"), ua(b, "carol")
    try:
        req = on_a.build("REGISTER", f"sip:{DOMAIN}", to=on_a.aor, headers={"Expires": "60"})
        on_a.send(req)
        challenge = on_a.expect(401)
        on_b.send(on_b.authorize(req, challenge))  # answered to the other node
        assert on_b.expect_final().status == 200
        on_b.register(expires=0)
    finally:
        on_a.close()
        on_b.close()


def test_a_flooder_banned_on_a_is_refused_by_b_and_lifted_from_b(nodes: tuple[Server, Server]) -> None:
    a, b = nodes
    flooder, other = ua(a, "mallory", host="127.0.0.5"), ua(b, "trent", host="127.0.0.6")
    to_b = ua(b, "mallory", host="127.0.0.5")
    try:
        assert options(to_b, b) == 200  # B answers it before the flood
        for _ in range(FLOOD_LIMIT + 10):
            flooder.send(flooder.build("OPTIONS", f"sip:{a.host}:{a.udp}"))
        eventually(lambda: "127.0.0.5" in {x["source"] for x in ctl(b, "ban", "list")})
        assert options(to_b, b) is None  # dropped by B too
        assert options(other, b) == 200  # and only that source
        assert "source 127.0.0.5 banned" in b.log_text() and "banned by another node" in b.log_text()
        stats = ctl(b, "stats", "sip_flood")
        assert stats["sip_flood_bans_adopted"] >= 1
        ctl(b, "ban", "rm", "127.0.0.5")  # lifted on B: A lets it back at its next sync
        eventually(lambda: "127.0.0.5" not in {x["source"] for x in ctl(a, "ban", "list")})
        flooder.inbox.clear()
        assert options(flooder, a) == 200
    finally:
        for c in (flooder, other, to_b):
            c.close()


def test_prefix_keeps_two_installations_on_one_redis_apart(
    nodes: tuple[Server, Server], redis: RedisServer, tmp_path: Path
) -> None:
    """``[redis] prefix``: C (prefix "other:") on the same Redis as A and B (the default
    "sipedge:", which they share) sees none of their bindings and bans, nor they C's."""
    a, b = nodes
    extra = node_config(redis, "127.0.0.3").replace("[redis]\n", '[redis]\nprefix = "other:"\n')
    with running_server(tmp_path / "c", "127.0.0.3", extra=extra, sip=f'domains = ["{DOMAIN}"]', log_level="info") as c:
        add_users(c.config, DOMAIN, USERS)
        on_a, on_c = ua(a, "alice"), ua(c, "bob")
        try:
            assert on_a.register().status == 200 and on_c.register().status == 200
            assert {x["aor"] for x in api(c, "ul.dump")} == {f"sip:bob@{DOMAIN}"}
            on_b = {x["aor"] for x in api(b, "ul.dump")}  # A's alice, not C's bob
            assert f"sip:alice@{DOMAIN}" in on_b and f"sip:bob@{DOMAIN}" not in on_b
            api(a, "ban.add", source="127.0.0.10")
            api(c, "ban.add", source="127.0.0.9")
            eventually(lambda: "127.0.0.10" in {x["source"] for x in api(b, "ban.list")})
            time.sleep(1.0)  # five sync intervals more: C's ban stays its own, and A's A's
            assert "127.0.0.9" not in {x["source"] for x in api(b, "ban.list")}
            assert {x["source"] for x in api(c, "ban.list")} == {"127.0.0.9"}
            keys = {k.decode() for k in redis_py.Redis.from_url(redis.url).keys("other:*")}
            assert {"other:bans", f"other:loc:aor:sip:bob@{DOMAIN}"} <= keys
            assert not any("alice" in k for k in keys)
            on_a.register(expires=0)
        finally:
            on_a.close()
            on_c.close()
            api(a, "ban.rm", source="127.0.0.10")


def test_a_per_source_rate_limit_is_counted_over_both_nodes(nodes: tuple[Server, Server], redis: RedisServer) -> None:
    """``[redis] ratelimit``: a source's INFOs to A and to B fill one pipe (a minute's
    window of Redis's clock): past the rate, B answers 503 though it saw only half."""
    a, b = nodes
    to_a, to_b = ua(a, "mallory", host="127.0.0.7"), ua(b, "mallory", host="127.0.0.7")
    other = ua(b, "trent", host="127.0.0.8")

    def info(client: UA) -> m.Response:
        client.send(client.build("INFO", f"sip:alice@{DOMAIN}"))
        return client.expect_final()

    try:
        before = api(b, "stats", prefix="sip_ratelimit")["sip_ratelimit_dropped"]
        with redis_py.Redis.from_url(redis.url) as r:  # not across a window's end
            sec, _ = r.time()
        if 60 - sec % 60 < 3:
            time.sleep(60 - sec % 60 + 0.1)
        half = INFO_RATE // 2
        got = [info(to_a) for _ in range(half)] + [info(to_b) for _ in range(INFO_RATE - half + 2)]
        assert [x.status == 503 for x in got] == [False] * INFO_RATE + [True, True], [x.status for x in got]
        assert got[-1].get("reason") == 'SIP;cause=503;text="INFO rate limit per source"'
        assert info(other).status != 503  # another source has a pipe of its own
        stats = api(b, "stats", prefix="sip_ratelimit")
        assert stats["sip_ratelimit_dropped"] - before == 2 and stats["sip_ratelimit_share_errors"] == 0
    finally:
        for c in (to_a, to_b, other):
            c.close()


def test_two_workers_of_one_node_fill_one_rate_limit_pipe(redis: RedisServer, tmp_path: Path) -> None:
    """With ``general.workers = 2`` each worker counts the requests whose Call-ID it owns;
    through Redis both fill the same pipe, so a source gets exactly its rate."""
    extra = node_config(redis, "127.0.0.3").replace("[redis]\n", '[redis]\nprefix = "workers:"\n')
    with running_server(tmp_path, "127.0.0.3", extra=extra, sip=f'domains = ["{DOMAIN}"]', general="workers = 2",
                        log_level="info") as s:
        client = ua(s, "mallory", host="127.0.0.7")
        try:
            with redis_py.Redis.from_url(redis.url) as r:  # not across a window's end
                sec, _ = r.time()
            if 60 - sec % 60 < 3:
                time.sleep(60 - sec % 60 + 0.1)
            got = []
            for _ in range(2 * INFO_RATE):
                client.call_id = uuid.uuid4().hex  # spread over both workers
                client.send(client.build("INFO", f"sip:alice@{DOMAIN}"))
                got.append(client.expect_final().status)
            assert sum(st != 503 for st in got) == INFO_RATE, got
        finally:
            client.close()


async def _allocate(server: Server, user: str) -> Any:
    username = rest_username(int(time.time()) + 600, user)
    turn_table = server.config.read_text().split("[turn]", 1)[1]
    turn_port = int(turn_table.split('listen = ["udp:', 1)[1].split('"', 1)[0].rsplit(":", 1)[1])
    transport, _ = await asyncio.wait_for(
        aioice_turn.create_turn_endpoint(
            asyncio.DatagramProtocol, server_addr=(server.host, turn_port), username=username,
            password=rest_password(TURN_SECRET, username), transport="udp",
        ),
        5,
    )
    return transport


async def test_a_turn_users_allocations_are_counted_over_both_nodes(nodes: tuple[Server, Server]) -> None:
    a, b = nodes
    held = [await _allocate(a, "dave"), await _allocate(b, "dave")]  # the quota is 2 per user
    try:
        for node in (a, b):
            with pytest.raises(Exception, match="486"):
                await _allocate(node, "dave")
        held.append(await _allocate(b, "erin"))  # another user has a quota of their own
        assert ctl(a, "stats", "turn_quota")["turn_quota_rejections"] == 1
        assert ctl(b, "stats", "turn_quota")["turn_quota_rejections"] == 1
        held.pop(0).close()  # a deallocation on A frees the slot for B
        await asyncio.sleep(0.3)
        held.append(await _allocate(b, "dave"))
    finally:
        for t in held:
            t.close()


def test_redis_stopped_gives_500_and_a_log_line_then_service_resumes(
    nodes: tuple[Server, Server], redis: RedisServer
) -> None:
    a, b = nodes
    alice = ua(a, "alice")
    try:
        assert alice.register().status == 200
        redis.stop()
        try:
            assert alice.register().status == 500
            eventually(lambda: "x redis redis://127.0.0.1" in a.log_text())
            assert a.proc.poll() is None and b.proc.poll() is None
            assert ctl(a, "stats", "redis_")["redis_up"] == 0
        finally:
            redis.start()
        eventually(lambda: alice.register().status == 200, timeout=10)
        assert "reachable again" in a.log_text()
        assert [x["contact"] for x in ctl(b, "ul", "show", f"alice@{DOMAIN}")] == [alice.contact.strip("<>")]
        assert a.proc.poll() is None and b.proc.poll() is None
    finally:
        alice.close()
