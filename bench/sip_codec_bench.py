"""SIP codec micro-benchmark: parse + typed reads + serialize, messages per second.

Pure Python, bounded (a fixed number of iterations per message kind, a few seconds in
total). Run: ``.venv/bin/python bench/sip_codec_bench.py [--iterations N]``.

For each message it times the work a proxy does on every hop: ``parse(bytes)``, read the
top Via, all Vias, From, To, Call-ID, CSeq (and Contact for REGISTER), then
``serialize()``.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

from sipedge.sip import message as m

INVITE = (
    b"INVITE sip:bob@biloxi.example.com SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP pc33.atlanta.example.com:5060;branch=z9hG4bK776asdhds;rport\r\n"
    b"Via: SIP/2.0/TCP proxy.atlanta.example.com;branch=z9hG4bK2d4790.1;received=192.0.2.101\r\n"
    b"Max-Forwards: 69\r\n"
    b"Record-Route: <sip:proxy.atlanta.example.com;lr>\r\n"
    b"To: Bob <sip:bob@biloxi.example.com>\r\n"
    b'From: "Alice A." <sip:alice@atlanta.example.com>;tag=1928301774\r\n'
    b"Call-ID: a84b4c76e66710@pc33.atlanta.example.com\r\n"
    b"CSeq: 314159 INVITE\r\n"
    b"Contact: <sip:alice@pc33.atlanta.example.com;transport=udp>\r\n"
    b"Allow: INVITE, ACK, CANCEL, OPTIONS, BYE, REFER, NOTIFY, MESSAGE, SUBSCRIBE, INFO\r\n"
    b"Supported: replaces, timer\r\n"
    b"User-Agent: ExamplePhone/1.2.3\r\n"
    b"Content-Type: application/sdp\r\n"
    b"Content-Length: 142\r\n"
    b"\r\n"
    b"v=0\r\n"
    b"o=alice 2890844526 2890844526 IN IP4 pc33.atlanta.example.com\r\n"
    b"s=-\r\n"
    b"c=IN IP4 192.0.2.101\r\n"
    b"t=0 0\r\n"
    b"m=audio 49172 RTP/AVP 0\r\n"
    b"a=rtpmap:0 PCMU/8000\r\n"
)

REGISTER = (
    b"REGISTER sip:registrar.biloxi.example.com SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP bobspc.biloxi.example.com:5060;branch=z9hG4bKnashds7;rport\r\n"
    b"Max-Forwards: 70\r\n"
    b"To: Bob <sip:bob@biloxi.example.com>\r\n"
    b"From: Bob <sip:bob@biloxi.example.com>;tag=456248\r\n"
    b"Call-ID: 843817637684230@998sdasdh09\r\n"
    b"CSeq: 1826 REGISTER\r\n"
    b'Contact: <sip:bob@192.0.2.4:5060;transport=udp>;expires=3600;+sip.instance="<urn:uuid:00000000-0000-1000-8000-000A95A0E128>";reg-id=1\r\n'
    b"Expires: 7200\r\n"
    b"User-Agent: ExamplePhone/1.2.3\r\n"
    b"Content-Length: 0\r\n"
    b"\r\n"
)


def _one(data: bytes) -> bytes:
    msg = m.parse(data)
    _ = msg.top_via.branch
    _ = msg.vias
    _ = msg.from_.tag
    _ = msg.to.tag
    _ = msg.call_id
    _ = msg.cseq.number
    if isinstance(msg, m.Request) and msg.method == "REGISTER":
        _ = msg.contacts
        _ = msg.expires
    return msg.serialize()


def _hop(data: bytes) -> bytes:
    """What a stateful proxy does per forwarded request: parse, sanity-check, match the
    transaction (top Via read again), decrement Max-Forwards, push Via and
    Record-Route, serialize."""
    msg = m.parse(data)
    assert isinstance(msg, m.Request)
    m.check_request(msg)
    _ = (msg.top_via.branch, msg.top_via.sent_by, msg.cseq.method, msg.call_id, msg.from_.tag)
    mf = msg.max_forwards
    msg.set("Max-Forwards", str((mf if mf is not None else 70) - 1))
    msg.add("Via", "SIP/2.0/UDP proxy.example.net:5060;branch=z9hG4bKproxy1", first=True)
    msg.add("Record-Route", "<sip:proxy.example.net;lr>", first=True)
    _ = msg.top_via.host
    return msg.serialize()


def bench(name: str, data: bytes, iterations: int, one: Callable[[bytes], bytes] = _one) -> float:
    what = "(parse + Via/From/To/Call-ID/CSeq + serialize)" if one is _one else "(proxy hop: parse, check, Via/RR push, serialize)"
    for _ in range(min(1000, iterations)):  # warm-up
        one(data)
    best = 0.0
    for _ in range(5):  # best of 5, CPU time: the machine is shared, wall time is noisy
        t0 = time.process_time()
        for _ in range(iterations):
            one(data)
        rate = iterations / max(time.process_time() - t0, 1e-9)
        best = max(best, rate)
    print(f"{name:10s} {len(data):5d} bytes  {best:10.0f} msg/s  {what}")
    return best


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--iterations", type=int, default=10000)
    args = ap.parse_args()
    bench("INVITE", INVITE, args.iterations)
    bench("REGISTER", REGISTER, args.iterations)
    bench("INVITE hop", INVITE, args.iterations, _hop)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
