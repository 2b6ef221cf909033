"""asyncio adapters of the ng protocol: the UDP control socket, an async client that
drives a remote relay (sipedge or rtpengine) with the same API as ``MediaServer``, and
:class:`NgPool`, which spreads calls over several such relays (``media.remote`` as a list;
the decisions are ``media.pool.MediaPool``'s)."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
import time
from typing import Any

from ..errors import ParseError
from ..media.ng import NgClient, NgServer
from ..media.pool import MediaPool, Node, NodeSpec, NodeState
from ..media.relay import Flags, RelayError
from .media import MediaServer

log = logging.getLogger(__name__)


class NgControlServer:
    """Serves ng requests on a UDP socket for a :class:`MediaServer`."""

    def __init__(self, media: MediaServer, host: str, port: int) -> None:
        self.media = media
        self.loop = media.loop
        self.core = NgServer(media.relay, wall_clock=_wall)
        fam = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(fam, socket.SOCK_DGRAM)
        self.sock.setblocking(False)
        self.sock.bind((host, port))
        self.address: tuple[str, int] = self.sock.getsockname()[:2]
        self.loop.add_reader(self.sock.fileno(), self._readable)

    def _readable(self) -> None:
        for _ in range(32):
            try:
                data, addr = self.sock.recvfrom(65535)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                continue
            try:
                reply = self.core.handle(data, self.loop.time())
            except Exception:  # a bug: log once with context, keep serving
                log.exception("x ng request from %s failed", addr)
                continue
            self.media.after_signalling()
            if reply is not None:
                try:
                    self.sock.sendto(reply, addr)
                except OSError as exc:
                    log.debug("x ng reply to %s: %s", addr, exc)

    def stats(self) -> dict[str, int | float]:
        return self.core.stats()

    def close(self) -> None:
        self.loop.remove_reader(self.sock.fileno())
        self.sock.close()


def _wall() -> float:
    return time.time()


class NgTimeout(RelayError):
    """A remote relay did not answer in time (the node may be gone)."""


class NgRemote:
    """Async ng client for a remote relay: ``offer``/``answer``/``delete``/``query``/``ping``.

    Each request is retransmitted with the same cookie (the server's reply cache makes that
    safe) until a reply arrives or ``timeout`` passes; then :class:`RelayError` (503).
    """

    def __init__(self, host: str, port: int, timeout: float = 3.0, retries: int = 3) -> None:
        self.target = (host, port)
        self._target_ip = ipaddress.ip_address(host)
        self.timeout = timeout
        self.retries = retries
        self.codec = NgClient()
        self._sock: socket.socket | None = None
        self._pending: dict[bytes, asyncio.Future[dict[str, Any]]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None

    def _ensure(self) -> socket.socket:
        if self._sock is None:
            self._loop = asyncio.get_running_loop()
            fam = socket.AF_INET6 if ":" in self.target[0] else socket.AF_INET
            sock = socket.socket(fam, socket.SOCK_DGRAM)
            sock.setblocking(False)
            # not connect()ed: a connected socket gets the ICMP errors of a relay that went
            # away, and under uvloop its reader then never fires again when the relay is back
            self._loop.add_reader(sock.fileno(), self._readable)
            self._sock = sock
        return self._sock

    def _readable(self) -> None:
        assert self._sock is not None
        while True:
            try:
                data, addr = self._sock.recvfrom(65535)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            if addr[1] != self.target[1] or ipaddress.ip_address(addr[0]) != self._target_ip:
                continue  # only the relay's replies count
            try:
                cookie, reply = NgClient.parse_reply(data)
            except ParseError:
                continue
            fut = self._pending.pop(cookie, None)
            if fut is not None and not fut.done():
                fut.set_result(reply)

    async def _call(self, cookie: bytes, data: bytes) -> dict[str, Any]:
        sock = self._ensure()
        assert self._loop is not None
        fut: asyncio.Future[dict[str, Any]] = self._loop.create_future()
        self._pending[cookie] = fut
        try:
            for _ in range(self.retries):
                try:
                    sock.sendto(data, self.target)
                except OSError:
                    pass
                try:
                    return await asyncio.wait_for(asyncio.shield(fut), self.timeout / self.retries)
                except TimeoutError:
                    continue
            raise NgTimeout(f"no reply from media relay {self.target}", (503, "Media relay timeout"))
        finally:
            self._pending.pop(cookie, None)

    @staticmethod
    def _sdp(reply: dict[str, Any]) -> bytes:
        if reply.get("result") != "ok" or not isinstance(reply.get("sdp"), bytes):
            reason = str(reply.get("error-reason", "bad reply"))
            # both rtpengine and sipedge say "Failed to parse SDP": the peer's SDP is at fault
            # (sipedge nodes add what is wrong, which the 488 passes on)
            _, found, detail = reason.partition("parse SDP")
            detail = detail.lstrip(": ").removeprefix("malformed SDP: ")[:200]
            if found:
                hint = (488, f"Bad SDP: {detail}" if detail else "Bad SDP")
            elif "interface" in reason.lower():  # a direction naming no configured interface
                hint = (488, "Unknown media interface")
            else:
                hint = (503, "Media relay error")
            raise RelayError(reason, hint)
        sdp: bytes = reply["sdp"]
        return sdp

    async def ping(self) -> bool:
        return (await self._call(*self.codec.request("ping"))).get("result") == "pong"

    async def offer(self, call_id: str, from_tag: str, sdp: bytes, flags: Flags | None = None,
                    to_tag: str | None = None, via_branch: str | None = None) -> bytes:
        return self._sdp(await self._call(*self.codec.offer(call_id, from_tag, sdp, flags, to_tag, via_branch)))

    async def answer(self, call_id: str, from_tag: str, to_tag: str, sdp: bytes,
                     flags: Flags | None = None, via_branch: str | None = None) -> bytes:
        return self._sdp(await self._call(*self.codec.answer(call_id, from_tag, to_tag, sdp, flags, via_branch)))

    async def delete(self, call_id: str, from_tag: str | None = None, to_tag: str | None = None,
                     branch_only: bool = False, via_branch: str | None = None) -> dict[str, Any] | None:
        reply = await self._call(*self.codec.delete(call_id, from_tag, to_tag, branch_only, via_branch))
        return None if "warning" in reply or reply.get("result") != "ok" else reply

    async def query(self, call_id: str) -> dict[str, Any]:
        return await self._call(*self.codec.request("query", call_id=call_id))

    async def list(self, limit: int = 32) -> list[str]:
        """The relay's Call-IDs (ng ``list``), at most ``limit``."""
        reply = await self._call(*self.codec.request("list", limit=limit))
        calls = reply.get("calls")
        return [c.decode("utf-8", "replace") if isinstance(c, bytes) else str(c)
                for c in calls] if isinstance(calls, list) else []

    def close(self) -> None:
        if self._sock is not None and self._loop is not None:
            self._loop.remove_reader(self._sock.fileno())
            self._sock.close()
            self._sock = None


class NgPool:
    """``MediaControl`` over a pool of remote relays: each call on one node, chosen by
    weight among the live ones; ng pings every ``ping_interval``; an offer that times out
    or fails on one node is tried on the next (a 488 for bad SDP is the peer's fault and is
    not retried)."""

    def __init__(self, nodes: list[tuple[str, int, int]], ping_interval: float = 5.0, timeout: float = 3.0,
                 max_calls: int = 10000) -> None:
        self.loop = asyncio.get_running_loop()
        self.core = MediaPool([NodeSpec(*n) for n in nodes], ping_interval, max_calls, now=self.loop.time())
        self.clients: dict[Node, NgRemote] = {
            n: NgRemote(n.spec.host, n.spec.port, timeout=timeout) for n in self.core.nodes
        }
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._health_loop())

    # -- health --------------------------------------------------------------------
    async def _health_loop(self) -> None:
        while True:
            due = self.core.pings_due(self.loop.time())
            if due:
                await asyncio.gather(*(self._ping(n) for n in due))
                self._log_changes()
            await asyncio.sleep(max(0.01, self.core.next_timer() - self.loop.time()))

    async def _ping(self, node: Node) -> None:
        try:
            ok = await self.clients[node].ping()
        except RelayError:
            ok = False
        except Exception:  # a bug: the node counts as down, the loop goes on
            log.exception("x ng ping of %s", node.name)
            ok = False
        self.core.ping_result(node, ok, self.loop.time())

    def _log_changes(self) -> None:
        for ev in self.core.events():
            if ev.state is NodeState.DOWN:
                log.warning("x media node %s is down (%s): no new calls go to it", ev.node, ev.reason)
            else:
                log.warning("- media node %s is up (%s)", ev.node, ev.reason)

    def _failed(self, node: Node, exc: RelayError) -> None:
        self.core.request_failed(node, self.loop.time(), timeout=isinstance(exc, NgTimeout))
        self._log_changes()

    # -- MediaControl --------------------------------------------------------------
    async def offer(self, call_id: str, from_tag: str, sdp: bytes, flags: Flags | None = None,
                    to_tag: str | None = None, via_branch: str | None = None) -> bytes:
        tried: set[Node] = set()
        last: RelayError | None = None
        for _ in range(len(self.core.nodes)):
            node = self.core.offer_target(call_id, tried)
            if node is None:
                break
            try:
                out = await self.clients[node].offer(call_id, from_tag, sdp, flags, to_tag, via_branch)
            except RelayError as exc:
                if exc.hint[0] != 503:  # the SDP or the flags are at fault: the same everywhere
                    raise
                log.info("x [%s] offer failed on media node %s: %s", call_id, node.name, exc)
                self._failed(node, exc)
                tried.add(node)
                last = exc
                continue
            self.core.offer_done(call_id, node, self.loop.time())
            self._log_changes()
            return out
        if last is not None:
            raise last
        raise RelayError("no media relay node is up", (503, "No media relay available"))

    async def answer(self, call_id: str, from_tag: str, to_tag: str, sdp: bytes,
                     flags: Flags | None = None, via_branch: str | None = None) -> bytes:
        node = self.core.node_for(call_id)
        if node is None:
            raise RelayError(f"no media node holds call {call_id!r} (no offer of it went through this pool)",
                             (503, "Media relay error"))
        try:
            return await self.clients[node].answer(call_id, from_tag, to_tag, sdp, flags, via_branch)
        except RelayError as exc:
            self._failed(node, exc)
            raise

    async def delete(self, call_id: str, from_tag: str | None = None, to_tag: str | None = None,
                     branch_only: bool = False, via_branch: str | None = None) -> dict[str, Any] | None:
        node = self.core.node_for(call_id)
        if node is None:
            return None
        if not branch_only and via_branch is None:
            self.core.call_ended(call_id)
        try:
            return await self.clients[node].delete(call_id, from_tag, to_tag, branch_only, via_branch)
        except RelayError as exc:
            self._failed(node, exc)
            raise

    async def query(self, call_id: str) -> dict[str, Any]:
        node = self.core.node_for(call_id)
        if node is not None:
            return {**await self.clients[node].query(call_id), "node": node.name}
        # a call another process offered (a worker of several, or before a restart): ask each node
        for other, client in self.clients.items():
            with contextlib.suppress(RelayError):
                reply = await client.query(call_id)
                if reply.get("result") == "ok":
                    return {**reply, "node": other.name}
        return {"result": "error", "error-reason": f"no media node holds call {call_id!r}"}

    # -- views ---------------------------------------------------------------------
    def nodes(self) -> list[dict[str, object]]:
        return self.core.describe(self.loop.time())

    def stats(self) -> dict[str, int | float]:
        return self.core.stats()

    def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None
        for client in self.clients.values():
            client.close()


    async def list(self, limit: int = 32) -> list[str]:
        """The Call-IDs of every node that answers (ng ``list``), at most ``limit`` in all."""
        out: list[str] = []
        for client in self.clients.values():
            if len(out) >= limit:
                break
            with contextlib.suppress(RelayError):
                out.extend(await client.list(limit - len(out)))
        return out
