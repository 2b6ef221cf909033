"""Which stream receives on which local port: the one table the signalling side fills
(allocating and releasing port pairs from the :class:`PortAllocator`) and the packet
path reads (one dictionary lookup per packet)."""

from __future__ import annotations

from .model import RelayError, Stream
from .ports import PortAllocator


class LocalPort:
    """A local port: the stream(s) receiving on it (several only for forked branches)."""

    __slots__ = ("rtcp", "streams")

    def __init__(self, stream: Stream, rtcp: bool) -> None:
        self.streams = [stream]
        self.rtcp = rtcp


class PortTable:
    """Local ports in use, by number."""

    def __init__(self, allocator: PortAllocator, counters: dict[str, int]) -> None:
        self._alloc = allocator
        self._counters = counters
        self.by_port: dict[int, LocalPort] = {}

    def __len__(self) -> int:
        return len(self.by_port)

    def ports(self) -> list[int]:
        return list(self.by_port)

    def is_rtcp(self, port: int) -> bool:
        found = self.by_port.get(port)
        return found is not None and found.rtcp

    def allocate(self, s: Stream, single: bool) -> None:
        """A port (rtcp-mux) or an RTP/RTCP pair for ``s``, on its interface; RelayError
        503 when the range is exhausted."""
        count = 1 if single else 2
        base = self._alloc.allocate(count, s.interface)
        if base is None:
            self._counters["media_port_exhaustion"] += 1
            raise RelayError("relay port range exhausted", (503, "Media relay out of ports"))
        s.rtp_port = base
        s.rtcp_port = base if single else base + 1
        s.port_count = count
        s.owns_ports = True
        self.by_port[base] = LocalPort(s, rtcp=False)
        if not single:
            self.by_port[base + 1] = LocalPort(s, rtcp=True)

    def share(self, s: Stream, owner: Stream) -> None:
        """``s`` (a forked branch) receives on the ports of ``owner`` too."""
        s.rtp_port, s.rtcp_port, s.owns_ports = owner.rtp_port, owner.rtcp_port, False
        s.port_count = owner.port_count
        for port in {owner.rtp_port, owner.rtcp_port} - {None}:
            found = self.by_port.get(port)  # type: ignore[arg-type]
            if found is not None:
                found.streams.append(s)

    def release(self, s: Stream) -> None:
        """``s`` stops receiving; its ports go back to the range once no stream uses them."""
        ports = {s.rtp_port, s.rtcp_port} - {None}
        for port in ports:
            found = self.by_port.get(port)  # type: ignore[arg-type]
            if found is None:
                continue
            if s in found.streams:
                found.streams.remove(s)
            if not found.streams:
                del self.by_port[port]  # type: ignore[arg-type]
        # forked branches share ports: the last stream using them gives them back
        if s.rtp_port is not None and s.port_count and not any(p in self.by_port for p in ports):
            self._alloc.release(s.rtp_port, s.port_count)
        s.rtp_port = s.rtcp_port = None
        s.port_count = 0
