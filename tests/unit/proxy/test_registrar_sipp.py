"""Interop: SIPp (a real SIP client) registers against DigestAuth + the registrar.

A small UDP loop on 127.0.0.1 stands in for the server adapter: 401 with the challenges,
then the registrar's 200. Proves the wire format of challenges and 200 OK contacts, and
the digest maths, against an independent implementation.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import threading
from pathlib import Path

import pytest

from sipedge.config.sip import RegistrarConfig
from sipedge.proxy.location import MemoryLocationStore, MemorySubscriberStore
from sipedge.proxy.registrar import register
from sipedge.sip.auth import AuthResult, DigestAuth
from sipedge.sip.message import Request, make_response, parse

pytestmark = pytest.mark.sipp

SCENARIO = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="register, refresh with auth, unregister">
{steps}
</scenario>
"""
STEP = """  <send retrans="500"><![CDATA[
REGISTER sip:example.com SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: <sip:alice@example.com>;tag=[call_number]
To: <sip:alice@example.com>
Call-ID: [call_id]
CSeq: {cseq} REGISTER
Contact: <sip:alice@[local_ip]:[local_port]>
{auth}Max-Forwards: 70
Expires: {expires}
Content-Length: 0

]]></send>
  <recv response="{status}"{recv_auth}/>
"""


def steps() -> str:
    out = []
    for n, expires in ((1, 300), (3, 0)):
        out.append(STEP.format(cseq=n, auth="", expires=expires, status=401, recv_auth=' auth="true"'))
        out.append(STEP.format(cseq=n + 1, auth="[authentication username=alice password=s3cret]\n",
                               expires=expires, status=200, recv_auth=""))
    return "".join(out)


class Server(threading.Thread):
    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.subs = MemorySubscriberStore()
        self.subs.add("alice", "example.com", "s3cret")
        # MD5 first: SIPp 3.6 reads only the first challenge and knows only MD5
        self.auth = DigestAuth(b"k" * 32, algorithms=["MD5", "SHA-256"])
        self.store = MemoryLocationStore()
        self.results: list[AuthResult] = []
        self.statuses: list[int] = []
        self.stop = threading.Event()
        self.now = 1_700_000_000.0

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                data, addr = self.sock.recvfrom(65535)
            except TimeoutError:
                continue
            req = parse(data)
            if not isinstance(req, Request):
                continue
            out = self.auth.verify(req.get("authorization"), method=req.method, realm="example.com",
                                   now=self.now, ha1_lookup=self.subs.ha1, request_uri=req.uri)
            self.results.append(out.result)
            if out.ok:
                resp = register(req, self.store, RegistrarConfig(), self.now,
                                received=f"sip:{addr[0]}:{addr[1]}", socket=f"udp:127.0.0.1:{self.port}")
            else:
                resp = make_response(req, 401, to_tag="t")
                for value in self.auth.challenges("example.com", self.now, stale=out.result.stale):
                    resp.add("WWW-Authenticate", value)
            self.statuses.append(resp.status)
            self.sock.sendto(resp.serialize(), addr)
        self.sock.close()


def test_sipp_register_refresh_unregister(tmp_path: Path) -> None:
    sipp = shutil.which("sipp")
    if sipp is None:
        pytest.skip("sipp is not installed (scripts/setup-tests installs it)")
    scenario = tmp_path / "register.xml"
    scenario.write_text(SCENARIO.format(steps=steps()), encoding="ascii")
    server = Server()
    server.start()
    try:
        r = subprocess.run(
            [sipp, "-sf", str(scenario), "-m", "1", "-i", "127.0.0.1", "-p", "0", "-timeout", "10s",
             "-nostdin", "-trace_err", "-error_file", str(tmp_path / "err.log"),
             f"127.0.0.1:{server.port}"],
            capture_output=True, text=True, timeout=30, cwd=tmp_path,
        )
    finally:
        server.stop.set()
        server.join(timeout=5)
    errors = (tmp_path / "err.log").read_text() if (tmp_path / "err.log").exists() else ""
    assert r.returncode == 0, errors[-2000:] or r.stdout[-2000:]
    # two challenges, two authenticated requests; the second unregistered the contact
    assert server.results.count(AuthResult.OK) == 2
    assert server.statuses.count(401) == 2 and server.statuses.count(200) == 2
    assert server.store.count("sip:alice@example.com", server.now) == 0
