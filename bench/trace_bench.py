"""CPU cost of the per-call SIP trace (``web.trace``) on the SIP hot path.

What the SIP adapter adds per message when tracing is on: one :meth:`TraceStore.record`
(find the Call-ID, keep the bytes). A proxied call with a digest challenge passes about 18
messages through it (each relayed one twice: in and out), so the figure per call is set
beside ``bench.sip_core_bench``'s "core" µs per call. Also the cost the dashboard asks for
later: a ``trace.list`` over full calls, and one ``trace.show``.

Run: ``.venv/bin/python -m bench.trace_bench [--iterations N]``.
"""

from __future__ import annotations

import argparse
import time

from sipedge.proxy.trace import TraceStore

MESSAGES_PER_CALL = 18
TEMPLATE = (
    "INVITE sip:bob@example.com SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK776asdhds{n}\r\n"
    "Max-Forwards: 70\r\nTo: Bob <sip:bob@example.com>\r\nFrom: Alice <sip:alice@example.com>;tag=1928301774\r\n"
    "Call-ID: {n}a84b4c76e66710@pc33.example.com\r\nCSeq: 314159 INVITE\r\nContact: <sip:alice@10.0.0.1>\r\n"
    "Content-Type: application/sdp\r\nContent-Length: 140\r\n\r\n" + "v=0\r\n" * 28
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=2000, help="calls recorded")
    args = parser.parse_args()
    calls = [TEMPLATE.format(n=n).encode() for n in range(args.iterations)]
    store = TraceStore()
    local, remote = ("127.0.0.1", 5060), ("127.0.0.1", 5070)
    start = time.process_time()
    for data in calls:
        for _ in range(MESSAGES_PER_CALL):
            store.record(data, "in", "udp", local, remote, 0.0)
    spent = time.process_time() - start
    per_message = spent / (args.iterations * MESSAGES_PER_CALL) * 1e6
    print(f"record      {per_message:7.2f} µs/message   {per_message * MESSAGES_PER_CALL:8.1f} µs/call")
    start = time.process_time()
    listed = store.calls()
    print(f"trace.list  {(time.process_time() - start) * 1e3:7.2f} ms for {len(listed)} calls of "
          f"{MESSAGES_PER_CALL} messages (parsed once; again: ", end="")
    start = time.process_time()
    store.calls()
    print(f"{(time.process_time() - start) * 1e3:.2f} ms)")
    start = time.process_time()
    store.show(listed[0]["call_id"])
    print(f"trace.show  {(time.process_time() - start) * 1e3:7.2f} ms for one call")


if __name__ == "__main__":
    main()
