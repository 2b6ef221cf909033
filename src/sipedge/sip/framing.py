"""Framing of SIP over byte streams (TCP, TLS): RFC 3261 §18.3 and RFC 5626 keepalives.

``StreamFramer.feed(data)`` returns complete frames; the caller parses each with
``message.parse(frame, stream=True)``. A double CRLF between messages is an RFC 5626 ping
(answered with a single CRLF pong); a lone CRLF is a pong. Over-limit or unframeable input
raises :class:`ParseError` and the connection should be closed.

Any chunking of the same byte stream yields the same frames (property-tested).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import ParseError


@dataclass(frozen=True, slots=True)
class Frame:
    """A complete SIP message (``data``) or a keepalive (``ping``/``pong`` with no data)."""

    data: bytes = b""
    ping: bool = False
    pong: bool = False


PING = Frame(ping=True)
PONG = Frame(pong=True)


class StreamFramer:
    """Cut a byte stream into SIP messages using Content-Length (mandatory on streams)."""

    __slots__ = ("_buf", "_error", "_need", "_scan", "max_size")

    def __init__(self, max_size: int = 65535) -> None:
        self._buf = bytearray()
        self.max_size = max_size
        self._scan = 0  # where to resume looking for the end of the head
        self._need = 0  # total length of the message once its head is known, else 0
        self._error: ParseError | None = None

    def feed(self, data: bytes) -> list[Frame]:
        """Complete frames so far. When the stream turns bad after some good frames,
        those frames are returned first and the ParseError is raised by the next call."""
        if self._error is not None:
            raise self._error
        self._buf += data
        out: list[Frame] = []
        try:
            self._cut(out)
        except ParseError as exc:
            if not out:
                raise
            self._error = exc
        return out

    def _cut(self, out: list[Frame]) -> None:
        buf = self._buf
        while buf:
            if self._need:
                if len(buf) < self._need:
                    break
                out.append(Frame(bytes(buf[: self._need])))
                del buf[: self._need]
                self._need = 0
                self._scan = 0
                continue
            # Keepalives and stray line ends between messages (RFC 5626 §3.5.1).
            if buf[0] == 13:
                if buf[:4] == b"\r\n\r\n":
                    del buf[:4]
                    out.append(PING)
                    continue
                if len(buf) < 4 and b"\r\n\r\n".startswith(bytes(buf)):
                    break  # maybe the start of a ping: wait for more bytes
                if buf[:2] == b"\r\n":
                    del buf[:2]
                    out.append(PONG)
                    continue
            end = buf.find(b"\r\n\r\n", self._scan)
            if end == -1:
                if len(buf) > self.max_size:
                    raise ParseError("message header too large", (513, "Message Too Large"))
                self._scan = max(0, len(buf) - 3)
                break
            head_len = end + 4
            length = _find_content_length(bytes(buf[:end]))
            if length is None:
                raise ParseError("missing Content-Length on a stream transport", (400, "Missing Content-Length"))
            total = head_len + length
            if total > self.max_size:
                raise ParseError("message too large", (513, "Message Too Large"))
            self._need = total

    @property
    def buffered(self) -> int:
        return len(self._buf)


def _find_content_length(head: bytes) -> int | None:
    found: int | None = None
    for line in head.split(b"\r\n")[1:]:
        if line[:1] in (b" ", b"\t"):
            continue  # a folded continuation line, not a header
        name, colon, value = line.partition(b":")
        if not colon:
            continue
        n = name.strip().lower()
        if n == b"content-length" or n == b"l":
            v = value.strip()
            if not v.isdigit():  # bytes.isdigit is ASCII-only
                raise ParseError("bad Content-Length", (400, "Bad Content-Length header"))
            v = v.lstrip(b"0") or b"0"
            length = int(v) if len(v) <= 12 else 2**40
            if found is not None and found != length:
                raise ParseError("conflicting Content-Length headers", (400, "Conflicting Content-Length headers"))
            found = length
    return found
