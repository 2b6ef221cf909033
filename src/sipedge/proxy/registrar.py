"""The registrar (RFC 3261 §10.3, Path RFC 3327, outbound RFC 5626): pure logic.

:func:`register` takes a parsed REGISTER and a :class:`~sipedge.proxy.location.LocationStore`
and returns the response: it adds, refreshes and removes bindings, applies
Min-Expires/max-expires/default-expires and the contacts-per-AoR limit, enforces the
Call-ID/CSeq ordering rule and answers 200 with every current binding.

What it does *not* do (the routing module's steps, in this order): check that the
Request-URI names a domain we serve (§10.3 step 1), check Require (step 2), authenticate
(step 3) and check that the authenticated user may register this AoR (step 4).

All updates of one request are checked before any is applied, so a request that fails
(423, 403, 500 out-of-order) changes nothing. A storage failure while applying answers 500
and the previous bindings are put back as far as the store allows.
"""

from __future__ import annotations

import email.utils
import functools
import hashlib
from dataclasses import dataclass, field

from ..config.sip import RegistrarConfig
from ..errors import ParseError, StorageError
from ..sip.headers import NameAddr, split_list
from ..sip.message import Request, Response, make_response
from ..sip.uri import SipUri, parse_uri
from .location import Binding, LocationStore, normalize_aor

SUPPORTED = "path, outbound"


@dataclass(frozen=True, slots=True)
class RegisterOutcome:
    """What one REGISTER did, for logs and counters."""

    response: Response
    aor: str = ""
    added: tuple[Binding, ...] = ()
    refreshed: tuple[Binding, ...] = ()
    removed: tuple[Binding, ...] = ()
    error: str = ""  # why it failed, when it did (for the log line)


def _uri_key(text: str) -> tuple[object, ...]:
    """Comparison key of a contact URI after RFC 3261 §19.1.4, simplified: scheme, user,
    password, host (case-insensitive), port, and the parameters that must match when
    present (transport, user, ttl, method, maddr). Other URIs compare as text."""
    try:
        u = parse_uri(text)
    except ParseError:
        return ("text", text)
    if not isinstance(u, SipUri):
        return ("text", str(u))
    strict = tuple(
        (name, (u.params.get(name) or "").lower() if name in u.params else None)
        for name in ("transport", "user", "ttl", "method", "maddr")
    )
    return (u.scheme, u.user, u.password, u.host.lower(), u.port, strict)


def contacts_equal(a: str, b: str) -> bool:
    """Do two contact URIs name the same binding (RFC 3261 §10.3 step 7)?"""
    return a == b or _uri_key(a) == _uri_key(b)


def _to_tag(req: Request) -> str:
    """A stable To tag for this REGISTER (same request, same tag: retransmissions match)."""
    material = f"{req.get('call-id') or ''}\x00{req.get('from') or ''}"
    return hashlib.blake2b(material.encode("utf-8", "surrogateescape"), digest_size=6).hexdigest()


def _reply(req: Request, status: int, reason: str | None = None) -> Response:
    return make_response(req, status, reason, to_tag=_to_tag(req))


def _fail(req: Request, status: int, reason: str, why: str) -> RegisterOutcome:
    return RegisterOutcome(_reply(req, status, reason), error=why)


def _int_param(value: str | None, what: str) -> int | None:
    if value is None:
        return None
    v = value.strip().strip('"')
    if not v.isdigit():
        raise ParseError(f"bad {what} {value!r}", (400, f"Bad {what}"))
    return min(int(v), 2**32 - 1)


def _q(value: str | None) -> float:
    if value is None:
        return 1.0
    try:
        q = float(value.strip())
    except ValueError:
        raise ParseError(f"bad q {value!r}", (400, "Bad Contact q-value")) from None
    if not 0.0 <= q <= 1.0:
        raise ParseError(f"q {value!r} out of range", (400, "Bad Contact q-value"))
    return q


def _option_tags(req: Request, name: str) -> set[str]:
    return {t.strip().lower() for v in req.get_all(name) for t in split_list(v)}


@dataclass(eq=False)
class _Entry:
    binding: Binding
    existing: bool  # found in the store (so the Call-ID/CSeq rule applies)
    key: tuple[object, ...] = field(default=())


def register(
    request: Request,
    store: LocationStore,
    cfg: RegistrarConfig,
    now_wall: float,
    flow: str = "",
    received: str = "",
    socket: str = "",
) -> Response:
    """Process a REGISTER (RFC 3261 §10.3 steps 5-8); returns the response to send."""
    return process_register(request, store, cfg, now_wall, flow, received, socket).response


def process_register(
    request: Request,
    store: LocationStore,
    cfg: RegistrarConfig,
    now_wall: float,
    flow: str = "",
    received: str = "",
    socket: str = "",
    node_path: str = "",
) -> RegisterOutcome:
    """:func:`register`, also reporting what changed. ``node_path``, when given, is kept
    in front of the REGISTER's Path in the bindings (this node and the flow, docs/cluster.md),
    never echoed in the 200."""
    req = request
    try:
        to = req.to
        if not isinstance(to.uri, SipUri) or to.uri.scheme == "tel":
            return _fail(req, 404, "Not Found", f"To is not a SIP address-of-record: {to.uri}")
        aor = normalize_aor(to.uri)
        call_id = req.call_id
        cseq = req.cseq.number
        contacts = req.contacts
        header_expires = req.expires
        paths = tuple(req.get_all("path"))
        for p in paths:
            NameAddr.parse(p, "Path")
    except ParseError as exc:
        status, reason = exc.sip_reply()
        return _fail(req, status, reason, str(exc))

    now = now_wall
    existing = store.lookup(aor, now)

    if contacts == "*":
        if header_expires != 0:
            return _fail(req, 400, "Invalid wildcard Contact", "Contact: * needs Expires: 0")
        for b in existing:
            if b.call_id == call_id and cseq <= b.cseq:
                return _fail(req, 500, "Out of order CSeq", f"CSeq {cseq} <= {b.cseq} for {b.contact}")
        try:
            store.remove_aor(aor)
        except StorageError as exc:
            return _fail(req, 500, "Storage failure", str(exc))
        return RegisterOutcome(_ok(req, aor, [], now, paths, False), aor, removed=tuple(existing))

    if isinstance(contacts, str):  # pragma: no cover - the codec only returns "*" as a string
        return _fail(req, 400, "Bad Contact header", f"bad Contact {contacts!r}")
    user_agent = req.get("user-agent") or ""
    state: list[_Entry] = [_Entry(b, True, _uri_key(b.contact)) for b in existing]
    for na in contacts:
        try:
            expires = _int_param(na.params.get("expires"), "Contact expires")
            q = _q(na.params.get("q"))
            reg_id = _int_param(na.params.get("reg-id"), "Contact reg-id") or 0
        except ParseError as exc:
            status, reason = exc.sip_reply()
            return _fail(req, status, reason, str(exc))
        if expires is None:
            expires = header_expires if header_expires is not None else cfg.default_expires
        if 0 < expires < cfg.min_expires:
            resp = _reply(req, 423, "Interval Too Brief")
            resp.set("Min-Expires", str(cfg.min_expires))
            return RegisterOutcome(resp, aor, error=f"expires {expires} < {cfg.min_expires}")
        expires = min(expires, cfg.max_expires)
        contact = str(na.uri)
        key = _uri_key(contact)
        instance = (na.params.get("+sip.instance") or "").strip()
        if len(instance) >= 2 and instance[0] == '"' and instance[-1] == '"':
            instance = instance[1:-1]
        matches = [
            e for e in state
            if e.key == key or (instance and e.binding.instance == instance and e.binding.reg_id == reg_id)
        ]
        for e in matches:
            if e.existing and e.binding.call_id == call_id and cseq <= e.binding.cseq:
                return _fail(req, 500, "Out of order CSeq", f"CSeq {cseq} <= {e.binding.cseq} for {contact}")
        matched = {id(e) for e in matches}
        state = [e for e in state if id(e) not in matched]
        if expires == 0:
            continue
        state.append(_Entry(
            Binding(
                aor=aor, contact=contact, expires_at=now + expires, q=q, call_id=call_id,
                cseq=cseq, received=received, path=(node_path, *paths) if node_path else paths,
                instance=instance, reg_id=reg_id,
                flow=flow, user_agent=user_agent, socket=socket,
            ),
            False,
            key,
        ))

    if len(state) > cfg.max_contacts:
        return _fail(req, 403, "Too Many Contacts",
                     f"{len(state)} contacts for {aor}, at most {cfg.max_contacts}")

    kept_old = {id(e.binding) for e in state if e.existing}
    removed = [b for b in existing if id(b) not in kept_old]
    new = [e.binding for e in state if not e.existing]
    old_contacts = {b.contact for b in existing}
    # bindings a new one replaces (same contact, same instance/reg-id) go with its put
    to_remove = [b for b in removed if not any(n.replaces(b) for n in new)]
    try:
        for b in to_remove:
            store.remove(aor, b.contact)
        for b in new:
            store.put(b)
    except StorageError as exc:
        _restore(store, aor, existing)
        return _fail(req, 500, "Storage failure", str(exc))

    current = store.lookup(aor, now)
    outbound = any(b.reg_id for b in new) and "outbound" in _option_tags(req, "supported")
    removed_for_good = tuple(b for b in removed if b.contact not in {n.contact for n in new})
    return RegisterOutcome(
        _ok(req, aor, current, now, paths, outbound),
        aor,
        added=tuple(b for b in new if b.contact not in old_contacts),
        refreshed=tuple(b for b in new if b.contact in old_contacts),
        removed=removed_for_good,
    )


def _restore(store: LocationStore, aor: str, previous: list[Binding]) -> None:
    """Best effort after a storage failure: put the AoR's bindings back as they were."""
    try:
        store.remove_aor(aor)
        for b in previous:
            store.put(b)
    except StorageError:
        pass


def _ok(req: Request, aor: str, bindings: list[Binding], now: float, paths: tuple[str, ...],
        outbound: bool) -> Response:
    resp = _reply(req, 200, "OK")
    for b in bindings:
        params = f";expires={b.expires_in(now)}"
        if b.q != 1.0:
            params += f";q={b.q:g}"
        if b.instance:
            params += f';+sip.instance="{b.instance}"'
            if b.reg_id:
                params += f";reg-id={b.reg_id}"
        resp.add("Contact", f"<{b.contact}>{params}")
    if paths and "path" in _option_tags(req, "supported"):
        for p in paths:
            resp.add("Path", p)
    if outbound:
        resp.add("Require", "outbound")
    resp.add("Supported", SUPPORTED)
    resp.add("Date", _http_date(int(now)))
    return resp


@functools.lru_cache(maxsize=2)
def _http_date(second: int) -> str:
    """The Date header (RFC 3261 §20.17) for one second, formatted once per second."""
    return email.utils.formatdate(second, usegmt=True)


class Registrar:
    """:func:`process_register` bound to a store and config, with counters."""

    def __init__(self, store: LocationStore, cfg: RegistrarConfig) -> None:
        self.store = store
        self.cfg = cfg
        self._stats: dict[str, int] = {
            "registrar_requests": 0, "registrar_ok": 0, "registrar_rejected": 0,
            "registrar_bindings_added": 0, "registrar_bindings_refreshed": 0,
            "registrar_bindings_removed": 0, "registrar_storage_errors": 0,
        }

    def handle(self, request: Request, now_wall: float, flow: str = "", received: str = "",
               socket: str = "", node_path: str = "") -> RegisterOutcome:
        out = process_register(request, self.store, self.cfg, now_wall, flow, received, socket, node_path)
        s = self._stats
        s["registrar_requests"] += 1
        if out.response.status == 200:
            s["registrar_ok"] += 1
        else:
            s["registrar_rejected"] += 1
            if out.response.reason == "Storage failure":
                s["registrar_storage_errors"] += 1
        s["registrar_bindings_added"] += len(out.added)
        s["registrar_bindings_refreshed"] += len(out.refreshed)
        s["registrar_bindings_removed"] += len(out.removed)
        return out

    def stats(self) -> dict[str, int | float]:
        return dict(self._stats)


__all__ = ["SUPPORTED", "RegisterOutcome", "Registrar", "contacts_equal", "process_register", "register"]
