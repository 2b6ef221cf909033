"""``sipedge probe stun://host:port``: the mapped address, and NAT behaviour (RFC 5780).

Against a server with RFC 5780 enabled (it returns OTHER-ADDRESS), the probe also runs
the mapping tests (§4.3) and filtering tests (§4.4) from one local UDP socket and prints
the NAT's mapping and filtering behaviour, like coturn's ``turnutils_stunclient``.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import socket
import sys
from dataclasses import dataclass
from typing import cast

from .._common.addr import Address
from ..errors import Error
from ..stun import nat


class ProbeError(Error):
    """Printed as one line; exit status 2."""


def parse_url(url: str) -> tuple[str, int]:
    """``stun://host:port``, ``stun:host:port``, ``stun:[::1]``, ``host:port`` or ``host``."""
    rest = url
    for prefix in ("stun://", "stun:", "turn://", "turn:"):
        if rest.startswith(prefix):
            rest = rest[len(prefix) :]
            break
    rest = rest.split("?", 1)[0].rstrip("/")
    if rest.startswith("["):
        host, _, tail = rest[1:].partition("]")
        port_s = tail[1:] if tail.startswith(":") else ""
    elif rest.count(":") == 1:
        host, _, port_s = rest.partition(":")
    else:
        host, port_s = rest, ""
    if not host or (port_s and not port_s.isdigit()) or (port_s and not 0 < int(port_s) < 65536):
        raise ProbeError(f"{url!r} is not a STUN URL; use stun://HOST:PORT (for example stun://127.0.0.1:3478)")
    return host, int(port_s) if port_s else 3478


class _Client(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.waiters: dict[bytes, asyncio.Future[nat.BindingResult]] = {}

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        if len(data) < 20:
            return
        fut = self.waiters.get(data[8:20])
        if fut is None or fut.done():
            return
        result = nat.parse_binding_response(data, data[8:20])
        if result is not None:
            fut.set_result(result)

    async def binding(
        self, dest: Address, timeout: float, change_ip: bool = False, change_port: bool = False
    ) -> nat.BindingResult | None:
        """One transaction: retransmit at 0.1, 0.3, 0.7 ... s until ``timeout``."""
        tid = secrets.token_bytes(12)
        data = nat.binding_request(tid, change_ip, change_port)
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[nat.BindingResult] = loop.create_future()
        self.waiters[tid] = fut
        deadline = loop.time() + timeout
        rto = 0.1
        try:
            while True:
                self.transport.sendto(data, dest)
                left = deadline - loop.time()
                if left <= 0:
                    return None
                try:
                    return await asyncio.wait_for(asyncio.shield(fut), min(rto, left))
                except TimeoutError:
                    rto *= 2
        finally:
            self.waiters.pop(tid, None)


@dataclass
class ProbeReport:
    local: Address
    server: Address
    mapped: Address
    other: Address | None
    mapping: nat.Behaviour | None = None
    filtering: nat.Behaviour | None = None

    def lines(self) -> list[str]:
        out = [f"server: {_fmt(self.server)}", f"local address: {_fmt(self.local)}", f"mapped address: {_fmt(self.mapped)}"]
        if self.other is None:
            out.append("RFC 5780: not supported by the server (no OTHER-ADDRESS); behaviour not tested")
            return out
        out.append(f"other address: {_fmt(self.other)}")
        out.append(f"mapping behaviour: {self.mapping.value if self.mapping else 'unknown (no answer from the other address)'}")
        out.append(f"filtering behaviour: {self.filtering.value if self.filtering else 'unknown'}")
        return out


def _fmt(a: Address) -> str:
    return f"[{a[0]}]:{a[1]}" if ":" in a[0] else f"{a[0]}:{a[1]}"


async def probe(host: str, port: int, timeout: float = 2.0, local_ip: str | None = None) -> ProbeReport:
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
    except OSError as exc:
        raise ProbeError(f"cannot resolve {host!r}: {exc}; check the name") from exc
    if local_ip:
        fam = socket.AF_INET6 if ":" in local_ip else socket.AF_INET
        infos = [i for i in infos if i[0] == fam] or infos
    family, _, _, _, sockaddr = infos[0]
    server = (str(sockaddr[0]), int(sockaddr[1]))
    bind_ip = local_ip or ("::" if family == socket.AF_INET6 else "0.0.0.0")
    transport, client = await loop.create_datagram_endpoint(_Client, local_addr=(bind_ip, 0), family=family)
    try:
        first = await client.binding(server, timeout)
        if first is None:
            raise ProbeError(
                f"no STUN answer from {_fmt(server)} within {timeout:g} s; is the server running "
                "and reachable over UDP?"
            )
        sockname = transport.get_extra_info("sockname")
        local: Address = (str(sockname[0]), int(sockname[1]))
        if local[0] in ("0.0.0.0", "::"):
            # The address the kernel would use towards the server.
            with socket.socket(family, socket.SOCK_DGRAM) as s:
                s.connect(server)
                local = (str(s.getsockname()[0]), local[1])
        report = ProbeReport(local, server, first.mapped, first.other)
        if first.other is None:
            return report
        other_ip, other_port = first.other
        t2 = await client.binding((other_ip, server[1]), timeout)
        t3 = await client.binding((other_ip, other_port), timeout) if t2 and t2.mapped != first.mapped else None
        report.mapping = nat.classify_mapping(local, first.mapped, t2.mapped if t2 else None, t3.mapped if t3 else None)
        both = await client.binding(server, timeout, change_ip=True, change_port=True)
        port_only = None if both else await client.binding(server, timeout, change_port=True)
        report.filtering = nat.classify_filtering(both is not None, port_only is not None)
        return report
    finally:
        transport.close()


def cmd_probe(args: argparse.Namespace) -> int:
    try:
        host, port = parse_url(args.url)
        report = asyncio.run(probe(host, port, args.timeout, args.local))
    except ProbeError as exc:
        sys.stderr.write(f"sipedge: {exc}\n")
        return 2
    except KeyboardInterrupt:
        return 130
    for line in report.lines():
        sys.stdout.write(line + "\n")
    return 0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "probe", help="query a STUN server: mapped address and NAT behaviour (RFC 5780)"
    )
    p.add_argument("url", metavar="stun://HOST:PORT")
    p.add_argument("--timeout", "-t", type=float, default=2.0, help="seconds per test (default 2)")
    p.add_argument("--local", "-L", help="local IP address to send from")
    p.set_defaults(func=cmd_probe)


__all__ = ["ProbeError", "ProbeReport", "parse_url", "probe", "register"]
