"""asyncio adapters of the ng protocol: the UDP control socket, and an async client that
drives a remote relay (sipedge or rtpengine) with the same API as ``MediaServer``."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from typing import Any

from ..errors import ParseError
from ..media.ng import NgClient, NgServer
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


class NgRemote:
    """Async ng client for a remote relay: ``offer``/``answer``/``delete``/``query``/``ping``.

    Each request is retransmitted with the same cookie (the server's reply cache makes that
    safe) until a reply arrives or ``timeout`` passes; then :class:`RelayError` (503).
    """

    def __init__(self, host: str, port: int, timeout: float = 3.0, retries: int = 3) -> None:
        self.target = (host, port)
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
            sock.connect(self.target)
            self._loop.add_reader(sock.fileno(), self._readable)
            self._sock = sock
        return self._sock

    def _readable(self) -> None:
        assert self._sock is not None
        while True:
            try:
                data = self._sock.recv(65535)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
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
                    sock.send(data)
                except OSError:
                    pass
                try:
                    return await asyncio.wait_for(asyncio.shield(fut), self.timeout / self.retries)
                except TimeoutError:
                    continue
            raise RelayError(f"no reply from media relay {self.target}", (503, "Media relay timeout"))
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
