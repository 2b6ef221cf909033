"""SIP messages (RFC 3261 §7): parse once, read headers lazily, serialize.

``parse(data)`` splits the start line and headers (unfolding continuation lines) and keeps
each header's raw value; typed values (Via, From, CSeq...) are parsed only when read and
cached per message (the cache entry is checked against the raw value, so any mutation,
even of ``_headers`` directly, is seen). Typed values are shared: treat them as immutable
(build new ones with ``with_params``/``replace``). Bodies stay bytes. ``serialize()``
recomputes Content-Length.

Only :class:`ParseError` escapes, with ``hint`` the 4xx a server should answer, or
``None``: drop (responses and garbage are never answered). :func:`error_response` builds
that stateless answer from the raw bytes when enough of the request is readable.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from ..errors import ParseError
from .headers import (
    _CANON_CACHE,
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
from .uri import TOKEN_CHARS, SipUri, Uri, is_digits, parse_uri

SIP_VERSION = "SIP/2.0"

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

# Headers that may appear at most once (RFC 3261 §7.3.1, §20); RFC 4475 §3.3.8.
SINGLE_HEADERS = ("from", "to", "call-id", "cseq", "max-forwards")

_T = TypeVar("_T")
_MAX_UINT32 = 2**32 - 1


def _missing(name: str) -> ParseError:
    p = pretty(canonical(name))
    return ParseError(f"missing {p} header", (400, f"Missing {p} header"))


def _digits_value(v: str, what: str, limit: int) -> int:
    """A 1*DIGIT header value, clamped to ``limit`` (long digit strings never reach
    ``int()``, whose 4300-digit limit would raise ValueError)."""
    if not (v.isascii() and v.isdigit()):  # is_digits, inline: read several times per message
        raise ParseError(f"bad {what} {v[:40]!r}", (400, f"Bad {what} header"))
    v = v.lstrip("0") or "0"
    if len(v) > 12:
        return limit
    return min(int(v), limit)


class Message:
    """Headers and body common to requests and responses.

    Headers are kept as a list of ``[key, name, value]`` (key = canonical lowercase name),
    in received order, so a proxied message keeps its shape. The methods below never
    edit an entry in place (they put a new one in its slot), so :meth:`copy` and
    :func:`make_response` share the entries with their source instead of copying them.
    Entries are tuples (``replace_first`` still puts a list): the garbage collector stops
    tracking tuples of strings, which matters for the messages transactions keep for 32 s.
    """

    __slots__ = ("_cache", "_headers", "body")

    def __init__(self, headers: list[list[str]] | None = None, body: bytes = b"") -> None:
        self._headers: list[list[str]] = headers if headers is not None else []
        self.body = body
        # slot -> (raw value parsed, typed value); typed as Any so that reading a hit
        # needs no typing.cast call (a function call per read on the hot path)
        self._cache: dict[str, tuple[object, Any]] = {}

    # -- raw header access -------------------------------------------------
    def get(self, name: str) -> str | None:
        """The first value of a header (the first list element for list headers)."""
        key = _CANON_CACHE.get(name) or canonical(name)
        for h in self._headers:
            if h[0] == key:
                v = h[2]
                if key in LIST_HEADERS:
                    if "," not in v:  # one element: what split_list would give, without the call
                        return v.strip(" \t")
                    items = split_list(v, pretty(key))
                    return items[0] if items else ""
                return v
        return None

    def get_all(self, name: str) -> list[str]:
        """Every value of a header, list headers split on commas, in order."""
        key = _CANON_CACHE.get(name) or canonical(name)
        out: list[str] = []
        if key in LIST_HEADERS:
            for h in self._headers:
                if h[0] == key:
                    v = h[2]
                    if "," not in v:  # one element (split_list's answer, without the call)
                        v = v.strip(" \t")
                        if v:
                            out.append(v)
                    else:
                        out.extend(split_list(v, pretty(key)))
        else:
            for h in self._headers:
                if h[0] == key:
                    out.append(h[2])
        return out

    def has(self, name: str) -> bool:
        key = _CANON_CACHE.get(name) or canonical(name)
        for h in self._headers:  # noqa: SIM110 - a loop, not a generator: hot path
            if h[0] == key:
                return True
        return False

    def count(self, name: str) -> int:
        """How many header lines of this name (not list elements)."""
        key = canonical(name)
        return sum(1 for h in self._headers if h[0] == key)

    def header_items(self) -> Iterator[tuple[str, str]]:
        """``(name as received, value)`` pairs in order."""
        for _, n, v in self._headers:
            yield n, v

    def set(self, name: str, value: str) -> None:
        """Replace every instance of a header with one value (appended if absent)."""
        key = canonical(name)
        for i, h in enumerate(self._headers):
            if h[0] == key:
                self._headers[i] = (key, h[1], value)  # type: ignore[call-overload]
                self._headers[i + 1 :] = [x for x in self._headers[i + 1 :] if x[0] != key]
                return
        self._headers.append((key, pretty(key), value))  # type: ignore[arg-type]

    def add(self, name: str, value: str, first: bool = False) -> None:
        """Add a header line; ``first`` puts it before the other lines of that header
        (or at the top when there are none), as Via and Record-Route need."""
        key = canonical(name)
        entry: list[str] = (key, pretty(key), value)  # type: ignore[assignment]
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
                items = split_list(h[2], pretty(key)) if key in LIST_HEADERS else [h[2]]
                first = items[0] if items else ""
                if len(items) > 1:
                    self._headers[i] = (key, h[1], ", ".join(items[1:]))  # type: ignore[call-overload]
                else:
                    del self._headers[i]
                return first
        return None

    def replace_first(self, name: str, value: str) -> None:
        """Replace the first list element of a header (e.g. rewrite the top Via)."""
        key = canonical(name)
        for i, h in enumerate(self._headers):
            if h[0] == key:
                items = split_list(h[2], pretty(key)) if key in LIST_HEADERS else [h[2]]
                if items:
                    items[0] = value
                else:
                    items = [value]
                self._headers[i] = [key, h[1], ", ".join(items)]
                return
        self.add(name, value, first=True)

    def set_top_via(self, via: Via) -> None:
        """Replace the top Via with ``via`` (e.g. ``received``/``rport`` stamped); the
        typed value is kept, so the next ``top_via`` read needs no parse."""
        text = str(via)
        for i, h in enumerate(self._headers):
            if h[0] == "via":
                if "," in h[2]:
                    break  # several Vias on the line: replace_first keeps the others
                self._headers[i] = (h[0], h[1], text)  # type: ignore[call-overload]
                self._cache["top_via"] = (text, via)
                return
        self.replace_first("via", text)

    # -- typed access ------------------------------------------------------
    def _memo(self, slot: str, raw: object, parse: Callable[[], _T]) -> _T:
        """The parsed value cached under ``slot`` if it was parsed from ``raw``."""
        hit = self._cache.get(slot)
        if hit is not None and hit[0] == raw:
            found: _T = hit[1]
            return found
        value = parse()
        self._cache[slot] = (raw, value)
        return value

    def _first_raw(self, key: str) -> str | None:
        for h in self._headers:
            if h[0] == key:
                return h[2]
        return None

    def _required(self, name: str) -> str:
        v = self.get(name)
        if v is None:
            raise _missing(name)
        return v

    @property
    def vias(self) -> list[Via]:
        raws = tuple([h[2] for h in self._headers if h[0] == "via"])  # a list first: no generator
        if not raws:
            return []
        return list(self._memo("vias", raws, lambda: self._parse_vias(raws[0])))

    def _parse_vias(self, first_raw: str) -> list[Via]:
        values = self.get_all("via")
        out: list[Via] = []
        top = self._cache.get("top_via")
        if values and top is not None and top[0] == first_raw and "," not in first_raw:
            out.append(top[1])  # already parsed by top_via
            values = values[1:]
        out.extend(Via.parse(v) for v in values)
        if out:
            self._cache["top_via"] = (first_raw, out[0])
        return out

    @property
    def top_via(self) -> Via:
        raw = self._first_raw("via")
        if raw is None:
            raise _missing("via")
        hit = self._cache.get("top_via")
        if hit is not None and hit[0] == raw:
            found: Via = hit[1]
            return found
        value = Via.parse(raw.strip(" \t") if "," not in raw else self._required("via"))
        self._cache["top_via"] = (raw, value)
        return value

    @property
    def call_id(self) -> str:
        v = self._first_raw("call-id")
        if v is None:
            raise _missing("call-id")
        if not v or not v.isascii() or not v.isprintable() or " " in v:
            raise ParseError(f"bad Call-ID {v[:60]!r}", (400, "Bad Call-ID header"))
        return v

    @property
    def cseq(self) -> CSeq:
        raw = self._first_raw("cseq")
        if raw is None:
            raise _missing("cseq")
        hit = self._cache.get("cseq")
        if hit is not None and hit[0] == raw:
            found: CSeq = hit[1]
            return found
        value = CSeq.parse(raw)
        self._cache["cseq"] = (raw, value)
        return value

    @property
    def from_(self) -> NameAddr:
        raw = self._first_raw("from")
        if raw is None:
            raise _missing("from")
        hit = self._cache.get("from")
        if hit is not None and hit[0] == raw:
            found: NameAddr = hit[1]
            return found
        value = NameAddr.parse(raw, "From")
        self._cache["from"] = (raw, value)
        return value

    @property
    def to(self) -> NameAddr:
        raw = self._first_raw("to")
        if raw is None:
            raise _missing("to")
        hit = self._cache.get("to")
        if hit is not None and hit[0] == raw:
            found: NameAddr = hit[1]
            return found
        value = NameAddr.parse(raw, "To")
        self._cache["to"] = (raw, value)
        return value

    @property
    def contacts(self) -> list[NameAddr] | str:
        """Contact name-addrs, or ``"*"``; empty list when absent."""
        raws = tuple([h[2] for h in self._headers if h[0] == "contact"])  # as in vias
        if not raws:
            return []
        got = self._memo("contacts", raws, self._parse_contacts)
        return got if isinstance(got, str) else list(got)

    def _parse_contacts(self) -> list[NameAddr] | str:
        values = self.get_all("contact")
        if len(values) == 1 and values[0] == "*":
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
        n = _digits_value(v, "Max-Forwards", 256)
        if n > 255:
            raise ParseError(f"Max-Forwards too large {v[:20]!r}", (400, "Bad Max-Forwards header"))
        return n

    @property
    def expires(self) -> int | None:
        """Expires in seconds; values above 2**32-1 are clamped (RFC 4475 §3.1.2.4
        lets an element treat them as the largest value)."""
        v = self.get("expires")
        if v is None:
            return None
        return _digits_value(v, "Expires", _MAX_UINT32)

    @property
    def content_length(self) -> int | None:
        v = self.get("content-length")
        if v is None:
            return None
        return _digits_value(v, "Content-Length", _MAX_UINT32)

    @property
    def content_type(self) -> str | None:
        v = self.get("content-type")
        return v.split(";", 1)[0].strip().lower() if v is not None else None

    # -- serialization -----------------------------------------------------
    def _start_line(self) -> str:
        raise NotImplementedError

    def serialize(self) -> bytes:
        """The wire form; Content-Length is recomputed. A CR or LF that our own code put
        into a start line or header value is turned into a space, so no value can ever
        inject a header line or end the head early."""
        lines = [self._start_line()]
        lines.extend([f"{h[1]}: {h[2]}" for h in self._headers if h[0] != "content-length"])
        lines.append(f"Content-Length: {len(self.body)}")
        head = "\r\n".join(lines)
        n = len(lines) - 1
        if head.count("\n") != n or head.count("\r") != n:
            head = "\r\n".join(x.replace("\r\n", " ").replace("\r", " ").replace("\n", " ") for x in lines)
        return (head + "\r\n\r\n").encode("utf-8", "surrogateescape") + self.body

    def __bytes__(self) -> bytes:
        return self.serialize()

    def headers_copy(self) -> list[list[str]]:
        return [list(h) for h in self._headers]

    def _headers_shared(self) -> list[list[str]]:
        """A new list of the same entries (safe: entries are replaced, never edited)."""
        return self._headers.copy()

    def forget_parsed(self) -> None:
        """Drop the typed-header cache (values are parsed again if read again): for a
        message kept only in case of retransmissions, CANCEL and the like, so it holds
        fewer objects for the garbage collector to walk."""
        if self._cache:
            self._cache = {}

    def _share_cache(self, other: Message) -> None:
        """Start with ``other``'s typed values: each entry is checked against the raw
        header it came from, so entries for headers that differ are simply not used."""
        self._cache = dict(other._cache)


class Request(Message):
    """A SIP request: ``method``, ``uri`` (raw text, parsed lazily as ``ruri``)."""

    __slots__ = ("_ruri", "_ruri_text", "method", "uri", "version")

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
        self._ruri_text = ""

    @property
    def ruri(self) -> Uri:
        if self._ruri is None or self._ruri_text != self.uri:
            self._ruri = parse_uri(self.uri)
            self._ruri_text = self.uri
        return self._ruri

    def set_uri(self, uri: Uri | str) -> None:
        self.uri = str(uri)
        if isinstance(uri, str):
            self._ruri = None
        else:
            self._ruri = uri
            self._ruri_text = self.uri

    def _start_line(self) -> str:
        return f"{self.method} {self.uri} {self.version}"

    def forget_parsed(self) -> None:
        super().forget_parsed()
        self._ruri = None

    def copy(self) -> Request:
        r = Request(self.method, self.uri, self._headers_shared(), self.body, self.version)
        r._ruri = self._ruri
        r._ruri_text = self._ruri_text
        r._share_cache(self)
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
        r = Response(self.status, self.reason, self._headers_shared(), self.body, self.version)
        r._share_cache(self)
        return r

    def __repr__(self) -> str:
        return f"<Response {self.status} {self.reason}>"


# -- parsing -----------------------------------------------------------------------

_BAD_REQUEST_LINE = (400, "Bad Request-Line")
# Header names already validated as tokens -> canonical key (bounded: names come from peers)
_HEADER_KEYS: dict[str, str] = {}
_HEADER_KEYS_MAX = 512


def _split_head(data: bytes, start: int) -> tuple[int, int]:
    """``(end of head, start of body)``: the head ends at the first empty line; lines end
    in CRLF or (tolerated) a bare LF. No empty line: everything is head."""
    p = data.find(b"\r\n\r\n", start)
    if p != -1 and data.find(b"\n\n", start, p) == -1 and data.find(b"\n\r\n", start, p) == -1:
        return p, p + 4
    a = start
    n = len(data)
    while a < n:
        b = data.find(b"\n", a)
        if b == -1:
            break
        if b == a or (b == a + 1 and data[a] == 13):  # empty line ("\n" or "\r\n")
            return (a - 2 if a >= start + 2 and data[a - 2] == 13 else a - 1), b + 1
        a = b + 1
    return n, n


def _head_lines(head: str) -> list[str]:
    lines = head.split("\r\n")
    n = len(lines) - 1
    if head.count("\n") == n and head.count("\r") == n:
        return lines
    # bare LF line ends (tolerated) or a bare CR (never valid outside CRLF)
    lines = head.split("\n")
    for i, line in enumerate(lines):
        if line.endswith("\r"):
            line = line[:-1]
            lines[i] = line
        if "\r" in line:
            raise ParseError("bare CR in a header line", (400, "Bad header line"))
    return lines


def _parse_version(v: str) -> bool:
    """``SIP/1*DIGIT.1*DIGIT`` (case-insensitive SIP)."""
    if len(v) < 7 or v[:4].upper() != "SIP/":
        return False
    major, dot, minor = v[4:].partition(".")
    return bool(dot) and is_digits(major) and is_digits(minor)


def _looks_like_request(start: str) -> bool:
    parts = start.split()
    return len(parts) >= 3 and is_token(parts[0]) and parts[-1][:4].upper() == "SIP/"


def parse(data: bytes, stream: bool = False) -> Request | Response:
    """Parse one SIP message.

    With ``stream=False`` (UDP, WebSocket) the body is the rest of the datagram, cut to
    Content-Length; a Content-Length larger than the body is an error. With
    ``stream=True`` the caller's framer has already cut the message exactly.

    Raises :class:`ParseError`; ``hint`` is ``(status, reason)`` for a request that
    deserves an answer, ``None`` for garbage and for any response.
    """
    n = len(data)
    start = 0
    while start < n and data[start] in (13, 10):
        start += 1
    if start == n:
        raise ParseError("empty message", None)
    p = data.find(b"\r\n\r\n", start)
    lines: list[str] | None = None
    if p != -1:  # fast path: CRLF line ends only, so the first empty line is at p
        head = data[start:p].decode("utf-8", "surrogateescape")
        lines = head.split("\r\n")
        k = len(lines) - 1
        if head.count("\n") != k or head.count("\r") != k:
            lines = None
        body_start = p + 4
    if lines is None:
        head_end, body_start = _split_head(data, start)
        head = data[start:head_end].decode("utf-8", "surrogateescape")
    is_response = head[:4].upper() == "SIP/"
    if lines is None:
        try:
            lines = _head_lines(head)
        except ParseError as exc:
            raise ParseError(str(exc), None if is_response else exc.hint) from None
    start_line = lines[0]
    msg: Request | Response
    if is_response:
        parts = start_line.split(" ", 2)
        if len(parts) < 2 or not _parse_version(parts[0]):
            raise ParseError(f"bad status line {start_line[:80]!r}", None)
        code = parts[1]
        if len(code) != 3 or not is_digits(code) or not 100 <= int(code) <= 699:
            raise ParseError(f"bad status code in {start_line[:80]!r}", None)
        if parts[0].upper() != SIP_VERSION:
            raise ParseError(f"unsupported version {parts[0][:20]!r}", None)
        reason = parts[2] if len(parts) == 3 else ""
        msg = Response(int(code), reason, None, b"", SIP_VERSION)
        bad_hint: tuple[int, str] | None = None
    else:
        parts = start_line.split(" ")
        if len(parts) != 3 or not parts[0] or not parts[1] or not parts[2]:
            hint = _BAD_REQUEST_LINE if _looks_like_request(start_line) else None
            raise ParseError(f"bad start line {start_line[:80]!r}", hint)
        method, uri, version = parts
        if not TOKEN_CHARS.issuperset(method):
            raise ParseError(f"bad start line {start_line[:80]!r}", None)
        if version != SIP_VERSION:
            if not _parse_version(version):
                hint = _BAD_REQUEST_LINE if version[:4].upper() == "SIP/" else None
                raise ParseError(f"bad SIP version in {start_line[:80]!r}", hint)
            if version.upper() != SIP_VERSION:
                raise ParseError(f"unsupported version {version[:20]}", (505, "Version Not Supported"))
        if "\t" in uri or not uri.isprintable():
            raise ParseError(f"bad Request-URI {uri[:80]!r}", (400, "Bad Request-URI"))
        msg = Request(method, uri, None, b"", SIP_VERSION)
        bad_hint = (400, "Bad header line")
    headers = msg._headers
    append = headers.append
    length: int | None = None
    known = _HEADER_KEYS
    folded: dict[int, list[str]] = {}  # header index -> continuation lines (joined once)
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        key = known.get(name)
        if key is not None and sep:  # fast path: a header name seen before (a valid token)
            append((key, name, value.strip(" \t")))  # type: ignore[arg-type]
            continue
        colon = line.find(":")
        c0 = line[:1]
        if c0 == " " or c0 == "\t":
            if not headers:
                raise ParseError("continuation line before any header", bad_hint)
            cont = line.strip(" \t")
            if cont:
                folded.setdefault(len(headers) - 1, []).append(cont)
            continue
        name = line[:colon].rstrip(" \t") if colon > 0 else ""
        if not name or not TOKEN_CHARS.issuperset(name):
            raise ParseError(f"bad header line {line[:60]!r}", bad_hint)
        key = canonical(name)
        if len(known) < _HEADER_KEYS_MAX and colon == len(name):
            known[name] = key
        headers.append((key, name, line[colon + 1 :].strip(" \t")))  # type: ignore[arg-type]
    for idx, pieces in folded.items():
        h = headers[idx]
        headers[idx] = (h[0], h[1], " ".join([h[2], *pieces]) if h[2] else " ".join(pieces))  # type: ignore[call-overload]
    for v in [h[2] for h in headers if h[0] == "content-length"]:
        if not (v.isascii() and v.isdigit()):  # is_digits, inline
            raise ParseError(
                f"bad Content-Length {v[:20]!r}",
                (400, "Bad Content-Length header") if bad_hint else None,
            )
        cl_value = _digits_value(v, "Content-Length", _MAX_UINT32)
        if length is not None and length != cl_value:
            raise ParseError(
                "conflicting Content-Length headers",
                (400, "Conflicting Content-Length headers") if bad_hint else None,
            )
        length = cl_value
    available = n - body_start
    if length is None:
        length = 0 if stream else available
    if length > available:
        raise ParseError(
            f"Content-Length {length} larger than the body ({available} bytes)",
            (400, "Content-Length mismatch") if bad_hint else None,
        )
    if length:
        msg.body = data[body_start : body_start + length]
    return msg


# -- validation --------------------------------------------------------------------


def _check_single(msg: Message) -> None:
    keys = [h[0] for h in msg._headers]
    for key in SINGLE_HEADERS:
        count = keys.count(key)  # five scans in C beat one Python loop over the headers
        if count > 1:
            p = pretty(key)
            raise ParseError(f"{count} {p} headers", (400, f"Multiple {p} headers"))


def check_request(req: Request) -> None:
    """RFC 3261 §16.3 / §8.2 sanity: parse what every hop relies on, or raise ParseError
    naming the header (the caller answers with ``hint``).

    Checks: Via present and every Via parses; From, To, Call-ID, CSeq present once and
    parse; CSeq method = request method; Max-Forwards 0..255; Expires digits; Contact
    parses (always for INVITE/REGISTER/SUBSCRIBE/REFER); the Request-URI is a SIP/SIPS/TEL
    URI (else 416, §16.3 step 2) without a headers part (§19.1.1).
    """
    if not req.vias:
        raise _missing("via")
    _check_single(req)
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
    try:
        uri = req.ruri
    except ParseError as exc:
        hint = exc.hint if isinstance(exc.hint, tuple) and exc.hint[0] == 416 else (400, "Bad Request-URI")
        raise ParseError(f"bad Request-URI: {exc}", hint) from None
    if not isinstance(uri, SipUri):
        raise ParseError(f"unsupported Request-URI scheme {uri.scheme!r}", (416, "Unsupported URI Scheme"))
    if uri.headers:
        raise ParseError("headers in the Request-URI", (400, "Bad Request-URI: headers not allowed"))


def check_response(resp: Response) -> None:
    """Enough of a response to route it back: a Via, a CSeq and a Call-ID. Raises
    ParseError with ``hint=None``: a response is never answered, only dropped."""
    try:
        if not resp.has("via"):
            raise ParseError("response without Via", None)
        resp.top_via  # noqa: B018
        resp.cseq  # noqa: B018
        _ = resp.call_id
        _check_single(resp)
    except ParseError as exc:
        if exc.hint is None:
            raise
        raise ParseError(str(exc), None) from None


_RESPONSE_COPY = ("via", "from", "to", "call-id", "cseq")


def make_response(
    request: Request, status: int, reason: str | None = None, to_tag: str | None = None
) -> Response:
    """A response to ``request`` per RFC 3261 §8.2.6: Via, From, To, Call-ID, CSeq copied
    (To gets ``to_tag`` when it has none and the status is above 100)."""
    headers = [h for h in request._headers if h[0] in _RESPONSE_COPY]  # shared entries
    resp = Response(status, reason, headers)
    resp._share_cache(request)
    if to_tag and status > 100 and request._first_raw("to") is not None:
        try:
            na: NameAddr | None = request.to
        except ParseError:
            na = None
        if na is not None and na.tag is None:
            tagged = na.with_params(tag=to_tag)
            text = str(tagged)
            resp.set("to", text)
            resp._cache["to"] = (text, tagged)
    return resp


def _salvage(data: bytes) -> Request | None:
    """A tolerant read of a request that failed :func:`parse`: the first token of the
    first line as method, and every header line that looks like one."""
    text = data.lstrip(b"\r\n")
    end = text.find(b"\r\n\r\n")
    if end == -1:
        end = text.find(b"\n\n")
    head = text[: end if end != -1 else len(text)].decode("utf-8", "surrogateescape")
    lines = head.replace("\r\n", "\n").split("\n")
    first = lines[0].split()
    if not first or not is_token(first[0]) or first[0][:4].upper() == "SIP/":
        return None
    headers: list[list[str]] = []
    for line in lines[1:]:
        if "\r" in line:
            continue
        if line[:1] in (" ", "\t"):
            if headers:
                headers[-1][2] = f"{headers[-1][2]} {line.strip()}"
            continue
        name, colon, value = line.partition(":")
        name = name.strip(" \t")
        if colon and is_token(name):
            headers.append([canonical(name), name, value.strip(" \t")])
    return Request(first[0], "sip:invalid", headers)


def _warning_text(text: str) -> str:
    clean = "".join(c if c.isprintable() and c not in '"\\' else " " for c in text)
    return clean[:120]


def error_response(
    data: bytes, exc: ParseError, to_tag: str | None = None, agent: str = "sipedge"
) -> Response | None:
    """The stateless reply to a request that :func:`parse` or :func:`check_request`
    refused with ``exc`` (DESIGN.md: a 400 whose Warning says what was wrong), or
    ``None`` when it must be dropped and counted instead.

    Dropped: ``exc.hint`` is None (garbage, any response), the request is an ACK (never
    answered), its top Via cannot be read (a reply could not be routed, RFC 3261
    §18.2.2) or it has no CSeq (a reply could not be matched, §8.2.6.2). Otherwise the reply carries the hint's status
    and reason, every Via line and From, To (with ``to_tag`` added when it has none),
    Call-ID and CSeq as received, and ``Warning: 399 <agent> "<what was wrong>"``.
    """
    if not isinstance(exc.hint, tuple):
        return None
    status, reason = exc.hint
    req = _salvage(data)
    if req is None or req.method == "ACK":
        return None
    try:
        req.top_via  # noqa: B018 - the reply must be routable
    except ParseError:
        return None
    if not req.has("cseq"):
        return None  # copied as received even when malformed (RFC 4475 §3.1.2.4)
    headers: list[list[str]] = []
    seen: set[str] = set()
    for h in req._headers:
        key = h[0]
        if key == "via" or (key in ("from", "to", "call-id", "cseq") and key not in seen):
            seen.add(key)
            headers.append([key, pretty(key), h[2]])
    resp = Response(status, reason, headers)
    if to_tag and status > 100:
        to = resp.get("to")
        if to is not None:
            try:
                na: NameAddr | None = NameAddr.parse(to, "To")
            except ParseError:
                na = None
            if na is not None and na.tag is None:
                resp.set("to", str(na.with_params(tag=to_tag)))
    resp.add("Warning", f'399 {agent} "{_warning_text(str(exc))}"')
    return resp


__all__ = [
    "REASONS",
    "SINGLE_HEADERS",
    "SIP_VERSION",
    "Message",
    "Request",
    "Response",
    "check_request",
    "check_response",
    "error_response",
    "make_response",
    "parse",
]
