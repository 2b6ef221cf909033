"""rtpengine's "ng" control protocol, sans-I/O: server side over a :class:`MediaRelay`, and a
client codec for driving a remote relay (ours or a real rtpengine).

A message is ``<cookie> <bencoded dictionary>``; the reply repeats the cookie. Commands:
ping, offer, answer, delete, query, list. ``via-branch`` in an offer makes the offer for
that branch of a forked request only (its own leg); in an answer it picks that branch's
leg, in a delete it removes only that branch. Errors are ``{"result": "error",
"error-reason": ...}``; non-fatal problems are ``{"result": "ok", "warning": ...}``.
Keys and flags are matched the way rtpengine does: case-insensitive for flags, with
spaces, underscores and hyphens equivalent ("trust address" = "trust-address").
Retransmitted requests (same cookie) get the cached reply instead of running again.
"""

from __future__ import annotations

import ipaddress
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .._common.ids import TokenSource, token
from ..errors import ParseError
from . import bencode
from .relay import Flags, MediaRelay, RelayError, Stream
from .sdes import SDES_ITEMS

MAX_REQUEST = 65535
CACHE_SIZE = 4096
CACHE_TTL = 30.0


def _norm(text: str) -> str:
    return text.strip().lower().replace(" ", "-").replace("_", "-")


def _str(v: Any) -> str | None:
    if isinstance(v, bytes):
        return v.decode("utf-8", "replace")
    if isinstance(v, str):
        return v
    if isinstance(v, int):
        return str(v)
    return None


def _strlist(v: Any) -> list[str]:
    if isinstance(v, list):
        return [s for s in (_str(x) for x in v) if s is not None]
    s = _str(v)
    return s.split() if s else []


_PROFILES = {p.upper(): p for p in (
    "RTP/AVP", "RTP/AVPF", "RTP/SAVP", "RTP/SAVPF", "UDP/TLS/RTP/SAVP", "UDP/TLS/RTP/SAVPF",
)}
"""The transport profiles the relay converts between (rtpengine's ``transport-protocol``)."""


def _normalize_request(raw: dict[bytes, Any]) -> dict[str, Any]:
    return {_norm(k.decode("utf-8", "replace")): v for k, v in raw.items()}


def flags_from_request(req: dict[str, Any]) -> Flags:
    """Build relay :class:`Flags` from a normalized ng request dictionary."""
    flag_list = [_norm(f) for f in _strlist(req.get("flags"))]  # in order: direction=a direction=b
    flags = set(flag_list)
    replace = {_norm(f) for f in _strlist(req.get("replace"))}
    rtcp_mux = [_norm(f) for f in _strlist(req.get("rtcp-mux"))]
    ice = _str(req.get("ice"))
    direction = _strlist(req.get("direction"))
    profile = _str(req.get("transport-protocol"))
    dtls = _str(req.get("dtls"))
    sdes = [_norm(f) for f in _strlist(req.get("sdes"))]
    generate_rtcp = _str(req.get("generate-rtcp"))
    for f in flag_list:  # Kamailio may pass "key=value" flags through verbatim
        key, eq, value = f.partition("=")
        if f.upper() in _PROFILES:  # the shorthand flags: "RTP/AVP", "UDP/TLS/RTP/SAVPF"...
            profile = f
        elif eq and key == "transport-protocol":
            profile = value
        elif eq and key == "dtls":
            dtls = value
        elif eq and key == "sdes":
            sdes.append(value)
        elif f.startswith("sdes-"):
            sdes.append(f[len("sdes-"):])
        elif eq and key == "ice":
            ice = value
        elif eq and key == "direction":
            direction.append(value)
        elif eq and key == "rtcp-mux":
            rtcp_mux.append(value)
        elif f.startswith("replace-"):
            replace.add(f[len("replace-"):])
        elif f.startswith("rtcp-mux-"):
            rtcp_mux.append(f[len("rtcp-mux-"):])
        elif key == "generate-rtcp":  # Kamailio's flag spelling: "generate-RTCP" (on), "=off"
            generate_rtcp = value if eq else "on"
    mode = None
    if ice is not None:
        mode = {"remove": "remove", "force": "force", "force-relay": "force-relay", "optional": "relay",
                "default": "auto", "relay": "relay"}.get(_norm(ice))
        if mode is None:
            raise RelayError(f"unknown ICE option {ice!r}", (488, "Bad media flags"))
    received = req.get("received-from")
    received_from = None
    if isinstance(received, list) and len(received) == 2:
        received_from = _str(received[1])
    media_address = _str(req.get("media-address"))
    for addr in (received_from, media_address):
        if addr is not None:
            try:
                ipaddress.ip_address(addr)
            except ValueError:
                raise RelayError(f"bad address {addr!r}", (488, "Bad media flags")) from None
    if profile is not None:
        if profile.upper() not in _PROFILES:
            raise RelayError(f"unknown transport-protocol {profile!r}", (488, "Bad media flags"))
        profile = _PROFILES[profile.upper()]
    if dtls is not None:
        dtls = {"off": "off", "no": "off", "disable": "off", "passive": "passive", "active": "active",
                "": None}.get(_norm(dtls), "bad")
        if dtls == "bad":
            raise RelayError("DTLS must be off, passive or active", (488, "Bad media flags"))
    if generate_rtcp is not None:
        generate_rtcp = {"on": "on", "yes": "on", "off": "off", "no": "off"}.get(_norm(generate_rtcp), "bad")
        if generate_rtcp == "bad":
            raise RelayError("generate-RTCP must be on or off", (488, "Bad media flags"))
    if direction and len(direction) != 2:
        raise RelayError(f"direction needs two interfaces, got {direction!r}", (488, "Bad media flags"))
    trust = "sip-source-address" not in flags
    strict = True if "strict-source" in flags else (False if "media-handover" in flags else None)
    return Flags(
        ice=mode,
        replace_origin="origin" in replace,
        replace_session_connection="session-connection" in replace,
        trust_address=trust or "trust-address" in flags,
        received_from=received_from,
        media_address=media_address,
        symmetric="asymmetric" not in flags,
        strict_source=strict,
        rtcp_mux=tuple(m for m in rtcp_mux if m in ("offer", "require", "demux", "accept", "reject")),
        label=_str(req.get("label")),
        direction=(direction[0], direction[1]) if direction else None,
        transport_protocol=profile,
        dtls=dtls,
        sdes=_sdes_flags(sdes),
        generate_rtcp=generate_rtcp,
        **_codec_flags(req.get("codec"), flag_list),
    )


_CODEC_KEYS = {"strip": "codec_strip", "mask": "codec_mask", "transcode": "codec_transcode",
               "offer": "codec_transcode", "except": "codec_except", "accept": "codec_accept"}
MAX_CODEC_SPECS = 32  # per list: an ng client naming more wants something else
_CODEC_SPEC_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_./")


def _codec_flags(codec: Any, flag_list: list[str]) -> dict[str, tuple[str, ...]]:
    """rtpengine's ``codec`` dictionary (``strip``, ``offer``/``transcode``, ``mask``,
    ``except``, ``accept``: lists of codec specs such as ``PCMU``, ``opus/48000/2`` or
    ``all``) and Kamailio's flag spellings of it (``codec-strip-PCMA``,
    ``codec-transcode=PCMU``, ``transcode-PCMU``) as the ``codec_*`` fields of
    :class:`Flags`. Other keys of the dictionary (``set``, ``consume``...) are ignored;
    a spec that is not a codec name is refused (488)."""
    found: dict[str, list[str]] = {v: [] for v in _CODEC_KEYS.values()}
    if isinstance(codec, dict):
        for k, v in codec.items():
            key = _CODEC_KEYS.get(_norm(_str(k) or ""))
            if key is not None:
                found[key].extend(_strlist(v))
    for f in flag_list:
        name, spec = _codec_flag(f)
        if name is not None:
            found[name].append(spec)
    out: dict[str, tuple[str, ...]] = {}
    for field, specs in found.items():
        if len(specs) > MAX_CODEC_SPECS:
            raise RelayError(f"{len(specs)} codecs in one codec list (at most {MAX_CODEC_SPECS})",
                             (488, "Bad media flags"))
        for spec in specs:
            if not spec or len(spec) > 64 or not _CODEC_SPEC_CHARS.issuperset(spec):
                raise RelayError(f"bad codec {spec[:40]!r}", (488, "Bad media flags"))
        if specs:
            out[field] = tuple(dict.fromkeys(specs))
    return out


def _codec_flag(f: str) -> tuple[str | None, str]:
    """``codec-strip-pcma`` / ``codec-strip=pcma`` / ``transcode-pcmu``: (field, spec)."""
    rest = f[len("codec-"):] if f.startswith("codec-") else (f if f.startswith("transcode") else None)
    if rest is None:
        return None, ""
    for word, field in _CODEC_KEYS.items():
        for sep in ("-", "="):
            if rest.startswith(word + sep):
                return field, rest[len(word) + 1:]
    return None, ""


def _sdes_flags(items: list[str]) -> tuple[str, ...]:
    """rtpengine's ``SDES`` list (normalized: "off", "no-aes-cm-128-hmac-sha1-32"...) as
    :attr:`Flags.sdes`: "off", "no-<SUITE>", "only-<SUITE>" with the suite in its a=crypto
    spelling, and the items of :data:`~.sdes.SDES_ITEMS` (``pad``, ``lifetime``, the
    ``unencrypted_srtp`` family, which the offer/answer refuses) in their underscore
    spelling. Its other items (``static``, ``nonew``, ``prefer``...) are accepted and
    ignored."""
    out: list[str] = []
    for item in items:
        if item in ("off", "no", "disable"):
            out.append("off")
        elif item.replace("-", "_") in SDES_ITEMS:
            out.append(item.replace("-", "_"))
        for prefix in ("no-", "only-"):
            if item.startswith(prefix) and len(item) > len(prefix):
                out.append(prefix + item[len(prefix):].upper().replace("-", "_"))
    return tuple(dict.fromkeys(out))


def flags_to_request(flags: Flags) -> dict[str, Any]:
    """The ng dictionary entries expressing ``flags`` (for the client side)."""
    out: dict[str, Any] = {}
    fl: list[str] = []
    if flags.ice:
        out["ICE"] = {"relay": "optional", "auto": "default"}.get(flags.ice, flags.ice)
    replace = ["session-connection"] if flags.replace_session_connection else []
    if flags.replace_origin:
        replace.append("origin")
    out["replace"] = replace
    fl.append("trust-address" if flags.trust_address else "SIP-source-address")
    if not flags.symmetric:
        fl.append("asymmetric")
    if flags.strict_source:
        fl.append("strict-source")
    if flags.received_from:
        fam = "IP6" if ":" in flags.received_from else "IP4"
        out["received-from"] = [fam, flags.received_from]
    if flags.media_address:
        out["media-address"] = flags.media_address
    if flags.rtcp_mux:
        out["rtcp-mux"] = list(flags.rtcp_mux)
    if flags.label:
        out["label"] = flags.label
    if flags.direction:
        out["direction"] = list(flags.direction)
    if flags.transport_protocol:
        out["transport-protocol"] = flags.transport_protocol
    if flags.dtls:
        out["DTLS"] = flags.dtls
    if flags.sdes:
        out["SDES"] = list(flags.sdes)
    if flags.generate_rtcp:
        out["generate RTCP"] = flags.generate_rtcp
    codec = {key: list(v) for key, v in (("strip", flags.codec_strip), ("mask", flags.codec_mask),
                                          ("transcode", flags.codec_transcode), ("except", flags.codec_except),
                                          ("accept", flags.codec_accept)) if v}
    if codec:
        out["codec"] = codec
    out["flags"] = fl
    return out


@dataclass(frozen=True, slots=True)
class _Cached:
    reply: bytes
    expires: float


class NgServer:
    """The ng protocol in front of a relay: ``handle(datagram, now) -> reply or None``."""

    def __init__(self, relay: MediaRelay, wall_clock: Callable[[], float] | None = None) -> None:
        self.relay = relay
        self._wall = wall_clock
        self._cache: OrderedDict[bytes, _Cached] = OrderedDict()
        self.counters: dict[str, int] = dict.fromkeys(
            ("ng_requests", "ng_errors", "ng_dropped", "ng_retransmits"), 0
        )
        self._commands: dict[str, Callable[[dict[str, Any], float], dict[str, Any]]] = {
            "ping": self._ping,
            "offer": self._offer,
            "answer": self._answer,
            "delete": self._delete,
            "query": self._query,
            "list": self._list,
        }

    def stats(self) -> dict[str, int | float]:
        return dict(self.counters)

    def handle(self, data: bytes, now: float) -> bytes | None:
        """Process one request datagram; None means drop (no cookie to answer to)."""
        cookie, sep, body = data.partition(b" ")
        if not sep or not cookie or len(data) > MAX_REQUEST:
            self.counters["ng_dropped"] += 1
            return None
        cached = self._cache.get(cookie)
        if cached is not None and cached.expires > now:
            self.counters["ng_retransmits"] += 1
            return cached.reply
        self.counters["ng_requests"] += 1
        reply = self._dispatch(body, now)
        if reply.get("result") == "error":
            self.counters["ng_errors"] += 1
        out = cookie + b" " + bencode.encode(reply)
        self._cache[cookie] = _Cached(out, now + CACHE_TTL)
        while len(self._cache) > CACHE_SIZE:
            self._cache.popitem(last=False)
        return out

    def _dispatch(self, body: bytes, now: float) -> dict[str, Any]:
        try:
            raw = bencode.decode(body)
        except ParseError as exc:
            return {"result": "error", "error-reason": f"Failed to decode dictionary: {exc}"}
        if not isinstance(raw, dict):
            return {"result": "error", "error-reason": "Request is not a dictionary"}
        req = _normalize_request(raw)  # type: ignore[arg-type]
        command = _str(req.get("command"))
        if command is None:
            return {"result": "error", "error-reason": "No command given"}
        handler = self._commands.get(command.strip().lower())
        if handler is None:
            return {"result": "error", "error-reason": f"Unrecognized command {command[:40]!r}"}
        try:
            return handler(req, now)
        except ParseError as exc:
            return {"result": "error", "error-reason": f"Failed to parse SDP: {exc}"}
        except RelayError as exc:
            return {"result": "error", "error-reason": str(exc)}

    @staticmethod
    def _need(req: dict[str, Any], key: str) -> str:
        v = _str(req.get(key))
        if not v:
            raise RelayError(f"No {key} in message", (400, "Bad request"))
        return v

    def _ping(self, req: dict[str, Any], now: float) -> dict[str, Any]:
        return {"result": "pong"}

    def _offer(self, req: dict[str, Any], now: float) -> dict[str, Any]:
        sdp = req.get("sdp")
        if not isinstance(sdp, bytes | str):
            raise RelayError("No SDP body in message", (400, "Bad request"))
        raw = sdp.encode() if isinstance(sdp, str) else sdp
        to_tag = _str(req.get("to-tag")) or None
        out = self.relay.offer(
            self._need(req, "call-id"), self._need(req, "from-tag"), raw, now, flags_from_request(req), to_tag,
            _str(req.get("via-branch")) or None,
        )
        return {"result": "ok", "sdp": out}

    def _answer(self, req: dict[str, Any], now: float) -> dict[str, Any]:
        sdp = req.get("sdp")
        if not isinstance(sdp, bytes | str):
            raise RelayError("No SDP body in message", (400, "Bad request"))
        raw = sdp.encode() if isinstance(sdp, str) else sdp
        out = self.relay.answer(
            self._need(req, "call-id"), self._need(req, "from-tag"), self._need(req, "to-tag"),
            raw, now, flags_from_request(req), _str(req.get("via-branch")) or None,
        )
        return {"result": "ok", "sdp": out}

    def _delete(self, req: dict[str, Any], now: float) -> dict[str, Any]:
        call_id = self._need(req, "call-id")
        call = self.relay.query(call_id)
        summary = self.summary(call_id, now) if call is not None else None
        to_tag = _str(req.get("to-tag")) or None
        totals = self.relay.delete(call_id, now, _str(req.get("from-tag")) or None, to_tag,
                                   via_branch=_str(req.get("via-branch")) or None)
        if totals is None:
            if "fatal" in {_norm(f) for f in _strlist(req.get("flags"))}:
                return {"result": "error", "error-reason": "Unknown call-id"}
            return {"result": "ok", "warning": "Call-ID not found or tags didn't match"}
        out: dict[str, Any] = {"result": "ok"}
        if summary:
            out.update(summary)
        return out

    def _query(self, req: dict[str, Any], now: float) -> dict[str, Any]:
        call_id = self._need(req, "call-id")
        summary = self.summary(call_id, now)
        if summary is None:
            return {"result": "error", "error-reason": "Unknown call-id"}
        return {"result": "ok", **summary}

    def _list(self, req: dict[str, Any], now: float) -> dict[str, Any]:
        limit = req.get("limit", 32)
        if not isinstance(limit, int) or limit <= 0:
            return {"result": "error", "error-reason": "Invalid limit"}
        return {"result": "ok", "calls": self.relay.calls()[:limit]}

    # -- query/delete statistics in rtpengine's shape -------------------------------
    def _unix(self, t: float, now: float) -> int:
        wall = self._wall() if self._wall is not None else now
        return int(t + (wall - now)) if t else 0

    def summary(self, call_id: str, now: float) -> dict[str, Any] | None:
        """A call as rtpengine's ``query`` reply shows it (also ``sipedge ctl media query``)."""
        call = self.relay.query(call_id)
        if call is None:
            return None
        tags: dict[str, Any] = {}
        rtp = {"packets": 0, "bytes": 0, "errors": 0}
        rtcp = {"packets": 0, "bytes": 0, "errors": 0}
        for leg in call.legs:
            for side, streams in enumerate(leg.streams):
                tag = leg.tags[side]
                medias = []
                for s in streams:
                    medias.append(self._media(s, now))
                    rtp["packets"] += s.rtp_stats.packets
                    rtp["bytes"] += s.rtp_stats.bytes
                    rtp["errors"] += s.strangers
                    rtcp["packets"] += s.rtcp_stats.packets
                    rtcp["bytes"] += s.rtcp_stats.bytes
                if tag in tags:
                    continue
                entry: dict[str, Any] = {
                    "tag": tag,
                    "created": self._unix(leg.created, now),
                    "medias": medias,
                }
                other = leg.tags[1 - side]
                if other:
                    entry["in dialogue with"] = other
                tags[tag] = entry
        return {
            "created": self._unix(call.created, now),
            "last signal": self._unix(call.last_signal, now),
            "tags": tags,
            "totals": {"RTP": rtp, "RTCP": rtcp},
        }

    def _media(self, s: Stream, now: float) -> dict[str, Any]:
        flags = ["initialized"] if s.rtp_port is not None else []
        if s.mux:
            flags.append("rtcp-mux")
        if s.ice_pwd is not None or s.had_ice:
            flags.append("ICE")
        streams = []
        for comp, port, latched, expected, stats in (
            ("RTP", s.rtp_port, s.latched_rtp, s.expected_rtp, s.rtp_stats),
            ("RTCP", s.rtcp_port, s.latched_rtcp, s.expected_rtcp, s.rtcp_stats),
        ):
            st: dict[str, Any] = {
                "flags": [comp] + (["filled"] if expected else []) + (["confirmed"] if latched else []),
                "stats": {"packets": stats.packets, "bytes": stats.bytes, "errors": 0},
                "last packet": self._unix(stats.last_packet, now),
            }
            if port is not None:
                st["local port"] = port
            ep = latched or expected
            if ep is not None:
                st["endpoint"] = _endpoint(ep)
            if expected is not None:
                st["advertised endpoint"] = _endpoint(expected)
            if comp == "RTP":
                st["lost"] = stats.lost
                st["jitter"] = int(stats.jitter_ms)
            streams.append(st)
        return {"index": s.index + 1, "type": s.media, "protocol": s.profile, "flags": flags, "streams": streams}


def _endpoint(addr: tuple[str, int]) -> dict[str, Any]:
    fam = "IPv6" if ":" in addr[0] else "IPv4"
    return {"family": fam, "address": addr[0], "port": addr[1]}


# ---------------------------------------------------------------------- client codec
class NgClient:
    """Builds ng requests and matches replies (sans-I/O; the adapter owns the socket)."""

    def __init__(self, token_source: TokenSource | None = None) -> None:
        self._token = token_source

    def request(self, command: str, **params: Any) -> tuple[bytes, bytes]:
        """``(cookie, datagram)`` for ``command``; params use ng key names with ``_`` for
        ``-`` (``call_id="..."``, ``from_tag=...``, ``sdp=b"..."``)."""
        cookie = (token(8, self._token) if self._token is not None else token(8)).encode()
        body: dict[str, Any] = {"command": command}
        for k, v in params.items():
            if v is None:
                continue
            body[k.replace("_", "-")] = v
        return cookie, cookie + b" " + bencode.encode(body)

    def offer(self, call_id: str, from_tag: str, sdp: bytes, flags: Flags | None = None,
              to_tag: str | None = None, via_branch: str | None = None) -> tuple[bytes, bytes]:
        """``via_branch``: the offer for that branch of a forked request only."""
        extra = flags_to_request(flags or Flags())
        return self.request("offer", call_id=call_id, from_tag=from_tag, to_tag=to_tag, via_branch=via_branch,
                            sdp=sdp, **_kw(extra))

    def answer(self, call_id: str, from_tag: str, to_tag: str, sdp: bytes,
               flags: Flags | None = None, via_branch: str | None = None) -> tuple[bytes, bytes]:
        extra = flags_to_request(flags or Flags())
        return self.request("answer", call_id=call_id, from_tag=from_tag, to_tag=to_tag, via_branch=via_branch,
                            sdp=sdp, **_kw(extra))

    def delete(self, call_id: str, from_tag: str | None = None, to_tag: str | None = None,
               branch_only: bool = False, via_branch: str | None = None) -> tuple[bytes, bytes]:
        """``via_branch``: only what was offered for that branch goes; ``branch_only``
        (without it) sends ``to_tag`` as the via-branch, so only the fork answered with
        ``to_tag`` goes."""
        branch = via_branch or (to_tag if branch_only and to_tag else None)
        return self.request("delete", call_id=call_id, from_tag=from_tag, to_tag=to_tag, via_branch=branch)

    @staticmethod
    def parse_reply(data: bytes) -> tuple[bytes, dict[str, Any]]:
        """``(cookie, reply)`` with str keys and byte-string values decoded except ``sdp``."""
        cookie, sep, body = data.partition(b" ")
        if not sep:
            raise ParseError("ng reply without a cookie", None)
        raw = bencode.decode(body)
        if not isinstance(raw, dict):
            raise ParseError("ng reply is not a dictionary", None)
        return cookie, _textify(raw)  # type: ignore[arg-type]


def _kw(d: dict[str, Any]) -> dict[str, Any]:
    return {k.replace("-", "_"): v for k, v in d.items()}


def _textify(d: dict[bytes, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = k.decode("utf-8", "replace")
        out[key] = v if key == "sdp" else _text_value(v)
    return out


def _text_value(v: Any) -> Any:
    if isinstance(v, bytes):
        return v.decode("utf-8", "replace")
    if isinstance(v, list):
        return [_text_value(x) for x in v]
    if isinstance(v, dict):
        return _textify(v)
    return v
