"""Coverage-guided fuzzing of the SIP codec (not run in CI).

The invariant (h11's AFL harness, websockets' atheris harnesses): any input parses or
raises ParseError; whatever parses re-serializes to an equivalent message; the checkers,
every typed accessor and error_response raise nothing else; StreamFramer frames the same
bytes identically however they are chunked.

Run with atheris (``pip install atheris``; not a project dependency)::

    python tests/fuzz/sip_fuzz.py -max_total_time=300 tests/vectors/sip/rfc4475

or without it, as a plain mutation loop over the RFC 4475 vectors::

    python tests/fuzz/sip_fuzz.py --iterations 200000 [--seed N]
"""

from __future__ import annotations

import argparse
import random
import sys
from collections.abc import Callable
from pathlib import Path

from sipedge.errors import ParseError
from sipedge.sip import message as m
from sipedge.sip.framing import StreamFramer
from sipedge.sip.headers import CSeq, NameAddr, Via, split_list
from sipedge.sip.uri import parse_uri

VECTORS = Path(__file__).resolve().parents[1] / "vectors" / "sip" / "rfc4475"


def _fields(msg: m.Request | m.Response) -> tuple[object, ...]:
    start = (msg.method, msg.uri) if isinstance(msg, m.Request) else (msg.status, msg.reason)
    return (*start, [(k, v) for k, _, v in msg._headers if k != "content-length"], msg.body)


def _quiet(fn: Callable[[], object]) -> None:
    try:
        fn()
    except ParseError:
        pass


def _frames(data: bytes, step: int) -> tuple[list[bytes], object]:
    f = StreamFramer(max_size=8192)
    out: list[bytes] = []
    try:
        for i in range(0, len(data), step):
            out.extend(fr.data for fr in f.feed(data[i : i + step]))
        out.extend(fr.data for fr in f.feed(b""))
    except ParseError as exc:
        return out, exc.hint
    return out, None


def _exercise(msg: m.Request | m.Response) -> None:
    if isinstance(msg, m.Request):
        req = msg
        _quiet(lambda: m.check_request(req))
        _quiet(lambda: req.ruri)
    else:
        _quiet(lambda: m.check_response(msg))
    for read in (lambda: msg.vias, lambda: msg.from_, lambda: msg.to, lambda: msg.call_id,
                 lambda: msg.cseq, lambda: msg.contacts, lambda: msg.max_forwards,
                 lambda: msg.expires, lambda: msg.name_addrs("route")):
        _quiet(read)


def one_input(data: bytes) -> None:
    for stream in (False, True):
        try:
            msg = m.parse(data, stream=stream)
        except ParseError as exc:
            resp = m.error_response(data, exc, to_tag="fz")
            if resp is not None:
                m.parse(resp.serialize())
            continue
        again = m.parse(msg.serialize())
        if _fields(again) != _fields(msg):
            raise AssertionError(f"round trip changed the message: {data!r}")
        _exercise(msg)
    text = data[:200].decode("utf-8", "surrogateescape")
    for parse in (lambda: parse_uri(text), lambda: NameAddr.parse(text), lambda: Via.parse(text),
                  lambda: CSeq.parse(text), lambda: split_list(text)):
        _quiet(parse)
    if _frames(data, len(data) or 1) != _frames(data, 3):
        raise AssertionError(f"chunking changed the frames: {data!r}")


def _mutate(rng: random.Random, data: bytes) -> bytes:
    b = bytearray(data)
    for _ in range(rng.randint(1, 8)):
        if not b:
            break
        i = rng.randrange(len(b))
        op = rng.randrange(5)
        if op == 0:
            b[i] = rng.randrange(256)
        elif op == 1:
            del b[i:]
        elif op == 2:
            b[i:i] = rng.choice([b"\r", b"\n", b"\r\n", b"\x00", b'"', b"<", b">", b";", b",",
                                 b":", b"%", b"\\", b" ", b"\t", b"\xff", b"\r\n "])
        elif op == 3:
            del b[i : i + rng.randint(1, 30)]
        else:
            j = min(len(b), i + rng.randint(1, 60))
            b[i:i] = b[i:j]
    return bytes(b)


def main() -> int:
    try:
        import atheris  # type: ignore
    except ImportError:
        atheris = None
    if atheris is not None and "--iterations" not in sys.argv:
        atheris.Setup(sys.argv, one_input)
        atheris.Fuzz()
        return 0
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--iterations", type=int, default=100000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    corpus = [p.read_bytes() for p in sorted(VECTORS.glob("*.dat"))]
    for n in range(args.iterations):
        one_input(_mutate(rng, rng.choice(corpus)))
        if n and n % 20000 == 0:
            print(f"{n} inputs, no failure", flush=True)
    print(f"{args.iterations} inputs, no failure")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
