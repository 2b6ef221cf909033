"""Every SDP vector through the relay in every ICE mode: the output parses, points at the
relay, and keeps every other line in its original order and spelling."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from sipedge import sdp
from sipedge.media.ports import RangePortAllocator
from sipedge.media.relay import ICE_ATTRS, Flags, MediaRelay, RelayConfig

VECTORS = Path(__file__).resolve().parents[2] / "vectors" / "sdp"
GOOD = sorted(p.name for p in VECTORS.glob("*.sdp") if not p.name.startswith("bad_"))
ADV = "203.0.113.1"
REWRITTEN_ATTRS = {*ICE_ATTRS, "rtcp", "ice-lite", "rtcp-mux"}


def untouched(desc: sdp.SessionDescription) -> list[str]:
    out = []
    for section in [desc, *desc.media]:
        for line in section.lines:
            if line.kind in ("c", "m") or (line.kind == "a" and line.attr_name in REWRITTEN_ATTRS):
                continue
            if line.kind == "a" and line.attr_name == "candidate":
                continue
            out.append(line.text())
    return out


@pytest.mark.parametrize("name", GOOD)
@pytest.mark.parametrize("ice", ["auto", "remove", "force", "relay"])
def test_vector_rewrite(name: str, ice: str) -> None:
    data = (VECTORS / name).read_bytes()
    r = MediaRelay(RelayConfig(advertised_address=ADV), RangePortAllocator(30000, 30099, random.Random(2)))
    out = sdp.parse(r.offer("c", "f", data, 0.0, Flags(ice=ice)))
    src = sdp.parse(data)
    assert untouched(out) == untouched(src)
    assert len(out.media) == len(src.media)
    ports = set(r.ports)
    for i, m in enumerate(out.media):
        if src.media[i].port == 0:
            assert m.port == 0
            continue
        assert m.port in ports and m.m.port_count is None
        conn = out.media_connection(i)
        assert conn is not None
        assert conn.address == ADV or conn.is_hold
        rtcp = m.rtcp
        assert rtcp is not None and rtcp.port in ports
        cands = m.candidates
        if ice == "remove" or (ice == "auto" and src.media[i].ice_ufrag is None and src.ice_ufrag is None):
            assert cands == [] and m.ice_ufrag is None and not out.ice_lite
        elif ice == "force" or ice == "auto":
            assert {c.address for c in cands} == {ADV} and out.ice_lite and m.ice_pwd
        elif src.media[i].candidates:  # relay: originals kept, one relay candidate added
            assert [c for c in cands if c.type != "relay"] == [c for c in src.media[i].candidates if c.type != "relay"]
            assert any(c.type == "relay" and c.address == ADV and c.port == m.port for c in cands)
    # the answer direction works for every vector too (sent back as the callee's answer)
    back = sdp.parse(r.answer("c", "f", "t", data, 1.0, Flags(ice=ice)))
    assert untouched(back) == untouched(src)
