"""coturn's own client tools against sipedge: turnutils_uclient relaying through sipedge to
turnutils_peer (UDP, TCP and TLS, channels and Send indications, long-term and REST
credentials) without loss, and turnutils_stunclient against the RFC 5780 binding."""

from __future__ import annotations

import asyncio
import random
import re
import shutil
import socket
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from sipedge.config.turn import TurnConfig
from sipedge.server import tls
from sipedge.server.stun_turn import TurnService
from sipedge.stun import attributes as sa
from sipedge.stun import message as sm
from sipedge.turn.auth import StaticUsers

pytestmark = [pytest.mark.coturn, pytest.mark.timeout(60)]

for tool in ("turnutils_uclient", "turnutils_peer", "turnutils_stunclient"):
    if shutil.which(tool) is None:
        pytest.skip(f"{tool} not installed (Debian coturn)", allow_module_level=True)

REALM = "sipedge.test"


def free_ports(hosts: tuple[str, ...], count: int) -> int:
    """A UDP port P with P..P+count-1 free on every host (tests bind fixed ports)."""
    rng = random.Random()
    for _ in range(200):
        base = rng.randrange(20000, 30000)
        socks: list[socket.socket] = []
        try:
            for h in hosts:
                for p in range(base, base + count):
                    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                    socks.append(s)
                    s.bind((h, p))
                    t = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                    socks.append(t)
                    t.bind((h, p))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no free ports")


@pytest.fixture
async def turn(tmp_path: Path) -> AsyncIterator[tuple[TurnService, int]]:
    base = free_ports(("127.0.0.1", "127.0.0.2"), 2)
    cert = tls.ensure_certificate(tmp_path / "cert.pem", tmp_path / "key.pem")
    cfg = TurnConfig(
        enabled=True,
        listen=[f"udp:127.0.0.1:{base}", f"tcp:127.0.0.1:{base}", f"tls:127.0.0.1:{base + 1}"],
        realm=REALM,
        relay_ipv4="127.0.0.1",
        port_min=40000,
        port_max=49999,
        secrets=["s3cret"],
        allow_peers=["127.0.0.0/8"],
        alt_address="127.0.0.2",
    )
    svc = TurnService.create(
        cfg, users=StaticUsers(REALM, {"alice": "wonderland"}), ssl_context=tls.server_context(cert.cert, cert.key)
    )
    await svc.start()
    yield svc, base
    await svc.stop()


async def run(*argv: str, timeout: float = 30) -> str:
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    return out.decode(errors="replace")


async def start_peer(host: str) -> tuple[asyncio.subprocess.Process, int]:
    port = free_ports(("127.0.0.1",), 1)
    proc = await asyncio.create_subprocess_exec(
        "turnutils_peer", "-L", host, "-p", str(port),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )
    await asyncio.sleep(0.3)
    return proc, port


@pytest.fixture
async def peer(tmp_path: Path) -> AsyncIterator[int]:
    port = free_ports(("127.0.0.1",), 1)
    proc = await asyncio.create_subprocess_exec(
        "turnutils_peer", "-L", "127.0.0.1", "-p", str(port),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )
    await asyncio.sleep(0.3)
    yield port
    proc.kill()
    await proc.wait()


def totals(out: str) -> tuple[int, int, int]:
    m = re.findall(r"tot_send_msgs=(\d+), tot_recv_msgs=(\d+)", out)
    lost = re.search(r"Total lost packets (\d+)", out)
    assert m and lost, out[-2000:]
    return int(m[-1][0]), int(m[-1][1]), int(lost.group(1))


async def test_uclient_relays_without_loss(turn: tuple[TurnService, int], peer: int) -> None:
    svc, port = turn
    common = ["-p", str(port), "-e", "127.0.0.1", "-r", str(peer), "-n", "40", "-m", "3", "-l", "170", "-z", "5"]
    # Run the variants at once: UDP channels, TCP channels, TCP Send indications, REST
    # credentials (client to client), and TLS.
    outs = await asyncio.gather(
        run("turnutils_uclient", "-u", "alice", "-w", "wonderland", *common, "127.0.0.1"),
        run("turnutils_uclient", "-t", "-u", "alice", "-w", "wonderland", *common, "127.0.0.1"),
        run("turnutils_uclient", "-t", "-s", "-u", "alice", "-w", "wonderland", *common, "127.0.0.1"),
        run("turnutils_uclient", "-y", "-W", "s3cret", "-u", "rest", *common, "127.0.0.1"),
        run("turnutils_uclient", "-S", "-t", "-u", "alice", "-w", "wonderland", *common[2:],
            "-p", str(port + 1), "127.0.0.1"),  # TURN over TLS
    )
    for out in outs:
        sent, received, lost = totals(out)
        assert sent == received >= 120 and lost == 0, out[-1500:]
    st = svc.stats()
    assert st["turn_allocations_total"] >= 15
    assert st["turn_packets_to_peer"] >= 600 and st["turn_packets_from_peer"] >= 600
    assert st["turn_auth_failures"] == 0, st
    # uclient allocates RTP with EVEN-PORT (R) and its RTCP with the RESERVATION-TOKEN
    assert st["turn_reservations_made"] >= 10 and st["turn_reservations_used"] >= 10, st
    # TCP allocations end with their connections (uclient leaves some UDP ones to expire).
    assert not any(f.transport == "tcp" for f in svc.core.flows())


async def test_stunclient_rfc5780(turn: tuple[TurnService, int]) -> None:
    svc, port = turn
    out = await run("turnutils_stunclient", "-p", str(port), "127.0.0.1", timeout=20)
    origins = re.findall(r"Response origin: : ([\d.]+:\d+)", out)
    others = set(re.findall(r"Other addr: : ([\d.]+:\d+)", out))
    mapped = re.findall(r"UDP reflexive addr: ([\d.]+:\d+)", out)
    assert f"127.0.0.1:{port}" in origins, out
    assert f"127.0.0.2:{port + 1}" in origins, out  # the change-IP-and-port answer
    assert others == {f"127.0.0.2:{port + 1}"}, out
    assert mapped and all(m.startswith("127.0.0.1:") for m in mapped), out
    assert svc.stats()["turn_binding_requests"] >= 3


def has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.skipif(not has_ipv6_loopback(), reason="no ::1")
async def test_uclient_ipv6_and_dual_allocation() -> None:
    cfg = TurnConfig(
        listen=["udp:[::1]:0", "tcp:[::1]:0"],
        realm=REALM,
        relay_ipv4="127.0.0.1",
        relay_ipv6="::1",
        port_min=40000,
        port_max=49999,
        allow_peers=["127.0.0.0/8", "::1"],
    )
    svc = TurnService.create(cfg, users=StaticUsers(REALM, {"alice": "wonderland"}))
    await svc.start()
    proc, peer_port = await start_peer("::1")
    try:
        udp, tcp = svc.address("udp")[1], svc.address("tcp")[1]
        common = ["-u", "alice", "-w", "wonderland", "-e", "::1", "-r", str(peer_port), "-n", "20", "-m", "2",
                  "-l", "170", "-z", "5"]
        outs = await asyncio.gather(
            run("turnutils_uclient", "-x", "-p", str(udp), *common, "::1"),  # IPv6 relay
            run("turnutils_uclient", "-x", "-t", "-p", str(tcp), *common, "::1"),  # over TCP/IPv6
            run("turnutils_uclient", "-Z", "-p", str(udp), *common, "::1"),  # dual allocation
        )
        for out in outs:
            sent, received, lost = totals(out)
            assert sent == received >= 40 and lost == 0, out[-1500:]
        assert svc.stats()["turn_packets_to_peer"] >= 120
    finally:
        proc.kill()
        await proc.wait()
        await svc.stop()


async def test_binding_over_tls(turn: tuple[TurnService, int]) -> None:
    """A STUN Binding over the TURN-TLS port (RFC 8489 §6.2.3) reports the client's
    own address, as over UDP and TCP."""
    _, port = turn
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port + 1, ssl=ctx), 5)
    try:
        writer.write(sm.request(sm.Method.BINDING, b"\x07" * 12).serialize())
        head = await asyncio.wait_for(reader.readexactly(20), 5)
        body = await asyncio.wait_for(reader.readexactly(int.from_bytes(head[2:4], "big")), 5)
        resp = sm.Message.parse(head + body)
        mapped = resp.get(sa.XorMappedAddress)
        assert resp.transaction_id == b"\x07" * 12 and mapped is not None
        assert mapped.address == writer.get_extra_info("sockname")[:2]
    finally:
        writer.close()
