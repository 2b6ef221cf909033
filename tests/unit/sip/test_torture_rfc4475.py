"""RFC 4475 SIP torture-test messages (vectors in tests/vectors/sip/rfc4475/, source in
tests/vectors/README-sip.md).

Every valid message is checked three ways (STYLE.md B6): parse + check and assert its key
fields; re-serialize and re-parse to the same fields; feed it through StreamFramer whole,
byte by byte and with trailing data. Every invalid message must raise ParseError with the
exact hint an element should answer with (``None`` = drop silently).

Where RFC 4475 leaves the choice to the element ("could be liberal ... or reject with 400")
or puts the rejection in a higher layer (registrar, UAS), the decision is written next to
the vector below.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from urllib.parse import unquote

import pytest

from sipedge.errors import ParseError
from sipedge.sip import message as m
from sipedge.sip.framing import StreamFramer
from sipedge.sip.headers import NameAddr
from sipedge.sip.uri import SipUri, unescape

VECTORS = Path(__file__).resolve().parents[2] / "vectors" / "sip" / "rfc4475"


def vec(name: str) -> bytes:
    return (VECTORS / f"{name}.dat").read_bytes()


def req(name: str) -> m.Request:
    r = m.parse(vec(name))
    assert isinstance(r, m.Request)
    m.check_request(r)
    return r


def resp(name: str) -> m.Response:
    r = m.parse(vec(name))
    assert isinstance(r, m.Response)
    m.check_response(r)
    return r


def sip(u: object) -> SipUri:
    assert isinstance(u, SipUri)
    return u


def contacts(r: m.Message) -> list[NameAddr]:
    c = r.contacts
    assert not isinstance(c, str)
    return c


# --- §3.1.1 valid messages: key fields ------------------------------------------------


def check_wsinv() -> None:  # §3.1.1.1 short tortuous INVITE
    r = req("wsinv")
    assert r.method == "INVITE"
    assert sip(r.ruri).params == {"unknownparam": None}
    assert r.to.tag == "1918181833n" and not r.to.angle
    assert r.from_.display == 'J Rosenberg \\"'  # quoted-pairs unescaped
    assert r.from_.tag == "98asjd8"
    assert r.max_forwards == 68
    assert r.call_id == "wsinv.ndaksdj@192.0.2.1"
    assert (r.cseq.number, r.cseq.method) == (9, "INVITE")
    assert [(v.transport, v.host, v.branch) for v in r.vias] == [
        ("UDP", "192.0.2.2", "390skdjuw"),
        ("TCP", "spindle.example.com", "z9hG4bK9ikj8"),
        ("UDP", "192.168.255.111", "z9hG4bK30239"),
    ]
    assert r.get("subject") == ""
    assert r.get("newfangledheader") == "newfangled value continued newfangled value"
    assert r.get("UnknownHeaderWithUnusualValue") == ";;,,;;,;"
    route = r.name_addrs("route")
    assert len(route) == 1 and sip(route[0].uri).params["lr"] is None
    (c,) = contacts(r)
    assert c.display == 'Quoted string ""'
    assert c.params == {"newparam": "newvalue", "secondparam": None, "q": "0.33"}
    assert r.content_type == "application/sdp" and len(r.body) == 150


def check_intmeth() -> None:  # §3.1.1.2 wide range of valid characters
    r = req("intmeth")
    assert r.method == "!interesting-Method0123456789_*+`.%indeed'~"
    u = sip(r.ruri)
    assert u.user == "1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*"
    assert u.password == "&it+has=1,weird!*pas$wo~d_too.(doesn't-it)"
    assert u.host == "example.com"
    assert r.to.display == "BEL:\x07 NUL:\x00 DEL:\x7f"
    assert sip(r.to.uri).user == u.user
    assert r.from_.display == "token1~` token2'+_ token3*%!.-"
    assert r.from_.params["fromparam''~+*_!.-%"] == '"работающий"'
    assert r.from_.tag == "_token~1'+`*%!-."
    assert r.call_id == "intmeth.word%ZK-!.*_+'@word`~)(><:\\/\"][?}{"
    assert r.top_via.branch == "z9hG4bK-.!%66*_+`'~"
    assert r.max_forwards == 255
    assert r.get("extensionHeader-!.%*+_`'~") == "\ufeff大停電"


def check_esc01() -> None:  # §3.1.1.3 valid use of % escaping
    r = req("esc01")
    u = sip(r.ruri)
    assert u.user == "sips%3Auser%40example.com" and unescape(u.user) == "sips:user@example.com"
    assert unescape(sip(r.to.uri).user or "") == "user"
    assert unescape(sip(r.from_.uri).user or "") == "I have spaces"
    (c,) = contacts(r)
    cu = sip(c.uri)
    assert unescape(cu.user or "") == "caller"
    assert {unescape(k): unescape(v or "") for k, v in cu.params.items()} == {"lr": "", "name": "value%41"}
    assert r.call_id == "esc01.239409asdfakjkn23onasd0-3234"
    assert r.content_type == "application/sdp"


def check_escnull() -> None:  # §3.1.1.4 escaped nulls in URIs
    r = req("escnull")
    assert unescape(sip(r.to.uri).user or "") == "null-\x00-null"
    assert unescape(sip(r.from_.uri).user or "") == "null-\x00-null"
    assert [unescape(sip(c.uri).user or "") for c in contacts(r)] == ["\x00", "\x00\x00"]
    assert r.content_length == 0


def check_esc02() -> None:  # §3.1.1.5 % that is not an escape
    r = req("esc02")
    assert r.method == "RE%47IST%45R"  # an unknown method, NOT REGISTER
    assert r.to.display == "%Z%45" and r.from_.display == "%Z%45"
    assert r.top_via.branch == "z9hG4bK209%fzsnel234"
    assert len(contacts(r)) == 2  # "C%6Fntact" is some other header
    assert r.get("C%6Fntact") == "<sip:alias2@host2.example.com>"


def check_lwsdisp() -> None:  # §3.1.1.6 no LWS between display name and <
    r = req("lwsdisp")
    assert r.from_.display == "caller"
    assert sip(r.from_.uri).user == "caller" and r.from_.tag == "323"


def check_longreq() -> None:  # §3.1.1.7 long values in header fields
    r = req("longreq")
    assert r.to.display is not None and r.to.display.startswith("I have a user name of extreme")
    to = sip(r.to.uri)
    assert to.port == 6000 and len(to.params) == 3
    assert r.from_.tag is not None and len(r.from_.tag) > 150
    assert len(r.vias) == 34
    assert r.vias[0].host == "sip33.example.com"
    assert r.vias[-1].params["received"] == "192.0.2.5"
    assert r.call_id.startswith("longreq.onereally") and r.call_id.endswith("longcallid")
    assert len(r.body) == 150


def check_dblreq() -> None:  # §3.1.1.8 extra trailing octets in a UDP datagram
    r = req("dblreq")
    assert r.method == "REGISTER"
    assert r.body == b""  # the INVITE after Content-Length: 0 is ignored on UDP
    (c,) = contacts(r)
    assert not c.angle and sip(c.uri).host == "host.example.com"


def check_semiuri() -> None:  # §3.1.1.9 semicolon in the user part
    r = req("semiuri")
    u = sip(r.ruri)
    assert u.user == "user;par=u%40example.net" and u.host == "example.com" and u.params == {}
    assert r.get_all("accept") == [
        "application/sdp", "application/pkcs7-mime", "multipart/mixed",
        "multipart/signed", "message/sip", "message/sipfrag",
    ]


def check_transports() -> None:  # §3.1.1.10 varied and unknown transports
    r = req("transports")
    assert [v.transport for v in r.vias] == ["UDP", "SCTP", "TLS", "UNKNOWN", "TCP"]
    assert r.call_id == "transports.kijh4akdnaqjkwendsasfdj"


def check_mpart01() -> None:  # §3.1.1.11 multipart MIME with a binary part
    r = req("mpart01")
    raw = vec("mpart01")
    assert r.body == raw[raw.index(b"\r\n\r\n") + 4 :]
    assert len(r.body) == 553 and b"\x00" in r.body
    assert r.content_type == "multipart/mixed"
    assert r.top_via.params == {
        "branch": "z9hG4bK-d87543-4dade06d0bdb11ee-1--d87543-", "rport": None,
    }


def check_unreason() -> None:  # §3.1.1.12 unusual reason phrase (UTF-8)
    r = resp("unreason")
    assert r.status == 200
    assert r.reason == "= 2**3 * 5**2 но сто девяносто девять - простое"
    assert len(r.body) == 154


def check_noreason() -> None:  # §3.1.1.13 empty reason phrase
    r = resp("noreason")
    assert (r.status, r.reason) == (100, "")
    assert r.to.tag == "902jndnke3"


# --- §3.2 / §3.3 / §3.4: syntactically valid, judged by a higher layer ---------------


def check_badbranch() -> None:
    # §3.2.1: the branch is only the magic cookie. Valid syntax; the transaction layer
    # must still match it (it does not end with anything unique, so treat it as opaque).
    r = req("badbranch")
    assert r.top_via.branch == "z9hG4bK"


def check_bext01() -> None:
    # §3.3.2: unknown Require / Proxy-Require: the UAS answers 420, a proxy 420 for
    # Proxy-Require. Parsing and sanity checks pass.
    r = req("bext01")
    assert r.get_all("require") == ["nothingSupportsThis", "nothingSupportsThisEither"]
    assert r.get_all("proxy-require") == ["noProxiesSupportThis", "norDoAnyProxiesSupportThis"]


def check_invut() -> None:
    # §3.3.3: unknown Content-Type: a UAS answers 415; a proxy forwards it.
    assert req("invut").content_type == "application/unknownformat"


def check_regaut01() -> None:
    # §3.3.4: unknown authorization scheme: the registrar challenges (401); syntax is fine.
    assert req("regaut01").get("authorization") == "NoOneKnowsThisScheme opaque-data=here"


def check_bcast() -> None:
    # §3.3.11: a response whose second Via is a broadcast address: routing layer concern.
    r = resp("bcast")
    assert r.vias[1].host == "255.255.255.255"


def check_zeromf() -> None:
    # §3.3.13: Max-Forwards 0 on OPTIONS: a proxy answers 483 (or the UAS answers).
    assert req("zeromf").max_forwards == 0


def check_cparam01() -> None:
    # §3.3.14: addr-spec Contact: ";unknownparam" is a Contact parameter, not a URI one.
    (c,) = contacts(req("cparam01"))
    assert not c.angle and c.params == {"unknownparam": None} and sip(c.uri).params == {}


def check_cparam02() -> None:
    # §3.3.14: inside <>, ";unknownparam" belongs to the URI.
    (c,) = contacts(req("cparam02"))
    assert c.angle and c.params == {} and sip(c.uri).params == {"unknownparam": None}


def check_regescrt() -> None:
    # §3.3.15: a Contact URI with an escaped header: valid; the registrar stores it as is.
    (c,) = contacts(req("regescrt"))
    assert sip(c.uri).headers == "Route=%3Csip:sip.example.com%3E"
    assert unquote(sip(c.uri).headers) == "Route=<sip:sip.example.com>"


def check_sdp01() -> None:
    # §3.3.16: the body type is not in Accept: a UAS answers 406/415; syntax is fine.
    r = req("sdp01")
    assert r.get("accept") == "text/nobodyKnowsThis" and r.content_type == "application/sdp"


def check_unksm2() -> None:
    # §3.3.6: REGISTER with non-SIP To/From/Contact URIs. A proxy could forward it; the
    # registrar refuses it because the AoR is not a SIP URI: To.sip_uri raises 416.
    r = req("unksm2")
    assert str(r.to.uri) == "isbn:2983792873"
    with pytest.raises(ParseError) as info:
        r.to.sip_uri  # noqa: B018
    assert info.value.hint == (416, "Unsupported URI Scheme")


def check_inv2543() -> None:
    # §3.4.1: an RFC 2543 INVITE (no branch, no Max-Forwards, no Content-Length): accepted
    # on UDP (the body is the rest of the datagram). Over TCP the framer refuses it.
    r = req("inv2543")
    assert r.top_via.branch is None and r.max_forwards is None
    assert r.content_length is None and r.body.startswith(b"v=0")


def check_baddate() -> None:
    # §3.1.2.12: "EST" instead of "GMT" in Date. RFC 4475 lets an element be liberal;
    # a proxy/registrar never needs Date, so we accept and pass it through untouched.
    r = req("baddate")
    assert r.get("date") == "Fri, 01 Jan 2010 16:00:00 EST"


VALID: dict[str, Callable[[], None]] = {
    "wsinv": check_wsinv,
    "intmeth": check_intmeth,
    "esc01": check_esc01,
    "escnull": check_escnull,
    "esc02": check_esc02,
    "lwsdisp": check_lwsdisp,
    "longreq": check_longreq,
    "dblreq": check_dblreq,
    "semiuri": check_semiuri,
    "transports": check_transports,
    "mpart01": check_mpart01,
    "unreason": check_unreason,
    "noreason": check_noreason,
    "badbranch": check_badbranch,
    "bext01": check_bext01,
    "invut": check_invut,
    "regaut01": check_regaut01,
    "bcast": check_bcast,
    "zeromf": check_zeromf,
    "cparam01": check_cparam01,
    "cparam02": check_cparam02,
    "regescrt": check_regescrt,
    "sdp01": check_sdp01,
    "unksm2": check_unksm2,
    "inv2543": check_inv2543,
    "baddate": check_baddate,
}

# name -> (stage that rejects, expected hint, words the error text must contain)
# stage: "parse" = parse() raises; "check" = check_request/check_response raises.
INVALID: dict[str, tuple[str, tuple[int, str] | None, str]] = {
    # §3.1.2.1 ";;,;,," in Via and ";;;;" in Contact: empty parameters
    "badinv01": ("check", (400, "Bad Via header"), "parameter"),
    # §3.1.2.2 Content-Length larger than the datagram: 400 on UDP (framer waits on TCP)
    "clerr": ("parse", (400, "Content-Length mismatch"), "larger than the body"),
    # §3.1.2.3 negative Content-Length
    "ncl": ("parse", (400, "Bad Content-Length header"), "-999"),
    # §3.1.2.4 CSeq >= 2**31 (also Max-Forwards 300, huge Expires): 400 for the CSeq
    "scalar02": ("check", (400, "Bad CSeq header"), "too large"),
    # §3.1.2.5 response with a huge CSeq: never answered, dropped
    "scalarlg": ("check", None, "CSeq"),
    # §3.1.2.6 unterminated quoted string in To
    "quotbal": ("check", (400, "Bad To header"), "unterminated"),
    # §3.1.2.7 <> around the Request-URI
    "ltgtruri": ("check", (400, "Bad Request-URI"), "Request-URI"),
    # §3.1.2.8 LWS inside the Request-URI: four request-line elements
    "lwsruri": ("parse", (400, "Bad Request-Line"), "start line"),
    # §3.1.2.9 several SPs between request-line elements (we are strict: 400)
    "lwsstart": ("parse", (400, "Bad Request-Line"), "start line"),
    # §3.1.2.10 SPs after the SIP version
    "trws": ("parse", (400, "Bad Request-Line"), "start line"),
    # §3.1.2.11 headers part in the Request-URI (RFC 3261 §19.1.1: not allowed there)
    "escruri": ("check", (400, "Bad Request-URI: headers not allowed"), "headers"),
    # §3.1.2.13 addr-spec with '?' not enclosed in <> in Contact
    "regbadct": ("check", (400, "Bad Contact header"), "addr-spec"),
    # §3.1.2.14 spaces inside <> around the To URI
    "badaspec": ("check", (400, "Bad To header"), "whitespace"),
    # §3.1.2.15 unquoted display name with a comma
    "baddn": ("check", (400, "Bad From header"), "display name"),
    # §3.1.2.16 SIP/7.0
    "badvers": ("parse", (505, "Version Not Supported"), "SIP/7.0"),
    # §3.1.2.17 OPTIONS with CSeq INVITE
    "mismatch01": ("check", (400, "CSeq method mismatch"), "does not match"),
    # §3.1.2.18 unknown method with CSeq INVITE (400 rather than 501)
    "mismatch02": ("check", (400, "CSeq method mismatch"), "does not match"),
    # §3.1.2.19 status code 4294967301: a response, dropped
    "bigcode": ("parse", None, "status code"),
    # §3.3.1 missing To, From and Call-ID: the first missing one is named
    "insuf": ("check", (400, "Missing From header"), "From"),
    # §3.3.5 unknown Request-URI scheme: 416 (RFC 3261 §16.3 step 2)
    "unkscm": ("check", (416, "Unsupported URI Scheme"), "scheme"),
    # §3.3.7 novel scheme with a '.' in its name: 416
    "novelsc": ("check", (416, "Unsupported URI Scheme"), "soap.beep"),
    # §3.3.8 To, From, Call-ID, CSeq, Max-Forwards each twice
    "multi01": ("check", (400, "Multiple From headers"), "From"),
    # §3.3.9 two different Content-Length values
    "mcl01": ("parse", (400, "Conflicting Content-Length headers"), "conflicting"),
}


def test_every_vector_is_classified() -> None:
    names = {p.stem for p in VECTORS.glob("*.dat")}
    assert names == set(VALID) | set(INVALID)
    assert not set(VALID) & set(INVALID)


@pytest.mark.parametrize("name", sorted(VALID))
def test_valid_fields(name: str) -> None:
    VALID[name]()


def _fields(msg: m.Request | m.Response) -> tuple[object, ...]:
    start = (msg.method, msg.uri) if isinstance(msg, m.Request) else (msg.status, msg.reason)
    headers = [(k, v) for k, _, v in msg._headers if k != "content-length"]
    return (*start, msg.version, headers, msg.body)


def _typed(msg: m.Request | m.Response) -> tuple[object, ...]:
    return (msg.vias, msg.from_, msg.to, msg.call_id, msg.cseq, msg.contacts)


@pytest.mark.parametrize("name", sorted(VALID))
def test_valid_round_trip(name: str) -> None:
    first = m.parse(vec(name))
    again = m.parse(first.serialize())
    assert _fields(again) == _fields(first)
    assert _typed(again) == _typed(first)
    assert again.serialize() == first.serialize()


TRAILER = (
    b"OPTIONS sip:x@example.com SIP/2.0\r\nVia: SIP/2.0/TCP h.example.com;branch=z9hG4bKt\r\n"
    b"Call-ID: t@h\r\nCSeq: 1 OPTIONS\r\nFrom: <sip:a@h>;tag=1\r\nTo: <sip:x@example.com>\r\n"
    b"Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
)


def _frames(stream: bytes, size: int) -> list[bytes | str]:
    f = StreamFramer()
    out: list[bytes | str] = []
    for i in range(0, len(stream), size):
        for fr in f.feed(stream[i : i + size]):
            out.append(fr.data if fr.data else ("ping" if fr.ping else "pong"))
    return out


@pytest.mark.parametrize("name", sorted(set(VALID) - {"inv2543", "dblreq"}))
def test_valid_stream_framing(name: str) -> None:
    data = vec(name)
    direct = m.parse(data)
    stream = data + TRAILER
    whole = _frames(stream, len(stream))
    assert _frames(stream, 1) == whole
    assert _frames(stream, 7) == whole
    assert len(whole) == 2 and whole[1] == TRAILER
    first = whole[0]
    assert isinstance(first, bytes)
    framed = m.parse(first, stream=True)
    assert _fields(framed) == _fields(direct)


def test_dblreq_on_a_stream() -> None:
    # On TCP the datagram's second request is framed by its own Content-Length (150),
    # which is shorter than its SDP: the leftover "C\r\n\r\n" is unframeable.
    data = vec("dblreq")
    for size in (1, 7, len(data)):
        f = StreamFramer()
        frames = []
        with pytest.raises(ParseError) as info:
            for i in range(0, len(data), size):
                frames.extend(f.feed(data[i : i + size]))
            f.feed(b"")  # good frames came first; the error follows on the next call
        assert info.value.hint == (400, "Missing Content-Length")
        assert [fr.pong for fr in frames] == [False, True, False]
        register = m.parse(frames[0].data, stream=True)
        assert _fields(register) == _fields(m.parse(data))
        invite = m.parse(frames[2].data, stream=True)
        assert isinstance(invite, m.Request) and invite.method == "INVITE"


def test_inv2543_refused_on_streams() -> None:
    with pytest.raises(ParseError) as info:
        StreamFramer().feed(vec("inv2543"))
    assert info.value.hint == (400, "Missing Content-Length")


@pytest.mark.parametrize("name", sorted(INVALID))
def test_invalid_rejected(name: str) -> None:
    stage, hint, words = INVALID[name]
    data = vec(name)
    if stage == "parse":
        with pytest.raises(ParseError) as info:
            m.parse(data)
    else:
        msg = m.parse(data)
        with pytest.raises(ParseError) as info:
            if isinstance(msg, m.Request):
                m.check_request(msg)
            else:
                m.check_response(msg)
    assert info.value.hint == hint
    assert words.lower() in str(info.value).lower()


@pytest.mark.parametrize("name", sorted(INVALID))
def test_invalid_never_crash_the_framer(name: str) -> None:
    data = vec(name)
    f = StreamFramer()
    try:
        frames = [fr for i in range(len(data)) for fr in f.feed(data[i : i + 1])]
        for fr in frames:
            if fr.data:
                try:
                    msg = m.parse(fr.data, stream=True)
                    if isinstance(msg, m.Request):
                        m.check_request(msg)
                    else:
                        m.check_response(msg)
                except ParseError:
                    pass
    except ParseError as exc:
        assert exc.hint is not None


def test_clerr_waits_for_the_body_on_streams() -> None:
    f = StreamFramer()
    assert f.feed(vec("clerr")) == []
    assert f.buffered == len(vec("clerr"))


def test_ncl_and_mcl01_refused_by_the_framer() -> None:
    for name, hint in (("ncl", (400, "Bad Content-Length header")),
                       ("mcl01", (400, "Conflicting Content-Length headers"))):
        with pytest.raises(ParseError) as info:
            StreamFramer().feed(vec(name))
        assert info.value.hint == hint


@pytest.mark.parametrize("name", sorted(n for n, (_, hint, _) in INVALID.items() if hint))
def test_invalid_requests_get_a_stateless_answer(name: str) -> None:
    """error_response builds the reply the hint asks for, or None when the top Via is
    unusable (badinv01: a reply could not be routed, so it is dropped and counted)."""
    stage, hint, _ = INVALID[name]
    data = vec(name)
    try:
        msg = m.parse(data)
        assert isinstance(msg, m.Request)
        m.check_request(msg)
    except ParseError as exc:
        resp = m.error_response(data, exc, to_tag="t1")
    else:
        raise AssertionError("expected a ParseError")
    if name == "badinv01":
        assert resp is None
        return
    assert resp is not None and hint is not None
    assert (resp.status, resp.reason) == hint
    again = m.parse(resp.serialize())
    assert isinstance(again, m.Response)
    raw = m._salvage(data)
    assert raw is not None
    assert again.get_all("via") == raw.get_all("via")
    assert again.get("cseq") == raw.get("cseq")
    warning = again.get("warning")
    assert warning is not None and warning.startswith("399 sipedge ")


def test_error_response_drops_what_it_must() -> None:
    exc = ParseError("x", (400, "Bad Request"))
    assert m.error_response(vec("bigcode"), ParseError("x", None)) is None  # no hint
    assert m.error_response(vec("noreason"), exc) is None  # a response
    assert m.error_response(b"\x16\x03\x01garbage", exc) is None
    ack = vec("mismatch01").replace(b"OPTIONS sip:", b"ACK sip:")
    assert m.error_response(ack, exc) is None  # never answer an ACK
    no_cseq = vec("mismatch01").replace(b"CSeq: 8 INVITE\r\n", b"")
    assert m.error_response(no_cseq, exc) is None
    resp = m.error_response(vec("scalar02"), exc)  # a huge CSeq is still copied back
    assert resp is not None and resp.get("cseq") == "36893488147419103232 REGISTER"
