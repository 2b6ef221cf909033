"""SIP messages (RFC 3261 §7): parse once, read headers lazily, serialize.

``parse(data)`` splits the start line and headers (unfolding continuation lines) and keeps
each header's raw value; typed values (Via, From, CSeq...) are parsed only when read.
Bodies stay bytes. ``serialize()`` recomputes Content-Length. Only :class:`ParseError`
escapes, with ``hint`` the 4xx a server should answer (or ``None``: drop).
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from ..errors import ParseError
from .headers import (
    LIST_HEADERS,
    CSeq,
    NameAddr,
    Via,
    canonical,
    is_token,
    parse_contact_list,
    pretty,
    split_list,
)
from .uri import Uri, parse_uri

SIP_VERSION = "SIP/2.0"
_REQ_LINE = re.compile(r"^([A-Za-z0-9\-.!%*_+`'~]+) (\S+) ([Ss][Ii][Pp]/\d+\.\d+)$")
_RESP_LINE = re.compile(r"^([Ss][Ii][Pp]/\d+\.\d+) (\d{3})(?: (.*))?$")
_HEADER_NAME = re.compile(r"^[A-Za-z0-9\-.!%*_+`'~]+$")

REASONS = {
    100: "Trying", 180: "Ringing", 181: "Call Is Being Forwarded", 182: "Queued",
    183: "Session Progress", 200: "OK", 202: "Accepted", 301: "Moved Permanently",
    302: "Moved Temporarily", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden",
    404: "Not Found", 405: "Method Not Allowed", 407: "Proxy Authentication Required",
    408: "Request Timeout", 413: "Request Entity Too Large", 415: "Unsupported Media Type",
    416: "Unsupported URI Scheme", 420: "Bad Extension", 423: "Interval Too Brief",
    480: "Temporarily Unavailable", 481: "Call/Transaction Does Not Exist",
    482: "Loop Detected", 483: "Too Many Hops", 484: "Address Incomplete", 486: "Busy Here",
    487: "Request Terminated", 488: "Not Acceptable Here", 491: "Request Pending",
    500: "Server Internal Error", 501: "Not Implemented", 502: "Bad Gateway",
    503: "Service Unavailable", 504: "Server Time-out", 505: "Version Not Supported",
    513: "Message Too Large", 600: "Busy Everywhere", 603: "Decline",
}


class Message:
    """Headers and body common to requests and responses.

    Headers are kept as a list of ``[key, name, value]`` (key = canonical lowercase name),
    in received order, so a proxied message keeps its shape.
    """

    __slots__ = ("_headers", "body")

    def __init__(self, headers: list[list[str]] | None = None, body: bytes = b"") -> None:
        self._headers: list[list[str]] = headers if headers is not None else []
        self.body = body

    # -- raw header access -------------------------------------------------
    def get(self, name: str) -> str | None:
        """The first value of a header (the first list element for list headers)."""
        key = canonical(name)
        for k, _, v in self._headers:
            if k == key:
                if key in LIST_HEADERS:
                    items = split_list(v)
                    return items[0] if items else ""
                return v
        return None

    def get_all(self, name: str) -> list[str]:
        """Every value of a header, list headers split on commas, in order."""
        key = canonical(name)
        out: list[str] = []
        split = key in LIST_HEADERS
        for k, _, v in self._headers:
            if k == key:
                if split:
                    out.extend(split_list(v))
                else:
                    out.append(v)
        return out

    def has(self, name: str) -> bool:
        key = canonical(name)
        return any(h[0] == key for h in self._headers)

    def header_items(self) -> Iterator[tuple[str, str]]:
        """``(name as received, value)`` pairs in order."""
        for _, n, v in self._headers:
            yield n, v

    def set(self, name: str, value: str) -> None:
        """Replace every instance of a header with one value (appended if absent)."""
        key = canonical(name)
        for i, h in enumerate(self._headers):
            if h[0] == key:
                h[2] = value
                self._headers[i + 1 :] = [x for x in self._headers[i + 1 :] if x[0] != key]
                return
        self._headers.append([key, pretty(key), value])

    def add(self, name: str, value: str, first: bool = False) -> None:
        """Add a header line; ``first`` puts it before the other lines of that header
        (or at the top when there are none), as Via and Record-Route need."""
        key = canonical(name)
        entry = [key, pretty(key), value]
        if first:
            for i, h in enumerate(self._headers):
                if h[0] == key:
                    self._headers.insert(i, entry)
                    return
            self._headers.insert(0, entry)
        else:
            self._headers.append(entry)

    def remove(self, name: str) -> int:
        key = canonical(name)
        before = len(self._headers)
        self._headers = [h for h in self._headers if h[0] != key]
        return before - len(self._headers)

    def pop_first(self, name: str) -> str | None:
        """Remove and return the first list element of a header (top Via, top Route)."""
        key = canonical(name)
        for i, h in enumerate(self._headers):
            if h[0] == key:
                items = split_list(h[2]) if key in LIST_HEADERS else [h[2]]
                first = items[0] if items else ""
                if len(items) > 1:
                    h[2] = ", ".join(items[1:])
                else:
                    del self._headers[i]
                return first
        return None

    def replace_first(self, name: str, value: str) -> None:
        """Replace the first list element of a header (e.g. rewrite the top Via)."""
        key = canonical(name)
        for h in self._headers:
            if h[0] == key:
                items = split_list(h[2]) if key in LIST_HEADERS else [h[2]]
                items[0] = value
                h[2] = ", ".join(items)
                return
        self.add(name, value, first=True)

    # -- typed access ------------------------------------------------------
    def _required(self, name: str) -> str:
        v = self.get(name)
        if v is None:
            raise ParseError(f"missing {pretty(canonical(name))} header", (400, f"Missing {pretty(canonical(name))} header"))
        return v

    @property
    def vias(self) -> list[Via]:
        return [Via.parse(v) for v in self.get_all("via")]

    @property
    def top_via(self) -> Via:
        return Via.parse(self._required("via"))

    @property
    def call_id(self) -> str:
        v = self._required("call-id").strip()
        if not v or any(c in v for c in " \t<>\""):
            raise ParseError(f"bad Call-ID {v!r}", (400, "Bad Call-ID header"))
        return v

    @property
    def cseq(self) -> CSeq:
        return CSeq.parse(self._required("cseq"))

    @property
    def from_(self) -> NameAddr:
        return NameAddr.parse(self._required("from"), "From")

    @property
    def to(self) -> NameAddr:
        return NameAddr.parse(self._required("to"), "To")

    @property
    def contacts(self) -> list[NameAddr] | str:
        """Contact name-addrs, or ``"*"``; empty list when absent."""
        values = self.get_all("contact")
        if len(values) == 1 and values[0].strip() == "*":
            return "*"
        out: list[NameAddr] = []
        for v in values:
            parsed = parse_contact_list(v)
            if isinstance(parsed, str):
                raise ParseError("'*' mixed with other contacts", (400, "Bad Contact header"))
            out.extend(parsed)
        return out

    def name_addrs(self, name: str) -> list[NameAddr]:
        """Every value of a name-addr list header (Route, Record-Route, Path...)."""
        what = pretty(canonical(name))
        return [NameAddr.parse(v, what) for v in self.get_all(name)]

    @property
    def max_forwards(self) -> int | None:
        v = self.get("max-forwards")
        if v is None:
            return None
        v = v.strip()
        if not v.isdigit() or int(v) > 255:
            raise ParseError(f"bad Max-Forwards {v!r}", (400, "Bad Max-Forwards header"))
        return int(v)

    @property
    def expires(self) -> int | None:
        v = self.get("expires")
        if v is None:
            return None
        v = v.strip()
        if not v.isdigit():
            raise ParseError(f"bad Expires {v!r}", (400, "Bad Expires header"))
        return min(int(v), 2**32 - 1)

    @property
    def content_length(self) -> int | None:
        v = self.get("content-length")
        if v is None:
            return None
        v = v.strip()
        if not v.isdigit():
            raise ParseError(f"bad Content-Length {v!r}", (400, "Bad Content-Length header"))
        return int(v)

    @property
    def content_type(self) -> str | None:
        v = self.get("content-type")
        return v.split(";", 1)[0].strip().lower() if v is not None else None

    # -- serialization -----------------------------------------------------
    def _start_line(self) -> str:
        raise NotImplementedError

    def serialize(self) -> bytes:
        lines = [self._start_line()]
        for k, n, v in self._headers:
            if k != "content-length":
                lines.append(f"{n}: {v}")
        lines.append(f"Content-Length: {len(self.body)}")
        head = "\r\n".join(lines) + "\r\n\r\n"
        return head.encode("utf-8", "surrogateescape") + self.body

    def __bytes__(self) -> bytes:
        return self.serialize()

    def headers_copy(self) -> list[list[str]]:
        return [list(h) for h in self._headers]


class Request(Message):
    """A SIP request: ``method``, ``uri`` (raw text, parsed lazily as ``ruri``)."""

    __slots__ = ("_ruri", "method", "uri", "version")

    def __init__(
        self,
        method: str,
        uri: str,
        headers: list[list[str]] | None = None,
        body: bytes = b"",
        version: str = SIP_VERSION,
    ) -> None:
        super().__init__(headers, body)
        self.method = method
        self.uri = uri
        self.version = version
        self._ruri: Uri | None = None

    @property
    def ruri(self) -> Uri:
        if self._ruri is None:
            self._ruri = parse_uri(self.uri)
        return self._ruri

    def set_uri(self, uri: Uri | str) -> None:
        self.uri = str(uri)
        self._ruri = uri if not isinstance(uri, str) else None

    def _start_line(self) -> str:
        return f"{self.method} {self.uri} {self.version}"

    def copy(self) -> Request:
        r = Request(self.method, self.uri, self.headers_copy(), self.body, self.version)
        r._ruri = self._ruri
        return r

    def __repr__(self) -> str:
        return f"<Request {self.method} {self.uri}>"


class Response(Message):
    """A SIP response: ``status`` and ``reason``."""

    __slots__ = ("reason", "status", "version")

    def __init__(
        self,
        status: int,
        reason: str | None = None,
        headers: list[list[str]] | None = None,
        body: bytes = b"",
        version: str = SIP_VERSION,
    ) -> None:
        super().__init__(headers, body)
        self.status = status
        self.reason = reason if reason is not None else REASONS.get(status, "Unknown")
        self.version = version

    def _start_line(self) -> str:
        return f"{self.version} {self.status} {self.reason}"

    def copy(self) -> Response:
        return Response(self.status, self.reason, self.headers_copy(), self.body, self.version)

    def __repr__(self) -> str:
        return f"<Response {self.status} {self.reason}>"


def _split_head(data: bytes) -> tuple[bytes, bytes]:
    i = data.find(b"\r\n\r\n")
    if i != -1:
        return data[:i], data[i + 4 :]
    i = data.find(b"\n\n")
    if i != -1:
        return data[:i], data[i + 2 :]
    return data.rstrip(b"\r\n"), b""


def parse(data: bytes, stream: bool = False) -> Request | Response:
    """Parse one SIP message.

    With ``stream=False`` (UDP, WebSocket) the body is the rest of the datagram, cut to
    Content-Length; a Content-Length larger than the body is an error. With
    ``stream=True`` the caller's framer has already cut the message exactly.
    """
    head_b, body = _split_head(data.lstrip(b"\r\n"))
    try:
        head = head_b.decode("utf-8", "surrogateescape")
    except Exception as exc:  # pragma: no cover - surrogateescape never fails
        raise ParseError("undecodable message", None) from exc
    lines = head.replace("\r\n", "\n").split("\n")
    if not lines or not lines[0]:
        raise ParseError("empty message", None)
    start = lines[0]
    headers: list[list[str]] = []
    for line in lines[1:]:
        if not line:
            continue
        if line[0] in " \t":
            if not headers:
                raise ParseError("continuation line before any header", (400, "Bad header folding"))
            headers[-1][2] = headers[-1][2] + " " + line.strip()
            continue
        name, colon, value = line.partition(":")
        name = name.rstrip(" \t")
        if not colon or not _HEADER_NAME.match(name):
            raise ParseError(f"bad header line {line[:60]!r}", (400, "Bad header line"))
        headers.append([canonical(name), name, value.strip(" \t")])
    m = _REQ_LINE.match(start)
    msg: Request | Response
    if m:
        method, uri, version = m.groups()
        if version.upper() != SIP_VERSION:
            raise ParseError(f"unsupported version {version}", (505, "Version Not Supported"))
        msg = Request(method, uri, headers, b"", version.upper())
    else:
        r = _RESP_LINE.match(start)
        if not r:
            raise ParseError(f"bad start line {start[:80]!r}", None)
        version, status, reason = r.groups()
        if version.upper() != SIP_VERSION:
            raise ParseError(f"unsupported version {version}", None)
        code = int(status)
        if not 100 <= code <= 699:
            raise ParseError(f"bad status code {code}", None)
        msg = Response(code, reason or "", headers, b"", version.upper())
    length = _content_length(headers)
    if length is None:
        if stream:
            length = 0
        else:
            length = len(body)
    if length > len(body):
        raise ParseError(
            f"Content-Length {length} larger than the body ({len(body)} bytes)",
            (400, "Content-Length mismatch") if isinstance(msg, Request) else None,
        )
    msg.body = body[:length]
    return msg


def _content_length(headers: list[list[str]]) -> int | None:
    found: int | None = None
    for k, _, v in headers:
        if k == "content-length":
            v = v.strip()
            if not v.isdigit():
                raise ParseError(f"bad Content-Length {v!r}", (400, "Bad Content-Length header"))
            if found is not None and found != int(v):
                raise ParseError("conflicting Content-Length headers", (400, "Bad Content-Length header"))
            found = int(v)
    return found


def check_request(req: Request) -> None:
    """RFC 3261 §16.3 / §8.2 sanity: parse what every hop relies on, or raise ParseError
    naming the header (the caller answers with ``hint``)."""
    vias = req.vias
    if not vias:
        raise ParseError("missing Via header", (400, "Missing Via header"))
    req.from_  # noqa: B018 - parse for validation
    req.to  # noqa: B018
    _ = req.call_id
    cseq = req.cseq
    if cseq.method != req.method:
        raise ParseError(f"CSeq method {cseq.method} does not match {req.method}", (400, "CSeq method mismatch"))
    req.max_forwards  # noqa: B018
    req.expires  # noqa: B018
    if req.method in ("INVITE", "REGISTER", "SUBSCRIBE", "REFER") or req.has("contact"):
        req.contacts  # noqa: B018
    _ = req.ruri
    if not is_token(req.method):
        raise ParseError(f"bad method {req.method!r}", (400, "Bad method"))


def check_response(resp: Response) -> None:
    """Enough of a response to route it back: a Via and a CSeq."""
    if not resp.get_all("via"):
        raise ParseError("response without Via", None)
    resp.top_via  # noqa: B018
    resp.cseq  # noqa: B018
    _ = resp.call_id


_RESPONSE_COPY = ("via", "from", "to", "call-id", "cseq")


def make_response(
    request: Request, status: int, reason: str | None = None, to_tag: str | None = None
) -> Response:
    """A response to ``request`` per RFC 3261 §8.2.6: Via, From, To, Call-ID, CSeq copied
    (To gets ``to_tag`` when it has none and the status is above 100)."""
    headers: list[list[str]] = []
    for h in request._headers:
        if h[0] in _RESPONSE_COPY:
            headers.append(list(h))
    resp = Response(status, reason, headers)
    if to_tag and status > 100:
        to = request.get("to")
        if to is not None:
            try:
                na = NameAddr.parse(to, "To")
            except ParseError:
                na = None
            if na is not None and na.tag is None:
                resp.set("to", str(na.with_params(tag=to_tag)))
    return resp


__all__ = [
    "REASONS",
    "SIP_VERSION",
    "Message",
    "Request",
    "Response",
    "check_request",
    "check_response",
    "make_response",
    "parse",
]
