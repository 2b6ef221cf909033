"""Typed SIP header values (RFC 3261 §20, §25): name-addr, Via, CSeq, and list splitting.

Each type has ``parse(text)`` raising only :class:`ParseError` (hint names the header) and
``__str__`` serializing, with ``X.parse(str(x)) == x``. Header names are canonicalized
through :data:`COMPACT` and :func:`canonical`.

Header parameters (``;name=value``) keep their names lowercased and their values as
received: a token, a host (``[2001:db8::1]`` or an unbracketed IPv6 ``received``), a
quoted string *with* its quotes, or (tolerated) any other run of printable characters
without whitespace, ';', ',', '"', '<', '>' or '\\'. Names must be tokens; empty
parameters (``;;``, ``;x=``) are rejected.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace

from ..errors import ParseError
from .uri import (
    TOKEN_CHARS,
    AbsoluteUri,
    Params,
    SipUri,
    Uri,
    format_params,
    is_digits,
    parse_params,
    parse_uri,
    remember,
    valid_host,
)

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

_CTL_ALL = frozenset(chr(c) for c in range(0x20)) | {"\x7f"}
# What an unquoted parameter value may never contain. RFC 3261 wants token / host; we
# also tolerate other printable characters ('/', '@', '=', '?', UTF-8 ...) that real user
# agents put there, since the value is opaque to us and kept as received.
_VALUE_BAD = _CTL_ALL | frozenset(' ;,"<>\\')
# Control characters that may not appear raw in a quoted string (HTAB may).
_CTL = frozenset(chr(c) for c in range(0x20) if c != 0x09) | {"\x7f"}

# Fast paths: the common forms in one C-level match each; anything else takes the
# general path (which gives the precise error). _PARAMS = ;token[=token/host]...
_TOKEN_RE = r"[A-Za-z0-9.!%*_+`'~\-]+"
_PARAMS_RE = (
    rf"((?:;{_TOKEN_RE}(?:=(?:[A-Za-z0-9.!%*_+`'~\-:\[\]]+"
    r'|"[^";\\\x00-\x08\x0a-\x1f\x7f]*"))?)*)'
)
_VIA_FAST = re.compile(
    rf"SIP/2\.0/([A-Za-z]+) ([A-Za-z0-9_][A-Za-z0-9_.\-]*|\[[0-9A-Fa-f:.]+\])(?::([0-9]{{1,5}}))?{_PARAMS_RE}"
)
_NAME_ADDR_FAST = re.compile(
    r'(?:"([^"\\\x00-\x08\x0a-\x1f\x7f]*)" *|'
    rf"({_TOKEN_RE}(?: {_TOKEN_RE})*) *)?"
    rf"<([^<>\s\"]+)>{_PARAMS_RE}"
)

_LIST_SPECIAL = re.compile(r'[",<>\\]')

_CANON_CACHE: dict[str, str] = {}
_CANON_CACHE_MAX = 512


def canonical(name: str) -> str:
    """The lookup key of a header name: lowercased, compact form expanded."""
    key = _CANON_CACHE.get(name)
    if key is not None:
        return key
    low = name.strip().lower()
    key = COMPACT.get(low, low)
    if len(_CANON_CACHE) < _CANON_CACHE_MAX:
        _CANON_CACHE[name] = key
    return key


_PRETTY_CACHE: dict[str, str] = {}


def pretty(key: str) -> str:
    """The conventional spelling of a canonical header key (``call-id`` -> ``Call-ID``)."""
    p = _PRETTY_CACHE.get(key)
    if p is None:
        p = _PRETTY.get(key) or "-".join(p.capitalize() for p in key.split("-"))
        if len(_PRETTY_CACHE) < _CANON_CACHE_MAX:
            _PRETTY_CACHE[key] = p
    return p


def is_token(text: str) -> bool:
    return bool(text) and TOKEN_CHARS.issuperset(text)


def _bad(what: str) -> tuple[int, str]:
    return (400, f"Bad {what} header")


def split_list(value: str, what: str = "header") -> list[str]:
    """Split a header list on commas outside quotes and angle brackets; empty elements
    are dropped."""
    if "," not in value:
        v = value.strip(" \t")
        return [v] if v else []
    if '"' not in value and "<" not in value:
        return [p for p in (x.strip(" \t") for x in value.split(",")) if p]
    out: list[str] = []
    in_angle = False
    in_quote = False
    start = 0
    skip = -1
    for mt in _LIST_SPECIAL.finditer(value):  # jump from one special character to the next
        i = mt.start()
        if i < skip:
            continue  # the character after a backslash inside quotes
        c = value[i]
        if in_quote:
            if c == "\\":
                skip = i + 2
            elif c == '"':
                in_quote = False
        elif c == '"':
            in_quote = True
        elif c == "<":
            in_angle = True
        elif c == ">":
            in_angle = False
        elif c == "," and not in_angle:
            part = value[start:i].strip(" \t")
            if part:
                out.append(part)
            start = i + 1
    if in_quote:
        raise ParseError(f"unterminated quoted string in {what}", _bad(what))
    part = value[start:].strip(" \t")
    if part:
        out.append(part)
    return out


def _read_quoted(s: str, i: int, what: str) -> tuple[str, int]:
    """The unescaped content of the quoted string starting at ``s[i] == '"'`` and the
    index just past its closing quote. Linear: each search resumes where it stopped."""
    buf: list[str] = []
    j = i + 1
    q = s.find('"', j)
    b = s.find("\\", j)
    while True:
        if q == -1:
            raise ParseError(f"unterminated quoted string in {what}", _bad(what))
        if b == -1 or b > q:
            seg = s[j:q]
            if not _CTL.isdisjoint(seg):
                raise ParseError(f"control character in quoted string in {what}", _bad(what))
            buf.append(seg)
            return "".join(buf), q + 1
        seg = s[j:b]
        if not _CTL.isdisjoint(seg):
            raise ParseError(f"control character in quoted string in {what}", _bad(what))
        buf.append(seg)
        c = s[b + 1]  # b < q, so b + 1 exists
        if c in "\r\n":
            raise ParseError(f"bad quoted-pair in {what}", _bad(what))
        buf.append(c)
        j = b + 2
        if q < j:  # the escaped character was the quote we had found
            q = s.find('"', j)
        b = s.find("\\", j)


def quote(text: str) -> str:
    """``text`` as a quoted-string: '\\' and '"' and control characters escaped as
    quoted-pairs; CR and LF (which no quoted-pair can carry) become spaces."""
    if '"' in text or "\\" in text or not _CTL.isdisjoint(text):
        out: list[str] = []
        for c in text:
            if c in "\r\n":
                out.append(" ")
            elif c == '"' or c == "\\" or c in _CTL:
                out.append("\\" + c)
            else:
                out.append(c)
        text = "".join(out)
    return f'"{text}"'


def _parse_header_params(text: str, what: str) -> Params:
    """``;name[=value]...`` (optionally preceded by whitespace) with LWS allowed around
    ';' and '='. Values: token, host or quoted string (kept with its quotes)."""
    out: Params = {}
    if not text:
        return out
    if '"' not in text:
        parts = text.split(";")
        if parts[0].strip(" \t"):
            raise ParseError(f"garbage before parameters in {what}: {parts[0][:40]!r}", _bad(what))
        for part in parts[1:]:
            name, eq, value = part.partition("=")
            name = name.strip(" \t")
            if not name or not TOKEN_CHARS.issuperset(name):
                raise ParseError(f"bad parameter {part.strip()[:40]!r} in {what}", _bad(what))
            if eq:
                value = value.strip(" \t")
                if not value or not _VALUE_BAD.isdisjoint(value):
                    raise ParseError(f"bad parameter value {part.strip()[:40]!r} in {what}", _bad(what))
                out[name.lower()] = value
            else:
                out[name.lower()] = None
        return out
    return _parse_params_quoted(text, what)


def _skip_ws(s: str, i: int) -> int:
    n = len(s)
    while i < n and s[i] in " \t":
        i += 1
    return i


def _parse_params_quoted(s: str, what: str) -> Params:
    """The slower path of :func:`_parse_header_params` for values with quoted strings:
    split on ';' outside quotes, then check each ``name[=value]``."""
    parts: list[str] = []
    start = i = 0
    semi = s.find(";")
    q = s.find('"')
    while True:
        # both searches only move forward: linear even with many quotes or ';'
        if semi != -1 and semi < i:
            semi = s.find(";", i)
        if q != -1 and q < i:
            q = s.find('"', i)
        if q != -1 and (semi == -1 or q < semi):
            i = _read_quoted(s, q, what)[1]
            continue
        if semi == -1:
            parts.append(s[start:])
            break
        parts.append(s[start:semi])
        start = i = semi + 1
    if parts[0].strip(" \t"):
        raise ParseError(f"garbage before parameters in {what}: {parts[0][:40]!r}", _bad(what))
    out: Params = {}
    for part in parts[1:]:
        name, eq, value = part.partition("=")
        name = name.strip(" \t")
        if not name or not TOKEN_CHARS.issuperset(name):
            raise ParseError(f"bad parameter {part.strip()[:40]!r} in {what}", _bad(what))
        if eq:
            value = value.strip(" \t")
            if value[:1] == '"':
                if _read_quoted(value, 0, what)[1] != len(value):
                    raise ParseError(f"garbage after quoted value in {what}", _bad(what))
            elif not value or not _VALUE_BAD.isdisjoint(value):
                raise ParseError(f"bad parameter value {part.strip()[:40]!r} in {what}", _bad(what))
            out[name.lower()] = value
        else:
            out[name.lower()] = None
    return out


def _uri_in(text: str, what: str) -> Uri:
    try:
        if text[:4] == "sip:" or text[:5] == "sips:":
            return SipUri.parse(text)
        return parse_uri(text)
    except ParseError as exc:
        hint = exc.hint if isinstance(exc.hint, tuple) and exc.hint[0] == 416 else _bad(what)
        raise ParseError(f"bad URI in {what}: {exc}", hint) from None


def _is_display_tokens(text: str) -> bool:
    """An unquoted display name: ``*(token LWS)``, tolerating non-ASCII (UTF-8) letters
    that some user agents send unquoted. '"', '<', ',' etc. still need quotes."""
    if text.isascii():
        return _is_token_list(text)
    parts = text.replace("\t", " ").split(" ")
    return any(parts) and all(
        not p or all(c in TOKEN_CHARS or ord(c) > 0x7F for c in p) for p in parts
    )


def _is_token_list(text: str) -> bool:
    parts = text.replace("\t", " ").split(" ")
    return all(not p or TOKEN_CHARS.issuperset(p) for p in parts) and any(parts)


# Tag-less name-addrs by their text (To of initial requests, Contact, Route): shared
# like parsed URIs (uri.remember), immutable by contract.
_NAME_ADDRS: dict[str, NameAddr] = {}


@dataclass(frozen=True, slots=True)
class NameAddr:
    """From, To, Contact, Route, Record-Route, Path...: ``"Name" <uri>;params``.

    ``uri`` is a :class:`SipUri` for sip/sips/tel and an :class:`AbsoluteUri` otherwise.
    ``angle`` remembers whether the URI was in angle brackets (name-addr vs addr-spec).
    ``display`` is unescaped (quotes and quoted-pairs removed).
    """

    uri: Uri
    display: str | None = None
    params: Params = field(default_factory=dict)
    angle: bool = True

    @classmethod
    def parse(cls, text: str, what: str = "name-addr") -> NameAddr:
        hit = _NAME_ADDRS.get(text)
        if hit is not None:
            return hit
        f = _NAME_ADDR_FAST.fullmatch(text)
        if f is not None:
            quoted, tokens, uri_text, ptext = f.groups()
            params: Params = {}
            if ptext:
                for part in ptext[1:].split(";"):
                    name, eq, value = part.partition("=")
                    params[name.lower()] = value if eq else None
            na = cls(_uri_in(uri_text, what), quoted if quoted is not None else tokens, params, True)
            if "tag" not in params and cls is NameAddr:  # a tag is new in every dialog
                remember(_NAME_ADDRS, text, na)
            return na
        return cls._parse_general(text, what)

    @classmethod
    def _parse_general(cls, text: str, what: str) -> NameAddr:
        """Every form, with precise errors (``parse`` tries a fast path first)."""
        s = text.strip(" \t")
        if not s:
            raise ParseError(f"empty {what}", _bad(what))
        display: str | None = None
        if s[0] == '"':
            display, end = _read_quoted(s, 0, what)
            lt = _skip_ws(s, end)
            if lt >= len(s) or s[lt] != "<":
                raise ParseError(f"display name without <uri> in {what}", _bad(what))
        else:
            lt = s.find("<")
            if lt != -1:
                semi = s.find(";", 0, lt)
                dq = s.find('"', 0, lt)
                if semi != -1 or dq != -1:
                    lt = -1  # '<' inside a parameter: this is an addr-spec
            if lt == -1:
                return cls._addr_spec(s, what)
            tokens = s[:lt].strip(" \t")
            if tokens:
                if not _is_display_tokens(tokens):
                    raise ParseError(f"bad display name {tokens[:40]!r} in {what}", _bad(what))
                display = tokens
        gt = s.find(">", lt + 1)
        if gt == -1:
            raise ParseError(f"missing '>' in {what}", _bad(what))
        uri_text = s[lt + 1 : gt]
        if not uri_text or uri_text[0] in " \t" or uri_text[-1] in " \t":
            raise ParseError(f"whitespace or nothing inside <> in {what}", _bad(what))
        uri = _uri_in(uri_text, what)
        return cls(uri, display, _parse_header_params(s[gt + 1 :], what), True)

    @classmethod
    def _addr_spec(cls, s: str, what: str) -> NameAddr:
        # addr-spec: everything after the first ';' is header params (RFC 3261 §20.10)
        semi = s.find(";")
        uri_text = (s if semi == -1 else s[:semi]).rstrip(" \t")
        for c in ' \t"<>,?':
            if c in uri_text:
                raise ParseError(f"bad addr-spec {uri_text[:60]!r} in {what} (needs <>?)", _bad(what))
        uri = _uri_in(uri_text, what)
        params = _parse_header_params(s[semi:], what) if semi != -1 else {}
        return cls(uri, None, params, False)

    def __str__(self) -> str:
        ps = format_params(self.params)
        if not self.angle and self.display is None:
            if isinstance(self.uri, SipUri):
                if not (self.uri.params or self.uri.headers or "," in (self.uri.user or "")
                        or ";" in (self.uri.user or "") or "?" in (self.uri.user or "")
                        or (self.uri.password and "," in self.uri.password)):
                    return f"{self.uri}{ps}"
            elif not any(c in self.uri.text for c in ",;?"):
                return f"{self.uri}{ps}"
            return f"<{self.uri}>{ps}"
        if self.display is None:
            return f"<{self.uri}>{ps}"
        if self.display and _is_token_list(self.display) and self.display == self.display.strip(" \t"):
            return f"{self.display} <{self.uri}>{ps}"
        return f"{quote(self.display)} <{self.uri}>{ps}"

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
    return _is_token_list(text)


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
        f = _VIA_FAST.fullmatch(text)
        if f is not None:
            transport, host, port_text, ptext = f.groups()
            port = int(port_text) if port_text is not None else None
            if valid_host(host) and (port is None or 0 < port <= 65535):
                params: Params = {}
                if ptext:
                    for part in ptext[1:].split(";"):
                        name, eq, value = part.partition("=")
                        params[name.lower()] = value if eq else None
                return cls(transport.upper(), host, port, params, "SIP/2.0")
        return cls._parse_general(text)

    @classmethod
    def _parse_general(cls, text: str) -> Via:
        """Every form, with precise errors (``parse`` tries a fast path first)."""
        s = text.strip(" \t")
        semi = s.find(";")
        head = s if semi == -1 else s[:semi]
        parts = head.split("/", 2)
        if len(parts) != 3:
            raise ParseError(f"bad Via sent-protocol in {text[:80]!r}", _bad("Via"))
        name = parts[0].strip(" \t")
        version = parts[1].strip(" \t")
        rest = parts[2].strip(" \t").replace("\t", " ")
        transport, _, sentby = rest.partition(" ")
        sentby = sentby.strip(" ")
        if (
            not sentby
            or not name
            or not version
            or not transport
            or not TOKEN_CHARS.issuperset(name)
            or not TOKEN_CHARS.issuperset(version)
            or not TOKEN_CHARS.issuperset(transport)
        ):
            raise ParseError(f"bad Via {text[:80]!r}", _bad("Via"))
        port_text: str | None = None
        if sentby[0] == "[":
            end = sentby.find("]")
            if end == -1:
                raise ParseError(f"bad Via host in {text[:80]!r}", _bad("Via"))
            host, after = sentby[: end + 1], sentby[end + 1 :].lstrip(" ")
            if after:
                if after[0] != ":":
                    raise ParseError(f"bad Via sent-by in {text[:80]!r}", _bad("Via"))
                port_text = after[1:].strip(" ")
        else:
            host, pc, pt = sentby.partition(":")
            host = host.rstrip(" ")
            if pc:
                port_text = pt.strip(" ")
        if not valid_host(host):
            raise ParseError(f"bad Via host {host[:60]!r}", _bad("Via"))
        port = None
        if port_text is not None:
            if not is_digits(port_text) or len(port_text) > 5 or not 0 < int(port_text) <= 65535:
                raise ParseError(f"bad Via port in {text[:80]!r}", _bad("Via"))
            port = int(port_text)
        params = _parse_header_params(s[semi:], "Via") if semi != -1 else {}
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
        parts = [p for p in text.replace("\t", " ").split(" ") if p]
        if len(parts) != 2 or not is_digits(parts[0]) or not is_token(parts[1]):
            raise ParseError(f"bad CSeq {text[:60]!r}", _bad("CSeq"))
        if len(parts[0]) > 10 or int(parts[0]) >= 2**31:
            raise ParseError(f"CSeq number too large {text[:60]!r}", _bad("CSeq"))
        return cls(int(parts[0]), parts[1])

    def __str__(self) -> str:
        return f"{self.number} {self.method}"


def parse_contact_list(value: str) -> list[NameAddr] | str:
    """Contact values: a list of name-addrs, or the string ``"*"``."""
    if value.strip(" \t") == "*":
        return "*"
    return [NameAddr.parse(v, "Contact") for v in split_list(value, "Contact")]


__all__ = [
    "COMPACT",
    "LIST_HEADERS",
    "AbsoluteUri",
    "CSeq",
    "NameAddr",
    "SipUri",
    "Via",
    "canonical",
    "is_token",
    "parse_contact_list",
    "parse_params",
    "pretty",
    "quote",
    "split_list",
]
