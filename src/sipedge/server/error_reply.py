"""The transports' one stateless error reply: what a listener answers itself, before any
SIP layer sees the message (a UDP request over ``max_message_size``: 513; a stream
message that cannot be framed: its framing error), when the request's head parses."""

from __future__ import annotations

from ..errors import ParseError
from ..sip import message


def error_reply(pending: bytes, hint: tuple[int, str]) -> bytes | None:
    """A stateless error response to the request whose start is ``pending``, when its
    start line and headers parse; ``None`` when it cannot be answered (a response, ACK,
    garbage). Content-Length is ignored: the body is the part that failed."""
    end = pending.find(b"\r\n\r\n")
    head = pending[:end] if end != -1 else pending[: pending.rfind(b"\r\n")]
    lines = [
        ln for ln in head.split(b"\r\n")
        if ln.partition(b":")[0].strip().lower() not in (b"content-length", b"l")
    ]
    try:
        req = message.parse(b"\r\n".join(lines) + b"\r\n\r\n", stream=True)
        if not isinstance(req, message.Request) or req.method == "ACK" or not req.get_all("via"):
            return None
        return message.make_response(req, hint[0], hint[1]).serialize()
    except ParseError:
        return None
