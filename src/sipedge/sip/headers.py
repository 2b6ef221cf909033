"""Typed SIP header values (RFC 3261 §20, §25): name-addr, Via, CSeq, and list splitting.

Each type has ``parse(text)`` raising only :class:`ParseError` (hint names the header) and
``__str__`` serializing. Header names are canonicalized through :data:`COMPACT` and
:func:`canonical`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace

from ..errors import ParseError
from .uri import AbsoluteUri, Params, SipUri, Uri, format_params, parse_params, parse_uri

COMPACT = {
    "i": "call-id",
    "m": "contact",
    "e": "content-encoding",
    "l": "content-length",
    "c": "content-type",
    "f": "from",
    "s": "subject",
    "k": "supported",
    "t": "to",
    "v": "via",
    "o": "event",
    "u": "allow-events",
    "r": "refer-to",
    "b": "referred-by",
    "x": "session-expires",
    "y": "identity",
    "a": "accept-contact",
    "j": "reject-contact",
    "d": "request-disposition",
}

# Headers whose value is a comma-separated list (RFC 3261 §7.3.1); others are never split.
LIST_HEADERS = frozenset(
    {
        "via", "contact", "route", "record-route", "path", "service-route", "allow",
        "supported", "require", "proxy-require", "unsupported", "accept", "accept-encoding",
        "accept-language", "allow-events", "content-encoding", "in-reply-to", "warning",
        "call-info", "alert-info", "error-info", "reply-to", "security-client",
        "security-server", "security-verify", "p-asserted-identity",
    }
)

_PRETTY = {
    "call-id": "Call-ID",
    "cseq": "CSeq",
    "www-authenticate": "WWW-Authenticate",
    "mime-version": "MIME-Version",
    "rack": "RAck",
    "rseq": "RSeq",
}

_TOKEN_RE = re.compile(r"^[A-Za-z0-9\-.!%*_+`'~]+$")


def canonical(name: str) -> str:
    """The lookup key of a header name: lowercased, compact form expanded."""
    low = name.strip().lower()
    return COMPACT.get(low, low)


def pretty(key: str) -> str:
    """The conventional spelling of a canonical header key (``call-id`` -> ``Call-ID``)."""
    return _PRETTY.get(key) or "-".join(p.capitalize() for p in key.split("-"))


def is_token(text: str) -> bool:
    return bool(_TOKEN_RE.match(text))


def split_list(value: str) -> list[str]:
    """Split a header list on commas outside quotes and angle brackets."""
    if "," not in value:
        v = value.strip()
        return [v] if v else []
    out: list[str] = []
    depth_angle = False
    in_quote = False
    start = 0
    i = 0
    n = len(value)
    while i < n:
        c = value[i]
        if in_quote:
            if c == "\\":
                i += 1
            elif c == '"':
                in_quote = False
        elif c == '"':
            in_quote = True
        elif c == "<":
            depth_angle = True
        elif c == ">":
            depth_angle = False
        elif c == "," and not depth_angle:
            part = value[start:i].strip()
            if part:
                out.append(part)
            start = i + 1
        i += 1
    if in_quote:
        raise ParseError("unterminated quoted string", (400, "Unterminated quoted string"))
    part = value[start:].strip()
    if part:
        out.append(part)
    return out


def _split_params(text: str, what: str) -> tuple[str, str]:
    """Split ``value;params`` where params may contain quoted strings."""
    i = text.find(";")
    if i == -1:
        return text, ""
    return text[:i], text[i:]


def _parse_header_params(text: str, what: str) -> Params:
    out: Params = {}
    if not text:
        return out
    # Quoted values may contain ';' — walk them.
    parts: list[str] = []
    cur: list[str] = []
    in_quote = False
    i = 0
    while i < len(text):
        c = text[i]
        if in_quote:
            cur.append(c)
            if c == "\\" and i + 1 < len(text):
                cur.append(text[i + 1])
                i += 1
            elif c == '"':
                in_quote = False
        elif c == '"':
            in_quote = True
            cur.append(c)
        elif c == ";":
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(c)
        i += 1
    if in_quote:
        raise ParseError(f"unterminated quoted string in {what}", (400, f"Bad {what} header"))
    parts.append("".join(cur))
    for part in parts:
        if not part.strip():
            continue
        name, eq, value = part.partition("=")
        name = name.strip()
        if not is_token(name):
            raise ParseError(f"bad parameter {name!r} in {what}", (400, f"Bad {what} header"))
        out[name.lower()] = value.strip() if eq else None
    return out


@dataclass(frozen=True, slots=True)
class NameAddr:
    """From, To, Contact, Route, Record-Route, Path...: ``"Name" <uri>;params``.

    ``uri`` is a :class:`SipUri` for sip/sips/tel and an :class:`AbsoluteUri` otherwise.
    ``angle`` remembers whether the URI was in angle brackets (name-addr vs addr-spec).
    """

    uri: Uri
    display: str | None = None
    params: Params = field(default_factory=dict)
    angle: bool = True

    @classmethod
    def parse(cls, text: str, what: str = "name-addr") -> NameAddr:
        s = text.strip()
        if not s:
            raise ParseError(f"empty {what}", (400, f"Bad {what} header"))
        display: str | None = None
        if s.startswith('"'):
            i = 1
            buf: list[str] = []
            while i < len(s):
                c = s[i]
                if c == "\\" and i + 1 < len(s):
                    buf.append(s[i + 1])
                    i += 2
                    continue
                if c == '"':
                    break
                buf.append(c)
                i += 1
            else:
                raise ParseError(f"unterminated display name in {what}", (400, f"Bad {what} header"))
            display = "".join(buf)
            s = s[i + 1 :].lstrip()
            if not s.startswith("<"):
                raise ParseError(f"display name without <uri> in {what}", (400, f"Bad {what} header"))
        lt = s.find("<")
        if lt != -1:
            gt = s.find(">", lt)
            if gt == -1:
                raise ParseError(f"missing '>' in {what}", (400, f"Bad {what} header"))
            if display is None:
                tokens = s[:lt].strip()
                if tokens:
                    if any(c in tokens for c in '<>"@:;'):
                        raise ParseError(f"bad display name in {what}", (400, f"Bad {what} header"))
                    display = tokens
            uri_text = s[lt + 1 : gt]
            rest = s[gt + 1 :].strip()
            if rest and not rest.startswith(";"):
                raise ParseError(f"garbage after '>' in {what}", (400, f"Bad {what} header"))
            if " " in uri_text.strip() or not uri_text.strip():
                raise ParseError(f"bad URI in {what}", (400, f"Bad {what} header"))
            uri = parse_uri(uri_text)
            return cls(uri, display, _parse_header_params(rest, what), True)
        # addr-spec: everything after the first ';' is header params (RFC 3261 §20.10)
        uri_text, ptext = _split_params(s, what)
        if any(c in uri_text for c in ' \t"'):
            raise ParseError(f"bad addr-spec in {what}", (400, f"Bad {what} header"))
        if "?" in uri_text or "," in uri_text:
            raise ParseError(f"addr-spec with '?' or ',' needs <> in {what}", (400, f"Bad {what} header"))
        return cls(parse_uri(uri_text), None, _parse_header_params(ptext, what), False)

    def __str__(self) -> str:
        ps = format_params(self.params)
        if not self.angle and self.display is None and isinstance(self.uri, SipUri | AbsoluteUri):
            u = str(self.uri)
            if isinstance(self.uri, SipUri) and (self.uri.params or self.uri.headers):
                return f"<{u}>{ps}"
            return f"{u}{ps}"
        name = ""
        if self.display is not None:
            if self.display and is_token_list(self.display):
                name = self.display + " "
            else:
                esc = self.display.replace("\\", "\\\\").replace('"', '\\"')
                name = f'"{esc}" '
        return f"{name}<{self.uri}>{ps}"

    @property
    def tag(self) -> str | None:
        return self.params.get("tag")

    @property
    def sip_uri(self) -> SipUri:
        """The URI as a SipUri; ParseError when it is some other scheme."""
        if isinstance(self.uri, SipUri):
            return self.uri
        raise ParseError(f"not a SIP URI: {self.uri}", (416, "Unsupported URI Scheme"))

    def with_params(self, **params: str | None) -> NameAddr:
        new = dict(self.params)
        new.update({k.replace("_", "-"): v for k, v in params.items()})
        return replace(self, params=new)

    def with_uri(self, uri: Uri) -> NameAddr:
        return replace(self, uri=uri)


def is_token_list(text: str) -> bool:
    return all(is_token(t) for t in text.split())


@dataclass(frozen=True, slots=True)
class Via:
    """``SIP/2.0/UDP host:port;branch=...;received=...;rport``."""

    transport: str
    host: str
    port: int | None = None
    params: Params = field(default_factory=dict)
    protocol: str = "SIP/2.0"

    @classmethod
    def parse(cls, text: str) -> Via:
        s = text.strip()
        head, ptext = _split_params(s, "Via")
        parts = head.split("/", 2)
        if len(parts) != 3:
            raise ParseError(f"bad Via {text!r}", (400, "Bad Via header"))
        name, version, rest = (p.strip() for p in parts)
        transport, _, sentby = rest.partition(" ")
        if not transport:
            # tolerate LWS between "/" and the transport ("SIP / 2.0 / UDP")
            raise ParseError(f"bad Via transport in {text!r}", (400, "Bad Via header"))
        sentby = sentby.strip()
        if not is_token(name) or not is_token(version) or not is_token(transport) or not sentby:
            raise ParseError(f"bad Via {text!r}", (400, "Bad Via header"))
        if sentby.startswith("["):
            end = sentby.find("]")
            if end == -1:
                raise ParseError(f"bad Via host in {text!r}", (400, "Bad Via header"))
            host, after = sentby[: end + 1], sentby[end + 1 :].strip()
            port_text = after[1:].strip() if after.startswith(":") else None
            if after and port_text is None:
                raise ParseError(f"bad Via sent-by in {text!r}", (400, "Bad Via header"))
        else:
            host, pc, pt = sentby.partition(":")
            host = host.strip()
            port_text = pt.strip() if pc else None
        if not host or any(c in host for c in " \t<>\"") or (
            not host.startswith("[") and not re.fullmatch(r"[A-Za-z0-9\-._]+", host)
        ):
            raise ParseError(f"bad Via host in {text!r}", (400, "Bad Via header"))
        port = None
        if port_text is not None:
            if not port_text.isdigit() or not 0 < int(port_text) <= 65535:
                raise ParseError(f"bad Via port in {text!r}", (400, "Bad Via header"))
            port = int(port_text)
        params = _parse_header_params(ptext, "Via")
        return cls(transport.upper(), host, port, params, f"{name}/{version}".upper())

    def __str__(self) -> str:
        port = f":{self.port}" if self.port is not None else ""
        return f"{self.protocol}/{self.transport} {self.host}{port}{format_params(self.params)}"

    @property
    def branch(self) -> str | None:
        return self.params.get("branch")

    @property
    def sent_by(self) -> tuple[str, int | None]:
        return self.host, self.port

    def with_params(self, **params: str | None) -> Via:
        new = dict(self.params)
        new.update(params)
        return replace(self, params=new)


@dataclass(frozen=True, slots=True)
class CSeq:
    number: int
    method: str

    @classmethod
    def parse(cls, text: str) -> CSeq:
        parts = text.split()
        if len(parts) != 2 or not parts[0].isdigit() or not is_token(parts[1]):
            raise ParseError(f"bad CSeq {text!r}", (400, "Bad CSeq header"))
        number = int(parts[0])
        if number >= 2**31:
            raise ParseError(f"CSeq number too large {text!r}", (400, "Bad CSeq header"))
        return cls(number, parts[1])

    def __str__(self) -> str:
        return f"{self.number} {self.method}"


def parse_contact_list(value: str) -> list[NameAddr] | str:
    """Contact values: a list of name-addrs, or the string ``"*"``."""
    if value.strip() == "*":
        return "*"
    return [NameAddr.parse(v, "Contact") for v in split_list(value)]


__all__ = [
    "COMPACT",
    "LIST_HEADERS",
    "CSeq",
    "NameAddr",
    "SipUri",
    "Via",
    "canonical",
    "parse_contact_list",
    "parse_params",
    "pretty",
    "split_list",
]
