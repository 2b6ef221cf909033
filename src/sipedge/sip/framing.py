"""Framing of SIP over byte streams (TCP, TLS): RFC 3261 §18.3 and RFC 5626 keepalives.

``StreamFramer.feed(data)`` returns complete frames; the caller parses each with
``message.parse(frame, stream=True)``. A double CRLF between messages is an RFC 5626 ping
(answered with a single CRLF pong); a lone CRLF is a pong. Over-limit or unframeable input
raises :class:`ParseError` and the connection should be closed.
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

    __slots__ = ("_buf", "max_size")

    def __init__(self, max_size: int = 65535) -> None:
        self._buf = bytearray()
        self.max_size = max_size

    def feed(self, data: bytes) -> list[Frame]:
        self._buf += data
        out: list[Frame] = []
        buf = self._buf
        while buf:
            # Keepalives and stray line ends between messages (RFC 5626 §3.5.1).
            if buf[:4] == b"\r\n\r\n":
                del buf[:4]
                out.append(PING)
                continue
            if buf[:2] == b"\r\n":
                if len(buf) < 4 and b"\r\n\r\n".startswith(bytes(buf)):
                    break  # maybe the start of a ping: wait for more bytes
                del buf[:2]
                out.append(PONG)
                continue
            end = buf.find(b"\r\n\r\n")
            if end == -1:
                if len(buf) > self.max_size:
                    raise ParseError("message header too large", (513, "Message Too Large"))
                break
            head_len = end + 4
            length = _find_content_length(bytes(buf[:end]))
            if length is None:
                raise ParseError("missing Content-Length on a stream transport", (400, "Missing Content-Length"))
            total = head_len + length
            if total > self.max_size:
                raise ParseError("message too large", (513, "Message Too Large"))
            if len(buf) < total:
                break
            out.append(Frame(bytes(buf[:total])))
            del buf[:total]
        return out

    @property
    def buffered(self) -> int:
        return len(self._buf)


def _find_content_length(head: bytes) -> int | None:
    for line in head.split(b"\r\n")[1:]:
        name, colon, value = line.partition(b":")
        if not colon:
            continue
        n = name.strip().lower()
        if n in (b"content-length", b"l"):
            v = value.strip()
            if not v.isdigit():
                raise ParseError("bad Content-Length", (400, "Bad Content-Length header"))
            return int(v)
    return None
