"""The WebRTC bridge against other SIP edge software (issue 12, "Interop"): the calls of
:mod:`helpers.webrtc_call` (aiortc over SIP on a WebSocket, a plain UDP RTP phone), with

- **kamailio** (Debian, its ``websocket`` and ``rtpengine`` modules) as the SIP proxy,
  driving sipedge's media relay (a :class:`MediaServer` with its DTLS certificate, in
  this process) over ng with the flags Kamailio users write (:func:`main_kamailio`);
- ``sipedge serve`` as the proxy, its ``media.remote`` pointed at Debian's
  **rtpengine-daemon**, which then does the bridge (:func:`main_rtpengine`).

Both run inside the private network namespace :func:`run_in_netns` makes (loopback and a
veth with ``HOST``), and print one JSON line.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from helpers.ports import free_port
from helpers.rtpengine import running_rtpengine
from helpers.sipserver import running_server
from helpers.webrtc_call import HOST, SCENARIOS, USERS, Routing, sipedge_routing
from sipedge.config.media import MediaConfig
from sipedge.media import bencode
from sipedge.server.dtls import DtlsContext
from sipedge.server.media import MediaServer
from sipedge.server.ng import NgControlServer

ROOT = Path(__file__).resolve().parents[2]
KAMAILIO = shutil.which("kamailio") or "/usr/sbin/kamailio"
KAMAILIO_MODULES = Path("/usr/lib/x86_64-linux-gnu/kamailio/modules")
NEEDED_MODULES = ("tm", "sl", "rr", "pv", "maxfwd", "textops", "siputils", "nathelper", "xhttp",
                  "websocket", "rtpengine")

# The flags of a typical Kamailio WebRTC <-> SIP script (docs/webrtc.md).
TO_PHONE = "RTP/AVP ICE=remove rtcp-mux-demux replace-origin replace-session-connection"
TO_BROWSER = ("UDP/TLS/RTP/SAVPF ICE=force rtcp-mux-require DTLS=passive "
              "replace-origin replace-session-connection")

NETNS_SETUP = (
    "ip link set lo up && ip link add v0 type veth peer name v1 && ip addr add 192.0.2.1/24 dev v0 "
    "&& ip link set v1 up && ip link set v0 up && exec \"$0\" -c \"$1\""
)


def kamailio_missing() -> str:
    """Why kamailio cannot run these calls here, or "" when it can."""
    if not Path(KAMAILIO).exists():
        return "kamailio not installed"
    missing = [m for m in NEEDED_MODULES if not (KAMAILIO_MODULES / f"{m}.so").exists()]
    return f"kamailio modules missing: {', '.join(missing)}" if missing else ""


def run_in_netns(code: str, timeout: float = 100) -> dict[str, Any]:
    """Run ``code`` (Python) in a fresh network namespace; its last stdout line is JSON.
    The namespace's stderr (the servers' logs) comes back as ``log``."""
    env = dict(os.environ, PYTHONPATH=f"{ROOT / 'tests'}:{ROOT / 'src'}")
    res = subprocess.run(["unshare", "--net", "sh", "-c", NETNS_SETUP, sys.executable, code],
                         capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT / "tests")
    assert res.returncode == 0, res.stderr[-8000:]
    return dict(json.loads(res.stdout.strip().splitlines()[-1]), log=res.stderr)


# ------------------------------------------------------------------------ kamailio
@dataclass
class Kamailio:
    """kamailio's listeners (a :class:`helpers.webrtc_call.SipProxy`)."""

    host: str
    udp: int
    ws: int


# Written for this test: SIP over UDP and WebSocket, no registrar (the test names the
# other side's address in the Request-URI), Contact aliases for the WebSocket side so
# in-dialog requests find the browser's connection, and rtpengine_manage() with the
# WebRTC flags chosen by where the INVITE came from.
KAMAILIO_CFG = """#!KAMAILIO
debug=2
log_stderror=yes
children=1
tcp_children=1
auto_aliases=no
tcp_accept_no_cl=yes
listen=udp:{host}:{udp}
listen=tcp:{host}:{ws}
mpath="{modules}/"
{loads}
modparam("rtpengine", "rtpengine_sock", "udp:{ng}")
modparam("rtpengine", "rtpengine_tout_ms", 2000)

request_route {{
    if (!mf_process_maxfwd_header("10")) {{ sl_send_reply("483", "Too Many Hops"); exit; }}
    if ($proto =~ "ws") {{ add_contact_alias(); }}
    if (has_totag()) {{
        if (!loose_route()) {{
            if (is_method("ACK") && t_check_trans()) {{ t_relay(); exit; }}
            sl_send_reply("404", "No such dialog");
            exit;
        }}
        if ($ru =~ ";alias=") {{ handle_ruri_alias(); }}
        if (is_method("BYE")) {{ rtpengine_manage(); }}
        t_relay();
        exit;
    }}
    if (is_method("CANCEL")) {{
        if (t_check_trans()) {{ rtpengine_manage(); t_relay(); }}
        exit;
    }}
    if (!is_method("INVITE")) {{ sl_send_reply("405", "Calls only"); exit; }}
    record_route();
    if ($proto =~ "ws") {{
        rtpengine_manage("{to_phone}");
        t_on_reply("BROWSER_CALLS_PHONE");
    }} else {{
        rtpengine_manage("{to_browser}");
        t_on_reply("PHONE_CALLS_BROWSER");
    }}
    if (!t_relay()) {{ sl_reply_error(); }}
}}

onreply_route[BROWSER_CALLS_PHONE] {{
    if (has_body("application/sdp")) {{ rtpengine_manage("{to_phone}"); }}
}}

onreply_route[PHONE_CALLS_BROWSER] {{
    if ($proto =~ "ws") {{ add_contact_alias(); }}
    if (has_body("application/sdp")) {{ rtpengine_manage("{to_browser}"); }}
}}

event_route[xhttp:request] {{
    if ($hdr(Upgrade) =~ "websocket" && $hdr(Connection) =~ "Upgrade" && $rm =~ "GET") {{
        if (ws_handle_handshake()) {{ exit; }}
    }}
    xhttp_reply("404", "Not Found", "", "");
}}
"""


@contextlib.contextmanager
def running_kamailio(tmp: Path, proxy: Kamailio, ng: str, extra_flags: str = "") -> Iterator[Path]:
    """kamailio with :data:`KAMAILIO_CFG` towards the ng relay at ``ng`` ("ip:port"), its
    rtpengine_manage() flags followed by ``extra_flags``; yields its log's path."""
    cfg = tmp / "kamailio.cfg"
    cfg.write_text(KAMAILIO_CFG.format(
        host=proxy.host, udp=proxy.udp, ws=proxy.ws, ng=ng, modules=KAMAILIO_MODULES,
        loads="\n".join(f'loadmodule "{m}.so"' for m in NEEDED_MODULES),
        to_phone=f"{TO_PHONE} {extra_flags}".strip(), to_browser=f"{TO_BROWSER} {extra_flags}".strip(),
    ))
    log = tmp / "kamailio.log"
    with log.open("wb") as logf:
        proc = subprocess.Popen(
            [KAMAILIO, "-DD", "-E", "-f", str(cfg), "-P", str(tmp / "k.pid"), "-w", str(tmp),
             "-Y", str(tmp), "-m", "64", "-M", "8"],
            stdout=subprocess.DEVNULL, stderr=logf,
        )
    try:
        yield log
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _ng_record(control: NgControlServer) -> list[dict[str, Any]]:
    """Every ng request the relay gets (command and its media keys), as it arrives."""
    seen: list[dict[str, Any]] = []
    handle = control.core.handle

    def recording(data: bytes, now: float) -> bytes | None:
        _, _, body = data.partition(b" ")
        with contextlib.suppress(Exception):
            req = bencode.decode(body)
            if isinstance(req, dict):
                seen.append({k.decode(): _text(v) for k, v in req.items() if k != b"sdp"})
        return handle(data, now)

    control.core.handle = recording  # type: ignore[method-assign]
    return seen


def _text(v: Any) -> Any:
    if isinstance(v, bytes):
        return v.decode("utf-8", "replace")
    if isinstance(v, list):
        return [_text(x) for x in v]
    if isinstance(v, dict):
        return {k.decode(): _text(x) for k, x in v.items()}
    return v


def main_kamailio(scenario: str, tmp: str, extra_flags: str = "") -> None:
    """``scenario`` of :data:`SCENARIOS` with kamailio as the proxy and sipedge's relay
    (in this process) as its rtpengine (``extra_flags``: more rtpengine_manage() flags)."""
    async def run() -> dict[str, Any]:
        base = Path(tmp)
        proxy = Kamailio(HOST, free_port(HOST), free_port(HOST))
        media = MediaServer(MediaConfig(listen=HOST, port_min=41000, port_max=41200),
                            dtls=DtlsContext(base / "data"))
        control = NgControlServer(media, HOST, free_port(HOST))
        requests = _ng_record(control)
        route = Routing(
            proxy, lambda: {k: float(v) for k, v in media.stats().items()}, register=False,
            phone_uri=lambda phone: f"sip:bob@{HOST}:{phone.ua.port}",
            browser_uri=lambda browser: f"sip:alice@{HOST}:{browser.ua.port};transport=ws",
        )
        try:
            with running_kamailio(base, proxy, f"{HOST}:{control.address[1]}", extra_flags) as log:
                try:
                    async with asyncio.timeout(15):  # kamailio pings its rtpengine at start
                        while not requests:
                            await asyncio.sleep(0.05)
                    out: dict[str, Any] = await SCENARIOS[scenario](route)
                    await asyncio.sleep(0.3)  # the BYE's delete
                    out["ng_requests"] = requests
                    out["ng_counters"] = dict(control.core.counters)
                    out["stats_end"] = route.stats()
                    return out
                finally:
                    sys.stderr.write(log.read_text(errors="replace")[-8000:])
        finally:
            control.close()
            media.close()

    print(json.dumps(asyncio.run(run())), flush=True)


# ------------------------------------------------------------------------ rtpengine
def main_rtpengine(scenario: str, tmp: str) -> None:
    """``scenario`` through ``sipedge serve`` (default routing) with ``media.remote`` at a
    real rtpengine, which bridges the media."""
    async def run() -> dict[str, Any]:
        base = Path(tmp)
        with running_rtpengine(base, 41000, 41200, host=HOST) as ng, running_server(
            base / "proxy", host=HOST, users=USERS, log_level="info",
            web='metrics_allow = ["192.0.2.0/24"]', extra=f'\n[media]\nremote = "{HOST}:{ng}"\n',
        ) as server:
            try:
                return dict(await SCENARIOS[scenario](sipedge_routing(server)))
            finally:
                sys.stderr.write(server.log_text()[-4000:])
                sys.stderr.write((base / "rtpengine.log").read_text(errors="replace")[-12000:])

    out = asyncio.run(run())
    rtpengine_log = (Path(tmp) / "rtpengine.log").read_text(errors="replace")
    out["rtpengine_dtls"] = [line for line in rtpengine_log.splitlines() if "DTLS" in line][-20:]
    print(json.dumps(out), flush=True)
