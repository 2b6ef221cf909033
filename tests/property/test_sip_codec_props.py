"""SIP codec property tests (hypothesis, bounded: 200 examples per test, no deadline).

1. Round trips over strategies that build valid values: ``SipUri``, ``NameAddr``, ``Via``,
   ``CSeq`` (``parse(str(x)) == x``) and whole requests/responses
   (``parse(serialize(m))`` has the same start line, headers, body and typed values).
2. Garbled input (RFC 4475 vectors with flipped bytes, truncations, inserted CR/LF/NUL/
   quotes/angles..., and plain random bytes) never raises anything but ParseError from
   ``parse``, ``check_request``/``check_response`` or any typed accessor; whatever parses
   re-serializes to an equivalent message.
3. Any chunking of a byte stream yields the same StreamFramer frames (and the same error).
"""

from __future__ import annotations

import ipaddress
import itertools
from collections.abc import Callable
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sipedge.errors import ParseError
from sipedge.sip import message as m
from sipedge.sip.framing import StreamFramer
from sipedge.sip.headers import CSeq, NameAddr, Via, canonical, quote, split_list
from sipedge.sip.uri import AbsoluteUri, SipUri, parse_uri

BOUNDED = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# --- strategies ----------------------------------------------------------------------

VECTORS = Path(__file__).resolve().parents[1] / "vectors" / "sip" / "rfc4475"

ALNUM = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
TOKEN = ALNUM + "-.!%*_+`'~"
LOWER_TOKEN = "abcdefghijklmnopqrstuvwxyz0123456789-.!%*_+`'~"
UNRESERVED = ALNUM + "-_.!~*'()"

token = st.text(alphabet=TOKEN, min_size=1, max_size=10)
lower_token = st.text(alphabet=LOWER_TOKEN, min_size=1, max_size=10)
escape = st.integers(0, 255).map(lambda b: f"%{b:02X}")


def escaped_text(chars: str, min_size: int = 1, max_size: int = 10) -> st.SearchStrategy[str]:
    """Strings over ``chars`` (no '%') with a valid %-escape sometimes mixed in."""
    plain = st.text(alphabet=chars, min_size=min_size, max_size=max_size)
    return st.one_of(
        plain,
        st.tuples(plain, escape, st.text(alphabet=chars, max_size=3)).map("".join),
    )


label = st.one_of(
    st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789", min_size=1, max_size=8),
    st.tuples(
        st.text(alphabet="abcdefghijklmnopqrstuvwxyz", min_size=1, max_size=4),
        st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-", max_size=4),
        st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789", min_size=1, max_size=3),
    ).map("".join),
)
hostname = st.lists(label, min_size=1, max_size=3).map(".".join)
ipv4 = st.tuples(*[st.integers(0, 255)] * 4).map(lambda t: ".".join(map(str, t)))
ipv6 = st.integers(0, 2**128 - 1).map(lambda n: f"[{ipaddress.IPv6Address(n).compressed}]")
host = st.one_of(hostname, hostname, ipv4, ipv6)
port = st.none() | st.integers(1, 65535)

user = escaped_text(UNRESERVED + "&=+$,;?/")
password = escaped_text(UNRESERVED + "&=+$,", min_size=0)
# URI parameter names are stored lowercased (escapes too): build them lowercase.
uri_pname = escaped_text(UNRESERVED.lower() + "[]/:&+$").map(str.lower)
uri_pvalue = escaped_text(UNRESERVED + "[]/:&+$")
uri_params = st.dictionaries(uri_pname, st.none() | uri_pvalue, max_size=3)
hvalue = escaped_text(UNRESERVED + "[]/?:+$", min_size=0)
uri_headers = st.one_of(
    st.just(""),
    st.lists(st.tuples(escaped_text(UNRESERVED + "[]/?:+$"), hvalue), min_size=1, max_size=2).map(
        lambda hs: "&".join(f"{n}={v}" for n, v in hs)
    ),
)


@st.composite
def sip_uris(draw: st.DrawFn, headers: bool = True) -> SipUri:
    scheme = draw(st.sampled_from(["sip", "sips", "tel"]))
    if scheme == "tel":
        number = draw(st.text(alphabet="0123456789*#+-.()pw", min_size=1, max_size=12))
        return SipUri("tel", None, number, None, None, draw(uri_params))
    u = draw(st.none() | user)
    pw = draw(st.none() | password) if u is not None else None
    return SipUri(
        scheme, u, draw(host), draw(port), pw, draw(uri_params), draw(uri_headers) if headers else ""
    )


absolute_uris = st.builds(
    lambda s, rest: AbsoluteUri(f"{s}:{rest}"),
    st.sampled_from(["urn", "http", "https", "mailto", "im", "x-y.z+w"]),
    st.text(alphabet=ALNUM + "-._~:/?#[]@!$&'()*+,;=%", min_size=1, max_size=20),
)

# generic-param values: token, host, or a quoted string (kept with its quotes)
quoted_text = st.text(
    alphabet=st.characters(blacklist_characters="\r\n", blacklist_categories=["Cs"]), max_size=12
)
gen_value = st.one_of(st.none(), token, ipv4, ipv6, quoted_text.map(quote))
header_params = st.dictionaries(lower_token, gen_value, max_size=4)

display = st.one_of(
    st.none(),
    st.lists(token, min_size=1, max_size=3).map(" ".join),
    quoted_text,
)


def _addr_spec_ok(uri: SipUri | AbsoluteUri) -> bool:
    return "<" not in str(uri) and not any(c in str(uri) for c in ",;?")


@st.composite
def name_addrs(draw: st.DrawFn) -> NameAddr:
    uri: SipUri | AbsoluteUri = draw(st.one_of(sip_uris(), sip_uris(), absolute_uris))
    d = draw(display)
    angle = True
    if d is None and _addr_spec_ok(uri):
        angle = draw(st.booleans())
    return NameAddr(uri, d, draw(header_params), angle)


vias = st.builds(
    Via,
    transport=st.sampled_from(["UDP", "TCP", "TLS", "SCTP", "WS", "WSS"]) | token.map(str.upper),
    host=host,
    port=port,
    params=st.dictionaries(lower_token, gen_value, max_size=4),
    protocol=st.sampled_from(["SIP/2.0"]) | st.tuples(token, token).map(lambda t: f"{t[0]}/{t[1]}".upper()),
)

cseqs = st.builds(CSeq, st.integers(0, 2**31 - 1), token)

# Free-form header values: no CR/LF, no surrounding whitespace (both are not
# representable on the wire).
header_value = st.text(
    alphabet=st.characters(blacklist_characters="\r\n", blacklist_categories=["Cs"]), max_size=30
).map(lambda s: s.strip(" \t"))
TYPED_KEYS = {"via", "from", "to", "call-id", "cseq", "contact", "content-length",
              "max-forwards", "expires"}
extra_header_name = token.filter(lambda n: canonical(n) not in TYPED_KEYS)


@st.composite
def header_lists(draw: st.DrawFn) -> list[tuple[str, str]]:
    """Typed headers (Via, From, To, Call-ID, CSeq, Contact) plus free-form extras."""
    hs: list[tuple[str, str]] = [
        ("Via", ", ".join(str(v) for v in draw(st.lists(vias, min_size=1, max_size=3)))),
        (draw(st.sampled_from(["From", "f", "FROM"])), str(draw(name_addrs()))),
        (draw(st.sampled_from(["To", "t"])), str(draw(name_addrs()))),
        (draw(st.sampled_from(["Call-ID", "i"])), draw(st.text(alphabet=TOKEN + "@<>:\"/[]?{}()", min_size=1, max_size=20))),
        ("CSeq", str(draw(cseqs))),
    ]
    if draw(st.booleans()):
        hs.append(("Contact", ", ".join(str(n) for n in draw(st.lists(name_addrs(), min_size=1, max_size=2)))))
    hs.extend(draw(st.lists(st.tuples(extra_header_name, header_value), max_size=4)))
    return draw(st.permutations(hs))


def _build_headers(hs: list[tuple[str, str]]) -> list[list[str]]:
    return [[canonical(n), n, v] for n, v in hs]


bodies = st.binary(max_size=64)
reason = st.text(
    alphabet=st.characters(blacklist_characters="\r\n", blacklist_categories=["Cs"]), max_size=20
)

requests = st.builds(
    lambda method, uri, hs, body: m.Request(method, str(uri), _build_headers(hs), body),
    token,
    sip_uris(headers=False),
    header_lists(),
    bodies,
)
responses = st.builds(
    lambda status, why, hs, body: m.Response(status, why, _build_headers(hs), body),
    st.integers(100, 699),
    reason,
    header_lists(),
    bodies,
)


def fields(msg: m.Request | m.Response) -> tuple[object, ...]:
    """Everything that must survive a round trip (Content-Length is recomputed)."""
    start = (msg.method, msg.uri) if isinstance(msg, m.Request) else (msg.status, msg.reason)
    headers = [(k, v) for k, _, v in msg._headers if k != "content-length"]
    return (*start, msg.version, headers, msg.body)


def vector_bytes() -> list[bytes]:
    return [p.read_bytes() for p in sorted(VECTORS.glob("*.dat"))]


VECTOR_DATA = vector_bytes()

# --- 1. round trips ------------------------------------------------------------------


@BOUNDED
@given(sip_uris())
def test_sip_uri_round_trip(u: SipUri) -> None:
    assert SipUri.parse(str(u)) == u
    assert parse_uri(str(u)) == u


@BOUNDED
@given(name_addrs())
def test_name_addr_round_trip(na: NameAddr) -> None:
    assert NameAddr.parse(str(na), "To") == na


@BOUNDED
@given(vias)
def test_via_round_trip(v: Via) -> None:
    assert Via.parse(str(v)) == v


@BOUNDED
@given(cseqs)
def test_cseq_round_trip(c: CSeq) -> None:
    assert CSeq.parse(str(c)) == c


@BOUNDED
@given(st.lists(name_addrs(), min_size=1, max_size=4))
def test_list_split_round_trip(nas: list[NameAddr]) -> None:
    assert [NameAddr.parse(x) for x in split_list(", ".join(str(n) for n in nas))] == nas


def _typed(msg: m.Message) -> tuple[object, ...]:
    return (msg.vias, msg.from_, msg.to, msg.call_id, msg.cseq, msg.contacts)


@BOUNDED
@given(st.one_of(requests, responses))
def test_message_round_trip(msg: m.Request | m.Response) -> None:
    again = m.parse(msg.serialize())
    assert type(again) is type(msg)
    assert fields(again) == fields(msg)
    assert _typed(again) == _typed(msg)
    if isinstance(msg, m.Request):
        assert isinstance(again, m.Request) and again.ruri == msg.ruri
    assert again.serialize() == msg.serialize()
    framed = StreamFramer().feed(msg.serialize())
    assert len(framed) == 1
    assert fields(m.parse(framed[0].data, stream=True)) == fields(msg)


# --- 2. garbled input ----------------------------------------------------------------

INSERTS = [b"\r", b"\n", b"\r\n", b"\r\n\r\n", b"\x00", b'"', b"<", b">", b" ", b"\t", b";",
           b",", b":", b"%", b"\\", b"@", b"=", b"\xff", b"\xc3", b"SIP/2.0 ", b"\r\n ",
           b"Content-Length: 99999999999999999999\r\n", b"\xd9\xa3"]


@st.composite
def garbled(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(VECTOR_DATA)))
    for _ in range(draw(st.integers(1, 6))):
        if not data:
            break
        op = draw(st.sampled_from(["flip", "truncate", "insert", "delete", "dup"]))
        i = draw(st.integers(0, len(data) - 1))
        if op == "flip":
            data[i] = draw(st.integers(0, 255))
        elif op == "truncate":
            del data[i:]
        elif op == "insert":
            data[i:i] = draw(st.sampled_from(INSERTS))
        elif op == "delete":
            del data[i : i + draw(st.integers(1, 20))]
        else:
            j = draw(st.integers(i, min(len(data), i + 40)))
            data[i:i] = data[i:j]
    return bytes(data)


def _exercise(msg: m.Request | m.Response) -> None:
    """Every checker and typed accessor: each returns or raises ParseError."""
    checks: list[Callable[[], object]] = [
        lambda: m.check_request(msg) if isinstance(msg, m.Request) else m.check_response(msg),
        lambda: msg.vias, lambda: msg.top_via, lambda: msg.call_id, lambda: msg.cseq,
        lambda: msg.from_, lambda: msg.to, lambda: msg.contacts, lambda: msg.max_forwards,
        lambda: msg.expires, lambda: msg.content_length, lambda: msg.content_type,
        lambda: msg.name_addrs("route"), lambda: msg.name_addrs("record-route"),
        lambda: msg.from_.sip_uri, lambda: msg.to.sip_uri, lambda: msg.top_via.branch,
        lambda: [msg.get_all(n) for n, _ in list(msg.header_items())],
        lambda: [msg.get(n) for n, _ in list(msg.header_items())],
        lambda: msg.pop_first("route"),
        lambda: msg.replace_first("via", "SIP/2.0/UDP x.example.com;branch=z9hG4bKx"),
    ]
    if isinstance(msg, m.Request):
        checks.append(lambda: msg.ruri)
        checks.append(lambda: m.make_response(msg, 400, to_tag="t").serialize())
    for check in checks:
        try:
            check()
        except ParseError:
            pass


def _answer(data: bytes, exc: ParseError) -> None:
    """error_response never raises, and what it builds is a parseable response."""
    resp = m.error_response(data, exc, to_tag="t")
    if resp is not None:
        assert isinstance(exc.hint, tuple) and resp.status == exc.hint[0]
        assert isinstance(m.parse(resp.serialize()), m.Response)


def _parse_everything(data: bytes) -> None:
    for stream in (False, True):
        try:
            msg = m.parse(data, stream=stream)
        except ParseError as exc:
            assert exc.hint is None or isinstance(exc.hint, tuple)
            _answer(data, exc)
            continue
        wire = msg.serialize()
        again = m.parse(wire)
        assert fields(again) == fields(msg)
        if isinstance(msg, m.Request):
            try:
                m.check_request(msg)
            except ParseError as exc:
                _answer(data, exc)
        _exercise(msg)


@BOUNDED
@given(garbled())
def test_garbled_vectors_raise_only_parse_error(data: bytes) -> None:
    _parse_everything(data)


@BOUNDED
@given(st.binary(max_size=300))
def test_random_bytes_raise_only_parse_error(data: bytes) -> None:
    _parse_everything(data)
    _parse_everything(b"INVITE sip:a@b SIP/2.0\r\n" + data)
    _parse_everything(b"SIP/2.0 200 OK\r\nVia: " + data)


@BOUNDED
@given(st.text(max_size=60))
def test_random_text_in_typed_parsers(text: str) -> None:
    for parse in (
        lambda: SipUri.parse(text), lambda: parse_uri(text), lambda: NameAddr.parse(text),
        lambda: Via.parse(text), lambda: CSeq.parse(text), lambda: split_list(text),
        lambda: canonical(text),
    ):
        try:
            parse()
        except ParseError:
            pass


# --- 3. stream chunking --------------------------------------------------------------


def _feed_all(stream: bytes, cuts: list[int]) -> tuple[list[tuple[bytes, bool, bool]], object]:
    f = StreamFramer(max_size=4096)
    frames: list[tuple[bytes, bool, bool]] = []
    bounds = [0, *sorted(c % (len(stream) + 1) for c in cuts), len(stream)]
    try:
        for a, b in itertools.pairwise(bounds):
            frames.extend((fr.data, fr.ping, fr.pong) for fr in f.feed(stream[a:b]))
        frames.extend((fr.data, fr.ping, fr.pong) for fr in f.feed(b""))
    except ParseError as exc:
        return frames, exc.hint
    return frames, None


def _frames_alone(data: bytes) -> bool:
    try:
        frames = StreamFramer().feed(data)
    except ParseError:
        return False
    return len(frames) == 1 and frames[0].data == data


stream_piece = st.one_of(
    st.sampled_from([v for v in VECTOR_DATA if _frames_alone(v)]),
    st.sampled_from([b"\r\n\r\n", b"\r\n"]),
)


@BOUNDED
@given(st.lists(stream_piece, min_size=1, max_size=5), st.lists(st.integers(0, 10**6), max_size=12))
def test_any_chunking_yields_the_same_frames(pieces: list[bytes], cuts: list[int]) -> None:
    stream = b"".join(pieces)
    whole = _feed_all(stream, [])
    assert _feed_all(stream, cuts) == whole
    assert _feed_all(stream, list(range(len(stream)))) == whole


@BOUNDED
@given(st.lists(st.one_of(stream_piece, garbled()), min_size=1, max_size=4),
       st.lists(st.integers(0, 10**6), max_size=12))
def test_garbled_streams_chunk_alike(pieces: list[bytes], cuts: list[int]) -> None:
    stream = b"".join(pieces)
    whole = _feed_all(stream, [])
    chunked = _feed_all(stream, cuts)
    assert chunked == whole
    for data, _, _ in whole[0]:
        if data:
            _parse_everything(data)


# --- 4. the regex fast paths agree with the general parsers ----------------------------


def _outcome(fn: Callable[[], object]) -> tuple[str, object]:
    try:
        return ("ok", fn())
    except ParseError as exc:
        return ("error", exc.hint)


@st.composite
def near_valid(draw: st.DrawFn, base: st.SearchStrategy[str]) -> str:
    text = draw(base)
    if text and draw(st.booleans()):
        i = draw(st.integers(0, len(text) - 1))
        ins = draw(st.sampled_from([" ", "%", "@", ":", ";", "=", '"', "<", ">", "\x00", "_", "[", "A", ""]))
        text = text[:i] + ins + text[i + draw(st.integers(0, 2)) :]
    return text


@BOUNDED
@given(near_valid(st.one_of(sip_uris().map(str), st.text(max_size=30))))
def test_sip_uri_fast_path_agrees(text: str) -> None:
    assert _outcome(lambda: SipUri.parse(text)) == _outcome(lambda: SipUri._parse_general(text))


@BOUNDED
@given(near_valid(st.one_of(vias.map(str), st.text(max_size=30))))
def test_via_fast_path_agrees(text: str) -> None:
    assert _outcome(lambda: Via.parse(text)) == _outcome(lambda: Via._parse_general(text))


@BOUNDED
@given(near_valid(st.one_of(name_addrs().map(str), st.text(max_size=30))))
def test_name_addr_fast_path_agrees(text: str) -> None:
    assert _outcome(lambda: NameAddr.parse(text, "To")) == _outcome(
        lambda: NameAddr._parse_general(text, "To")
    )


def _split_reference(value: str) -> list[str] | None:
    """Character-by-character reference for split_list (None: unterminated quote). A value
    without a comma is one element as is (its own parser judges its quotes)."""
    if "," not in value:
        return [value.strip(" \t")] if value.strip(" \t") else []
    out: list[str] = []
    in_angle = in_quote = False
    start = i = 0
    while i < len(value):
        c = value[i]
        if in_quote:
            if c == "\\":
                i += 1
            elif c == '"':
                in_quote = False
        elif c == '"':
            in_quote = True
        elif c == "<":
            in_angle = True
        elif c == ">":
            in_angle = False
        elif c == "," and not in_angle:
            out.append(value[start:i].strip(" \t"))
            start = i + 1
        i += 1
    if in_quote:
        return None
    out.append(value[start:].strip(" \t"))
    return [p for p in out if p]


@BOUNDED
@given(st.text(alphabet=' ,<>"\\ab;\t', max_size=40))
def test_split_list_matches_the_reference(value: str) -> None:
    expected = _split_reference(value)
    try:
        got: list[str] | None = split_list(value)
    except ParseError:
        got = None
    assert got == expected
