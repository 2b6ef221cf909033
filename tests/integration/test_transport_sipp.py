"""SIPp (Debian sip-tester) against the transport layer: OPTIONS from a SIPp UAC answered
200 by an echo handler over UDP and TCP, and our outbound TCP connection to a SIPp UAS.

The Debian SIPp build has no TLS (``-t l1`` needs OpenSSL), so TLS interop is covered by
the ssl-module clients in test_transport_stream.py.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
from pathlib import Path

import pytest

from sipedge.config.sip import SipConfig
from sipedge.server.transport import TransportLayer
from sipedge.sip import message
from sipedge.sip.flow import Flow, Target

pytestmark = [
    pytest.mark.sipp,
    pytest.mark.skipif(shutil.which("sipp") is None, reason="sipp (sip-tester) not installed"),
]
T = 20.0

UAC = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="options uac">
  <send retrans="500">
    <![CDATA[
      OPTIONS sip:echo@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: sipp <sip:sipp@[local_ip]:[local_port]>;tag=[pid]SIPpTag[call_number]
      To: <sip:echo@[remote_ip]:[remote_port]>
      Call-ID: [call_id]
      CSeq: 1 OPTIONS
      Max-Forwards: 70
      Content-Length: [len]

    ]]>
  </send>
  <recv response="200"/>
</scenario>
"""

UAS = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="options uas">
  <recv request="OPTIONS"/>
  <send>
    <![CDATA[
      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:];tag=[pid]SIPpTag01[call_number]
      [last_Call-ID:]
      [last_CSeq:]
      Content-Length: 0

    ]]>
  </send>
</scenario>
"""


def free_port(kind: int) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def run_sipp(*args: str, timeout: float = T) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        "sipp", *args, "-nostdin", "-timeout", "10s", "-timeout_error",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout)
    except BaseException:  # timeout or cancelled: never leave sipp running
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        raise
    return proc.returncode or 0, out.decode(errors="replace")


@pytest.mark.parametrize(("name", "mode"), [("udp", "u1"), ("tcp", "t1")])
async def test_sipp_uac_options(tmp_path: Path, name: str, mode: str) -> None:
    def on_message(data: bytes, flow: Flow) -> None:
        req = message.parse(data, stream=flow.transport == "tcp")
        if isinstance(req, message.Request):
            layer.send(message.make_response(req, 200).serialize(), flow)

    layer = TransportLayer(SipConfig(listen=[f"{name}:127.0.0.1:0"]), on_message)
    await layer.start()
    try:
        scen = tmp_path / "uac.xml"
        scen.write_text(UAC)
        lst = layer.listener(name)
        port = free_port(socket.SOCK_DGRAM if name == "udp" else socket.SOCK_STREAM)
        rc, out = await run_sipp(
            f"127.0.0.1:{lst.port}", "-sf", str(scen), "-t", mode, "-i", "127.0.0.1",
            "-p", str(port), "-m", "50", "-r", "200", "-l", "20",
        )
        assert rc == 0, out[-2000:]
        st = layer.stats()
        assert st[f"sip_{name}_messages_in"] >= 50
        assert st[f"sip_{name}_messages_out"] == st[f"sip_{name}_messages_in"]
        if name == "tcp":
            assert st["sip_connections_accepted"] == 1  # t1: one connection for all calls
    finally:
        await asyncio.wait_for(layer.close(), T)


async def test_outbound_tcp_to_sipp_uas(tmp_path: Path) -> None:
    got: asyncio.Queue[tuple[bytes, Flow]] = asyncio.Queue()
    layer = TransportLayer(SipConfig(listen=["tcp:127.0.0.1:0"]), lambda d, f: got.put_nowait((d, f)))
    await layer.start()
    scen = tmp_path / "uas.xml"
    scen.write_text(UAS)
    port = free_port(socket.SOCK_STREAM)
    sipp = asyncio.create_task(
        run_sipp("-sf", str(scen), "-t", "t1", "-i", "127.0.0.1", "-p", str(port), "-m", "3")
    )
    try:
        lst = layer.listener("tcp")
        flows = []
        for n in range(1, 4):
            req = (
                f"OPTIONS sip:uas@127.0.0.1:{port};transport=tcp SIP/2.0\r\n"
                f"Via: SIP/2.0/TCP 127.0.0.1:{lst.port};branch=z9hG4bK-out{n}\r\n"
                f"From: <sip:t@127.0.0.1>;tag=f{n}\r\nTo: <sip:uas@127.0.0.1>\r\n"
                f"Call-ID: out{n}@t\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
            ).encode()
            for _ in range(100):  # sipp needs a moment to listen
                try:
                    flow = await asyncio.wait_for(layer.send_to(req, Target("tcp", "127.0.0.1", port)), T)
                    break
                except OSError:
                    await asyncio.sleep(0.05)
            else:
                pytest.fail("sipp UAS never listened")
            data, inflow = await asyncio.wait_for(got.get(), T)
            resp = message.parse(data, stream=True)
            assert isinstance(resp, message.Response) and resp.status == 200
            assert resp.call_id == f"out{n}@t"
            assert inflow == flow
            flows.append(flow)
        assert len({f.conn_id for f in flows}) == 1  # one connection reused for every request
        rc, out = await asyncio.wait_for(sipp, T)
        assert rc == 0, out[-2000:]
    finally:
        if not sipp.done():
            sipp.cancel()
        await asyncio.wait_for(layer.close(), T)
