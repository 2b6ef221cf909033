"""Typed values of the SDP lines a relay and JSEP care about (RFC 8866 and friends).

Each value has ``parse(text)`` (the part after ``x=`` or ``a=name:``) raising only
:class:`ParseError` with a 488 hint, and ``__str__`` giving the text back. They are views:
the session keeps the original lines, so an untouched SDP re-serializes byte-for-byte.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import ParseError

REJECT = 488


def bad(what: str) -> ParseError:
    """A ParseError the proxy turns into ``488 <reason>``."""
    return ParseError(f"malformed SDP: {what}", (REJECT, f"Bad SDP: {what}"))


def _int(text: str, what: str, lo: int = 0, hi: int = 2**63) -> int:
    if not text.isascii() or not text.isdigit():
        raise bad(f"{what} is not a number: {text[:40]!r}")
    value = int(text)
    if not lo <= value <= hi:
        raise bad(f"{what} out of range: {value}")
    return value


@dataclass(frozen=True, slots=True)
class Origin:
    """``o=<username> <sess-id> <sess-version> <nettype> <addrtype> <unicast-address>``."""

    username: str
    sess_id: str
    sess_version: int
    nettype: str
    addrtype: str
    address: str

    @classmethod
    def parse(cls, text: str) -> Origin:
        parts = text.split()
        if len(parts) != 6:
            raise bad("o= line needs 6 fields")
        return cls(parts[0], parts[1], _int(parts[2], "o= version"), *parts[3:])

    def __str__(self) -> str:
        return (
            f"{self.username} {self.sess_id} {self.sess_version} "
            f"{self.nettype} {self.addrtype} {self.address}"
        )


@dataclass(frozen=True, slots=True)
class Connection:
    """``c=<nettype> <addrtype> <connection-address>`` (RFC 8866 §5.7).

    ``address`` is the bare address; a multicast ``/ttl/count`` suffix is kept in ``suffix``.
    """

    nettype: str
    addrtype: str
    address: str
    suffix: str = ""

    @classmethod
    def parse(cls, text: str) -> Connection:
        parts = text.split()
        if len(parts) != 3:
            raise bad("c= line needs 3 fields")
        nettype, addrtype, addr = parts
        if nettype != "IN":
            raise bad(f"c= nettype {nettype!r} is not IN")
        if addrtype not in ("IP4", "IP6"):
            raise bad(f"c= addrtype {addrtype!r} is not IP4 or IP6")
        address, slash, suffix = addr.partition("/")
        if not address:
            raise bad("c= address is empty")
        return cls(nettype, addrtype, address, slash + suffix)

    @property
    def is_hold(self) -> bool:
        """RFC 2543 style hold: ``c=IN IP4 0.0.0.0``."""
        return self.address in ("0.0.0.0", "::")

    def __str__(self) -> str:
        return f"{self.nettype} {self.addrtype} {self.address}{self.suffix}"


@dataclass(frozen=True, slots=True)
class MediaLine:
    """``m=<media> <port>[/<number of ports>] <proto> <fmt> ...`` (RFC 8866 §5.14)."""

    media: str
    port: int
    port_count: int | None
    proto: str
    formats: tuple[str, ...]

    @classmethod
    def parse(cls, text: str) -> MediaLine:
        parts = text.split()
        if len(parts) < 3:
            raise bad("m= line needs media, port and proto")
        media, port_text, proto = parts[0], parts[1], parts[2]
        port_s, slash, count_s = port_text.partition("/")
        port = _int(port_s, "m= port", 0, 65535)
        count = _int(count_s, "m= port count", 1, 65535) if slash else None
        return cls(media, port, count, proto, tuple(parts[3:]))

    def __str__(self) -> str:
        port = f"{self.port}/{self.port_count}" if self.port_count is not None else str(self.port)
        return " ".join((self.media, port, self.proto, *self.formats))


@dataclass(frozen=True, slots=True)
class RtpMap:
    """``a=rtpmap:<payload type> <encoding name>/<clock rate>[/<encoding parameters>]``."""

    payload_type: int
    encoding: str
    clock_rate: int
    parameters: str | None = None

    @classmethod
    def parse(cls, text: str) -> RtpMap:
        pt_s, _, rest = text.partition(" ")
        pieces = rest.strip().split("/")
        if len(pieces) < 2 or not pieces[0]:
            raise bad(f"rtpmap {text[:40]!r} needs <name>/<rate>")
        return cls(
            _int(pt_s, "rtpmap payload type", 0, 127),
            pieces[0],
            _int(pieces[1], "rtpmap clock rate", 1, 2**32),
            "/".join(pieces[2:]) or None,
        )

    def __str__(self) -> str:
        tail = f"/{self.parameters}" if self.parameters else ""
        return f"{self.payload_type} {self.encoding}/{self.clock_rate}{tail}"


@dataclass(frozen=True, slots=True)
class Fmtp:
    """``a=fmtp:<format> <format specific parameters>``."""

    format: str
    params: str

    @classmethod
    def parse(cls, text: str) -> Fmtp:
        fmt, _, params = text.partition(" ")
        if not fmt:
            raise bad("fmtp without a format")
        return cls(fmt, params.strip())

    def __str__(self) -> str:
        return f"{self.format} {self.params}"


@dataclass(frozen=True, slots=True)
class Rtcp:
    """``a=rtcp:<port> [<nettype> <addrtype> <connection-address>]`` (RFC 3605)."""

    port: int
    connection: Connection | None = None

    @classmethod
    def parse(cls, text: str) -> Rtcp:
        parts = text.split(maxsplit=1)
        if not parts:
            raise bad("a=rtcp without a port")
        conn = Connection.parse(parts[1]) if len(parts) > 1 else None
        return cls(_int(parts[0], "a=rtcp port", 0, 65535), conn)

    def __str__(self) -> str:
        return f"{self.port} {self.connection}" if self.connection else str(self.port)


TYPE_PREFERENCE = {"host": 126, "prflx": 110, "srflx": 100, "relay": 0}
"""RFC 8445 §5.1.2.2 recommended type preferences."""


def candidate_priority(type_preference: int, local_preference: int, component: int) -> int:
    """RFC 8445 §5.1.2.1: ``2^24 * type pref + 2^8 * local pref + (256 - component id)``."""
    if not (0 <= type_preference <= 126 and 0 <= local_preference <= 65535 and 1 <= component <= 256):
        raise ValueError("candidate priority inputs out of range")
    return (type_preference << 24) + (local_preference << 8) + (256 - component)


@dataclass(frozen=True, slots=True)
class Candidate:
    """``a=candidate:`` (RFC 8839 §5.1); extension attributes kept in order."""

    foundation: str
    component: int
    transport: str
    priority: int
    address: str
    port: int
    type: str
    related_address: str | None = None
    related_port: int | None = None
    extensions: tuple[tuple[str, str], ...] = field(default=())

    @classmethod
    def parse(cls, text: str) -> Candidate:
        parts = text.split()
        if len(parts) < 8 or parts[6] != "typ":
            raise bad("candidate needs foundation, component, transport, priority, address, port, typ")
        raddr: str | None = None
        rport: int | None = None
        ext: list[tuple[str, str]] = []
        rest = parts[8:]
        if len(rest) % 2:
            raise bad("candidate extension without a value")
        for name, value in zip(rest[::2], rest[1::2], strict=True):
            if name == "raddr" and raddr is None:
                raddr = value
            elif name == "rport" and rport is None:
                rport = _int(value, "candidate rport", 0, 65535)
            else:
                ext.append((name, value))
        return cls(
            parts[0],
            _int(parts[1], "candidate component", 1, 256),
            parts[2],
            _int(parts[3], "candidate priority", 0, 2**32 - 1),
            parts[4],
            _int(parts[5], "candidate port", 0, 65535),
            parts[7],
            raddr,
            rport,
            tuple(ext),
        )

    def __str__(self) -> str:
        out = [
            self.foundation, str(self.component), self.transport, str(self.priority),
            self.address, str(self.port), "typ", self.type,
        ]
        if self.related_address is not None:
            out += ["raddr", self.related_address]
        if self.related_port is not None:
            out += ["rport", str(self.related_port)]
        for name, value in self.extensions:
            out += [name, value]
        return " ".join(out)


@dataclass(frozen=True, slots=True)
class Fingerprint:
    """``a=fingerprint:<hash-func> <fingerprint>`` (RFC 8122)."""

    hash_func: str
    value: str

    @classmethod
    def parse(cls, text: str) -> Fingerprint:
        parts = text.split()
        if len(parts) != 2:
            raise bad("fingerprint needs a hash function and a value")
        return cls(parts[0].lower(), parts[1])

    def __str__(self) -> str:
        return f"{self.hash_func} {self.value}"


@dataclass(frozen=True, slots=True)
class Crypto:
    """``a=crypto:<tag> <crypto-suite> <key-params> [<session-params>]`` (RFC 4568)."""

    tag: int
    suite: str
    key_params: str
    session_params: tuple[str, ...] = ()

    @classmethod
    def parse(cls, text: str) -> Crypto:
        parts = text.split()
        if len(parts) < 3:
            raise bad("crypto needs tag, suite and key parameters")
        return cls(_int(parts[0], "crypto tag", 0, 999999999), parts[1], parts[2], tuple(parts[3:]))

    def __str__(self) -> str:
        return " ".join((str(self.tag), self.suite, self.key_params, *self.session_params))


@dataclass(frozen=True, slots=True)
class Ssrc:
    """``a=ssrc:<ssrc-id> <attribute>[:<value>]`` (RFC 5576)."""

    ssrc: int
    attribute: str
    value: str | None = None

    @classmethod
    def parse(cls, text: str) -> Ssrc:
        ssrc_s, _, rest = text.partition(" ")
        attr, colon, value = rest.partition(":")
        if not attr:
            raise bad("ssrc needs an attribute")
        return cls(_int(ssrc_s, "ssrc id", 0, 2**32 - 1), attr, value if colon else None)

    def __str__(self) -> str:
        tail = f":{self.value}" if self.value is not None else ""
        return f"{self.ssrc} {self.attribute}{tail}"


@dataclass(frozen=True, slots=True)
class Group:
    """``a=group:<semantics> *(SP <identification-tag>)`` (RFC 5888, BUNDLE RFC 9143)."""

    semantics: str
    mids: tuple[str, ...]

    @classmethod
    def parse(cls, text: str) -> Group:
        parts = text.split()
        if not parts:
            raise bad("group without semantics")
        return cls(parts[0], tuple(parts[1:]))

    def __str__(self) -> str:
        return " ".join((self.semantics, *self.mids))


DIRECTIONS = ("sendrecv", "sendonly", "recvonly", "inactive")
