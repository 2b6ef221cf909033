"""Browser scenarios, run by ``netns.run_scenario`` inside a loopback-only namespace.

    worker.py SCENARIO OUTDIR

brings ``lo`` up, starts a real ``sipedge serve`` (tests/helpers/sipserver.py), Chromium
through Playwright (the system /usr/bin/chromium, fake media devices) and, for the SIPp
case, a SIPp UAS; drives the softphone page like a person (fills the form, clicks the
buttons, waits for the state the page shows) and writes what it saw to OUTDIR/result.json:
``{"steps": [...], "error": null | "...", ...observations}``. Every wait has a timeout;
everything started here is stopped in ``finally`` (and the PID namespace ends the rest).

Scenarios:
- ``call``: alice and bob (two browser contexts) register over WSS; alice calls bob, bob
  answers, both peer connections receive RTP; alice sends bob a MESSAGE; alice hangs up.
- ``sipp``: alice (browser, WS) calls carol, a SIPp UAS on UDP registered through sipedge;
  the call is established and alice's hang-up (BYE) reaches SIPp.
- ``turn``: with the TURN role on (``[turn] secrets``, no ``api_key``), alice registers over
  WSS and the page gets TURN credentials from /turn/ice-servers by answering its digest
  challenge with her SIP password.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
TESTS = HERE.parent
sys.path.insert(0, str(TESTS))

from helpers.ports import free_port  # noqa: E402
from helpers.sipserver import Server, running_server  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
    "--allow-loopback-in-peer-connection", "--disable-features=WebRtcHideLocalIpsWithMdns",
    "--ignore-certificate-errors", "--autoplay-policy=no-user-gesture-required",
]
USERS = {"alice": "alice-pw", "bob": "bob-pw", "carol": "carol-pw"}
STEP_TIMEOUT_MS = 8000


class Recorder:
    def __init__(self, outdir: Path) -> None:
        self.outdir = outdir
        self.result: dict[str, Any] = {"steps": [], "error": None}
        self.t0 = time.monotonic()

    def step(self, name: str, **data: Any) -> None:
        self.result["steps"].append(name)
        if data:
            self.result[name] = data
        self.log(f"step {name} {data or ''}")

    def log(self, text: str) -> None:
        print(f"[{time.monotonic() - self.t0:6.2f}] {text}", flush=True)

    def save(self) -> None:
        (self.outdir / "result.json").write_text(json.dumps(self.result, indent=1))

    def failed(self, e: BaseException, why: str = "") -> int:
        """Record ``e`` (and ``why``) as the scenario's error, save; the exit code."""
        self.result["error"] = f"{type(e).__name__}: {e}{why}"
        traceback.print_exc()
        self.save()
        return 1


def lo_up() -> None:
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True, timeout=5)


class Phone:
    """One softphone page in its own browser context, driven through its form."""

    def __init__(self, browser: Any, server: Server, user: str, outdir: Path) -> None:
        self.user = user
        self.context = browser.new_context(ignore_https_errors=True)
        self.page = self.context.new_page()
        self.page.set_default_timeout(STEP_TIMEOUT_MS)
        self.console = (outdir / f"console-{user}.log").open("w")
        self.page.on("console", lambda msg: self.console.write(f"{msg.type}: {msg.text}\n"))
        self.page.on("pageerror", lambda err: self.console.write(f"pageerror: {err}\n"))
        self.page.goto(f"http://{server.host}:{server.http}/?debug=1", timeout=STEP_TIMEOUT_MS)

    def register(self, server_url: str, domain: str) -> None:
        p = self.page
        p.fill("#server", server_url)
        p.fill("#user", self.user)
        p.fill("#password", USERS[self.user])
        p.fill("#domain", domain)
        p.click("#register")

    def wait_state(self, element: str, *states: str, timeout_ms: int = STEP_TIMEOUT_MS) -> str:
        """Wait until ``#element``'s data-state is one of ``states``; return it."""
        sel = ", ".join(f'#{element}[data-state="{s}"]' for s in states)
        try:
            self.page.wait_for_selector(sel, state="attached", timeout=timeout_ms)
        except Exception as e:
            now = self.page.get_attribute(f"#{element}", "data-state")
            text = self.page.text_content(f"#{element}")
            raise AssertionError(f"{self.user}: #{element} is {now!r} ({text}), not {states} after {timeout_ms} ms") from e
        return self.page.get_attribute(f"#{element}", "data-state") or ""

    def call_state(self) -> dict[str, str | None]:
        el = "#call-state"
        return {k: self.page.get_attribute(el, f"data-{k}") for k in ("state", "cause", "originator")}

    def inbound_bytes(self) -> int:
        return int(self.page.evaluate("() => window.phone.inboundBytes()"))

    def close(self) -> None:
        try:
            self.context.close()
        finally:
            self.console.close()


def wait_until(pred: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.1)


def media_flows(rec: Recorder, phones: list[Phone], seconds: float = 2.0) -> None:
    """Inbound RTP bytes grow on every phone over ``seconds``."""
    first = {ph.user: 0 for ph in phones}

    def started() -> bool:
        for ph in phones:
            first[ph.user] = ph.inbound_bytes()
        return all(v > 0 for v in first.values())

    wait_until(started, 8.0, "inbound RTP on both peer connections")
    time.sleep(seconds)
    later = {ph.user: ph.inbound_bytes() for ph in phones}
    rec.step("media", first=first, later=later)
    for ph in phones:
        if later[ph.user] <= first[ph.user]:
            raise AssertionError(f"{ph.user}: inbound RTP bytes did not grow ({first[ph.user]} -> {later[ph.user]})")


def scenario_call(rec: Recorder, browser: Any, server: Server, outdir: Path) -> None:
    alice = Phone(browser, server, "alice", outdir)
    bob = Phone(browser, server, "bob", outdir)
    try:
        wss = f"wss://{server.host}:{server.wss}"
        alice.register(wss, server.host)
        bob.register(wss, server.host)
        alice.wait_state("reg-state", "registered")
        bob.wait_state("reg-state", "registered")
        rec.step("registered")

        alice.page.fill("#target", "bob")
        alice.page.click("#dial")
        bob.wait_state("call-state", "incoming")
        alice.wait_state("call-state", "ringing")
        rec.step("ringing", caller=alice.call_state(), callee_from=bob.page.text_content("#incoming-from"))
        bob.page.click("#answer")
        alice.wait_state("call-state", "confirmed")
        bob.wait_state("call-state", "confirmed")
        rec.step("confirmed")

        media_flows(rec, [alice, bob])

        alice.page.fill("#msg-target", "bob")
        alice.page.fill("#msg-text", "hello bob, from the browser")
        alice.page.click("#send")
        alice.wait_state("send-state", "sent")
        got = bob.page.wait_for_selector('#messages li.in[data-body="hello bob, from the browser"]', state="attached")
        rec.step("message", peer=got.get_attribute("data-peer") if got else None)

        alice.page.click("#hangup")
        alice.wait_state("call-state", "ended")
        bob.wait_state("call-state", "ended")
        rec.step("ended", caller=alice.call_state(), callee=bob.call_state())
    finally:
        alice.close()
        bob.close()


def scenario_flows(rec: Recorder, browser: Any, server: Server, outdir: Path) -> None:
    """Reject, CANCEL while ringing, and a BYE from the callee (bob calls alice)."""
    alice = Phone(browser, server, "alice", outdir)
    bob = Phone(browser, server, "bob", outdir)
    try:
        wss = f"wss://{server.host}:{server.wss}"
        alice.register(wss, server.host)
        bob.register(wss, server.host)
        alice.wait_state("reg-state", "registered")
        bob.wait_state("reg-state", "registered")
        rec.step("registered")

        alice.page.fill("#target", "bob")
        alice.page.click("#dial")
        bob.wait_state("call-state", "incoming")
        bob.page.click("#reject")
        alice.wait_state("call-state", "failed")
        bob.wait_state("call-state", "failed")
        rec.step("rejected", caller=alice.call_state(), callee=bob.call_state())

        alice.page.click("#dial")
        bob.wait_state("call-state", "incoming")
        alice.wait_state("call-state", "ringing")
        alice.page.click("#hangup")  # before the answer: CANCEL
        alice.wait_state("call-state", "failed")
        bob.wait_state("call-state", "failed")
        rec.step("cancelled", caller=alice.call_state(), callee=bob.call_state())

        bob.page.fill("#target", "alice")
        bob.page.click("#dial")
        alice.wait_state("call-state", "incoming")
        alice.page.click("#answer")
        bob.wait_state("call-state", "confirmed")
        alice.wait_state("call-state", "confirmed")
        alice.page.click("#hangup")  # the callee hangs up: BYE towards the caller
        bob.wait_state("call-state", "ended")
        alice.wait_state("call-state", "ended")
        rec.step("callee_hangup", caller=bob.call_state(), callee=alice.call_state())
    finally:
        alice.close()
        bob.close()


SIPP_UAS = HERE / "uas_webrtc.xml"


def register_from(server: Server, user: str, port: int) -> None:
    """REGISTER ``user`` over UDP from ``host:port`` with a Contact of that address, then
    free the port for SIPp (SIPp cannot register and answer in one scenario; a Contact
    that differs from the source address would be taken for a NATed one)."""
    import socket

    from helpers.ua import UA

    ua = UA("udp", (server.host, server.udp), user, server.host, USERS[user])
    ua.sock.close()
    ua.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    ua.sock.bind((server.host, port))
    ua.sock.settimeout(0.2)
    ua.port = port
    try:
        resp = ua.register(expires=300)
        if resp.status != 200:
            raise AssertionError(f"REGISTER of {ua.contact} got {resp.status}")
    finally:
        ua.close()


def scenario_sipp(rec: Recorder, browser: Any, server: Server, outdir: Path) -> None:
    port = free_port(server.host)
    register_from(server, "carol", port)
    rec.step("sipp_registered", port=port)
    with (outdir / "sipp.out").open("wb") as out:
        sipp = subprocess.Popen(
            ["sipp", "-sf", str(SIPP_UAS), "-i", server.host, "-p", str(port), "-t", "u1",
             "-mi", server.host, "-mp", str(free_port(server.host)), "-rtp_echo",
             "-m", "1", "-timeout", "25s", "-timeout_error", "-nostdin", "-trace_err", "-trace_msg"],
            stdout=out, stderr=subprocess.STDOUT, cwd=outdir,
        )
    alice: Phone | None = None
    try:
        alice = Phone(browser, server, "alice", outdir)
        alice.register(f"ws://{server.host}:{server.ws}", server.host)
        alice.wait_state("reg-state", "registered")
        rec.step("registered")
        alice.page.fill("#target", f"sip:carol@{server.host}")
        alice.page.click("#dial")
        alice.wait_state("call-state", "confirmed", "failed", "ended")
        rec.step("answered", caller=alice.call_state())
        if alice.call_state()["state"] != "confirmed":
            raise AssertionError(f"the call to SIPp was not established: {alice.call_state()}")
        # SIPp echoes the RTP it gets: what Chromium receives went browser -> relay (SRTP
        # decrypted) -> SIPp (plain RTP) -> relay (encrypted) -> browser
        inbound = 0
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and inbound < 4000:
            time.sleep(0.25)
            inbound = int(alice.page.evaluate("() => window.phone.inboundBytes()"))
        rec.step("media", inbound_bytes=inbound)
        rec.result["inbound_bytes"] = inbound
        alice.page.click("#hangup")
        alice.wait_state("call-state", "ended")
        rec.step("ended", caller=alice.call_state())
        try:
            rc = sipp.wait(10)
        except subprocess.TimeoutExpired as e:
            raise AssertionError("SIPp did not finish its call (no BYE?)") from e
        rec.step("sipp_done", returncode=rc)
    finally:
        if alice is not None:
            alice.close()
        if sipp.poll() is None:
            sipp.kill()
            sipp.wait(5)
        rec.result["sipp_returncode"] = sipp.returncode


def scenario_register(rec: Recorder, browser: Any, server: Server, outdir: Path) -> None:
    alice = Phone(browser, server, "alice", outdir)
    try:
        alice.register(f"ws://{server.host}:{server.ws}", server.host)
        alice.wait_state("reg-state", "registered", "registration-failed", timeout_ms=4000)
        rec.step("register", state=alice.page.get_attribute("#reg-state", "data-state"),
                 text=alice.page.text_content("#reg-state"))
    finally:
        alice.close()


def scenario_turn(rec: Recorder, browser: Any, server: Server, outdir: Path) -> None:
    alice = Phone(browser, server, "alice", outdir)
    try:
        alice.register(f"wss://{server.host}:{server.wss}", server.host)
        alice.wait_state("reg-state", "registered")
        rec.step("registered")
        servers = alice.page.evaluate("() => window.phone.iceServers")
        turn = [e for e in servers if any(u.startswith("turn:") for u in e.get("urls", []))]
        rec.step("ice_servers", servers=servers, turn_username=turn[0]["username"] if turn else None)
    finally:
        alice.close()


def turn_section() -> str:
    low = free_port() & ~1
    return (
        f'\n[turn]\nenabled = true\nlisten = ["udp:127.0.0.1:{free_port()}"]\nport_min = {low}\n'
        f'port_max = {low + 20}\nsecrets = ["browser-test-secret"]\n'
    )


# JsSIP answers only an MD5 challenge and reads the LAST WWW-/Proxy-Authenticate header of
# a 401/407 (its parser overwrites earlier ones), so sipedge's default MD5-then-SHA-256
# challenge makes it give up; the scenarios run with MD5 only unless "default-auth".
MD5_ONLY = '[auth]\nalgorithms = ["MD5"]\n'
SCENARIOS = {
    "call": (scenario_call, MD5_ONLY),
    "flows": (scenario_flows, MD5_ONLY),
    "sipp": (scenario_sipp, MD5_ONLY),
    "register-default-auth": (scenario_register, ""),
    "turn": (scenario_turn, MD5_ONLY + turn_section()),
}


@dataclass
class Setup:
    """Where a scenario's server listens and how Chromium starts (default: all on
    loopback). ``extra`` and ``web`` are added to the server's config (see
    ``running_server``); ``args`` gives Chromium flags that depend on the server."""

    host: str = "127.0.0.1"
    extra: str = ""
    web: str = ""
    chromium: str = CHROMIUM
    args: Callable[[Server], list[str]] = lambda _server: []


def main(scenarios: dict[str, tuple[Callable[..., None], str]] | None = None, setup: Setup | None = None) -> int:
    """Run ``sys.argv[1]`` of ``scenarios`` (default: this file's) with OUTDIR ``sys.argv[2]``."""
    scenario, outdir = sys.argv[1], Path(sys.argv[2])
    outdir.mkdir(parents=True, exist_ok=True)
    rec = Recorder(outdir)
    setup = setup or Setup()
    try:
        lo_up()
        from playwright.sync_api import sync_playwright

        run, extra = (scenarios or SCENARIOS)[scenario]
        with running_server(outdir, host=setup.host, extra=extra + setup.extra, users=USERS, web=setup.web) as server:
            rec.step("server", ws=server.ws, wss=server.wss, http=server.http, udp=server.udp)
            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path=setup.chromium, args=CHROMIUM_ARGS + setup.args(server),
                                             timeout=15000)
                try:
                    run(rec, browser, server, outdir)
                finally:
                    if server.proc.poll() is not None:  # before running_server stops it
                        rec.result["sipedge_exited_early"] = server.proc.returncode
                    browser.close()
    except BaseException as e:
        early = rec.result.get("sipedge_exited_early")
        return rec.failed(e, f" [sipedge exited ({early}) during the scenario]" if early is not None else "")
    rec.save()
    return 0


if __name__ == "__main__":
    sys.exit(main())
