"""`sipedge probe` against sipedge's RFC 5780 binding on loopback (127.0.0.1 + 127.0.0.2),
plus the iceServers HTTP endpoint, the TLS listener and the turn CLI."""

from __future__ import annotations

import asyncio
import json
import random
import re
import signal
import socket
import sqlite3
import ssl
import sys
import time
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from sipedge.cli import probe as probe_cli
from sipedge.cli.main import main as cli_main
from sipedge.config.turn import TurnConfig
from sipedge.server import tls
from sipedge.server.stun_turn import TurnService
from sipedge.server.turn_http import ICE_SERVERS_PATH, add_routes, default_urls
from sipedge.store.turn_users import TurnUserStore
from sipedge.stun import integrity
from sipedge.stun.nat import Behaviour, classify_filtering, classify_mapping
from sipedge.turn.auth import StaticUsers, rest_password

pytestmark = pytest.mark.timeout(30)


def free_base() -> int:
    rng = random.Random()
    for _ in range(200):
        base = rng.randrange(30000, 39000)
        socks = []
        try:
            for h in ("127.0.0.1", "127.0.0.2"):
                for p in (base, base + 1):
                    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                    socks.append(s)
                    s.bind((h, p))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no free ports")


@pytest.fixture
async def rfc5780() -> AsyncIterator[tuple[TurnService, int]]:
    base = free_base()
    cfg = TurnConfig(listen=[f"udp:127.0.0.1:{base}"], alt_address="127.0.0.2", port_min=40000, port_max=40999)
    svc = TurnService.create(cfg)
    await svc.start()
    yield svc, base
    await svc.stop()


async def test_probe_reports_behaviour(rfc5780: tuple[TurnService, int]) -> None:
    _, base = rfc5780
    report = await probe_cli.probe("127.0.0.1", base, timeout=2, local_ip="127.0.0.1")
    assert report.mapped == report.local
    assert report.other == ("127.0.0.2", base + 1)
    assert report.mapping is Behaviour.NO_NAT
    assert report.filtering is Behaviour.ENDPOINT_INDEPENDENT
    text = "\n".join(report.lines())
    assert "filtering behaviour: endpoint-independent" in text


async def test_probe_plain_server() -> None:
    cfg = TurnConfig(listen=["udp:127.0.0.1:0"], port_min=40000, port_max=40999)
    svc = TurnService.create(cfg)
    await svc.start()
    try:
        host, port = svc.address("udp")
        report = await probe_cli.probe(host, port, timeout=1)
        assert report.other is None and report.mapped[0] == "127.0.0.1"
        assert "not supported" in "\n".join(report.lines())
    finally:
        await svc.stop()


def test_probe_cli_errors(capsys: pytest.CaptureFixture[str]) -> None:
    assert probe_cli.parse_url("stun://[::1]:3479") == ("::1", 3479)
    assert probe_cli.parse_url("stun:example.org") == ("example.org", 3478)
    assert cli_main(["probe", "stun://host:notaport"]) == 2
    assert "not a STUN URL" in capsys.readouterr().err
    # Nothing listens there: one line, exit 2.
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    assert cli_main(["probe", f"stun://127.0.0.1:{port}", "--timeout", "0.3"]) == 2
    assert "no STUN answer" in capsys.readouterr().err


def test_classification_table() -> None:
    local, a, b, c = ("10.0.0.2", 5000), ("203.0.113.1", 6000), ("203.0.113.1", 6001), ("203.0.113.1", 6002)
    assert classify_mapping(local, local, None, None) is Behaviour.NO_NAT
    assert classify_mapping(local, a, a, None) is Behaviour.ENDPOINT_INDEPENDENT
    assert classify_mapping(local, a, b, b) is Behaviour.ADDRESS_DEPENDENT
    assert classify_mapping(local, a, b, c) is Behaviour.ADDRESS_AND_PORT_DEPENDENT
    assert classify_mapping(local, a, None, None) is None
    assert classify_filtering(True, False) is Behaviour.ENDPOINT_INDEPENDENT
    assert classify_filtering(False, True) is Behaviour.ADDRESS_DEPENDENT
    assert classify_filtering(False, False) is Behaviour.ADDRESS_AND_PORT_DEPENDENT


async def test_ice_servers_endpoint() -> None:
    cfg = TurnConfig(
        listen=["udp:0.0.0.0:3478", "tcp:127.0.0.1:3478", "tls:[::1]:5349"],
        secrets=["new", "old"],
        api_key="k3y",
        rest_ttl=600,
    )
    app = web.Application()
    add_routes(app, cfg, wall_clock=lambda: 1_700_000_000.0)
    async with TestClient(TestServer(app)) as client:
        r = await client.get(ICE_SERVERS_PATH)
        assert r.status == 401
        r = await client.get(ICE_SERVERS_PATH, params={"user": "bob"}, headers={"Authorization": "Bearer k3y"})
        assert r.status == 200 and r.headers["Cache-Control"] == "no-store"
        doc = await r.json()
        assert doc["ttl"] == 600 and doc["expires"] == 1_700_000_600
        stun, turn = doc["iceServers"]
        assert stun == {"urls": ["stun:127.0.0.1:3478"]}
        assert turn["urls"] == [
            "turn:127.0.0.1:3478?transport=udp",
            "turn:127.0.0.1:3478?transport=tcp",
            "turns:[::1]:5349?transport=tcp",
        ]
        assert turn["username"] == "1700000600:bob"
        assert turn["credential"] == rest_password("new", "1700000600:bob")
        r = await client.get(ICE_SERVERS_PATH, params={"key": "k3y", "user": "a:b"})
        assert r.status == 400
    off = web.Application()
    add_routes(off, TurnConfig())
    async with TestClient(TestServer(off)) as client:
        assert (await client.get(ICE_SERVERS_PATH)).status == 503
    # no key and no subscribers (sipedge turn serve): closed unless opened on purpose
    closed = web.Application()
    add_routes(closed, TurnConfig(secrets=["s"]))
    opened = web.Application()
    add_routes(opened, TurnConfig(secrets=["s"], ice_servers_open=True))
    async with TestClient(TestServer(closed)) as client:
        assert (await client.get(ICE_SERVERS_PATH)).status == 403
    async with TestClient(TestServer(opened)) as client:
        assert (await client.get(ICE_SERVERS_PATH, params={"user": "x"})).status == 200
    assert default_urls(TurnConfig(listen=["udp:0.0.0.0:3478"]), "turn.example.org") == [
        "stun:turn.example.org:3478",
        "turn:turn.example.org:3478?transport=udp",
    ]


async def test_turn_over_tls(tmp_path: Path) -> None:
    aioice_turn = pytest.importorskip("aioice.turn")
    cert = tls.ensure_certificate(tmp_path / "c.pem", tmp_path / "k.pem")
    ctx = tls.server_context(cert.cert, cert.key)
    cfg = TurnConfig(listen=["tls:127.0.0.1:0"], realm="r", port_min=40000, port_max=40999,
                     allow_peers=["127.0.0.0/8"])
    svc = TurnService.create(cfg, users=StaticUsers("r", {"u": "p"}), ssl_context=ctx)
    await svc.start()
    loop = asyncio.get_running_loop()

    class Echo(asyncio.DatagramProtocol):
        def connection_made(self, t: asyncio.BaseTransport) -> None:
            self.t = t

        def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
            self.t.sendto(data, addr)  # type: ignore[attr-defined]

    class Rx(asyncio.DatagramProtocol):
        def __init__(self) -> None:
            self.q: asyncio.Queue[bytes] = asyncio.Queue()

        def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
            self.q.put_nowait(data)

    et, _ = await loop.create_datagram_endpoint(Echo, local_addr=("127.0.0.1", 0))
    client_ctx = ssl.create_default_context()
    client_ctx.check_hostname = False
    client_ctx.verify_mode = ssl.CERT_NONE
    try:
        turn, rx = await asyncio.wait_for(
            aioice_turn.create_turn_endpoint(
                Rx, server_addr=svc.address("tls"), username="u", password="p", ssl=client_ctx, transport="tcp"
            ),
            5,
        )
        turn.sendto(b"over tls", et.get_extra_info("sockname"))
        assert await asyncio.wait_for(rx.q.get(), 5) == b"over tls"
        assert svc.stats()["turn_connections"] == 1
        turn.close()
    finally:
        et.close()
        await svc.stop()


def test_user_store_and_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "users.db"
    store = TurnUserStore(db)
    store.add("alice", "realm", "pw")
    keys = store.lookup("alice", "realm")
    assert keys is not None and keys.md5 == integrity.long_term_key("alice", "realm", "pw")
    assert store.lookup_userhash(integrity.userhash("alice", "realm"), "realm") == "alice"
    store.close()
    with sqlite3.connect(db) as conn:
        cols = [r[1] for r in conn.execute("PRAGMA table_info(turn_users)")]
    assert cols == ["username", "realm", "key_md5", "key_sha256", "userhash"]  # no password
    assert cli_main(["turn", "user", "add", "bob", "-p", "secret", "--realm", "realm", "--db", str(db)]) == 0
    assert cli_main(["turn", "user", "list", "--db", str(db)]) == 0
    out = capsys.readouterr().out
    assert "alice\trealm" in out and "bob\trealm" in out
    assert cli_main(["turn", "user", "del", "bob", "--realm", "realm", "--db", str(db)]) == 0
    assert cli_main(["turn", "user", "del", "bob", "--realm", "realm", "--db", str(db)]) == 2
    assert "no TURN user bob" in capsys.readouterr().err
    # REST credentials from the CLI.
    conf = tmp_path / "s.toml"
    conf.write_text('[turn]\nsecrets = ["abc"]\nlisten = ["udp:127.0.0.1:3478"]\n')
    assert cli_main(["turn", "credentials", "--user", "carol", "--ttl", "60", "-c", str(conf)]) == 0
    doc = json.loads(capsys.readouterr().out)
    turn = doc["iceServers"][1]
    assert turn["username"].endswith(":carol") and int(turn["username"].split(":")[0]) > time.time()
    assert turn["credential"] == rest_password("abc", turn["username"])
    conf.write_text("[turn]\n")
    assert cli_main(["turn", "credentials", "-c", str(conf)]) == 2
    assert "no [turn] secrets" in capsys.readouterr().err


async def test_turn_serve_cli(tmp_path: Path) -> None:
    conf = tmp_path / "t.toml"
    conf.write_text(
        f'[general]\ndata_dir = "{tmp_path}"\n[turn]\nlisten = ["udp:127.0.0.1:0", "tcp:127.0.0.1:0"]\n'
        'port_min = 40000\nport_max = 40099\nsecrets = ["s3"]\napi_key = "k"\n'
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "sipedge.cli", "turn", "serve", "-c", str(conf), "--http", "127.0.0.1:0",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), 10)).decode()
        assert line.startswith("sipedge TURN listening on"), line
        udp = next(x for x in line.split()[-2:] if x.startswith("udp:"))
        port = int(udp.rstrip(",").rsplit(":", 1)[1])
        report = await probe_cli.probe("127.0.0.1", port, timeout=2)
        assert report.mapped[0] == "127.0.0.1"
        # alone, it has the HTTP side too: metrics (counting that probe) and iceServers
        http = (await asyncio.wait_for(proc.stdout.readline(), 10)).decode()
        assert http.startswith("sipedge TURN HTTP on port"), http
        web_port = int(http.split()[5])
        loop = asyncio.get_running_loop()

        def get(path: str) -> str:
            with urllib.request.urlopen(f"http://127.0.0.1:{web_port}{path}", timeout=5) as r:
                return str(r.read().decode())

        metrics = await loop.run_in_executor(None, get, "/metrics")
        assert re.search(r"^sipedge_turn_binding_requests [1-9]", metrics, re.M), metrics
        ice = json.loads(await loop.run_in_executor(None, get, "/turn/ice-servers?key=k"))
        assert any(u.startswith("turn:") for e in ice["iceServers"] for u in e["urls"])
    finally:
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 10) == 0
    bad = tmp_path / "bad.toml"
    bad.write_text('[turn]\nlisten = ["sctp:1.2.3.4:1"]\n')
    p2 = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "sipedge.cli", "turn", "serve", "-c", str(bad),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    _, err = await asyncio.wait_for(p2.communicate(), 10)
    assert p2.returncode == 2 and b"turn.listen" in err and b"Traceback" not in err
