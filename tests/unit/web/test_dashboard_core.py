"""Dashboard sessions (random, expiring, bounded, ended by logout) and snapshots (bounded,
read-only, a role that is not running said so)."""

from __future__ import annotations

import asyncio
from typing import Any

from sipedge.server.control import ControlError
from sipedge.web.dashboard import MAX_MEDIA_QUERIES, MAX_ROWS, Dashboard, Sessions


def test_a_session_expires_and_is_then_forgotten() -> None:
    sessions = Sessions(lifetime=10.0)
    sid = sessions.open(100.0)
    assert len(sid) >= 40 and sessions.valid(sid, 109.9)
    assert not sessions.valid(sid, 110.0)
    assert len(sessions) == 0 and not sessions.valid(sid, 100.0)


def test_unknown_empty_and_closed_sessions_are_refused() -> None:
    sessions = Sessions()
    sid = sessions.open(0.0)
    other = sessions.open(0.0)
    assert sid != other
    assert not sessions.valid(None, 0.0) and not sessions.valid("", 0.0) and not sessions.valid(sid + "x", 0.0)
    sessions.close(sid)
    sessions.close(None)
    sessions.close("never-opened")
    assert not sessions.valid(sid, 0.0) and sessions.valid(other, 0.0)


def test_at_most_limit_sessions_the_oldest_dropped_first() -> None:
    sessions = Sessions(limit=3)
    ids = [sessions.open(float(n)) for n in range(5)]
    assert len(sessions) == 3
    assert [sessions.valid(s, 5.0) for s in ids] == [False, False, True, True, True]


class FakeCommands:
    """The control API's answers: many registrations, no TURN, one relayed call."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    async def call(self, method: str, params: dict[str, Any]) -> Any:
        self.asked.append(method)
        if method == "ul.dump":
            return [{"aor": f"sip:u{n}@x"} for n in range(MAX_ROWS + 5)]
        if method == "turn.allocations":
            raise ControlError(503, "the TURN server is not running here")
        if method == "media.list":
            return [{"call_id": f"c{n}"} for n in range(MAX_MEDIA_QUERIES + 3)]
        if method == "media.query":
            return {"call_id": params["call_id"], "tags": {}}
        return [] if method == "ban.list" else {"sip_requests_received": 1}


def test_a_snapshot_is_bounded_and_says_what_it_left_out() -> None:
    commands = FakeCommands()
    snap = asyncio.run(Dashboard(commands, "t" * 40, {}).snapshot())
    assert len(snap["registrations"]) == MAX_ROWS and snap["registrations_total"] == MAX_ROWS + 5
    assert snap["turn"] == {"error": "the TURN server is not running here"}
    assert len(snap["media"]) == MAX_MEDIA_QUERIES and snap["media_total"] == MAX_MEDIA_QUERIES + 3
    assert commands.asked.count("media.query") == MAX_MEDIA_QUERIES
    assert snap["bans"] == [] and snap["stats"] == {"sip_requests_received": 1}
    assert not {"ul.rm", "ban.add", "ban.rm", "reload"} & set(commands.asked)
