"""Dialog state, limits, session timers and CDRs of the proxy (proxy/dialog.py), driven
through ProxyCore with bytes in and bytes out: no sockets, a fake clock."""

from __future__ import annotations

from typing import Any

import pytest

from sipedge._common.clock import FakeClock
from sipedge.config import parse_config
from sipedge.proxy import dialog as dlgs
from sipedge.proxy.core import ProxyCore
from sipedge.proxy.identity import Identity, Listener
from sipedge.proxy.location import Binding, MemoryLocationStore, MemorySubscriberStore
from sipedge.proxy.routing import load_router
from sipedge.sip import message as m
from sipedge.sip.flow import Flow, Target

ME = ("127.0.0.1", 5060)
CALLER = Flow("udp", ME, ("127.0.0.1", 6000))


def make_core(dialog: dict[str, Any] | None = None, ports: tuple[int, ...] = (7001,),
              store: dlgs.MemoryDialogStore | None = None,
              clock: FakeClock | None = None) -> tuple[ProxyCore, FakeClock, dlgs.MemoryDialogStore]:
    clock = clock or FakeClock()
    config = parse_config({"auth": {"invite": False, "register": False}, "dialog": dialog or {}})
    location = MemoryLocationStore()
    for port in ports:
        location.put(Binding("sip:bob@127.0.0.1", f"sip:bob@127.0.0.1:{port}", clock.wall() + 6000))
    store = store if store is not None else dlgs.MemoryDialogStore()
    core = ProxyCore(
        config, Identity([Listener("udp", *ME)]), location, MemorySubscriberStore(),
        load_router("sipedge.proxy.default_routing"), clock, secret=b"s" * 32,
        dialogs=dlgs.DialogTable(config.dialog, store, timer_c=config.sip.timers.timer_c),
    )
    return core, clock, store


def invite(call_id: str = "dlg-1", port: int = 6000, headers: str = "") -> bytes:
    return (
        f"INVITE sip:bob@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK{call_id}\r\n"
        f"Max-Forwards: 70\r\nFrom: <sip:alice@127.0.0.1>;tag=a1\r\nTo: <sip:bob@127.0.0.1>\r\n"
        f"Call-ID: {call_id}\r\nCSeq: 5 INVITE\r\nContact: <sip:alice@127.0.0.1:{port}>\r\n{headers}"
        "Content-Length: 0\r\n\r\n"
    ).encode()


def sent(core: ProxyCore) -> list[tuple[Any, m.Request | m.Response]]:
    return [(s.target or s.flow, m.parse(s.data)) for s in core.outgoing()]


def port(dest: Flow | Target) -> int:
    return dest.port if isinstance(dest, Target) else dest.remote[1]


def requests(out: list[tuple[Any, m.Request | m.Response]], method: str) -> list[tuple[Any, m.Request]]:
    return [(d, r) for d, r in out if isinstance(r, m.Request) and r.method == method]


def answer(core: ProxyCore, req: m.Request, port: int, status: int, now: float, tag: str | None = None,
           headers: dict[str, str] | None = None) -> None:
    resp = m.make_response(req, status, to_tag=tag or f"t{port}")
    for rr in req.get_all("record-route"):
        resp.add("Record-Route", rr)
    if status < 300:
        resp.add("Contact", f"<sip:bob@127.0.0.1:{port}>")
    for k, v in (headers or {}).items():
        resp.add(k, v)
    core.receive(resp.serialize(), Flow("udp", ME, ("127.0.0.1", port)), now)


def in_dialog(method: str, cseq: int, call_id: str = "dlg-1", from_callee: bool = False, route: str = "") -> bytes:
    if from_callee:
        head = (f"{method} sip:alice@127.0.0.1:6000 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:7001;branch=z9hG4bKb{cseq}\r\n"
                f"From: <sip:bob@127.0.0.1>;tag=t7001\r\nTo: <sip:alice@127.0.0.1>;tag=a1\r\n")
    else:
        head = (f"{method} sip:bob@127.0.0.1:7001 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:6000;branch=z9hG4bKa{cseq}{method}\r\n"
                f"From: <sip:alice@127.0.0.1>;tag=a1\r\nTo: <sip:bob@127.0.0.1>;tag=t7001\r\n")
    return (head + f"Max-Forwards: 70\r\nCall-ID: {call_id}\r\nCSeq: {cseq} {method}\r\nRoute: {route}\r\n"
            "Content-Length: 0\r\n\r\n").encode()


def establish(core: ProxyCore, clock: FakeClock, call_id: str = "dlg-1",
              headers: dict[str, str] | None = None) -> tuple[m.Request, str]:
    core.receive(invite(call_id), CALLER, clock.now)
    ((_, branch),) = requests(sent(core), "INVITE")
    answer(core, branch, 7001, 180, clock.now)
    answer(core, branch, 7001, 200, clock.now, headers=headers)
    out = sent(core)
    assert [r.status for _, r in out if isinstance(r, m.Response)] == [180, 200]
    route = branch.get_all("record-route")[0]
    return branch, route


def test_states_from_trying_to_terminated_with_a_cdr() -> None:
    core, clock, store = make_core()
    core.receive(invite(), CALLER, clock.now)
    assert core.dialogs is not None
    dlg = core.dialogs.dialogs["dlg-1"]
    assert dlg.state == dlgs.TRYING
    ((_, branch),) = requests(sent(core), "INVITE")
    answer(core, branch, 7001, 180, clock.now)
    assert dlg.state == dlgs.EARLY and dlg.early_tags == ["t7001"]
    clock.advance(2)
    answer(core, branch, 7001, 200, clock.now)
    assert dlg.state == dlgs.CONFIRMED and dlg.to_tag == "t7001" and dlg.early_tags == []
    assert store.dialogs["dlg-1"]["state"] == "confirmed"  # written through
    route = branch.get_all("record-route")[0]
    core.receive(in_dialog("ACK", 5, route=route), CALLER, clock.now)
    assert dlg.ack_due == 0.0
    clock.advance(30)
    core.receive(in_dialog("BYE", 6, route=route), CALLER, clock.now)
    ((_, bye),) = requests(sent(core), "BYE")
    assert "dlg-1" in core.dialogs.dialogs  # until the BYE's answer
    answer(core, bye, 7001, 200, clock.now)
    assert "dlg-1" not in core.dialogs.dialogs and "dlg-1" not in store.dialogs
    (cdr,) = store.cdrs
    assert (cdr.status, cdr.ended_by, cdr.duration) == (200, "caller", 30.0)
    assert cdr.caller == "sip:alice@127.0.0.1" and cdr.callee == "sip:bob@127.0.0.1" and cdr.source == "127.0.0.1"
    assert core.stats()["dialogs_terminated"] == 1


@pytest.mark.parametrize(("status", "ended_by"), [(486, "failed"), (404, "failed"), (487, "cancelled")])
def test_a_failed_attempt_leaves_a_cdr_with_its_status(status: int, ended_by: str) -> None:
    core, clock, store = make_core()
    core.receive(invite(), CALLER, clock.now)
    ((_, branch),) = requests(sent(core), "INVITE")
    answer(core, branch, 7001, status, clock.now)
    (cdr,) = store.cdrs
    assert (cdr.status, cdr.ended_by, cdr.answer, cdr.duration) == (status, ended_by, None, 0.0)
    assert core.dialogs is not None and not core.dialogs.dialogs


def test_a_fork_has_an_early_dialog_per_tag_and_the_winner_is_confirmed() -> None:
    core, clock, store = make_core(ports=(7001, 7002))
    core.receive(invite(), CALLER, clock.now)
    branches = {port(d): r for d, r in requests(sent(core), "INVITE")}
    answer(core, branches[7001], 7001, 180, clock.now)
    answer(core, branches[7002], 7002, 183, clock.now)
    assert core.dialogs is not None
    dlg = core.dialogs.dialogs["dlg-1"]
    assert dlg.early_tags == ["t7001", "t7002"]
    answer(core, branches[7002], 7002, 200, clock.now)
    assert dlg.state == dlgs.CONFIRMED and dlg.to_tag == "t7002" and dlg.early_tags == []
    assert dlg.callee_leg.dest.endswith(":7002:127.0.0.1")


def test_re_invite_keeps_the_dialog_and_refreshes_its_session_timer() -> None:
    core, clock, store = make_core({"session_expires_min": 5})
    _, route = establish(core, clock, headers={"Session-Expires": "10;refresher=uac"})
    assert core.dialogs is not None
    dlg = core.dialogs.dialogs["dlg-1"]
    assert (dlg.session_expires, dlg.refresher) == (10, "uac")
    core.receive(in_dialog("ACK", 5, route=route), CALLER, clock.now)
    clock.advance(8)
    core.receive(in_dialog("INVITE", 6, route=route), CALLER, clock.now)
    ((_, reinvite),) = requests(sent(core), "INVITE")
    answer(core, reinvite, 7001, 200, clock.now, headers={"Session-Expires": "10;refresher=uac"})
    core.receive(in_dialog("ACK", 6, route=route), CALLER, clock.now)
    sent(core)
    clock.advance(8)  # 16 s after the start, 8 after the refresh: still up
    core.handle_timer(clock.now)
    assert "dlg-1" in core.dialogs.dialogs and dlg.caller_leg.cseq == 6
    clock.advance(3)
    when = core.get_timer()
    assert when is not None and when <= clock.now
    core.handle_timer(clock.now)
    byes = requests(sent(core), "BYE")
    assert sorted(port(d) for d, _ in byes) == [6000, 7001]
    to_callee = next(r for d, r in byes if port(d) == 7001)
    to_caller = next(r for d, r in byes if port(d) == 6000)
    # as each side expects: the caller's From and a CSeq above its last towards the callee,
    # the callee's identity towards the caller
    assert to_callee.from_.tag == "a1" and to_callee.to.tag == "t7001" and to_callee.cseq.number == 7
    assert to_caller.from_.tag == "t7001" and to_caller.to.tag == "a1" and to_caller.uri == "sip:alice@127.0.0.1:6000"
    assert "session timer expired" in (to_callee.get("reason") or "")
    (cdr,) = store.cdrs
    assert cdr.ended_by == "session timer expired" and cdr.status == 200
    assert core.stats()["dialogs_session_expired"] == 1


def test_a_session_interval_below_the_minimum_gets_422() -> None:
    core, clock, store = make_core({"session_expires_min": 90})
    core.receive(invite(headers="Session-Expires: 30\r\n"), CALLER, clock.now)
    (resp,) = [r for _, r in sent(core) if isinstance(r, m.Response) and r.status != 100]
    assert resp.status == 422 and resp.get("min-se") == "90"
    assert core.dialogs is not None and not core.dialogs.dialogs


def test_an_unparseable_session_expires_gets_400() -> None:
    core, clock, _ = make_core()
    core.receive(invite(headers="Session-Expires: soon\r\n"), CALLER, clock.now)
    (resp,) = [r for _, r in sent(core) if isinstance(r, m.Response) and r.status != 100]
    assert resp.status == 400


def test_a_missing_ack_ends_the_call() -> None:
    core, clock, store = make_core({"ack_timeout": 4})
    establish(core, clock)
    clock.advance(5)
    core.handle_timer(clock.now)
    assert len(requests(sent(core), "BYE")) == 2
    assert store.cdrs[0].ended_by == "ACK timeout"


def test_an_early_call_that_never_answers_is_forgotten_after_timer_c() -> None:
    config = parse_config({"dialog": {"setup_timeout": 10}}).dialog
    table = dlgs.DialogTable(config, timer_c=180.0)
    req = m.parse(invite())
    assert isinstance(req, m.Request)
    table.start(req, "flow:x", "", "192.0.2.1", 1000.0)
    assert table.next_timer() == 1000.0 + 212.0  # never before Timer C and its CANCEL
    assert table.expired(1100.0) == []
    assert table.expired(1300.0) == [("dlg-1", "setup timeout")]
    table.end("dlg-1", "setup timeout", 1300.0)
    (cdr,) = table.store.cdrs  # type: ignore[attr-defined]
    assert (cdr.status, cdr.ended_by) == (408, "setup timeout")


def test_ending_a_ringing_call_cancels_its_branches() -> None:
    core, clock, store = make_core()
    core.receive(invite(), CALLER, clock.now)
    ((_, branch),) = requests(sent(core), "INVITE")
    answer(core, branch, 7001, 180, clock.now)
    sent(core)
    assert core.end_dialog("dlg-1", "ended by control", clock.now)
    assert [r.method for _, r in requests(sent(core), "CANCEL")] == ["CANCEL"]
    assert store.cdrs[0].ended_by == "ended by control"


@pytest.mark.parametrize(("limit", "status", "text"), [
    ("max_per_source", 503, "max_per_source 1"), ("max_total", 503, "max_total 1"),
])
def test_limits_refuse_the_next_call_with_a_reason(limit: str, status: int, text: str) -> None:
    core, clock, _ = make_core({limit: 1})
    core.receive(invite("one"), CALLER, clock.now)
    sent(core)
    core.receive(invite("two", port=6001), Flow("udp", ME, ("127.0.0.1", 6001)), clock.now)
    (resp,) = [r for _, r in sent(core) if isinstance(r, m.Response) and r.status != 100]
    assert resp.status == status and text in (resp.get("reason") or "")
    assert core.stats()[f"dialogs_refused_{limit.split('_')[-1]}"] == 1


def test_per_user_limit_counts_the_authenticated_caller() -> None:
    table = dlgs.DialogTable(parse_config({"dialog": {"max_per_user": 1}}).dialog)
    req = m.parse(invite("u1"))
    assert isinstance(req, m.Request)
    assert table.start(req, "flow:x", "alice@example.com", "192.0.2.1", 1.0) is not None
    refused = table.refuse("alice@example.com", "192.0.2.2")
    assert refused is not None and refused[:2] == (486, "Busy Here") and "max_per_user 1" in refused[2]
    assert table.refuse("bob@example.com", "192.0.2.1") is None
    assert table.refuse("", "192.0.2.1") is None  # unauthenticated: no user to count


def test_the_hard_ceiling_bounds_the_table() -> None:
    table = dlgs.DialogTable(parse_config({}).dialog)
    table.dialogs.update({str(i): None for i in range(dlgs.HARD_MAX)})  # type: ignore[misc]
    refused = table.refuse("", "192.0.2.1")
    assert refused is not None and refused[0] == 503


def test_a_restart_loads_the_dialog_and_a_bye_still_ends_it() -> None:
    core, clock, store = make_core()
    _, route = establish(core, clock)
    core.receive(in_dialog("ACK", 5, route=route), CALLER, clock.now)
    sent(core)
    again, _, _ = make_core(store=store, clock=clock)
    assert again.dialogs is not None and again.dialogs.dialogs["dlg-1"].state == dlgs.CONFIRMED
    again.receive(in_dialog("BYE", 1, from_callee=True, route=route), Flow("udp", ME, ("127.0.0.1", 7001)), clock.now)
    ((dest, bye),) = requests(sent(again), "BYE")
    assert port(dest) == 6000  # the caller's flow, kept across the restart
    resp = m.make_response(bye, 200)
    again.receive(resp.serialize(), CALLER, clock.now)
    assert not again.dialogs.dialogs and store.cdrs[0].ended_by == "callee"


def test_end_dialog_of_an_unknown_call_is_false() -> None:
    core, clock, _ = make_core()
    assert core.end_dialog("nope", "test", clock.now) is False


def test_session_expires_parsing() -> None:
    req = m.Request("INVITE", "sip:a@b")
    assert dlgs.session_expires(req) is None
    req.set("x", "1800 ; refresher = UAS")
    assert dlgs.session_expires(req) == (1800, "uas")
    req.set("x", "9" * 12)
    with pytest.raises(ValueError):
        dlgs.session_expires(req)


def test_a_call_the_proxy_refuses_itself_leaves_a_cdr_but_a_challenge_does_not() -> None:
    core, clock, store = make_core(ports=())
    core.receive(invite("nobody-here"), CALLER, clock.now)
    assert [r.status for _, r in sent(core) if isinstance(r, m.Response)][-1] == 404
    (cdr,) = store.cdrs
    assert (cdr.status, cdr.ended_by, cdr.call_id) == (404, "proxy", "nobody-here")
    table = core.dialogs
    assert table is not None
    req = m.parse(invite("challenged"))
    assert isinstance(req, m.Request)
    table.refused(req, "", "192.0.2.1", 407, "Proxy Authentication Required", clock.wall())
    assert len(store.cdrs) == 1


def test_an_update_refreshes_the_session_timer_too() -> None:
    core, clock, store = make_core({"session_expires_min": 5})
    _, route = establish(core, clock, headers={"Session-Expires": "10"})
    core.receive(in_dialog("ACK", 5, route=route), CALLER, clock.now)
    clock.advance(8)
    core.receive(in_dialog("UPDATE", 1, from_callee=True, route=route), Flow("udp", ME, ("127.0.0.1", 7001)), clock.now)
    ((_, update),) = requests(sent(core), "UPDATE")
    resp = m.make_response(update, 200)
    resp.add("Session-Expires", "10;refresher=uas")
    core.receive(resp.serialize(), CALLER, clock.now)
    sent(core)
    assert core.dialogs is not None
    dlg = core.dialogs.dialogs["dlg-1"]
    assert dlg.refresher == "uas" and dlg.callee_leg.cseq == 1
    clock.advance(8)
    core.handle_timer(clock.now)
    assert "dlg-1" in core.dialogs.dialogs  # refreshed 8 s ago
    clock.advance(3)
    core.handle_timer(clock.now)
    assert "dlg-1" not in core.dialogs.dialogs and store.cdrs[0].ended_by == "session timer expired"
    # the BYE to the caller carries a CSeq above the callee's UPDATE
    to_caller = next(r for d, r in requests(sent(core), "BYE") if port(d) == 6000)
    assert to_caller.cseq.number == 2


def test_a_481_to_an_in_dialog_request_ends_the_dialog() -> None:
    core, clock, store = make_core()
    _, route = establish(core, clock)
    core.receive(in_dialog("ACK", 5, route=route), CALLER, clock.now)
    core.receive(in_dialog("INFO", 6, route=route), CALLER, clock.now)
    ((_, info),) = requests(sent(core), "INFO")
    answer(core, info, 7001, 481, clock.now)
    assert core.dialogs is not None and not core.dialogs.dialogs
    assert store.cdrs[0].ended_by == "481 to INFO"


def test_a_cdrs_json_is_what_asdict_gives_with_its_own_media_copy() -> None:
    """Cdr.to_json is written by hand for speed: the same dict as dataclasses.asdict,
    nested media totals copied, not shared."""
    from dataclasses import asdict

    media = {"caller": {"packets": [1, 2]}, "lost": 0}
    for cdr in (
        dlgs.Cdr("c1", "sip:a@x", "sip:b@x", "a", "127.0.0.1", 1.0, 2.0, 5.0, 3.0, 200, "OK",
                 "caller", "ft", "tt", media),
        dlgs.Cdr("c2", "sip:a@x", "sip:b@x", "", "127.0.0.1", 1.0, None, 1.0, 0.0, 486, "Busy Here", "failed"),
    ):
        got = cdr.to_json()
        assert got == asdict(cdr)
        assert list(got) == list(asdict(cdr))
    assert got["media"] == {}
    first = dlgs.Cdr("c1", "", "", "", "", 0.0, None, 0.0, 0.0, 200, "OK", "caller", media=media).to_json()
    assert first["media"] == media and first["media"]["caller"] is not media["caller"]
