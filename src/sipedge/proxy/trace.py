"""A bounded per-call SIP message trace, for ladder diagrams (sans-I/O, ``now`` passed in).

The SIP adapter hands every message the proxy receives or sends to :meth:`TraceStore.record`
with its direction, transport and addresses. Recording is cheap on purpose: it finds the
Call-ID (one bounded regular-expression search of the header block) and keeps the raw
bytes; nothing else is parsed until someone asks. :meth:`TraceStore.calls` and
:meth:`TraceStore.show` (``sipedge ctl trace list`` / ``trace show``, the dashboard's
ladder) parse the kept bytes then, leniently: a message too broken to read still shows
its first line.

Every dimension is bounded, since every byte of it comes from peers: at most
``max_calls`` Call-IDs (the one least recently active forgotten first), ``max_messages``
per call (its oldest forgotten first, counted in :attr:`CallTrace.dropped`) and
``max_bytes`` kept of each message (the rest cut and the original size kept). Messages
without a Call-ID (keepalive CRLFs, garbage) are counted and not kept. A Call-ID longer
than :data:`MAX_CALL_ID` is cut.
"""

from __future__ import annotations

import re
from collections import OrderedDict, deque
from dataclasses import dataclass
from typing import Any

from .._common.addr import Address
from ..sip.flow import Flow, Target
from ..sip.headers import canonical

MAX_CALL_ID = 256
"""Characters of a Call-ID kept as the grouping key."""
_SCAN = 4096
"""Bytes of a message searched for its Call-ID (it is in the header block)."""
_CALL_ID = re.compile(rb"\n(?:call-id|i)[ \t]*:[ \t]*([^\r\n]+)", re.IGNORECASE)
_STATUS = re.compile(r"SIP/2\.0[ \t]+(\d{3})")
_WANTED = frozenset(("from", "to", "cseq", "call-id"))



def call_id_of(data: bytes) -> str | None:
    """The Call-ID of a raw SIP message (its first Call-ID or ``i`` header), None if none."""
    start = data.find(b"\nCall-ID:", 0, _SCAN)  # the usual spelling: no regular expression
    if start >= 0:
        end = data.find(b"\n", start + 9)
        value = data[start + 9:end if end >= 0 else len(data)].strip()
    else:
        m = _CALL_ID.search(data, 0, _SCAN)
        if m is None:
            return None
        value = m.group(1).strip()
    if not value:
        return None
    return value[:MAX_CALL_ID].decode("utf-8", "replace")


@dataclass(slots=True)  # not frozen: that costs a setattr call per field, per message
class TraceEntry:
    """One message as it passed: raw bytes (cut at the store's byte cap) and where."""

    seq: int
    time: float
    direction: str  # "in" (received) | "out" (sent)
    transport: str
    local: Address | None  # None: the transport chose it (a send to a resolved target)
    remote: Address
    data: bytes
    size: int  # the message's size before any cut

    def view(self) -> dict[str, Any]:
        """The parsed view: first line, the headers a ladder needs, the whole text."""
        first, headers = parse_head(self.data)
        return {
            "seq": self.seq,
            "time": self.time,
            "direction": self.direction,
            "transport": self.transport,
            "local": _hostport(self.local) if self.local is not None else None,
            "remote": _hostport(self.remote),
            "first_line": first,
            "from": headers.get("from"),
            "to": headers.get("to"),
            "cseq": headers.get("cseq"),
            "size": self.size,
            "truncated": self.size > len(self.data),
            "message": self.data.decode("utf-8", "replace"),
        }


@dataclass(slots=True)
class CallTrace:
    call_id: str
    entries: deque[TraceEntry]
    first: float
    last: float
    last_seq: int = 0
    dropped: int = 0  # messages forgotten because the call had max_messages
    # what summary() has read so far (up to sequence number _parsed)
    _parsed: int = 0
    _caller_known: bool = False
    _from: str | None = None
    _to: str | None = None
    _status: int | None = None
    _invite_status: int | None = None

    def summary(self) -> dict[str, Any]:
        """Call-ID, From and To of its first request, times, message count and the final
        status of its INVITE (else of its last other request). Each message is parsed once,
        when a summary is first asked for after it came."""
        for entry in self.entries:
            if entry.seq <= self._parsed:
                continue
            self._parsed = entry.seq
            first, headers = parse_head(entry.data)
            if not self._caller_known and not first.startswith("SIP/"):
                self._caller_known = True
                self._from, self._to = headers.get("from"), headers.get("to")
            m = _STATUS.match(first)
            if m is None or int(m.group(1)) < 200:
                continue
            method = (headers.get("cseq") or "").rpartition(" ")[2].upper()
            if method == "INVITE":
                self._invite_status = int(m.group(1))
            elif method != "ACK":
                self._status = int(m.group(1))
        return {
            "call_id": self.call_id,
            "from": self._from,
            "to": self._to,
            "first": self.first,
            "last": self.last,
            "messages": len(self.entries) + self.dropped,
            "kept": len(self.entries),
            "status": self._invite_status if self._invite_status is not None else self._status,
        }


def parse_head(data: bytes) -> tuple[str, dict[str, str]]:
    """First line and the From/To/CSeq/Call-ID values of a raw message, leniently: any
    bytes give an answer (a missing header is absent, bad UTF-8 is replaced)."""
    head = data.split(b"\r\n\r\n", 1)[0].decode("utf-8", "replace")
    lines = head.replace("\r\n", "\n").split("\n")
    first = lines[0].strip()[:512]
    headers: dict[str, str] = {}
    last: str | None = None
    for line in lines[1:]:
        if line[:1] in (" ", "\t") and last is not None:  # a folded continuation
            headers[last] += " " + line.strip()
            continue
        name, sep, value = line.partition(":")
        last = None
        if not sep:
            continue
        key = canonical(name)
        if key in _WANTED and key not in headers:
            headers[key] = value.strip()
            last = key
    return first, headers


class TraceStore:
    """The most recent ``max_calls`` calls' messages, grouped by Call-ID."""

    def __init__(self, max_calls: int = 200, max_messages: int = 200, max_bytes: int = 16384) -> None:
        if max_calls < 1 or max_messages < 1 or max_bytes < 1:
            raise ValueError("trace bounds must be at least 1")
        self.max_calls = max_calls
        self.max_messages = max_messages
        self.max_bytes = max_bytes
        self._calls: OrderedDict[str, CallTrace] = OrderedDict()
        self.seq = 0
        """Sequence number of the last recorded message: a cheap "anything new?"."""
        self.counters: dict[str, int] = {
            "trace_messages": 0,
            "trace_no_call_id": 0,
            "trace_truncated": 0,
            "trace_calls_forgotten": 0,
            "trace_messages_forgotten": 0,
        }

    def record(self, data: bytes, direction: str, transport: str, local: Address | None,
               remote: Address, now: float) -> None:
        """Keep one message (``now``: wall-clock seconds, for people reading the trace)."""
        counters = self.counters
        call_id = call_id_of(data)
        if call_id is None:
            counters["trace_no_call_id"] += 1
            return
        size = len(data)
        if size > self.max_bytes:
            data = data[: self.max_bytes]
            counters["trace_truncated"] += 1
        self.seq += 1
        counters["trace_messages"] += 1
        entry = TraceEntry(self.seq, now, direction, transport, local, remote, data, size)
        calls = self._calls
        call = calls.get(call_id)
        if call is None:
            call = calls[call_id] = CallTrace(call_id, deque(maxlen=self.max_messages), now, now)
            if len(calls) > self.max_calls:
                calls.popitem(last=False)
                counters["trace_calls_forgotten"] += 1
        else:
            calls.move_to_end(call_id)
            if len(call.entries) == self.max_messages:
                call.dropped += 1
                counters["trace_messages_forgotten"] += 1
        call.entries.append(entry)
        call.last = now
        call.last_seq = self.seq

    def sent(self, data: bytes, where: Flow | Target | None, now: float) -> None:
        """Keep a message sent on a flow, or to a target (whose local address the transport
        picks: None here)."""
        if isinstance(where, Flow):
            self.record(data, "out", where.transport, where.local, where.remote, now)
        elif where is not None:
            self.record(data, "out", where.transport, None, (where.host, where.port), now)

    def calls(self, since: int = 0) -> list[dict[str, Any]]:
        """Summaries of the calls, most recently active first; with ``since``, only those
        with a message after that sequence number."""
        out = []
        for call in reversed(self._calls.values()):
            if call.last_seq <= since:
                break
            out.append(call.summary())
        return out

    def show(self, call_id: str) -> list[dict[str, Any]] | None:
        """The kept messages of one call in the order they passed; None if unknown."""
        call = self._calls.get(call_id)
        if call is None:
            return None
        return [e.view() for e in call.entries]

    def __len__(self) -> int:
        return len(self._calls)

    def stats(self) -> dict[str, int]:
        return {**self.counters, "trace_calls": len(self._calls)}


def _hostport(addr: Address) -> str:
    host, port = addr[0], addr[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
