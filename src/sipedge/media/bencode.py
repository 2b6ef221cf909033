"""Bencode (the "ng" protocol's dictionary format): decode raising only ParseError, encode.

Values: ``int``, ``bytes``, ``list``, ``dict[bytes, value]`` when decoding; ``str`` and
``str`` keys are accepted (UTF-8) when encoding. Dictionary keys are written sorted.
"""

from __future__ import annotations

from typing import TypeAlias

from ..errors import ParseError

Value: TypeAlias = "int | bytes | str | list[Value] | tuple[Value, ...] | dict[bytes, Value] | dict[str, Value]"
MAX_DEPTH = 32
MAX_INT_DIGITS = 20
"""The longest integer accepted: rtpengine reads them as 64-bit (at most 19 digits and a
sign); anything longer is hostile, and past 4300 digits ``int()`` itself refuses it."""


def _bad(msg: str) -> ParseError:
    return ParseError(f"bencode: {msg}", None)


def decode(data: bytes) -> Value:
    """Decode one complete bencoded value (trailing bytes are an error)."""
    value, pos = _decode(data, 0, 0)
    if pos != len(data):
        raise _bad(f"{len(data) - pos} trailing bytes")
    return value


def _decode(data: bytes, pos: int, depth: int) -> tuple[Value, int]:
    if depth > MAX_DEPTH:
        raise _bad("nested too deeply")
    if pos >= len(data):
        raise _bad("truncated")
    c = data[pos]
    if c == 0x69:  # i<digits>e
        end = data.find(b"e", pos + 1)
        if end < 0:
            raise _bad("unterminated integer")
        text = data[pos + 1 : end]
        if len(text.lstrip(b"-")) > MAX_INT_DIGITS:
            raise _bad(f"integer longer than {MAX_INT_DIGITS} digits")
        if not text or not (text.isdigit() or (text[:1] == b"-" and text[1:].isdigit())):
            raise _bad(f"bad integer {text[:20]!r}")
        if (text[:1] == b"0" and len(text) > 1) or text[:2] == b"-0":
            raise _bad("integer with a leading zero")
        return int(text), end + 1
    if c == 0x6C:  # l...e
        items: list[Value] = []
        pos += 1
        while True:
            if pos >= len(data):
                raise _bad("unterminated list")
            if data[pos] == 0x65:
                return items, pos + 1
            item, pos = _decode(data, pos, depth + 1)
            items.append(item)
    if c == 0x64:  # d...e
        out: dict[bytes, Value] = {}
        pos += 1
        while True:
            if pos >= len(data):
                raise _bad("unterminated dictionary")
            if data[pos] == 0x65:
                return out, pos + 1
            key, pos = _decode(data, pos, depth + 1)
            if not isinstance(key, bytes):
                raise _bad("dictionary key is not a string")
            value, pos = _decode(data, pos, depth + 1)
            out[key] = value
    if 0x30 <= c <= 0x39:
        colon = data.find(b":", pos)
        if colon < 0 or colon - pos > 10 or not data[pos:colon].isdigit():
            raise _bad("bad string length")
        n = int(data[pos:colon])
        end = colon + 1 + n
        if end > len(data):
            raise _bad("string longer than the data")
        return data[colon + 1 : end], end
    raise _bad(f"unexpected byte {c:#04x} at {pos}")


def encode(value: Value) -> bytes:
    out: list[bytes] = []
    _encode(value, out)
    return b"".join(out)


def _encode(value: Value, out: list[bytes]) -> None:
    if isinstance(value, bool):
        raise TypeError("bencode has no booleans")
    if isinstance(value, int):
        out.append(b"i%de" % value)
    elif isinstance(value, str | bytes):
        # text taken from the wire keeps its non-UTF-8 bytes as surrogate escapes (SDP is
        # decoded that way): they go back out as those same bytes
        raw = value.encode("utf-8", "surrogateescape") if isinstance(value, str) else value
        out.append(b"%d:" % len(raw))
        out.append(raw)
    elif isinstance(value, list | tuple):
        out.append(b"l")
        for v in value:
            _encode(v, out)
        out.append(b"e")
    elif isinstance(value, dict):
        out.append(b"d")
        items = sorted(
            (((k.encode("utf-8", "surrogateescape") if isinstance(k, str) else k), v) for k, v in value.items()),
            key=lambda kv: kv[0],
        )
        for k, v in items:
            _encode(k, out)
            _encode(v, out)
        out.append(b"e")
    else:
        raise TypeError(f"cannot bencode {type(value).__name__}")
