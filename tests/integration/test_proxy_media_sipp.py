"""Two SIPp UAs call each other through ``sipedge serve`` (proxy + relay): the caller
plays a G.711 pcap, the callee echoes it (``-rtp_echo``). A routing module of the test's
own puts every call through the relay with ``ctx.rtpengine_manage()``. The relay counts
exactly the packets sent each way, and after BYE the session is gone and its ports free.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers.ports import free_port
from helpers.sipserver import Server, running_server

ROOT = Path(__file__).resolve().parents[2]
PCAP = Path("/usr/share/sip-tester/g711a.pcap")

pytestmark = [
    pytest.mark.sipp,
    pytest.mark.timeout(90),
    pytest.mark.skipif(shutil.which("sipp") is None, reason="sipp not installed (sip-tester)"),
    pytest.mark.skipif(not PCAP.exists(), reason="sip-tester pcaps missing"),
]

ROUTING = '''
from sipedge.proxy.context import BranchTarget, RequestContext
from sipedge.sip.flow import Target
from sipedge.sip.uri import SipUri

ECHO_PORT = {echo_port}


def request_route(ctx: RequestContext) -> None:
    if not ctx.sanity_check():
        return
    if ctx.has_to_tag:  # in-dialog: by Route set, or (SIPp's UAS records none) by Request-URI
        ctx.loose_route()
        if ctx.media_active():
            ctx.rtpengine_manage()
        ctx.relay()
        return
    if ctx.method == "OPTIONS" and ctx.is_ruri_me():
        ctx.reply(200)
        return
    ctx.record_route()
    ctx.rtpengine_manage()  # every call's media through the relay
    uri = SipUri("sip", "echo", "127.0.0.1", ECHO_PORT)
    ctx.relay([BranchTarget(ruri=uri, dest=Target("udp", "127.0.0.1", ECHO_PORT))])
'''


def pcap_packets(path: Path) -> int:
    import struct

    data = path.read_bytes()
    pos, n = 24, 0
    while pos + 16 <= len(data):
        incl = struct.unpack_from("<I", data, pos + 8)[0]
        pos += 16 + incl
        n += 1
    return n


def metrics(server: Server) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{server.http}/metrics", timeout=5) as r:
        text = r.read().decode()
    return {k: float(v) for k, v in re.findall(r"^(sipedge_media_\w+) (\S+)$", text, re.M)}


@pytest.fixture
def echo_port() -> int:
    return free_port()


@pytest.fixture(params=[1, 2], ids=["workers1", "workers2"])
def server(tmp_path: Path, echo_port: int, request: pytest.FixtureRequest) -> Iterator[Server]:
    """One process, and two workers driving the supervisor's relay over ng (docs/workers.md)."""
    routing = tmp_path / "relay_all.py"
    routing.write_text(ROUTING.format(echo_port=echo_port))
    low = free_port() & ~1
    extra = f'\n[routing]\nmodule = "{routing}"\n\n[media]\nport_min = {low}\nport_max = {low + 20}\n'
    with running_server(tmp_path, extra=extra, general=f"workers = {request.param}") as s:
        yield s


def test_sipp_call_with_rtp_through_proxy_and_relay(server: Server, echo_port: int, tmp_path: Path) -> None:
    sys.path.insert(0, str(ROOT))
    from tests.integration.test_media_kamailio_sipp import UAC_XML

    uac_xml = tmp_path / "uac_pcap.xml"
    uac_xml.write_text(UAC_XML.format(uas_port=echo_port, pcap=PCAP))
    uas = subprocess.Popen(
        ["sipp", "-sn", "uas", "-rtp_echo", "-i", "127.0.0.1", "-p", str(echo_port), "-mp", str(free_port()),
         "-m", "1", "-nostdin", "-timeout", "40s"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=tmp_path,
    )
    try:
        time.sleep(0.3)
        uac = subprocess.run(
            ["sipp", f"127.0.0.1:{server.udp}", "-sf", str(uac_xml), "-i", "127.0.0.1", "-p", str(free_port()),
             "-mp", str(free_port()), "-m", "1", "-nostdin", "-timeout", "30s", "-trace_err"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=tmp_path, timeout=45,
        )
        errors = "".join(p.read_text(errors="replace") for p in tmp_path.glob("*errors.log"))
        assert uac.returncode == 0, errors + server.log_text()[-3000:]
    finally:
        uas.terminate()
        uas.wait(5)
    deadline = time.monotonic() + 5
    while True:
        stats = metrics(server)
        if stats.get("sipedge_media_calls_deleted") == 1 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    sent = pcap_packets(PCAP)
    assert stats["sipedge_media_offers"] == 1 and stats["sipedge_media_answers"] >= 1
    assert stats["sipedge_media_calls_deleted"] == 1 and stats["sipedge_media_calls"] == 0
    assert stats["sipedge_media_ports_in_use"] == 0  # BYE freed the ports
    # the caller's pcap went to the callee and each echo came back: twice the packets
    assert stats["sipedge_media_packets_relayed"] == 2 * sent
    assert stats["sipedge_media_packets_dropped_stranger"] == 0
