"""Dialog state and accounting for the calls the proxy record-routes, sans-I/O (as
Kamailio's ``dlg`` and ``acc`` modules). See docs/operations.md, "Dialogs".

The :class:`~sipedge.proxy.core.ProxyCore` feeds a :class:`DialogTable` with what it has
already parsed: an initial INVITE it relays (:meth:`DialogTable.start`, after
:meth:`DialogTable.refuse` checked the limits), the responses it forwards upstream
(:meth:`DialogTable.response`) and the in-dialog requests it relays
(:meth:`DialogTable.request`). A call goes ``trying`` → ``early`` (a 1xx with a To tag;
one early dialog per tag of a forked call) → ``confirmed`` (the 2xx; the other early
dialogs are gone) → ``terminated`` (a BYE's final response, a failure of the INVITE, a
CANCEL's 487, or a timeout). Re-INVITE and UPDATE keep the dialog and refresh its session
timer (RFC 4028).

Timeouts (all wall-clock epoch seconds, so they survive a restart): a call that never
gets a final answer (``setup_timeout``), a confirmed call whose ACK never comes
(``ack_timeout``), a session timer nobody refreshed, and ``max_lifetime``. A timeout, a
media timeout or ``dlg.end`` ends the call from the server: :meth:`DialogTable.end`
returns the two BYE requests (each with the route set, From/To and a CSeq above the last
its sender used, as Kamailio's ``dlg_end_dlg``), which the core sends.

Every call attempt leaves one :class:`Cdr` when it terminates (answered or not); they and
the dialogs' changes go to the :class:`DialogStore` (write-through: a restart loads the
calls back).
"""

from __future__ import annotations

import copy
import heapq
from collections.abc import Iterable
from dataclasses import dataclass, field, fields
from typing import Any, Protocol

from ..config.dialog import DialogConfig
from ..errors import ParseError
from ..sip.message import Request, Response

TRYING, EARLY, CONFIRMED, TERMINATED = "trying", "early", "confirmed", "terminated"
HARD_MAX = 200_000
"""Calls tracked at most whatever ``max_total`` says: one more is refused with 503."""
MAX_EARLY_TAGS = 16  # early dialogs (forked 1xx To tags) remembered per call


@dataclass(slots=True)
class Leg:
    """One party as the proxy reaches it: the Request-URI and Route set of a request to it,
    where that goes when the route is empty (``dest``: a flow token or
    ``transport:host:port``), its own name-addr with tag, the highest CSeq it sent."""

    uri: str = ""
    route: list[str] = field(default_factory=list)
    dest: str = ""
    party: str = ""  # its From (caller) or To (callee) header, with its tag
    cseq: int = 0
    call_id: str = ""  # the Call-ID this party knows the call by, when not the call's (masked)


@dataclass(slots=True)
class Dialog:
    call_id: str
    from_tag: str
    caller: str  # the From URI
    callee: str  # the Request-URI as received
    user: str  # the authenticated caller ("" when none)
    source: str  # the caller's IP address
    start: float
    state: str = TRYING
    to_tag: str = ""
    early_tags: list[str] = field(default_factory=list)
    answer: float = 0.0
    end: float = 0.0
    status: int = 0
    reason: str = ""
    caller_leg: Leg = field(default_factory=Leg)
    callee_leg: Leg = field(default_factory=Leg)
    upstream_routes: int = 0  # Record-Route entries the INVITE carried when it reached us
    relayed_routes: int = 0  # ... and when it left (ours added)
    bye_pending: bool = False
    ack_due: float = 0.0  # a 2xx went out: the ACK must come by then
    session_expires: int = 0  # RFC 4028 interval (0: no session timer)
    refresher: str = ""
    expires_at: float = 0.0  # the session timer's expiry (0: none)
    ended_by: str = ""  # who ended it: "caller", "callee", or the server's reason

    def deadline(self, setup: float, lifetime: float) -> float:
        """When this call must have moved on (0: never)."""
        if self.state in (TRYING, EARLY):
            return self.start + setup
        times = [t for t in (self.ack_due, self.expires_at) if t]
        if lifetime:
            times.append(self.answer + lifetime)
        return min(times) if times else 0.0

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready copy (by hand: ``dataclasses.asdict`` costs a call's worth of CPU)."""
        out = {name: getattr(self, name) for name in _DIALOG_FIELDS}
        out["early_tags"] = list(self.early_tags)
        for name in ("caller_leg", "callee_leg"):
            leg: Leg = out[name]
            out[name] = {"uri": leg.uri, "route": list(leg.route), "dest": leg.dest, "party": leg.party,
                         "cseq": leg.cseq, "call_id": leg.call_id}
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Dialog:
        data = dict(data)
        caller, callee = Leg(**data.pop("caller_leg")), Leg(**data.pop("callee_leg"))
        return cls(**data, caller_leg=caller, callee_leg=callee)

    def summary(self, now: float) -> dict[str, Any]:
        """The view of ``dlg.list`` / ``dlg.show``."""
        return {
            "call_id": self.call_id,
            "state": self.state,
            "caller": self.caller,
            "callee": self.callee,
            "user": self.user,
            "source": self.source,
            "from_tag": self.from_tag,
            "to_tag": self.to_tag,
            "early_tags": list(self.early_tags),
            "start": self.start,
            "answer": self.answer or None,
            "duration": round(now - self.answer, 1) if self.answer else 0,
            "session_expires": self.session_expires,
            "expires_in": round(self.expires_at - now, 1) if self.expires_at else None,
        }


_DIALOG_FIELDS = tuple(f.name for f in fields(Dialog))


@dataclass(frozen=True, slots=True)
class Cdr:
    """One call attempt's record (Kamailio acc): ``status`` the final SIP status (200 for
    an answered call), ``ended_by`` who hung up or why the server ended it."""

    call_id: str
    caller: str
    callee: str
    user: str
    source: str
    start: float
    answer: float | None
    end: float
    duration: float
    status: int
    reason: str
    ended_by: str
    from_tag: str = ""
    to_tag: str = ""
    media: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready copy, by hand as :meth:`Dialog.to_json` (``asdict`` walked every
        field through its generic recursion: about 45 calls per CDR)."""
        out = {name: getattr(self, name) for name in _CDR_FIELDS}
        out["media"] = copy.deepcopy(self.media) if self.media else {}
        return out


_CDR_FIELDS = tuple(f.name for f in fields(Cdr))


class DialogStore(Protocol):
    """Where dialogs are kept across a restart, and CDRs written (store/dialogs.py)."""

    def load_dialogs(self) -> list[Dialog]: ...
    def save_dialog(self, dialog: Dialog) -> None: ...
    def delete_dialog(self, call_id: str) -> None: ...
    def add_cdr(self, cdr: Cdr) -> None: ...


class MemoryDialogStore:
    """A :class:`DialogStore` in memory (tests; a process without a database)."""

    def __init__(self) -> None:
        self.dialogs: dict[str, dict[str, Any]] = {}
        self.cdrs: list[Cdr] = []

    def load_dialogs(self) -> list[Dialog]:
        return [Dialog.from_json(d) for d in self.dialogs.values()]

    def save_dialog(self, dialog: Dialog) -> None:
        self.dialogs[dialog.call_id] = dialog.to_json()

    def delete_dialog(self, call_id: str) -> None:
        self.dialogs.pop(call_id, None)

    def add_cdr(self, cdr: Cdr) -> None:
        self.cdrs.append(cdr)


@dataclass(frozen=True, slots=True)
class Bye:
    """A BYE the server sends to end a dialog: ``dest`` as :attr:`Leg.dest`, used when
    the request has no Route."""

    request: Request
    dest: str


def reason_header(status: int, text: str) -> str:
    """An RFC 3326 Reason header value."""
    quoted = text.replace("\\", "\\\\").replace('"', '\\"')
    return f'SIP;cause={status};text="{quoted}"'


def session_expires(msg: Request | Response) -> tuple[int, str] | None:
    """RFC 4028 ``Session-Expires: delta[;refresher=uac|uas]`` (or its compact ``x``);
    None when absent; ParseError when it is not a number."""
    value = msg.get("session-expires") or msg.get("x")
    if value is None:
        return None
    delta, _, params = value.partition(";")
    delta = delta.strip()
    if not delta.isdigit() or len(delta) > 9:
        raise ParseError(f"Session-Expires {value[:40]!r} is not delta-seconds", hint=(400, "Bad Session-Expires"))
    refresher = ""
    for p in params.split(";"):
        name, _, v = p.partition("=")
        if name.strip().lower() == "refresher":
            refresher = v.strip().lower()
    return int(delta), refresher


class DialogTable:
    """The proxy's calls, by Call-ID; see the module docstring."""

    def __init__(self, config: DialogConfig, store: DialogStore | None = None, timer_c: float = 0.0) -> None:
        self.config = config
        # a call unanswered for setup_timeout is forgotten, but never before the proxy's
        # Timer C (and the CANCEL after it) could end it
        self.setup_timeout = max(config.setup_timeout, timer_c + 32.0)
        self.store: DialogStore = store if store is not None else MemoryDialogStore()
        self.dialogs: dict[str, Dialog] = {}
        self._per_user: dict[str, int] = {}
        self._per_source: dict[str, int] = {}
        self._timers: list[tuple[float, str]] = []
        self.counters: dict[str, int] = {
            "dialogs_started": 0,
            "dialogs_confirmed": 0,
            "dialogs_terminated": 0,
            "dialogs_failed": 0,
            "dialogs_ended_by_server": 0,
            "dialogs_timed_out": 0,
            "dialogs_session_expired": 0,
            "dialogs_refused_user": 0,
            "dialogs_refused_source": 0,
            "dialogs_refused_total": 0,
            "dialogs_refused_session_interval": 0,
            "cdrs_written": 0,
        }
        for d in self.store.load_dialogs():
            self._add(d)

    # -- limits --------------------------------------------------------------------
    def refuse(self, user: str, source: str) -> tuple[int, str, str] | None:
        """The (status, reason phrase, Reason header) refusing a new call from ``user`` at
        ``source``, or None when every limit allows it."""
        cfg = self.config
        if cfg.max_per_user and user and self._per_user.get(user, 0) >= cfg.max_per_user:
            self.counters["dialogs_refused_user"] += 1
            return 486, "Busy Here", reason_header(486, f"max_per_user {cfg.max_per_user} reached")
        if cfg.max_per_source and self._per_source.get(source, 0) >= cfg.max_per_source:
            self.counters["dialogs_refused_source"] += 1
            return 503, "Service Unavailable", reason_header(503, f"max_per_source {cfg.max_per_source} reached")
        if (cfg.max_total and len(self.dialogs) >= cfg.max_total) or len(self.dialogs) >= HARD_MAX:
            self.counters["dialogs_refused_total"] += 1
            limit = cfg.max_total or HARD_MAX
            return 503, "Service Unavailable", reason_header(503, f"max_total {limit} reached")
        return None

    def interval_too_small(self, req: Request) -> int | None:
        """RFC 4028 §8.1: the Min-SE to answer with 422 when ``req`` asks for a session
        interval below ``session_expires_min`` (None: acceptable)."""
        asked = session_expires(req)
        if asked is None or asked[0] >= self.config.session_expires_min:
            return None
        self.counters["dialogs_refused_session_interval"] += 1
        return self.config.session_expires_min

    # -- what the core feeds -----------------------------------------------------------
    def start(self, req: Request, flow_token: str, user: str, source: str, wall: float) -> Dialog | None:
        """An initial INVITE the proxy relays with Record-Route."""
        call_id = req.call_id
        if call_id in self.dialogs:
            return None  # a second INVITE for a call we follow (a spiral): the first counts
        dlg = Dialog(
            call_id=call_id,
            from_tag=req.from_.tag or "",
            caller=str(req.from_.uri),
            callee=req.uri,
            user=user,
            source=source,
            start=wall,
            upstream_routes=req.count("record-route"),
        )
        contacts = req.contacts
        dlg.caller_leg = Leg(
            uri=str(contacts[0].uri) if isinstance(contacts, list) and contacts else str(req.from_.uri),
            route=req.get_all("record-route"),  # the hops between us and the caller, nearest first
            dest=flow_token,
            party=req.get("from") or "",
            cseq=req.cseq.number,
        )
        self._add(dlg)
        self.counters["dialogs_started"] += 1
        self._save(dlg)
        return dlg

    def refused(self, req: Request, user: str, source: str, status: int, reason: str, wall: float) -> None:
        """An initial INVITE the proxy answered itself with a failure (404, 480, a limit's
        486/503...): a CDR of a call that never rang. Challenges (401/407) are not calls."""
        if status < 300 or status in (401, 407) or req.call_id in self.dialogs:
            return
        self.counters["dialogs_failed"] += 1
        never = Dialog(call_id=req.call_id, from_tag=req.from_.tag or "", caller=str(req.from_.uri), callee=req.uri,
                       user=user, source=source, start=wall, state=TERMINATED, end=wall, status=status,
                       reason=reason, ended_by="proxy")
        self.store.add_cdr(cdr_of(never))
        self.counters["cdrs_written"] += 1

    def relayed(self, call_id: str, req: Request) -> None:
        """A branch of the initial INVITE left (with our Record-Route)."""
        dlg = self.dialogs.get(call_id)
        if dlg is not None and dlg.state in (TRYING, EARLY):
            dlg.relayed_routes = req.count("record-route")
            if req.call_id != call_id:  # masked towards the callee (topology hiding)
                dlg.callee_leg.call_id = req.call_id

    def answered_by(self, call_id: str, dest: str) -> None:
        """The branch sent to ``dest`` answered 2xx (before its response is forwarded)."""
        dlg = self.dialogs.get(call_id)
        if dlg is not None and dlg.state in (TRYING, EARLY):
            dlg.callee_leg.dest = dest

    def request(self, req: Request, wall: float) -> Dialog | None:
        """An in-dialog request relayed: the sender's CSeq, ACK, BYE."""
        dlg = self.dialogs.get(req.get("call-id") or "")
        if dlg is None or dlg.state == TERMINATED:
            return None
        try:
            from_tag, number = req.from_.tag or "", req.cseq.number
        except ParseError:
            return None
        leg = dlg.caller_leg if from_tag == dlg.from_tag else dlg.callee_leg
        if req.method != "ACK":
            leg.cseq = max(leg.cseq, number)
        if req.method == "ACK" and dlg.ack_due:
            dlg.ack_due = 0.0
            self._schedule(dlg)
        elif req.method == "BYE":
            dlg.bye_pending = True
            dlg.ended_by = "caller" if leg is dlg.caller_leg else "callee"
        self._save(dlg)
        return dlg

    def response(self, req: Request, resp: Response, wall: float) -> Dialog | None:
        """A response the proxy forwards upstream to ``req``; returns the dialog if it
        terminated with it."""
        dlg = self.dialogs.get(req.get("call-id") or "")
        if dlg is None or dlg.state == TERMINATED:
            return None
        method = req.method
        try:
            to_tag = resp.to.tag or ""
        except ParseError:
            to_tag = ""
        if method == "INVITE" and not _to_tag(req):
            return self._initial_response(dlg, resp, to_tag, wall)
        if method == "BYE" and resp.status >= 200:
            return self._terminate(dlg, wall, dlg.status or 200, dlg.reason or "OK")
        if method in ("INVITE", "UPDATE") and 200 <= resp.status < 300:
            self._session_timer(dlg, resp, wall)
            if method == "INVITE":
                dlg.ack_due = wall + self.config.ack_timeout
            self._schedule(dlg)
            self._save(dlg)
        elif resp.status in (408, 481) and method != "ACK":
            # RFC 3261 §12.2.1.2: the dialog is gone at the other side
            dlg.ended_by = f"{resp.status} to {method}"
            return self._terminate(dlg, wall, dlg.status or 200, dlg.reason or "OK")
        return None

    def _initial_response(self, dlg: Dialog, resp: Response, to_tag: str, wall: float) -> Dialog | None:
        status = resp.status
        if status < 200:
            if to_tag and status > 100 and to_tag not in dlg.early_tags and len(dlg.early_tags) < MAX_EARLY_TAGS:
                dlg.early_tags.append(to_tag)
                if dlg.state == TRYING:
                    dlg.state = EARLY
                self._save(dlg)
            return None
        if status >= 300:
            dlg.ended_by = "cancelled" if status == 487 else "failed"
            self.counters["dialogs_failed"] += 1
            return self._terminate(dlg, wall, status, resp.reason)
        if dlg.state == CONFIRMED:
            return None  # a 2xx of another branch: the core ends that one with ACK+BYE
        dlg.state, dlg.to_tag, dlg.answer = CONFIRMED, to_tag, wall
        dlg.early_tags = []  # the other forks' early dialogs are gone
        dlg.status, dlg.reason = status, resp.reason
        contacts = resp.contacts
        callee = dlg.callee_leg
        callee.uri = str(contacts[0].uri) if isinstance(contacts, list) and contacts else dlg.callee
        rr = resp.get_all("record-route")
        downstream = rr[: max(0, len(rr) - dlg.relayed_routes)]
        callee.route = list(reversed(downstream))  # the hops between us and the callee, nearest first
        callee.party = resp.get("to") or ""
        self.counters["dialogs_confirmed"] += 1
        self._session_timer(dlg, resp, wall)
        dlg.ack_due = wall + self.config.ack_timeout
        self._schedule(dlg)
        self._save(dlg)
        return None

    def _session_timer(self, dlg: Dialog, resp: Response, wall: float) -> None:
        try:
            found = session_expires(resp)
        except ParseError:
            found = None
        if found is None:
            return
        dlg.session_expires, dlg.refresher = found
        dlg.expires_at = wall + found[0] if found[0] else 0.0

    # -- ending from the server ------------------------------------------------------------
    def end(self, call_id: str, why: str, wall: float) -> list[Bye]:
        """End ``call_id`` from the server: the BYE to each party of a confirmed call (none
        for a call not answered yet: the core CANCELs or lets it fail), the CDR written.
        KeyError when there is no such call."""
        dlg = self.dialogs[call_id]
        byes: list[Bye] = []
        if dlg.state == CONFIRMED:
            byes = [self._bye(dlg, dlg.callee_leg, dlg.caller_leg, why),
                    self._bye(dlg, dlg.caller_leg, dlg.callee_leg, why)]
        dlg.ended_by = why
        self.counters["dialogs_ended_by_server"] += 1
        status, reason = (dlg.status, dlg.reason) if dlg.state == CONFIRMED else (408, why)
        self._terminate(dlg, wall, status, reason)
        return byes

    def _bye(self, dlg: Dialog, to: Leg, sender: Leg, why: str) -> Bye:
        """A BYE to ``to`` as if ``sender`` sent it: its From, the other's To, one above its
        last CSeq."""
        sender.cseq += 1
        req = Request("BYE", to.uri)
        req.add("Max-Forwards", "70")
        req.add("From", sender.party)
        req.add("To", to.party)
        req.add("Call-ID", to.call_id or dlg.call_id)
        req.add("CSeq", f"{sender.cseq} BYE")
        for r in to.route:
            req.add("Route", r)
        req.add("Reason", reason_header(200 if dlg.state == CONFIRMED else 408, why))
        req.add("Content-Length", "0")
        return Bye(req, to.dest)

    # -- timers ---------------------------------------------------------------------------
    def next_timer(self) -> float | None:
        """The wall-clock time of the next timeout."""
        while self._timers:
            at, call_id = self._timers[0]
            dlg = self.dialogs.get(call_id)
            if dlg is not None and dlg.deadline(self.setup_timeout, self.config.max_lifetime) == at:
                return at
            heapq.heappop(self._timers)  # stale
        return None

    def expired(self, wall: float) -> list[tuple[str, str]]:
        """The calls whose deadline has passed, with why: the core ends them (:meth:`end`)."""
        out: list[tuple[str, str]] = []
        while self._timers and self._timers[0][0] <= wall:
            at, call_id = heapq.heappop(self._timers)
            dlg = self.dialogs.get(call_id)
            if dlg is None or dlg.deadline(self.setup_timeout, self.config.max_lifetime) != at or any(c == call_id for c, _ in out):
                continue  # stale, or scheduled twice for the same time
            if dlg.state in (TRYING, EARLY):
                why = "setup timeout"
            elif dlg.ack_due and dlg.ack_due <= wall:
                why = "ACK timeout"
            elif dlg.expires_at and dlg.expires_at <= wall:
                why = "session timer expired"
                self.counters["dialogs_session_expired"] += 1
            else:
                why = "max lifetime"
            self.counters["dialogs_timed_out"] += 1
            out.append((call_id, why))
        return out

    # -- bookkeeping ---------------------------------------------------------------------
    def _add(self, dlg: Dialog) -> None:
        self.dialogs[dlg.call_id] = dlg
        if dlg.user:
            self._per_user[dlg.user] = self._per_user.get(dlg.user, 0) + 1
        self._per_source[dlg.source] = self._per_source.get(dlg.source, 0) + 1
        self._schedule(dlg)

    def _schedule(self, dlg: Dialog) -> None:
        at = dlg.deadline(self.setup_timeout, self.config.max_lifetime)
        if at:
            heapq.heappush(self._timers, (at, dlg.call_id))

    def _terminate(self, dlg: Dialog, wall: float, status: int, reason: str) -> Dialog:
        dlg.state, dlg.end = TERMINATED, wall
        dlg.status, dlg.reason = status, reason
        if not dlg.ended_by:
            dlg.ended_by = "caller"
        self.dialogs.pop(dlg.call_id, None)
        _decrement(self._per_user, dlg.user)
        _decrement(self._per_source, dlg.source)
        self.counters["dialogs_terminated"] += 1
        self.store.delete_dialog(dlg.call_id)
        self.store.add_cdr(cdr_of(dlg))
        self.counters["cdrs_written"] += 1
        return dlg

    def _save(self, dlg: Dialog) -> None:
        self.store.save_dialog(dlg)

    def active(self) -> Iterable[Dialog]:
        return self.dialogs.values()

    def stats(self) -> dict[str, int | float]:
        out: dict[str, int | float] = dict(self.counters)
        out["dialogs_active"] = len(self.dialogs)
        out["dialogs_confirmed_active"] = sum(1 for d in self.dialogs.values() if d.state == CONFIRMED)
        return out


def cdr_of(dlg: Dialog) -> Cdr:
    answered = dlg.answer or None
    return Cdr(
        call_id=dlg.call_id,
        caller=dlg.caller,
        callee=dlg.callee,
        user=dlg.user,
        source=dlg.source,
        start=dlg.start,
        answer=answered,
        end=dlg.end,
        duration=round(dlg.end - dlg.answer, 3) if answered else 0.0,
        status=dlg.status,
        reason=dlg.reason,
        ended_by=dlg.ended_by,
        from_tag=dlg.from_tag,
        to_tag=dlg.to_tag,
    )


def _decrement(counts: dict[str, int], key: str) -> None:
    if not key:
        return
    n = counts.get(key, 0) - 1
    if n > 0:
        counts[key] = n
    else:
        counts.pop(key, None)


def _to_tag(req: Request) -> str | None:
    try:
        return req.to.tag
    except ParseError:
        return None
