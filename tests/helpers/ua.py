"""A tiny blocking SIP user agent for tests: real sockets, raw messages, digest answers.

Deliberately simple and independent of the proxy code (it uses only the codec), so a
test reads like a call flow: ``ua.request("REGISTER", ...)``, ``ua.expect(200)``.
"""

from __future__ import annotations

import hashlib
import socket
import ssl
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from helpers.wsclient import WsClient
from sipedge.sip import message as m
from sipedge.sip.framing import StreamFramer


def insecure_tls() -> ssl.SSLContext:
    """A client TLS context that accepts the server's self-signed test certificate."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def _h(alg: str, s: str) -> str:
    fn = hashlib.sha256 if alg.upper().startswith("SHA-256") else hashlib.md5
    return fn(s.encode()).hexdigest()


def _params(value: str) -> dict[str, str]:
    scheme, _, rest = value.partition(" ")
    out: dict[str, str] = {}
    for part in rest.split(","):
        k, _, v = part.strip().partition("=")
        out[k.strip().lower()] = v.strip().strip('"')
    return out


@dataclass
class UA:
    """One SIP endpoint bound on loopback, talking to one server."""

    transport: str  # udp | tcp | tls
    server: tuple[str, int]
    user: str
    domain: str
    password: str = ""
    host: str = "127.0.0.1"
    sock: socket.socket = field(init=False)
    port: int = field(init=False)
    framer: StreamFramer = field(default_factory=StreamFramer)
    inbox: list[m.Request | m.Response] = field(default_factory=list)
    # UDP: every message with the address it came from (which of the server's sockets)
    arrivals: list[tuple[m.Request | m.Response, tuple[str, int]]] = field(default_factory=list)
    cseq: int = 0
    call_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    tag: str = field(default_factory=lambda: uuid.uuid4().hex[:10])

    def __post_init__(self) -> None:
        fam = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        self.ws: Any = None
        if self.transport in ("ws", "wss"):
            ctx = None
            if self.transport == "wss":
                ctx = insecure_tls()
            h = f"[{self.server[0]}]" if ":" in self.server[0] else self.server[0]
            self.ws = WsClient(f"{self.transport}://{h}:{self.server[1]}/", "sip", ctx)
            self.sock = self.ws.socket
            self.port = self.sock.getsockname()[1]
            return
        if self.transport == "udp":
            self.sock = socket.socket(fam, socket.SOCK_DGRAM)
            self.sock.bind((self.host, 0))
        else:
            raw = socket.create_connection(self.server, timeout=5)
            if self.transport == "tls":
                raw = insecure_tls().wrap_socket(raw)
            self.sock = raw
        self.port = self.sock.getsockname()[1]
        self.sock.settimeout(0.2)

    @property
    def hostport(self) -> str:
        if self.ws is not None:
            return f"{self.tag}.invalid"  # as JsSIP does: a host nobody can resolve
        h = f"[{self.host}]" if ":" in self.host else self.host
        return f"{h}:{self.port}"

    @property
    def aor(self) -> str:
        return f"sip:{self.user}@{self.domain}"

    @property
    def contact(self) -> str:
        t = "" if self.transport == "udp" else f";transport={self.transport}"
        return f"<sip:{self.user}@{self.hostport}{t}>"

    def close(self) -> None:
        if self.ws is not None:
            self.ws.close()
            return
        self.sock.close()

    # -- wire ----------------------------------------------------------------------
    def send(self, msg: m.Message | bytes) -> None:
        data = msg if isinstance(msg, bytes) else msg.serialize()
        if self.ws is not None:
            self.ws.send(data.decode("utf-8", "surrogateescape"))
            return
        if self.transport == "udp":
            self.sock.sendto(data, self.server)
        else:
            self.sock.sendall(data)

    def _pump(self) -> None:
        if self.ws is not None:
            try:
                frame = self.ws.recv(timeout=0.2)
            except TimeoutError:
                return
            self.inbox.append(m.parse(frame.encode() if isinstance(frame, str) else frame))
            return
        try:
            if self.transport == "udp":
                data, source = self.sock.recvfrom(65535)
                msg = m.parse(data)
                self.inbox.append(msg)
                self.arrivals.append((msg, (source[0], source[1])))
                return
            data = self.sock.recv(65535)
        except (TimeoutError, ssl.SSLWantReadError):
            return
        if not data:
            raise ConnectionError("server closed the connection")
        for frame in self.framer.feed(data):
            if frame.data:
                self.inbox.append(m.parse(frame.data, stream=True))

    def wait(self, pred: object, timeout: float = 5.0) -> m.Request | m.Response:
        """The first message in the inbox matching ``pred`` (a status, a method, or a
        callable), waiting for it."""
        deadline = time.monotonic() + timeout
        while True:
            for i, msg in enumerate(self.inbox):
                if _matches(msg, pred):
                    return self.inbox.pop(i)
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.user}: no {pred!r} within {timeout}s; inbox: {self.inbox}")
            self._pump()

    def expect(self, status: int, timeout: float = 5.0) -> m.Response:
        """The next final (or given provisional) response, skipping other provisionals."""
        deadline = time.monotonic() + timeout
        while True:
            msg = self.wait(lambda x: isinstance(x, m.Response), max(0.01, deadline - time.monotonic()))
            assert isinstance(msg, m.Response)
            if msg.status == status:
                return msg
            if msg.status < 200 and (status >= 200 or msg.status == 100):
                continue
            raise AssertionError(f"{self.user}: expected {status}, got {msg.status} {msg.reason}")

    # -- requests ------------------------------------------------------------------
    def build(self, method: str, uri: str, to: str | None = None, headers: dict[str, str] | None = None,
              body: bytes = b"", to_tag: str | None = None) -> m.Request:
        self.cseq += 1
        req = m.Request(method, uri)
        t = self.transport.upper()
        req.add("Via", f"SIP/2.0/{t} {self.hostport};branch=z9hG4bK{uuid.uuid4().hex[:12]};rport")
        req.add("Max-Forwards", "70")
        req.add("From", f"<{self.aor}>;tag={self.tag}")
        to_value = f"<{to or uri}>" + (f";tag={to_tag}" if to_tag else "")
        req.add("To", to_value)
        req.add("Call-ID", self.call_id)
        req.add("CSeq", f"{self.cseq} {method}")
        req.add("Contact", self.contact)
        for k, v in (headers or {}).items():
            req.add(k, v)
        req.body = body
        return req

    def authorize(self, req: m.Request, challenge: m.Response) -> m.Request:
        """Repeat ``req`` with credentials for the first challenge in ``challenge``."""
        name = "WWW-Authenticate" if challenge.status == 401 else "Proxy-Authenticate"
        values = challenge.get_all(name)
        assert values, f"no {name} in {challenge.status}"
        p = _params(values[0])
        alg = p.get("algorithm", "MD5")
        ha1 = _h(alg, f"{self.user}:{p['realm']}:{self.password}")
        ha2 = _h(alg, f"{req.method}:{req.uri}")
        cnonce = uuid.uuid4().hex[:8]
        nc = "00000001"
        resp = _h(alg, f"{ha1}:{p['nonce']}:{nc}:{cnonce}:auth:{ha2}")
        again = req.copy()
        self.cseq += 1
        again.set("CSeq", f"{self.cseq} {req.method}")
        again.replace_first("via", f"SIP/2.0/{self.transport.upper()} {self.hostport};branch=z9hG4bK{uuid.uuid4().hex[:12]};rport")
        again.add(
            "Authorization" if challenge.status == 401 else "Proxy-Authorization",
            f'Digest username="{self.user}", realm="{p["realm"]}", nonce="{p["nonce"]}", uri="{req.uri}", '
            f'response="{resp}", algorithm={alg}, qop=auth, nc={nc}, cnonce="{cnonce}"',
        )
        return again

    def register(self, expires: int = 300) -> m.Response:
        req = self.build("REGISTER", f"sip:{self.domain}", to=self.aor, headers={"Expires": str(expires)})
        self.send(req)
        first = self.expect_final()
        if first.status == 401:
            self.send(self.authorize(req, first))
            return self.expect_final()
        return first

    def expect_final(self, timeout: float = 5.0) -> m.Response:
        deadline = time.monotonic() + timeout
        while True:
            msg = self.wait(lambda x: isinstance(x, m.Response), max(0.01, deadline - time.monotonic()))
            assert isinstance(msg, m.Response)
            if msg.status >= 200:
                return msg

    def answer(self, req: m.Request, status: int, reason: str | None = None, to_tag: str | None = None,
               body: bytes = b"", headers: dict[str, str] | None = None) -> m.Response:
        resp = m.make_response(req, status, reason, to_tag=to_tag or (self.tag if status > 100 else None))
        for rr in req.get_all("record-route"):
            resp.add("Record-Route", rr)
        if status < 300 and req.method == "INVITE":
            resp.add("Contact", self.contact)
        for k, v in (headers or {}).items():
            resp.add(k, v)
        resp.body = body
        self.send(resp)
        return resp


def _matches(msg: m.Request | m.Response, pred: object) -> bool:
    if callable(pred):
        return bool(pred(msg))
    if isinstance(pred, int):
        return isinstance(msg, m.Response) and msg.status == pred
    if isinstance(pred, str):
        return isinstance(msg, m.Request) and msg.method == pred
    return False


def in_dialog(caller: UA, method: str, ok: m.Response, routes: list[str], cseq: int | None = None) -> m.Request:
    """``method`` inside the dialog a 2xx ``ok`` set up: to its Contact along ``routes``."""
    contacts = ok.contacts
    assert isinstance(contacts, list)
    req = caller.build(method, str(contacts[0].uri), to=str(ok.to.uri), to_tag=ok.to.tag)
    if cseq is not None:
        req.set("CSeq", f"{cseq} {method}")
    for r in routes:
        req.add("Route", r)
    return req


def cancel_of(invite: m.Request) -> m.Request:
    """The CANCEL of ``invite`` (RFC 3261 §9.1: its Request-URI, top Via, From, To, Call-ID
    and CSeq number)."""
    cancel = m.Request("CANCEL", invite.uri)
    for name in ("via", "from", "to", "call-id", "max-forwards"):
        cancel.add(name, invite.get(name) or "")
    cancel.set("CSeq", f"{invite.cseq.number} CANCEL")
    return cancel
