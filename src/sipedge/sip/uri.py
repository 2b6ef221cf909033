"""SIP, SIPS and TEL URIs (RFC 3261 §19.1, RFC 3966).

``SipUri.parse(text)`` raises only :class:`ParseError`; ``str(uri)`` serializes. Parameter
names are compared case-insensitively (stored lowercased); values keep their case. Other
absolute URIs (http:, urn: ...) are kept as :class:`AbsoluteUri` so a proxy can pass them on.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace

from ..errors import ParseError

# RFC 3261 §25.1: token and the unreserved/escaped user part, kept permissive but safe.
_TOKEN = r"[A-Za-z0-9\-.!%*_+`'~]+"
_HOSTNAME = re.compile(r"^(?:[A-Za-z0-9](?:[A-Za-z0-9\-]*[A-Za-z0-9])?\.)*[A-Za-z0-9](?:[A-Za-z0-9\-]*[A-Za-z0-9])?\.?$")
_IPV4 = re.compile(r"^\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}$")
_IPV6 = re.compile(r"^\[[0-9A-Fa-f:.]+\]$")
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+\-.]*$")
_USER_BAD = re.compile(r"[\s<>\"@]")
_PARAM_CHARS = re.compile(r"^[A-Za-z0-9\-_.!~*'()%\[\]/:&+$]*$")

Params = dict[str, str | None]


_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")


def _unescape_ok(text: str) -> bool:
    """Every ``%`` must start a two-digit hex escape."""
    return _BAD_ESCAPE.search(text) is None


def parse_params(text: str, sep: str = ";") -> Params:
    """``;a=b;c`` (leading separator optional) to an ordered dict with lowercased names."""
    out: Params = {}
    if not text:
        return out
    for part in text.split(sep):
        if not part:
            continue
        name, eq, value = part.partition("=")
        name = name.strip()
        if not name or not re.fullmatch(_TOKEN, name):
            raise ParseError(f"bad parameter name {name!r}", (400, "Bad URI parameter"))
        out[name.lower()] = value.strip() if eq else None
    return out


def format_params(params: Params, sep: str = ";") -> str:
    return "".join(f"{sep}{k}" if v is None else f"{sep}{k}={v}" for k, v in params.items())


def _valid_host(host: str) -> bool:
    if _IPV6.match(host):
        return True
    if _IPV4.match(host):
        return all(int(p) <= 255 for p in host.split("."))
    return bool(_HOSTNAME.match(host))


@dataclass(frozen=True, slots=True)
class SipUri:
    """A ``sip:``/``sips:`` URI, or ``tel:`` (then ``host`` holds the number)."""

    scheme: str
    user: str | None
    host: str
    port: int | None = None
    password: str | None = None
    params: Params = field(default_factory=dict)
    headers: str = ""

    @classmethod
    def parse(cls, text: str) -> SipUri:
        text = text.strip()
        scheme, colon, rest = text.partition(":")
        if not colon:
            raise ParseError(f"URI without scheme: {text!r}", (416, "Unsupported URI Scheme"))
        lscheme = scheme.lower()
        if lscheme == "tel":
            number, _, ptext = rest.partition(";")
            if not number or not re.fullmatch(r"[+0-9A-Fa-f*#\-.()pPwW]+", number):
                raise ParseError(f"bad tel URI {text!r}", (400, "Bad tel URI"))
            return cls("tel", None, number, None, None, parse_params(ptext))
        if lscheme not in ("sip", "sips"):
            raise ParseError(f"unsupported URI scheme {scheme!r}", (416, "Unsupported URI Scheme"))
        headers = ""
        if "?" in rest:
            rest, _, headers = rest.partition("?")
        user = password = None
        at = rest.rfind("@")
        if at != -1:
            userinfo, rest = rest[:at], rest[at + 1 :]
            if not userinfo or _USER_BAD.search(userinfo) or not _unescape_ok(userinfo):
                raise ParseError(f"bad user part in {text!r}", (400, "Bad Request-URI"))
            user, pc, pw = userinfo.partition(":")
            password = pw if pc else None
        hostport, _, ptext = rest.partition(";")
        if hostport.startswith("["):
            end = hostport.find("]")
            if end == -1:
                raise ParseError(f"unterminated IPv6 reference in {text!r}", (400, "Bad Request-URI"))
            host, after = hostport[: end + 1], hostport[end + 1 :]
            port_text = after[1:] if after.startswith(":") else None
            if after and port_text is None:
                raise ParseError(f"garbage after IPv6 host in {text!r}", (400, "Bad Request-URI"))
        else:
            host, pc, port_text_s = hostport.partition(":")
            port_text = port_text_s if pc else None
        if not host or not _valid_host(host):
            raise ParseError(f"bad host {host!r} in {text!r}", (400, "Bad Request-URI"))
        port: int | None = None
        if port_text is not None:
            if not port_text.isdigit() or not 0 < int(port_text) <= 65535:
                raise ParseError(f"bad port {port_text!r} in {text!r}", (400, "Bad Request-URI"))
            port = int(port_text)
        params = parse_params(ptext)
        for k, v in params.items():
            if not _PARAM_CHARS.match(k) or (v is not None and not _PARAM_CHARS.match(v)):
                raise ParseError(f"bad URI parameter {k!r}", (400, "Bad Request-URI"))
        return cls(lscheme, user, host.lower(), port, password, params, headers)

    def __str__(self) -> str:
        if self.scheme == "tel":
            return f"tel:{self.host}{format_params(self.params)}"
        userinfo = ""
        if self.user is not None:
            userinfo = self.user + (f":{self.password}" if self.password is not None else "") + "@"
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


def parse_uri(text: str, allow_other: bool = True) -> Uri:
    """Parse any URI: SIP/SIPS/TEL as SipUri, other schemes verbatim when allowed."""
    scheme = text.strip().partition(":")[0].lower()
    if scheme in ("sip", "sips", "tel") or not allow_other:
        return SipUri.parse(text)
    if not _SCHEME.match(scheme) or ":" not in text or any(c in text for c in " \t<>\""):
        raise ParseError(f"bad URI {text!r}", (400, "Bad URI"))
    return AbsoluteUri(text.strip())
