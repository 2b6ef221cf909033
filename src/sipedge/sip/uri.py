"""SIP, SIPS and TEL URIs (RFC 3261 §19.1 and §25.1, RFC 3966).

``SipUri.parse(text)`` raises only :class:`ParseError`; ``str(uri)`` serializes, and
``SipUri.parse(str(u)) == u``. The scheme and host are lowercased; the user part,
password, parameter values and headers keep their case and their %-escapes (compare
unescaped values with :func:`unescape`). Parameter names are compared case-insensitively
(stored lowercased). Other absolute URIs (http:, urn: ...) are kept verbatim as
:class:`AbsoluteUri` so a proxy can pass them on.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field, replace
from typing import TypeVar
from urllib.parse import unquote_to_bytes

from ..errors import ParseError

Params = dict[str, str | None]

# RFC 3261 §25.1 character classes.
_ALNUM = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")
_MARK = frozenset("-_.!~*'()")
_UNRESERVED = _ALNUM | _MARK
TOKEN_CHARS = _ALNUM | frozenset("-.!%*_+`'~")
# user = 1*( unreserved / escaped / user-unreserved ); '#' is tolerated (dial strings
# such as "*67#" are common in the wild even though RFC 3261 wants it escaped).
_USER_CHARS = _UNRESERVED | frozenset("%&=+$,;?/#")
_PASSWORD_CHARS = _UNRESERVED | frozenset("%&=+$,")
_PARAM_CHARS = _UNRESERVED | frozenset("%[]/:&+$")
_HEADER_CHARS = _UNRESERVED | frozenset("%[]/?:+$=&")
_HEX = frozenset("0123456789abcdefABCDEF")
_TEL_CHARS = frozenset("0123456789abcdefABCDEF*#+-.()pPwW")

_HOSTNAME = re.compile(r"(?:[A-Za-z0-9_](?:[A-Za-z0-9_\-]*[A-Za-z0-9_])?\.)*[A-Za-z0-9_](?:[A-Za-z0-9_\-]*[A-Za-z0-9_])?\.?")
_IPV4 = re.compile(r"\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}")
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+\-.]*")

_BAD_RURI = (400, "Bad Request-URI")

# The common case in one C-level match: lowercase scheme, user without escapes or
# password, hostname/IPv4/IPv6 host, simple parameters, no headers. Anything else (and
# anything this accepts but the host/port checks refuse) takes the general path.
_SIP_FAST = re.compile(
    r"(sips?):(?:([A-Za-z0-9\-_.!~*'()&=+$,;?/#]+)@)?"
    r"([A-Za-z0-9_][A-Za-z0-9_.\-]*|\[[0-9A-Fa-f:.]+\])(?::([0-9]{1,5}))?"
    r"((?:;[A-Za-z0-9\-_.!~*'()\[\]/:&+$]+(?:=[A-Za-z0-9\-_.!~*'()\[\]/:&+$]+)?)*)"
)


def _only(text: str, allowed: frozenset[str]) -> bool:
    """Every character of ``text`` is in ``allowed`` and every '%' starts an escape."""
    if not allowed.issuperset(text):
        return False
    i = text.find("%")
    while i != -1:
        if i + 2 >= len(text) or text[i + 1] not in _HEX or text[i + 2] not in _HEX:
            return False
        i = text.find("%", i + 3)
    return True


def is_digits(text: str) -> bool:
    """ASCII digits only (``str.isdigit`` also accepts '²' and other Unicode digits)."""
    return text.isascii() and text.isdigit()


def unescape(text: str) -> str:
    """Undo %-escapes (RFC 3261 §19.1.4 compares URIs unescaped); invalid UTF-8 is kept
    as surrogate escapes so nothing is lost."""
    if "%" not in text:
        return text
    return unquote_to_bytes(text).decode("utf-8", "surrogateescape")


# valid_host answers per host text (bounded: hosts come from peers; a full cache just
# stops learning). The same few hosts recur in every message of a busy proxy.
_VALID_HOSTS: dict[str, bool] = {}
_VALID_HOSTS_MAX = 4096


def valid_host(host: str) -> bool:
    """hostname / IPv4address / IPv6reference (RFC 3261 §25.1), underscores tolerated."""
    ok = _VALID_HOSTS.get(host)
    if ok is None:
        ok = _valid_host(host)
        if len(_VALID_HOSTS) < _VALID_HOSTS_MAX:
            _VALID_HOSTS[host] = ok
    return ok


def _valid_host(host: str) -> bool:
    if not host:
        return False
    if host[0] == "[":
        if host[-1] != "]" or len(host) < 4:
            return False
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            return False
        return True
    if host[-1].isdigit() and _IPV4.fullmatch(host):
        return all(int(p) <= 255 for p in host.split("."))
    return _HOSTNAME.fullmatch(host) is not None


def _parse_port(text: str, where: str, hint: tuple[int, str]) -> int:
    if not is_digits(text) or len(text) > 5 or not 0 < int(text) <= 65535:
        raise ParseError(f"bad port {text!r} in {where!r}", hint)
    return int(text)


def parse_params(text: str, sep: str = ";") -> Params:
    """``;a=b;c`` (leading separator optional) to an ordered dict with lowercased names.

    Names must be tokens; values are kept as given. For SIP URI parameters (which allow
    a wider character set) :meth:`SipUri.parse` uses its own stricter-per-grammar rules.
    """
    out: Params = {}
    if not text:
        return out
    parts = text.split(sep)
    if parts[0] == "":
        parts = parts[1:]
    for part in parts:
        name, eq, value = part.partition("=")
        name = name.strip()
        if not name or not TOKEN_CHARS.issuperset(name):
            raise ParseError(f"bad parameter name {name!r}", (400, "Bad URI parameter"))
        out[name.lower()] = value.strip() if eq else None
    return out


def _uri_params(text: str, where: str, hint: tuple[int, str]) -> Params:
    """URI parameters after the host: ``;pname[=pvalue]`` with paramchar (§25.1)."""
    out: Params = {}
    for part in text.split(";")[1:]:
        name, eq, value = part.partition("=")
        if not name or not _only(name, _PARAM_CHARS):
            raise ParseError(f"bad URI parameter {part!r} in {where!r}", hint)
        if eq:
            if not value or not _only(value, _PARAM_CHARS):
                raise ParseError(f"bad URI parameter value {part!r} in {where!r}", hint)
            out[name.lower()] = value
        else:
            out[name.lower()] = None
    return out


def format_params(params: Params, sep: str = ";") -> str:
    if not params:
        return ""
    return "".join([f"{sep}{k}" if v is None else f"{sep}{k}={v}" for k, v in params.items()])


# Parsed values by their text, shared between messages (the same user's URIs come again
# and again: From, To, Contact, Request-URI). Values are immutable by contract (build new
# ones with dataclasses.replace). Bounded: emptied when full, so peers sending ever new
# URIs cost one dictionary insertion each.
PARSED_MAX = 4096
_PARSED: dict[str, SipUri] = {}
_V = TypeVar("_V")


def remember(cache: dict[str, _V], text: str, value: _V) -> None:
    """Keep ``value`` as the parse of ``text`` in ``cache`` (at most PARSED_MAX entries)."""
    if len(cache) >= PARSED_MAX:
        cache.clear()
    cache[text] = value


@dataclass(frozen=True, slots=True)
class SipUri:
    """A ``sip:``/``sips:`` URI, or ``tel:`` (then ``host`` holds the number).

    ``headers`` is the raw text after ``?`` (``hname=hvalue&...``), escapes kept.
    """

    scheme: str
    user: str | None
    host: str
    port: int | None = None
    password: str | None = None
    params: Params = field(default_factory=dict)
    headers: str = ""

    @classmethod
    def parse(cls, text: str) -> SipUri:
        hit = _PARSED.get(text)
        if hit is not None:
            return hit
        f = _SIP_FAST.fullmatch(text)
        if f is not None:
            scheme, user, host, port_text, ptext = f.groups()
            port = int(port_text) if port_text is not None else None
            if valid_host(host) and (port is None or 0 < port <= 65535):
                params: Params = {}
                if ptext:
                    for part in ptext[1:].split(";"):
                        name, eq, value = part.partition("=")
                        params[name.lower()] = value if eq else None
                uri = cls(scheme, user, host.lower(), port, None, params, "")
                if cls is SipUri:
                    remember(_PARSED, text, uri)
                return uri
        return cls._parse_general(text)

    @classmethod
    def _parse_general(cls, text: str) -> SipUri:
        """Every form, with precise errors (``parse`` tries a fast path first)."""
        text = text.strip()
        colon = text.find(":")
        if colon <= 0:
            raise ParseError(f"URI without scheme: {text!r}", (416, "Unsupported URI Scheme"))
        lscheme = text[:colon].lower()
        rest = text[colon + 1 :]
        if lscheme == "tel":
            return cls._parse_tel(text, rest)
        if lscheme not in ("sip", "sips"):
            raise ParseError(f"unsupported URI scheme {text[:colon]!r}", (416, "Unsupported URI Scheme"))
        user = password = None
        at = rest.find("@")
        if at != -1:
            userinfo, rest = rest[:at], rest[at + 1 :]
            user, pc, pw = userinfo.partition(":")
            if not user or not _only(user, _USER_CHARS):
                raise ParseError(f"bad user part in {text!r}", _BAD_RURI)
            if pc:
                if not _only(pw, _PASSWORD_CHARS):
                    raise ParseError(f"bad password in {text!r}", _BAD_RURI)
                password = pw
        headers = ""
        q = rest.find("?")
        if q != -1:
            rest, headers = rest[:q], rest[q + 1 :]
            if not headers or not _only(headers, _HEADER_CHARS):
                raise ParseError(f"bad URI headers in {text!r}", _BAD_RURI)
        semi = rest.find(";")
        if semi == -1:
            hostport, params = rest, {}
        else:
            hostport = rest[:semi]
            params = _uri_params(rest[semi:], text, _BAD_RURI)
        port: int | None = None
        if hostport.startswith("["):
            end = hostport.find("]")
            if end == -1:
                raise ParseError(f"unterminated IPv6 reference in {text!r}", _BAD_RURI)
            host, after = hostport[: end + 1], hostport[end + 1 :]
            if after:
                if after[0] != ":":
                    raise ParseError(f"garbage after IPv6 host in {text!r}", _BAD_RURI)
                port = _parse_port(after[1:], text, _BAD_RURI)
        else:
            host, pc, port_text = hostport.partition(":")
            if pc:
                port = _parse_port(port_text, text, _BAD_RURI)
        if not valid_host(host):
            raise ParseError(f"bad host {host!r} in {text!r}", _BAD_RURI)
        return cls(lscheme, user, host.lower(), port, password, params, headers)

    @classmethod
    def _parse_tel(cls, text: str, rest: str) -> SipUri:
        semi = rest.find(";")
        number = rest if semi == -1 else rest[:semi]
        if not number or not _TEL_CHARS.issuperset(number):
            raise ParseError(f"bad tel URI {text!r}", (400, "Bad tel URI"))
        params = _uri_params(rest[semi:], text, (400, "Bad tel URI")) if semi != -1 else {}
        return cls("tel", None, number, None, None, params)

    def __str__(self) -> str:
        if self.scheme == "tel":
            return f"tel:{self.host}{format_params(self.params)}"
        userinfo = ""
        if self.user is not None:
            if self.password is not None:
                userinfo = f"{self.user}:{self.password}@"
            else:
                userinfo = f"{self.user}@"
        port = f":{self.port}" if self.port is not None else ""
        headers = f"?{self.headers}" if self.headers else ""
        return f"{self.scheme}:{userinfo}{self.host}{port}{format_params(self.params)}{headers}"

    @property
    def transport(self) -> str:
        """The ``transport`` parameter lowercased, or the scheme's default."""
        t = self.params.get("transport")
        if t:
            return t.lower()
        return "tls" if self.scheme == "sips" else "udp"

    @property
    def aor(self) -> str:
        """Address-of-record key: ``sip:user@domain`` (RFC 3261 §10.3 step 5)."""
        user = self.user or ""
        return f"sip:{user}@{self.host}" if user else f"sip:{self.host}"

    def with_params(self, **params: str | None) -> SipUri:
        new = dict(self.params)
        new.update({k.replace("_", "-"): v for k, v in params.items()})
        return replace(self, params=new)

    def without_params(self, *names: str) -> SipUri:
        return replace(self, params={k: v for k, v in self.params.items() if k not in names})


@dataclass(frozen=True, slots=True)
class AbsoluteUri:
    """Any other absolute URI (``http:``, ``urn:``...), kept verbatim."""

    text: str

    @property
    def scheme(self) -> str:
        return self.text.partition(":")[0].lower()

    def __str__(self) -> str:
        return self.text


Uri = SipUri | AbsoluteUri

_ABSOLUTE_BAD = frozenset(' \t<>"\\^`{|}') | frozenset(chr(c) for c in range(0x20)) | {"\x7f"}


def parse_uri(text: str, allow_other: bool = True) -> Uri:
    """Parse any URI: SIP/SIPS/TEL as SipUri, other schemes verbatim when allowed."""
    text = text.strip()
    colon = text.find(":")
    scheme = text[:colon].lower() if colon > 0 else ""
    if scheme in ("sip", "sips", "tel") or not allow_other:
        return SipUri.parse(text)
    if (
        not scheme
        or not _SCHEME.fullmatch(scheme)
        or len(text) == colon + 1
        or not text.isascii()
        or not _ABSOLUTE_BAD.isdisjoint(text)
    ):
        raise ParseError(f"bad URI {text!r}", (400, "Bad URI"))
    return AbsoluteUri(text)


__all__ = [
    "AbsoluteUri",
    "Params",
    "SipUri",
    "Uri",
    "format_params",
    "is_digits",
    "parse_params",
    "parse_uri",
    "remember",
    "unescape",
    "valid_host",
]
