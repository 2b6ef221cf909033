"""Interop: a DtlsAssociation handshakes in-process with aiortc's RTCDtlsTransport (an
independent DTLS-SRTP stack: its own context, profile list and key split), then SRTP
flows between aiortc's libsrtp sessions and our SrtpTransform."""

from __future__ import annotations

import asyncio
import struct
import tempfile

import pytest

from sipedge.media.srtp import SrtpTransform
from sipedge.sdp import Fingerprint
from sipedge.server.dtls import DtlsAssociation, DtlsContext

aiortc_dtls = pytest.importorskip("aiortc.rtcdtlstransport")

RTP = struct.pack("!BBHII", 0x80, 0, 1, 160, 0xCAFE) + b"\xff" * 160


class LoopbackIce:
    """Just enough of aiortc's RTCIceTransport: ``role``, ``_send`` (to our association)
    and ``_recv`` (what our association answered)."""

    def __init__(self, role: str, peer: DtlsAssociation) -> None:
        self.role = role
        self.state = "completed"
        self.peer = peer
        self.inbox: asyncio.Queue[bytes] = asyncio.Queue()
        self.srtp_from_aiortc: list[bytes] = []
        self.loop = asyncio.get_running_loop()

    async def _send(self, data: bytes) -> None:
        if 127 < data[0] < 192:
            self.srtp_from_aiortc.append(data)
            return
        for datagram in self.peer.receive(data, self.loop.time()):
            self.inbox.put_nowait(datagram)

    async def _recv(self) -> bytes:
        return await self.inbox.get()


@pytest.mark.parametrize(("ice_role", "our_role"), [("controlling", "client"), ("controlled", "server")])
async def test_handshake_and_srtp_with_aiortc(ice_role: str, our_role: str) -> None:
    ours = DtlsContext(tempfile.mkdtemp())
    certificate = aiortc_dtls.RTCCertificate.generateCertificate()
    theirs = [Fingerprint(f.algorithm, f.value) for f in certificate.getFingerprints()]
    association = ours(our_role, theirs)
    ice = LoopbackIce(ice_role, association)
    transport = aiortc_dtls.RTCDtlsTransport(ice, [certificate])
    params = aiortc_dtls.RTCDtlsParameters(
        fingerprints=[aiortc_dtls.RTCDtlsFingerprint(ours.fingerprint.hash_func, ours.fingerprint.value)]
    )
    loop = asyncio.get_running_loop()
    for datagram in association.start(loop.time()):
        ice.inbox.put_nowait(datagram)
    await asyncio.wait_for(transport.start(params), 10)
    try:
        assert transport.state == "connected"
        assert association.failure is None
        keys = association.keys
        assert keys is not None and keys.profile == "SRTP_AEAD_AES_128_GCM"
        srtp = SrtpTransform(keys)
        # aiortc → us
        await transport._send_rtp(RTP)
        assert srtp.unprotect(ice.srtp_from_aiortc[-1], rtcp=False) == RTP
        # us → aiortc (its inbound libsrtp session)
        protected = srtp.protect(RTP, rtcp=False)
        assert protected is not None
        assert transport._rx_srtp.unprotect(protected) == RTP
    finally:
        await transport.stop()
    # aiortc's stop sends close_notify: our association is closed and its keys gone
    await asyncio.sleep(0)
    assert association.keys is None
    assert association.failure is not None and "close_notify" in association.failure
