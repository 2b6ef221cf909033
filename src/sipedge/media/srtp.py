"""SRTP and SRTCP for one stream (RFC 3711, RFC 7714), with libsrtp through pylibsrtp:
protect what goes to a party that speaks SRTP, unprotect what comes from it. Nothing
here is crypto written by hand: the keys come from a DTLS handshake (RFC 5764) and
libsrtp does the rest, including the replay window and the rollover counter of long
calls. Failures (a bad authentication tag, a replay, a packet too short) return None:
the packet path drops and counts them, and the call goes on.
"""

from __future__ import annotations

import pylibsrtp

from .secure import SrtpKeys

_PROFILES = {
    "SRTP_AES128_CM_SHA1_80": pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_80,
    "SRTP_AES128_CM_SHA1_32": pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_32,
    "SRTP_AEAD_AES_128_GCM": pylibsrtp.Policy.SRTP_PROFILE_AEAD_AES_128_GCM,
}
REPLAY_WINDOW = 1024  # packets (libsrtp's maximum is 2^15; browsers' reordering is far less)


class SrtpTransform:
    """One party's SRTP: ``protect`` with our key towards it, ``unprotect`` with its key."""

    __slots__ = ("_rx", "_tx")

    def __init__(self, keys: SrtpKeys) -> None:
        profile = _PROFILES.get(keys.profile)
        if profile is None:
            raise ValueError(f"SRTP profile {keys.profile!r} not supported")
        rx = pylibsrtp.Policy(key=keys.remote, ssrc_type=pylibsrtp.Policy.SSRC_ANY_INBOUND, srtp_profile=profile)
        rx.window_size = REPLAY_WINDOW
        tx = pylibsrtp.Policy(key=keys.local, ssrc_type=pylibsrtp.Policy.SSRC_ANY_OUTBOUND, srtp_profile=profile)
        tx.allow_repeat_tx = True  # a retransmitted packet (same seq) is not an error
        tx.window_size = REPLAY_WINDOW
        self._rx = pylibsrtp.Session(rx)
        self._tx = pylibsrtp.Session(tx)

    def protect(self, packet: bytes, rtcp: bool) -> bytes | None:
        try:
            return self._tx.protect_rtcp(packet) if rtcp else self._tx.protect(packet)
        except pylibsrtp.Error:
            return None

    def unprotect(self, packet: bytes, rtcp: bool) -> bytes | None:
        try:
            return self._rx.unprotect_rtcp(packet) if rtcp else self._rx.unprotect(packet)
        except pylibsrtp.Error:
            return None
