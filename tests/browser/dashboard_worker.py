"""The dashboard in headless Chromium, run by ``netns.run_scenario(..., worker=...)`` inside
a loopback-only namespace:

    dashboard_worker.py dashboard OUTDIR

Starts a real ``sipedge serve`` (every INVITE's media through the relay, so a SIPp call
shows in the calls panel), registers bob with SIPp (a SIPp UAS answers for him), alice
with JsSIP in Chromium (the softphone page), and carol with a From display name and a
User-Agent full of HTML; bans a source with ``sipedge ctl``; SIPp (carol) calls bob;
an aioice TURN client holds an allocation. The
dashboard is then used like a person would: refused with a wrong token, logged in, every
view opened and screenshotted into OUTDIR, the call's ladder opened and one arrow clicked,
logged out. What it saw goes to OUTDIR/result.json for test_dashboard_browser.py.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(ROOT))

from bench.sipp_runner import SippFlows, SippResult, stop_process  # noqa: E402
from worker import MD5_ONLY, USERS, Phone, Recorder  # noqa: E402
from worker import main as worker_main  # noqa: E402

from helpers.ports import free_port  # noqa: E402
from helpers.sipserver import Server, cli  # noqa: E402
from helpers.ua import UA  # noqa: E402
from sipedge.turn.auth import rest_password, rest_username  # noqa: E402

ROUTING = HERE.parent / "helpers" / "relay_all_routing.py"
XSS_NAME = "<img src=x onerror=window.__xss=1>"
XSS_AGENT = "<script>window.__xss=2</script><b>bold</b>"
BANNED = "192.0.2.7"
TURN_SECRET = "dashboard-test-secret"
TURN_USER = "dash-user"
TIMEOUT_MS = 10000


def ctl(server: Server, *args: str) -> Any:
    return json.loads(cli(["ctl", "--config", str(server.config), "--json", *args]).stdout)


def register_with_html(server: Server) -> None:
    """carol registers (digest) with HTML in her From display name and User-Agent."""
    ua = UA("udp", (server.host, server.udp), "carol", server.host, USERS["carol"])
    try:
        req = ua.build("REGISTER", f"sip:{server.host}", to=ua.aor,
                       headers={"Expires": "300", "User-Agent": XSS_AGENT})
        req.set("From", f'"{XSS_NAME}" <{ua.aor}>;tag={ua.tag}')
        ua.send(req)
        first = ua.expect_final()
        if first.status == 401:
            ua.send(ua.authorize(req, first))
            first = ua.expect_final()
        if first.status != 200:
            raise AssertionError(f"carol's REGISTER got {first.status}")
    finally:
        ua.close()


class TurnClient:
    """An aioice TURN allocation (with a permission) held open in a thread of its own."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.ready = threading.Event()
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        import asyncio

        from aioice.turn import create_turn_endpoint

        async def hold() -> None:
            username = rest_username(int(time.time()) + 600, TURN_USER)
            turn, _ = await asyncio.wait_for(create_turn_endpoint(
                asyncio.DatagramProtocol, server_addr=("127.0.0.1", self.port), username=username,
                password=rest_password(TURN_SECRET, username), transport="udp"), 5)
            try:
                turn.sendto(b"x", ("127.0.0.1", 9))  # a permission for 127.0.0.1
                self.ready.set()
                while not self.stop.is_set():
                    await asyncio.sleep(0.1)
            finally:
                turn.close()

        try:
            asyncio.run(hold())
        except BaseException as exc:
            self.error = exc
            self.ready.set()

    def __enter__(self) -> TurnClient:
        self.thread.start()
        if not self.ready.wait(10) or self.error is not None:
            raise AssertionError(f"no TURN allocation: {self.error!r}")
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(5)


def send_rtp(port: int, packets: int = 50) -> None:
    """G.711 RTP to a relay port (the relay latches onto this source: strict_source off),
    so the calls panel has packets to count."""
    import socket
    import struct

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for n in range(packets):
            header = struct.pack("!BBHII", 0x80, 0, n, n * 160, 0x5EED)
            s.sendto(header + b"\xff" * 160, ("127.0.0.1", port))
            time.sleep(0.02)


def ok(r: SippResult) -> None:
    if not r.ok:
        raise AssertionError(r.explain())


def labels(page: Any) -> list[str]:
    return list(page.eval_on_selector_all("#ladder g.arrow", "els => els.map(e => e.getAttribute('data-label'))"))


def scenario_dashboard(rec: Recorder, browser: Any, server: Server, outdir: Path) -> None:
    flows = SippFlows(f"{server.host}:{server.udp}", server.host, outdir / "sipp", timeout=40.0)
    uas, contact = flows.start_uas()
    alice: Phone | None = None
    context = None
    call: dict[str, SippResult] = {}
    caller = threading.Thread(target=lambda: call.setdefault(
        "r", flows.call("carol", USERS["carol"], "bob", talk_ms=7000)))
    try:
        ok(flows.register("bob", USERS["bob"], contact))
        alice = Phone(browser, server, "alice", outdir)
        alice.register(f"ws://{server.host}:{server.ws}", server.host)
        alice.wait_state("reg-state", "registered")
        register_with_html(server)
        ctl(server, "ban", "add", BANNED, "600")
        rec.step("registered")

        context = browser.new_context()
        page = context.new_page()
        page.set_default_timeout(TIMEOUT_MS)
        console = (outdir / "console-dashboard.log").open("w")
        page.on("console", lambda msg: console.write(f"{msg.type}: {msg.text}\n"))
        page.on("pageerror", lambda err: console.write(f"pageerror: {err}\n"))
        base = f"http://{server.host}:{server.http}"
        page.goto(base + "/dashboard")
        rec.step("unauthenticated", url=page.url)
        page.screenshot(path=str(outdir / "login.png"))
        page.fill("#token", "not-the-token")
        with page.expect_navigation():
            page.click("#submit")
        rec.step("wrong_token", url=page.url, error_shown=page.is_visible("#error"))
        page.fill("#token", (server.data_dir / "admin.token").read_text().strip())
        with page.expect_navigation():
            page.click("#submit")
        rec.step("logged_in", url=page.url, document_cookie=page.evaluate("() => document.cookie"))

        # registrations: SIPp's bob, JsSIP's alice, carol's HTML as text
        page.wait_for_selector("#live[data-state=live]")
        for aor in ("bob", "alice", "carol"):
            page.wait_for_selector(f'#registrations tr[data-aor="sip:{aor}@{server.host}"]')
        rows = page.eval_on_selector_all(
            "#registrations tbody tr",
            "rows => rows.map(r => [...r.cells].map(c => c.textContent))")
        page.screenshot(path=str(outdir / "registrations.png"), full_page=True)
        rec.step("registrations", rows=rows)

        caller.start()
        page.click("nav a[data-view=calls]")
        page.wait_for_selector("#calls tbody tr[data-call-id]", timeout=15000)
        page.wait_for_function(
            "() => [...document.querySelectorAll('#calls tbody tr')].some(r => r.textContent.includes('PCMU/8000'))")
        path = page.text_content("#calls tbody tr:first-child td:nth-child(7)") or ""
        send_rtp(int(path.rsplit(":", 1)[1].split(" ")[0]))
        page.wait_for_function(
            "() => Number(document.querySelector('#calls tbody tr:first-child td:nth-child(8)').textContent) > 0")
        calls = page.eval_on_selector_all(
            "#calls tbody tr", "rows => rows.map(r => [...r.cells].map(c => c.textContent))")
        page.screenshot(path=str(outdir / "calls.png"), full_page=True)
        rec.step("calls", rows=calls)

        page.click("nav a[data-view=bans]")
        page.wait_for_selector(f'#bans tbody tr >> text="{BANNED}"')
        page.screenshot(path=str(outdir / "bans.png"), full_page=True)
        rec.step("bans", text=page.text_content("#bans tbody"))

        with TurnClient(TURN_PORT):
            page.click("nav a[data-view=turn]")
            page.wait_for_selector(f'#turn tbody tr >> text=/{TURN_USER}/')
            turn = page.eval_on_selector_all(
                "#turn tbody tr", "rows => rows.map(r => [...r.cells].map(c => c.textContent))")
            page.screenshot(path=str(outdir / "turn.png"), full_page=True)
            rec.step("turn", rows=turn)

        page.click("nav a[data-view=counters]")
        page.wait_for_selector('#plots svg[data-counter="sip_requests_received"] polyline')
        plots = page.eval_on_selector_all("#plots svg", "els => els.map(e => e.getAttribute('data-counter'))")
        page.screenshot(path=str(outdir / "counters.png"), full_page=True)
        rec.step("counters", plots=plots)

        caller.join(30)
        if "r" not in call:
            raise AssertionError("the SIPp call did not end")
        ok(call["r"])
        traced = [c for c in ctl(server, "trace", "list")["calls"]
                  if "bob" in (c["to"] or "") and "carol" in (c["from"] or "") and c["status"] == 200]
        if not traced:
            raise AssertionError("the SIPp call is not in trace list")
        call_id = traced[0]["call_id"]
        rec.result["call_id"] = call_id
        page.click("nav a[data-view=trace]")
        row = page.wait_for_selector(f'#trace-calls tr[data-call-id="{call_id}"]')
        trace_text = page.text_content("#trace-calls tbody")
        assert row is not None
        row.click()
        page.wait_for_function(
            "() => [...document.querySelectorAll('#ladder g.arrow')].some(g => g.dataset.label === 'BYE')")
        time.sleep(0.5)  # the ladder re-draws when the call's last messages arrive
        ladder = labels(page)
        columns = page.eval_on_selector_all("#ladder text.column", "els => els.map(e => e.textContent)")
        page.click('#ladder g.arrow[data-label="BYE"]')
        message = page.text_content("#message") or ""
        page.screenshot(path=str(outdir / "trace.png"), full_page=True)
        rec.step("ladder", labels=ladder, columns=columns, message=message,
                 title=page.text_content("#message-title"), has_html_from=XSS_NAME in (trace_text or ""))

        rec.step("html_is_text",
                 xss=page.evaluate("() => window.__xss === undefined ? null : window.__xss"),
                 images=page.locator("img").count(), bold=page.locator("main b").count(),
                 scripts=page.locator("main script").count())

        with page.expect_navigation():
            page.click("#logout")
        after = page.url
        page.goto(base + "/dashboard")
        rec.step("logged_out", url=after, again=page.url,
                 data_status=page.evaluate("async () => (await fetch('/dashboard/api/stats')).status"))
        console.close()
    finally:
        if caller.is_alive():
            caller.join(30)
        if context is not None:
            context.close()
        if alice is not None:
            alice.close()
        stop_process(uas)
        flows.close()


TURN_PORT = free_port()
EXTRA = (MD5_ONLY + f'\n[routing]\nmodule = "{ROUTING}"\n\n[media]\nport_min = 31000\nport_max = 31040\n'
         f'\n[turn]\nenabled = true\nlisten = ["udp:127.0.0.1:{TURN_PORT}"]\nport_min = 32000\n'
         f'port_max = 32020\nsecrets = ["{TURN_SECRET}"]\nallow_peers = ["127.0.0.0/8"]\n')


if __name__ == "__main__":
    sys.exit(worker_main({"dashboard": (scenario_dashboard, EXTRA)}))
