"""SDP sessions and media sections (RFC 8866): the original lines plus typed views.

A :class:`SessionDescription` keeps every line exactly as received (type, value, line
ending), so an untouched description serializes byte-for-byte as it came in. Typed
properties (``origin``, ``connection``, ``MediaSection.port``, ``candidates``...) read
those lines, and setters rewrite only the lines they own. Unknown lines and attributes
stay where they were. Everything a relay or JSEP reads is validated by :meth:`parse`, so
the accessors never fail later; a malformed description raises :class:`ParseError` with
hint ``(488, "Bad SDP: <reason>")``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

from ..errors import ParseError
from .attributes import (
    DIRECTIONS,
    Candidate,
    Connection,
    Crypto,
    Fingerprint,
    Fmtp,
    Group,
    MediaLine,
    Origin,
    Rtcp,
    RtpMap,
    Ssrc,
    _int,
    bad,
)

MAX_SDP_SIZE = 65535
_SESSION_ORDER = "vosiuepcbtrzka"
_MEDIA_ORDER = "micbka"
_TOKEN_CHARS = frozenset("!#$%&'*+-.^_`{|}~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")


@dataclass(frozen=True, slots=True)
class Line:
    """One SDP line: ``kind`` is the type letter ('' for a tolerated blank line)."""

    kind: str
    value: str
    eol: str = "\r\n"

    def text(self) -> str:
        return f"{self.kind}={self.value}{self.eol}" if self.kind else self.eol

    @property
    def attr_name(self) -> str:
        """For an ``a=`` line: the attribute name (before the first colon)."""
        return self.value.partition(":")[0]

    @property
    def attr_value(self) -> str | None:
        """For an ``a=`` line: the value after the first colon, or None for a flag."""
        _name, colon, value = self.value.partition(":")
        return value if colon else None


_ATTR_CHECKS: dict[str, Callable[[str], object]] = {
    "rtpmap": RtpMap.parse,
    "fmtp": Fmtp.parse,
    "rtcp": Rtcp.parse,
    "candidate": Candidate.parse,
    "fingerprint": Fingerprint.parse,
    "crypto": Crypto.parse,
    "ssrc": Ssrc.parse,
    "group": Group.parse,
}


def _check_attr(value: str) -> None:
    name, colon, rest = value.partition(":")
    if not name or not all(c in _TOKEN_CHARS for c in name):
        raise bad(f"attribute name {name[:40]!r} is not a token")
    check = _ATTR_CHECKS.get(name)
    if check is not None:
        if not colon:
            raise bad(f"a={name} needs a value")
        check(rest)
    elif name in ("ptime", "maxptime") and colon:
        try:
            float(rest)
        except ValueError:
            raise bad(f"a={name} is not a number") from None
    elif name == "mid" and not rest:
        raise bad("a=mid is empty")


def _check_line(kind: str, value: str) -> None:
    if kind == "v":
        if value != "0":
            raise bad(f"unsupported version v={value[:10]!r}")
    elif kind == "o":
        Origin.parse(value)
    elif kind == "c":
        Connection.parse(value)
    elif kind == "m":
        MediaLine.parse(value)
    elif kind == "t":
        parts = value.split()
        if len(parts) != 2:
            raise bad("t= needs start and stop times")
        for p in parts:
            _int(p, "t= time")
    elif kind == "b":
        bwtype, colon, bw = value.partition(":")
        if not colon or not bwtype:
            raise bad("b= needs <bwtype>:<bandwidth>")
        _int(bw, "b= bandwidth")
    elif kind == "a":
        _check_attr(value)


class _Section:
    """Lines of one section plus the attribute helpers both levels share."""

    __slots__ = ("_eol", "lines")
    _order = _MEDIA_ORDER

    def __init__(self, lines: list[Line], eol: str = "\r\n") -> None:
        self.lines = lines
        self._eol = eol

    # -- attributes ---------------------------------------------------------------
    def attributes(self) -> Iterator[tuple[str, str | None]]:
        """All ``a=`` lines as (name, value-or-None), in order."""
        for line in self.lines:
            if line.kind == "a":
                yield line.attr_name, line.attr_value

    def attr(self, name: str) -> str | None:
        """Value of the first ``a=<name>`` ('' for a flag attribute), or None if absent."""
        for line in self.lines:
            if line.kind == "a" and line.attr_name == name:
                v = line.attr_value
                return "" if v is None else v
        return None

    def attrs(self, name: str) -> list[str]:
        """Values of every ``a=<name>`` line, in order ('' for flags)."""
        return [
            v or ""
            for line in self.lines
            if line.kind == "a" and line.attr_name == name
            for v in (line.attr_value,)
        ]

    def has_attr(self, name: str) -> bool:
        return self.attr(name) is not None

    def add_attr(self, name: str, value: str | None = None) -> None:
        """Append ``a=name[:value]`` after the last attribute of this section."""
        self._insert(Line("a", name if value is None else f"{name}:{value}", self._eol))

    def remove_attrs(self, name: str, where: Callable[[str | None], bool] | None = None) -> int:
        """Remove every ``a=<name>`` line (whose value satisfies ``where``); count removed."""
        keep = []
        removed = 0
        for line in self.lines:
            if line.kind == "a" and line.attr_name == name and (where is None or where(line.attr_value)):
                removed += 1
            else:
                keep.append(line)
        self.lines[:] = keep
        return removed

    def set_attr(self, name: str, value: str | None = None) -> None:
        """Replace the first ``a=<name>`` in place (dropping the others) or append it."""
        text = name if value is None else f"{name}:{value}"
        for i, line in enumerate(self.lines):
            if line.kind == "a" and line.attr_name == name:
                self.lines[i] = Line("a", text, line.eol)
                self.lines[i + 1 :] = [
                    ln for ln in self.lines[i + 1 :] if not (ln.kind == "a" and ln.attr_name == name)
                ]
                return
        self.add_attr(name, value)

    # -- lines --------------------------------------------------------------------
    def _first(self, kind: str) -> Line | None:
        for line in self.lines:
            if line.kind == kind:
                return line
        return None

    def _insert(self, new: Line) -> None:
        rank = self._order.find(new.kind)
        pos = len(self.lines)
        for i in range(len(self.lines) - 1, -1, -1):
            kind = self.lines[i].kind
            if kind and self._order.find(kind) <= rank:
                pos = i + 1
                break
        else:
            pos = 1 if self.lines else 0
        self.lines.insert(pos, new)

    def _set_line(self, kind: str, value: str | None) -> None:
        for i, line in enumerate(self.lines):
            if line.kind == kind:
                if value is None:
                    del self.lines[i]
                else:
                    self.lines[i] = Line(kind, value, line.eol)
                return
        if value is not None:
            self._insert(Line(kind, value, self._eol))

    @property
    def connection(self) -> Connection | None:
        """This section's own ``c=`` line (media sections inherit the session's if None)."""
        line = self._first("c")
        return Connection.parse(line.value) if line else None

    @connection.setter
    def connection(self, conn: Connection | None) -> None:
        self._set_line("c", None if conn is None else str(conn))

    @property
    def direction(self) -> str | None:
        """The explicit direction attribute of this section, if any."""
        for line in self.lines:
            if line.kind == "a" and line.value in DIRECTIONS:
                return line.value
        return None

    @direction.setter
    def direction(self, value: str | None) -> None:
        for i, line in enumerate(self.lines):
            if line.kind == "a" and line.value in DIRECTIONS:
                if value is None:
                    del self.lines[i]
                else:
                    self.lines[i] = Line("a", value, line.eol)
                return
        if value is not None:
            self.add_attr(value)

    # ICE and DTLS attributes may sit at either level (RFC 8839 §5, RFC 8122).
    @property
    def ice_ufrag(self) -> str | None:
        return self.attr("ice-ufrag")

    @property
    def ice_pwd(self) -> str | None:
        return self.attr("ice-pwd")

    @property
    def ice_options(self) -> list[str]:
        return [o for v in self.attrs("ice-options") for o in v.split()]

    @property
    def fingerprints(self) -> list[Fingerprint]:
        return [Fingerprint.parse(v) for v in self.attrs("fingerprint")]

    @property
    def setup(self) -> str | None:
        return self.attr("setup")

    @property
    def crypto(self) -> list[Crypto]:
        return [Crypto.parse(v) for v in self.attrs("crypto")]

    def serialize(self) -> bytes:
        return "".join(line.text() for line in self.lines).encode("utf-8", "surrogateescape")


class MediaSection(_Section):
    """One ``m=`` section: its lines start with the ``m=`` line."""

    __slots__ = ()

    def copy(self) -> MediaSection:
        return MediaSection(list(self.lines), self._eol)

    @property
    def m(self) -> MediaLine:
        return MediaLine.parse(self.lines[0].value)

    @m.setter
    def m(self, value: MediaLine) -> None:
        self.lines[0] = Line("m", str(value), self.lines[0].eol)

    def _replace_m(self, **changes: object) -> None:
        m = self.m
        fields = {
            "media": m.media, "port": m.port, "port_count": m.port_count,
            "proto": m.proto, "formats": m.formats,
        }
        fields.update(changes)
        self.m = MediaLine(**fields)  # type: ignore[arg-type]

    @property
    def media(self) -> str:
        return self.m.media

    @property
    def port(self) -> int:
        return self.m.port

    @port.setter
    def port(self, value: int) -> None:
        self._replace_m(port=value)

    @property
    def proto(self) -> str:
        return self.m.proto

    @proto.setter
    def proto(self, value: str) -> None:
        self._replace_m(proto=value)

    @property
    def formats(self) -> tuple[str, ...]:
        return self.m.formats

    @formats.setter
    def formats(self, value: tuple[str, ...]) -> None:
        self._replace_m(formats=tuple(value))

    @property
    def rejected(self) -> bool:
        """Port 0: the stream is rejected or disabled (RFC 3264 §6)."""
        return self.port == 0

    @property
    def rtpmaps(self) -> dict[int, RtpMap]:
        out: dict[int, RtpMap] = {}
        for v in self.attrs("rtpmap"):
            r = RtpMap.parse(v)
            out.setdefault(r.payload_type, r)
        return out

    @property
    def fmtps(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for v in self.attrs("fmtp"):
            f = Fmtp.parse(v)
            out.setdefault(f.format, f.params)
        return out

    @property
    def rtcp(self) -> Rtcp | None:
        v = self.attr("rtcp")
        return Rtcp.parse(v) if v is not None else None

    @property
    def rtcp_mux(self) -> bool:
        return self.has_attr("rtcp-mux")

    @property
    def candidates(self) -> list[Candidate]:
        return [Candidate.parse(v) for v in self.attrs("candidate")]

    @property
    def end_of_candidates(self) -> bool:
        return self.has_attr("end-of-candidates")

    @property
    def mid(self) -> str | None:
        return self.attr("mid")

    @property
    def ssrcs(self) -> list[Ssrc]:
        return [Ssrc.parse(v) for v in self.attrs("ssrc")]

    @property
    def ptime(self) -> float | None:
        v = self.attr("ptime")
        return float(v) if v else None


class SessionDescription(_Section):
    """A whole SDP: session-level lines and the media sections."""

    __slots__ = ("media",)
    _order = _SESSION_ORDER

    def __init__(self, lines: list[Line], media: list[MediaSection], eol: str = "\r\n") -> None:
        super().__init__(lines, eol)
        self.media = media

    @classmethod
    def parse(cls, data: bytes) -> SessionDescription:
        """Parse and validate an SDP body; raises ParseError with a 488 hint."""
        if len(data) > MAX_SDP_SIZE:
            raise bad(f"body larger than {MAX_SDP_SIZE} bytes")
        text = data.decode("utf-8", "surrogateescape")
        pieces = text.split("\n")
        lines: list[Line] = []
        for i, piece in enumerate(pieces):
            last = i == len(pieces) - 1
            if last and piece == "":
                break
            if piece.endswith("\r") and not last:
                body, eol = piece[:-1], "\r\n"
            else:
                body, eol = piece, ("" if last else "\n")
            if body == "":
                lines.append(Line("", "", eol))
                continue
            if len(body) < 2 or body[1] != "=" or not ("a" <= body[0] <= "z"):
                raise bad(f"line {i + 1} is not <type>=<value>: {body[:40]!r}")
            value = body[2:]
            if "\r" in value or "\x00" in value:
                raise bad(f"line {i + 1} contains CR or NUL")
            _check_line(body[0], value)
            lines.append(Line(body[0], value, eol))
        if not lines or lines[0].kind != "v":
            raise bad("first line is not v=0")
        session: list[Line] = []
        media: list[MediaSection] = []
        eol = lines[0].eol or "\r\n"
        for line in lines:
            if line.kind == "m":
                media.append(MediaSection([line], eol))
            elif media:
                if line.kind in "vost":
                    raise bad(f"{line.kind}= line inside a media section")
                media[-1].lines.append(line)
            else:
                session.append(line)
        kinds = [line.kind for line in session]
        for required in "os":
            if required not in kinds:
                raise bad(f"missing {required}= line")
        return cls(session, media, eol)

    def serialize(self) -> bytes:
        lines = list(self.lines)
        for m in self.media:
            lines.extend(m.lines)
        out = [line.text() for line in lines]
        for i in range(len(lines) - 1):
            if not lines[i].eol:  # an edit appended after a line that had no final EOL
                out[i] += self._eol
        return "".join(out).encode("utf-8", "surrogateescape")

    def copy(self) -> SessionDescription:
        return SessionDescription(list(self.lines), [m.copy() for m in self.media], self._eol)

    def add_media(self, section: MediaSection) -> None:
        self.media.append(section)

    @property
    def origin(self) -> Origin:
        line = self._first("o")
        if line is None:  # pragma: no cover - parse() guarantees it
            raise ParseError("missing o= line", (488, "Bad SDP: missing o= line"))
        return Origin.parse(line.value)

    @origin.setter
    def origin(self, value: Origin) -> None:
        self._set_line("o", str(value))

    @property
    def name(self) -> str:
        line = self._first("s")
        return line.value if line else ""

    @property
    def ice_lite(self) -> bool:
        return self.has_attr("ice-lite")

    @property
    def groups(self) -> list[Group]:
        return [Group.parse(v) for v in self.attrs("group")]

    @property
    def bundle(self) -> tuple[str, ...]:
        """The mids of the first ``a=group:BUNDLE`` (RFC 9143), or ()."""
        for g in self.groups:
            if g.semantics == "BUNDLE":
                return g.mids
        return ()

    def media_connection(self, index: int) -> Connection | None:
        """The effective ``c=`` of media section ``index`` (its own, else the session's)."""
        return self.media[index].connection or self.connection

    def media_direction(self, index: int) -> str:
        """The effective direction of media section ``index`` (RFC 3264 §5.1)."""
        return self.media[index].direction or self.direction or "sendrecv"


def parse(data: bytes) -> SessionDescription:
    """Shorthand for :meth:`SessionDescription.parse`."""
    return SessionDescription.parse(data)
