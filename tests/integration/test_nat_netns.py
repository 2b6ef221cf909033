"""Real NAT: a SIPp phone behind a masquerading Linux router registers with its private
Contact, waits, and is called from outside. With NAT keepalives it is still reachable
after several conntrack timeouts; without them the router has forgotten the binding and
the call fails: the keepalives are what keeps the phone reachable. Over UDP and TCP.

Topology (network namespaces built by the test; documentation/private ranges only):

    [phone] 192.168.77.2 --- 192.168.77.1 [router: MASQUERADE, short conntrack] 203.0.113.1
        --- [pub] 203.0.113.2 sipedge with zero-packet keepalives, 203.0.113.3 without,
                  203.0.113.4 with SIP OPTIONS keepalives; each runs
                  ``sipedge serve`` (sipedge serve + [nat])

The public side has no route to 192.168.77.0/24. Each phone is one SIPp client
scenario: REGISTER, then wait for an INVITE on the same socket (the caller, a SIPp in
``pub``, reuses the registration's Call-ID so that SIPp maps the INVITE to that call).
A "walker" phone never registers: it calls a far end at 203.0.113.5 that hangs up after
the idle time, so its BYE must cross the NAT inbound (nat_traversal's dialog endpoint).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers.netns import Topology, nat_topology, sipedge_in

CONNTRACK_TIMEOUT = 1  # seconds, UDP (both states) and TCP established, in the router
IDLE = 4.5  # seconds the phones stay idle before the call: > 4 conntrack timeouts

pytestmark = [
    pytest.mark.netns,
    pytest.mark.sipp,
    pytest.mark.timeout(90),
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces"),
    pytest.mark.skipif(shutil.which("ip") is None or shutil.which("iptables") is None,
                       reason="needs iproute2 and iptables"),
    pytest.mark.skipif(shutil.which("sipp") is None, reason="needs SIPp (Debian sip-tester)"),
]

PHONE = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="nat phone">
  <send retrans="500">
    <![CDATA[

      REGISTER sip:[remote_ip] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: <sip:[service]@[remote_ip]>;tag=[pid]reg
      To: <sip:[service]@[remote_ip]>
      Call-ID: [call_id]
      CSeq: 1 REGISTER
      Contact: <sip:[service]@[local_ip]:[local_port];transport=[transport]>
      Expires: 300
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>
  <recv response="200"/>
  <recv request="INVITE" rrs="true" timeout="20000"/>
  <send>
    <![CDATA[

      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:];tag=[pid]phone
      [last_Call-ID:]
      [last_CSeq:]
      [last_Record-Route:]
      Contact: <sip:[service]@[local_ip]:[local_port];transport=[transport]>
      Content-Type: application/sdp
      Content-Length: [len]

      v=0
      o=- 1 1 IN IP4 [local_ip]
      s=-
      c=IN IP4 [local_ip]
      t=0 0
      m=audio 4000 RTP/AVP 0

    ]]>
  </send>
  <recv request="ACK"/>
  <recv request="BYE"/>
  <send>
    <![CDATA[

      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:]
      [last_Call-ID:]
      [last_CSeq:]
      Content-Length: 0

    ]]>
  </send>
</scenario>
"""

CALLER = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="caller">
  <send retrans="500">
    <![CDATA[

      INVITE sip:[service]@[remote_ip] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: <sip:caller@[local_ip]>;tag=[pid]caller
      To: <sip:[service]@[remote_ip]>
      Call-ID: [call_id]
      CSeq: 1 INVITE
      Contact: <sip:caller@[local_ip]:[local_port]>
      Max-Forwards: 70
      Content-Type: application/sdp
      Content-Length: [len]

      v=0
      o=- 1 1 IN IP4 [local_ip]
      s=-
      c=IN IP4 [local_ip]
      t=0 0
      m=audio 6000 RTP/AVP 0

    ]]>
  </send>
  <recv response="100" optional="true"/>
  <recv response="200" rrs="true" timeout="3000"/>
  <send>
    <![CDATA[

      ACK [next_url] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: <sip:caller@[local_ip]>;tag=[pid]caller
      [last_To:]
      [routes]
      Call-ID: [call_id]
      CSeq: 1 ACK
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>
  <send retrans="500">
    <![CDATA[

      BYE [next_url] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: <sip:caller@[local_ip]>;tag=[pid]caller
      [last_To:]
      [routes]
      Call-ID: [call_id]
      CSeq: 2 BYE
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>
  <recv response="200"/>
</scenario>
"""


DIALOG_PHONE = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="unregistered phone calling out">
  <send retrans="500">
    <![CDATA[

      INVITE sip:[service]@203.0.113.5:[uasport] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: <sip:walker@[local_ip]>;tag=[pid]walker
      To: <sip:[service]@203.0.113.5:[uasport]>
      Call-ID: [call_id]
      CSeq: 1 INVITE
      Contact: <sip:walker@[local_ip]:[local_port]>
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>
  <recv response="100" optional="true"/>
  <recv response="200" rrs="true"/>
  <send>
    <![CDATA[

      ACK [next_url] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: <sip:walker@[local_ip]>;tag=[pid]walker
      [last_To:]
      [routes]
      Call-ID: [call_id]
      CSeq: 1 ACK
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>
  <recv request="BYE" timeout="20000"/>
  <send>
    <![CDATA[

      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:]
      [last_Call-ID:]
      [last_CSeq:]
      Content-Length: 0

    ]]>
  </send>
</scenario>
"""

HANGING_UP_UAS = f"""<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="far end that hangs up after a while">
  <recv request="INVITE" rrs="true">
    <action>
      <ereg regexp=".*" search_in="hdr" header="From:" check_it="true" assign_to="caller"/>
    </action>
  </recv>
  <send retrans="500">
    <![CDATA[

      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:];tag=[pid]far
      [last_Call-ID:]
      [last_CSeq:]
      [last_Record-Route:]
      Contact: <sip:far@[local_ip]:[local_port]>
      Content-Length: 0

    ]]>
  </send>
  <recv request="ACK"/>
  <pause milliseconds="{int(IDLE * 1000)}"/>
  <send retrans="500">
    <![CDATA[

      BYE [next_url] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      [routes]
      From: <sip:far@[local_ip]:[local_port]>;tag=[pid]far
      To: [$caller]
      Call-ID: [call_id]
      CSeq: 1 BYE
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>
  <recv response="200" timeout="3000"/>
</scenario>
"""


@pytest.fixture
def topology() -> Iterator[Topology]:
    pub = ["203.0.113.2", "203.0.113.3", "203.0.113.4", "203.0.113.5"]
    with nat_topology("sn", pub, conntrack_timeout=CONNTRACK_TIMEOUT) as topo:
        yield topo


@contextlib.contextmanager
def sipedge(tmp: Path, ns: str, ip: str, keepalive: str) -> Iterator[Path]:
    """``sipedge serve`` in ``ns`` on ``ip``:5060 UDP+TCP; yields its database path.
    ``keepalive``: "" (none), "udp" (zero packets / CRLF) or "OPTIONS"."""
    data = tmp / f"data-{ip}"
    cfg = tmp / f"sipedge-{ip}.toml"
    cfg.write_text(
        f"""
[general]
data_dir = "{data}"
log_level = "debug"

[sip]
listen = ["udp:{ip}:5060", "tcp:{ip}:5060"]
domains = ["nat.test"]
# the NATed phones (seen from the router's public address) call a far end in another
# domain without credentials (auth is off here): only trusted peers may relay there
trusted_peers = ["203.0.113.1"]

[auth]
register = false
invite = false

[web]
enabled = false

[nat]
keepalive_interval = {0.3 if keepalive else 0}
keepalive_method = "{keepalive or 'udp'}"
"""
    )
    with sipedge_in(ns, cfg, tmp / f"sipedge-{ip}.log"):
        yield data / "sipedge.db"


def sipp(ns: str, scenario: Path, transport: str, local: tuple[str, int], remote: str | None, user: str,
         call_id: str, log: Path, extra: tuple[str, ...] = ()) -> subprocess.Popen[bytes]:
    """One SIPp call in ``ns``: a client towards ``remote``, or a server (``remote`` None)."""
    return subprocess.Popen(
        ["ip", "netns", "exec", ns, "sipp", *([remote] if remote else []), "-sf", str(scenario),
         "-m", "1", "-l", "1", "-i", local[0], "-p", str(local[1]), "-s", user,
         "-t", "u1" if transport == "udp" else "t1", "-cid_str", call_id, "-aa", "-nostdin",
         "-timeout", "30", "-timeout_error", "-trace_msg", "-message_file", str(log), *extra],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )


def bindings(db: Path) -> int:
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=2)) as c:
        return int(c.execute("SELECT COUNT(*) FROM location").fetchone()[0])


def counter(log: Path, name: str) -> int:
    """A keepalive counter from the stats line a server logs when it stops."""
    m = re.search(rf"'{name}': (\d+)", log.read_text(errors="replace"))
    assert m is not None, "no keepalive stats in " + str(log)
    return int(m.group(1))


def test_phones_behind_nat_reachable_only_with_keepalives(topology: Topology, tmp_path: Path) -> None:
    """Three servers: zero-packet/CRLF keepalives ("ka"), SIP OPTIONS keepalives ("sip"),
    none ("plain"). For each, UDP and TCP phones register and stay idle for more than four
    conntrack timeouts, then are called; and a phone that never registers calls a far end
    which hangs up after the same idle time (nat_traversal's dialog endpoint)."""
    tmp = tmp_path
    for name, text in (("phone", PHONE), ("caller", CALLER), ("walker", DIALOG_PHONE), ("far", HANGING_UP_UAS)):
        (tmp / f"{name}.xml").write_text(text)
    servers = {"ka": ("203.0.113.2", "udp"), "plain": ("203.0.113.3", ""), "sip": ("203.0.113.4", "OPTIONS")}
    with contextlib.ExitStack() as stack:
        dbs = {name: stack.enter_context(sipedge(tmp, topology.pub, ip, ka)) for name, (ip, ka) in servers.items()}
        cases = [
            (f"{transport}-{name}", transport, servers[name][0], 5070 + i)
            for i, (transport, name) in enumerate((t, n) for t in ("udp", "tcp") for n in servers)
        ]
        phones = {
            case: sipp(topology.phone, tmp / "phone.xml", transport, ("192.168.77.2", port), f"{server}:5060",
                       f"phone{port}", f"nat{port}-%u", tmp / f"phone-{case}.log")
            for case, transport, server, port in cases
        }
        fars = {
            name: sipp(topology.pub, tmp / "far.xml", "udp", ("203.0.113.5", 5190 + i), None, "far",
                       "unused-%u", tmp / f"far-{name}.log")
            for i, name in enumerate(servers)
        }
        time.sleep(0.3)  # the far ends listen
        walkers = {
            name: sipp(topology.phone, tmp / "walker.xml", "udp", ("192.168.77.2", 5090 + i),
                       f"{servers[name][0]}:5060", "far", f"walk{i}-%u", tmp / f"walker-{name}.log",
                       ("-key", "uasport", str(5190 + i)))
            for i, name in enumerate(servers)
        }
        everyone = [*phones.values(), *fars.values(), *walkers.values()]
        try:
            deadline = time.monotonic() + 10
            while not all(bindings(db) == 2 for db in dbs.values()):
                assert time.monotonic() < deadline, "the phones did not register"
                assert all(p.poll() is None for p in phones.values())
                time.sleep(0.05)
            time.sleep(IDLE)  # the phones say nothing; the router forgets idle bindings
            callers = {
                case: sipp(topology.pub, tmp / "caller.xml", transport, (server, port + 100), f"{server}:5060",
                           f"phone{port}", f"nat{port}-%u", tmp / f"caller-{case}.log")
                for case, transport, server, port in cases
            }
            codes = {case: c.wait(20) for case, c in callers.items()}
            far_codes = {name: p.wait(20) for name, p in fars.items()}
            for case, p in [*phones.items(), *walkers.items()]:
                if not case.endswith("plain"):
                    p.wait(10)
        finally:
            for p in everyone:
                if p.poll() is None:
                    p.kill()
                    p.wait(5)

    def text(name: str) -> str:
        return (tmp / name).read_text(errors="replace")[-4000:]

    for transport in ("udp", "tcp"):
        for name in ("ka", "sip"):
            case = f"{transport}-{name}"
            # with keepalives the whole call went through the NAT (INVITE in, ACK and BYE by alias)
            assert codes[case] == 0, (case, text(f"caller-{case}.log"), text(f"sipedge-{servers[name][0]}.log"))
            assert phones[case].returncode == 0, (case, text(f"phone-{case}.log"))
        # without them the router has forgotten the binding: the INVITE never gets in
        plain = f"{transport}-plain"
        assert codes[plain] != 0, (plain, text(f"caller-{plain}.log"))
        assert "INVITE sip:" not in text(f"phone-{plain}.log")
    for name in ("ka", "sip"):
        # the unregistered caller was kept reachable for its dialog: the far end's BYE got in
        assert far_codes[name] == 0, (name, text(f"far-{name}.log"), text(f"walker-{name}.log"))
        assert walkers[name].returncode == 0, (name, text(f"walker-{name}.log"))
    assert far_codes["plain"] != 0
    assert "BYE sip:" not in text("walker-plain.log")
    logs = {name: tmp / f"sipedge-{ip}.log" for name, (ip, _) in servers.items()}
    assert counter(logs["ka"], "keepalive_pings_sent") > 0
    assert counter(logs["plain"], "keepalive_pings_sent") == 0
    # SIP pings crossed the NAT both ways: the phones (SIPp -aa) answered them
    assert counter(logs["sip"], "keepalive_ping_answers") > 0
