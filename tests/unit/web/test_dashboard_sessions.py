"""Dashboard sessions: random, expiring, bounded, ended by logout."""

from __future__ import annotations

from sipedge.web.dashboard import Sessions


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
