"""Interop: Debian kamailio's rtpengine module drives sipedge's relay over the ng socket
while two SIPp UAs call each other through kamailio; a G.711 pcap is played by the caller
and echoed by the callee (``-rtp_echo``), so RTP flows both ways through our relay ports.

Topology (all loopback): SIPp UAC -> kamailio (rtpengine_manage) -> SIPp UAS, with
kamailio -> ng -> sipedge MediaServer (in this test's event loop) for offer/answer/delete.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import struct
from pathlib import Path

import pytest

from sipedge.config.media import MediaConfig
from sipedge.media.relay import CallDeleted, Event
from sipedge.server.media import MediaServer
from sipedge.server.ng import NgControlServer

KAMAILIO = shutil.which("kamailio") or "/usr/sbin/kamailio"
RTPENGINE_SO = Path("/usr/lib/x86_64-linux-gnu/kamailio/modules/rtpengine.so")
PCAP = Path("/usr/share/sip-tester/g711a.pcap")

pytestmark = [
    pytest.mark.sipp,
    pytest.mark.kamailio,
    pytest.mark.timeout(60),
    pytest.mark.skipif(shutil.which("sipp") is None, reason="sipp not installed (sip-tester)"),
    pytest.mark.skipif(not Path(KAMAILIO).exists(), reason="kamailio not installed"),
    pytest.mark.skipif(not RTPENGINE_SO.exists(), reason="kamailio rtpengine module missing"),
    pytest.mark.skipif(not PCAP.exists(), reason="sip-tester pcaps missing"),
]


def free_udp() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pcap_packets(path: Path) -> int:
    data = path.read_bytes()
    pos, n = 24, 0
    while pos + 16 <= len(data):
        incl = struct.unpack_from("<I", data, pos + 8)[0]
        pos += 16 + incl
        n += 1
    return n


KAMAILIO_CFG = """#!KAMAILIO
debug=2
log_stderror=yes
children=1
auto_aliases=no
listen=udp:127.0.0.1:{sip_port}
mpath="/usr/lib/x86_64-linux-gnu/kamailio/modules/"
loadmodule "tm.so"
loadmodule "sl.so"
loadmodule "rr.so"
loadmodule "pv.so"
loadmodule "maxfwd.so"
loadmodule "textops.so"
loadmodule "siputils.so"
loadmodule "rtpengine.so"
modparam("rtpengine", "rtpengine_sock", "udp:127.0.0.1:{ng_port}")
modparam("rtpengine", "rtpengine_tout_ms", 2000)

request_route {{
    if (!mf_process_maxfwd_header("10")) {{ sl_send_reply("483", "Too Many Hops"); exit; }}
    if (has_totag()) {{
        # SIPp's built-in UAS drops Record-Route from its 200 OK: in-dialog requests then
        # arrive without Route and go to their Request-URI (the UAS contact)
        loose_route();
        if (is_method("BYE")) {{ rtpengine_manage(); }}
        if (is_method("ACK")) {{
            if (!t_check_trans()) {{ forward(); }}
            exit;
        }}
        t_relay();
        exit;
    }}
    if (is_method("CANCEL")) {{
        if (t_check_trans()) {{ rtpengine_manage(); t_relay(); }}
        exit;
    }}
    if (is_method("INVITE")) {{
        record_route();
        rtpengine_manage("trust-address replace-origin replace-session-connection ICE=remove{direction}");
        t_on_reply("MEDIA");
    }}
    t_relay();
}}

onreply_route[MEDIA] {{
    if (has_body("application/sdp")) {{
        rtpengine_manage("trust-address replace-origin replace-session-connection ICE=remove");
    }}
}}
"""

UAC_XML = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="uac playing a G.711 pcap">
  <send retrans="500">
    <![CDATA[
      INVITE sip:echo@127.0.0.1:{uas_port} SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: sipp <sip:sipp@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:echo@127.0.0.1:{uas_port}>
      Call-ID: [call_id]
      CSeq: 1 INVITE
      Contact: sip:sipp@[local_ip]:[local_port]
      Max-Forwards: 70
      Content-Type: application/sdp
      Content-Length: [len]

      v=0
      o=user1 53655765 2353687637 IN IP[local_ip_type] [local_ip]
      s=-
      c=IN IP[media_ip_type] [media_ip]
      t=0 0
      m=audio [media_port] RTP/AVP 8
      a=rtpmap:8 PCMA/8000
    ]]>
  </send>
  <recv response="100" optional="true"/>
  <recv response="180" optional="true"/>
  <recv response="200" rtd="true" rrs="true"/>
  <send>
    <![CDATA[
      ACK [next_url] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      [routes]
      From: sipp <sip:sipp@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:echo@127.0.0.1:{uas_port}>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: 1 ACK
      Contact: sip:sipp@[local_ip]:[local_port]
      Max-Forwards: 70
      Content-Length: 0
    ]]>
  </send>
  <nop><action><exec play_pcap_audio="{pcap}"/></action></nop>
  <pause milliseconds="7800"/>
  <send retrans="500">
    <![CDATA[
      BYE [next_url] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      [routes]
      From: sipp <sip:sipp@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:echo@127.0.0.1:{uas_port}>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: 2 BYE
      Contact: sip:sipp@[local_ip]:[local_port]
      Max-Forwards: 70
      Content-Length: 0
    ]]>
  </send>
  <recv response="200" crlf="true"/>
</scenario>
"""


async def _wait(proc: asyncio.subprocess.Process, timeout: float) -> int:
    try:
        return await asyncio.wait_for(proc.wait(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise


@pytest.mark.parametrize("interfaces", [[], ["priv/127.0.0.1", "pub/127.0.0.2"]], ids=["one", "direction"])
async def test_kamailio_rtpengine_module_drives_sipedge(tmp_path: Path, interfaces: list[str]) -> None:
    """With two named interfaces, Kamailio's ``direction=priv direction=pub`` puts the
    caller's ports on one address and the callee's on the other."""
    sip_port, uas_port, ng_port = free_udp(), free_udp(), free_udp()
    base = 44000 + (os.getpid() % 100) * 20
    media = MediaServer(MediaConfig(listen="127.0.0.1", interfaces=interfaces, port_min=base, port_max=base + 19))
    bound: set[str] = set()
    watch = media.allocator.on_bind
    media.allocator.on_bind = lambda port, sock: (bound.add(sock.getsockname()[0]), watch(port, sock))
    events: list[Event] = []
    media.listeners.append(events.append)
    control = NgControlServer(media, "127.0.0.1", ng_port)
    cfg = tmp_path / "kamailio.cfg"
    direction = " direction=priv direction=pub" if interfaces else ""
    cfg.write_text(KAMAILIO_CFG.format(sip_port=sip_port, ng_port=ng_port, direction=direction))
    uac_xml = tmp_path / "uac_pcap.xml"
    uac_xml.write_text(UAC_XML.format(uas_port=uas_port, pcap=PCAP))
    kam = await asyncio.create_subprocess_exec(
        KAMAILIO, "-DD", "-E", "-f", str(cfg), "-P", str(tmp_path / "k.pid"), "-w", str(tmp_path),
        "-Y", str(tmp_path), "-m", "32", "-M", "8",
        stdout=asyncio.subprocess.DEVNULL, stderr=(tmp_path / "kamailio.log").open("wb"),
    )
    uas = await asyncio.create_subprocess_exec(
        "sipp", "-sn", "uas", "-rtp_echo", "-i", "127.0.0.1", "-p", str(uas_port),
        "-mp", str(free_udp()), "-m", "1", "-nostdin", "-timeout", "40s",
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL, cwd=tmp_path,
    )
    try:
        # kamailio pings the ng socket at start; wait for that ping before calling
        async with asyncio.timeout(15):
            while control.core.counters["ng_requests"] == 0:
                await asyncio.sleep(0.05)
        uac = await asyncio.create_subprocess_exec(
            "sipp", f"127.0.0.1:{sip_port}", "-sf", str(uac_xml), "-i", "127.0.0.1",
            "-p", str(free_udp()), "-mp", str(free_udp()), "-m", "1", "-nostdin",
            "-timeout", "30s", "-trace_err",
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE, cwd=tmp_path,
        )
        rc = await _wait(uac, 40)
        errors = "".join(p.read_text(errors="replace") for p in tmp_path.glob("*errors.log"))
        assert rc == 0, errors + (tmp_path / "kamailio.log").read_text(errors="replace")[-3000:]
        async with asyncio.timeout(5):
            while not any(isinstance(e, CallDeleted) for e in events):
                await asyncio.sleep(0.05)
    finally:
        for proc in (uas, kam):
            if proc.returncode is None:
                proc.terminate()
                try:
                    await asyncio.wait_for(proc.wait(), 5)
                except TimeoutError:
                    proc.kill()
                    await proc.wait()
        control.close()
        media.close()
    deleted = [e for e in events if isinstance(e, CallDeleted)]
    assert len(deleted) == 1 and deleted[0].reason == "delete"
    totals = deleted[0].totals
    sent = pcap_packets(PCAP)
    # every pcap packet reached the relay from the caller, went to the callee, and its echo
    # came back through the relay towards the caller
    assert totals["rtp_packets"] == 2 * sent, totals
    assert totals["strangers"] == 0 and totals["lost"] == 0
    assert control.core.counters["ng_errors"] == 0
    stats = media.stats()
    assert stats["media_offers"] == 1 and stats["media_answers"] >= 1 and stats["media_deletes"] == 1
    assert stats["media_ports_in_use"] == 0
    assert bound == ({"127.0.0.1", "127.0.0.2"} if interfaces else {"127.0.0.1"})
