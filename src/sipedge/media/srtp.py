"""SRTP/SRTCP protect and unprotect for one stream (RFC 3711, RFC 7714), over libsrtp.

The crypto is libsrtp's, through pylibsrtp: nothing here encrypts or authenticates by
hand. What this module adds is what the relay needs around it:

- :class:`SrtpTransform` is built from the :class:`~sipedge.media.secure.SrtpKeys` that a
  DTLS handshake exported (RFC 5764 §4.2) or from two SDES keys (RFC 4568,
  :meth:`SrtpTransform.from_sdes`). One outbound session protects with our key, one
  inbound session unprotects with the party's key; both accept any SSRC, because a
  relay leg carries whatever SSRCs the party sends (audio, video, RTX, a new SSRC after a
  re-INVITE).
- ``protect``/``unprotect`` return ``None`` for anything libsrtp refuses (bad auth tag,
  replay, a packet too short or too long) and never raise: a hostile packet is dropped
  on the packet path and the relay counts it, the stream lives on (STYLE.md B5).
- :class:`SdesKeyParams` is the codec of an ``a=crypto`` key parameter,
  ``inline:<base64 key||salt>[|lifetime][|MKI:length]``, with a :class:`ParseError`
  that says what was wrong (a key of the wrong length is the classic interop bug).
"""

from __future__ import annotations

import base64
import binascii
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass

import pylibsrtp

from ..errors import ParseError, UsageError
from .secure import SRTP_PROFILES, SrtpKeys

PROFILE_KEY_LENGTHS: dict[str, tuple[int, int]] = {
    "SRTP_AES128_CM_SHA1_80": (16, 14),
    "SRTP_AES128_CM_SHA1_32": (16, 14),
    "SRTP_AEAD_AES_128_GCM": (16, 12),
}
"""(master key, master salt) lengths in bytes per DTLS-SRTP profile (RFC 5764 §4.1.2,
RFC 7714 §12)."""

SDES_SUITES: dict[str, str] = {
    "AES_CM_128_HMAC_SHA1_80": "SRTP_AES128_CM_SHA1_80",
    "AES_CM_128_HMAC_SHA1_32": "SRTP_AES128_CM_SHA1_32",
    "AEAD_AES_128_GCM": "SRTP_AEAD_AES_128_GCM",
}
"""SDES crypto-suite names (RFC 4568 §6.2, RFC 7714 §14.2) → the DTLS-SRTP profile name
with the same transforms, so both key sources share one table."""

_LIBSRTP_PROFILES: dict[str, int] = {
    "SRTP_AES128_CM_SHA1_80": pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_80,
    "SRTP_AES128_CM_SHA1_32": pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_32,
    "SRTP_AEAD_AES_128_GCM": pylibsrtp.Policy.SRTP_PROFILE_AEAD_AES_128_GCM,
}

DEFAULT_WINDOW_SIZE = 1024
"""Replay window in packets (libsrtp's default is 128). Wider than the default because a
relay sees the reordering of a whole path, and video bursts reorder by hundreds of
packets; libsrtp accepts 64..32767."""

MAX_LIFETIME_EXPONENT = 48
"""RFC 3711 §9.2: at most 2^48 SRTP packets per master key."""

_LIFETIME = re.compile(r"(?:2\^)?[0-9]{1,20}\Z")
_MKI = re.compile(r"([0-9]{1,40}):([0-9]{1,3})\Z")


@dataclass(frozen=True, slots=True)
class SdesKeyParams:
    """One RFC 4568 §6.1 key parameter: ``inline:<key||salt>[|lifetime][|MKI:length]``.

    ``key`` is the master key followed by the master salt, as the base64 carries them.
    ``lifetime`` is in packets (``2^31`` is kept as 2147483648); we do not rekey, so the
    relay only reads it to refuse keys that would expire absurdly early. ``mki`` is
    ``(value, length in bytes)``; libsrtp through pylibsrtp cannot select keys by MKI, so
    :meth:`SrtpTransform.from_sdes` refuses such a key (the offer/answer code then picks
    another ``a=crypto`` line or refuses SDES).
    """

    key: bytes
    lifetime: int | None = None
    mki: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        if self.lifetime is not None and not 1 <= self.lifetime <= 2**MAX_LIFETIME_EXPONENT:
            raise UsageError(f"SDES lifetime {self.lifetime} outside 1..2^48")
        if self.mki is not None:
            value, length = self.mki
            if not 1 <= length <= 128 or not 0 <= value < 256**length:
                raise UsageError(f"SDES MKI {value}:{length} does not fit its length")

    @classmethod
    def parse(cls, text: str, suite: str | None = None) -> SdesKeyParams:
        """Parse one key parameter; with ``suite``, also check that the key has the
        length the suite needs. Raises only :class:`ParseError`."""
        method, sep, info = text.strip().partition(":")
        if not sep or method.lower() != "inline":
            raise _bad(f"SDES key parameter {_show(text)} does not start with 'inline:'")
        if ";" in info:
            raise _bad("several SDES keys in one a=crypto line are not supported")
        parts = info.split("|")
        if len(parts) > 3:
            raise _bad(f"SDES key parameter {_show(text)} has too many '|' fields")
        key = _decode_key(parts[0])
        lifetime: int | None = None
        mki: tuple[int, int] | None = None
        for extra in parts[1:]:
            m = _MKI.match(extra)
            if m is not None:
                if mki is not None:
                    raise _bad("SDES key parameter has two MKI fields")
                value, length = int(m.group(1)), int(m.group(2))
                if not 1 <= length <= 128 or value >= 256**length:
                    raise _bad(f"SDES MKI {extra!r}: the value must fit 1..128 bytes of length")
                mki = (value, length)
            elif _LIFETIME.match(extra):
                if lifetime is not None or mki is not None:
                    raise _bad("SDES lifetime must come once, before the MKI")
                lifetime = _lifetime(extra)
            else:
                raise _bad(f"SDES key parameter field {_show(extra)} is neither a lifetime nor MKI:length")
        params = cls(key, lifetime, mki)
        if suite is not None:
            params.check(suite)
        return params

    def check(self, suite: str) -> None:
        """Raise :class:`ParseError` unless this key fits ``suite`` (RFC 4568 §6.2)."""
        profile = _profile_of_suite(suite)
        key_len, salt_len = PROFILE_KEY_LENGTHS[profile]
        if len(self.key) != key_len + salt_len:
            raise _bad(
                f"SDES key for {suite} must be {key_len}+{salt_len} = {key_len + salt_len} "
                f"bytes of key and salt, got {len(self.key)}"
            )

    def serialize(self) -> str:
        out = "inline:" + base64.b64encode(self.key).decode("ascii")
        if self.lifetime is not None:
            n = self.lifetime
            out += f"|2^{n.bit_length() - 1}" if n & (n - 1) == 0 else f"|{n}"
        if self.mki is not None:
            out += f"|{self.mki[0]}:{self.mki[1]}"
        return out

    def __str__(self) -> str:
        return self.serialize()


def generate_sdes_key(
    suite: str, token_bytes: Callable[[int], bytes] = secrets.token_bytes
) -> SdesKeyParams:
    """A fresh master key and salt for ``suite`` (no lifetime, no MKI, as browsers and
    rtpengine offer them). ``token_bytes`` is injectable for reproducible tests; the
    default is the OS CSPRNG."""
    key_len, salt_len = PROFILE_KEY_LENGTHS[_profile_of_suite(suite, UsageError)]
    return SdesKeyParams(token_bytes(key_len + salt_len))


class SrtpTransform:
    """SRTP/SRTCP for one relay leg: protect what we send with ``keys.local``, unprotect
    what the party sends with ``keys.remote``.

    libsrtp tracks each SSRC's rollover counter and replay window itself, so one
    transform serves every SSRC on the leg and a call of any length (the 16-bit sequence
    number wraps every ~22 minutes of 20 ms audio). Not thread-safe, like the relay core.
    """

    __slots__ = ("_inbound", "_outbound", "profile")

    def __init__(self, keys: SrtpKeys, *, window_size: int = DEFAULT_WINDOW_SIZE) -> None:
        if keys.profile not in _LIBSRTP_PROFILES:
            raise UsageError(f"unknown SRTP profile {keys.profile!r}; expected one of {SRTP_PROFILES}")
        key_len, salt_len = PROFILE_KEY_LENGTHS[keys.profile]
        for name, key in (("local", keys.local), ("remote", keys.remote)):
            if len(key) != key_len + salt_len:
                raise UsageError(
                    f"{keys.profile} {name} key must be {key_len + salt_len} bytes, got {len(key)}"
                )
        if not 64 <= window_size <= 0x7FFF:
            raise UsageError(f"SRTP window_size {window_size} outside 64..32767")
        profile = _LIBSRTP_PROFILES[keys.profile]
        inbound = pylibsrtp.Policy(
            key=keys.remote, ssrc_type=pylibsrtp.Policy.SSRC_ANY_INBOUND, srtp_profile=profile
        )
        inbound.window_size = window_size
        outbound = pylibsrtp.Policy(
            key=keys.local, ssrc_type=pylibsrtp.Policy.SSRC_ANY_OUTBOUND, srtp_profile=profile
        )
        # The relay may forward a party's retransmission (same SSRC and sequence number)
        # unchanged; libsrtp would refuse to protect it twice without this.
        outbound.allow_repeat_tx = True
        outbound.window_size = window_size
        self.profile: str = keys.profile
        self._inbound = pylibsrtp.Session(inbound)
        self._outbound = pylibsrtp.Session(outbound)

    @classmethod
    def from_sdes(
        cls,
        suite: str,
        local: SdesKeyParams | str,
        remote: SdesKeyParams | str,
        *,
        window_size: int = DEFAULT_WINDOW_SIZE,
    ) -> SrtpTransform:
        """A transform from the SDES keys of an offer/answer: ``local`` is the key we put
        in our ``a=crypto`` (we protect with it), ``remote`` the party's. Strings are
        parsed as key parameters. Raises :class:`ParseError` for an unknown suite, a key
        of the wrong length or an MKI key (unsupported)."""
        profile = _profile_of_suite(suite)
        keys: list[bytes] = []
        for params in (local, remote):
            p = SdesKeyParams.parse(params, suite) if isinstance(params, str) else params
            p.check(suite)
            if p.mki is not None:
                raise _bad("SDES keys with an MKI are not supported")
            keys.append(p.key)
        return cls(SrtpKeys(profile, keys[0], keys[1]), window_size=window_size)

    def protect(self, packet: bytes, rtcp: bool) -> bytes | None:
        """RTP → SRTP (or RTCP → SRTCP); None if libsrtp refuses the packet."""
        try:
            if rtcp:
                return self._outbound.protect_rtcp(packet)
            return self._outbound.protect(packet)
        except (pylibsrtp.Error, ValueError, TypeError):
            return None

    def unprotect(self, packet: bytes, rtcp: bool) -> bytes | None:
        """SRTP → RTP (or SRTCP → RTCP); None on a bad auth tag, a replay, a packet too
        short to carry a header and tag, or one too long."""
        try:
            if rtcp:
                return self._inbound.unprotect_rtcp(packet)
            return self._inbound.unprotect(packet)
        except (pylibsrtp.Error, ValueError, TypeError):
            return None


def _profile_of_suite(suite: str, error: type[Exception] = ParseError) -> str:
    profile = SDES_SUITES.get(suite.upper())
    if profile is None:
        msg = f"unsupported SDES crypto suite {_show(suite)}; expected one of {', '.join(SDES_SUITES)}"
        raise _bad(msg) if error is ParseError else error(msg)
    return profile


def _decode_key(text: str) -> bytes:
    if not text:
        raise _bad("SDES key parameter has an empty key")
    # RFC 4568 §6.1 wants padded base64; some endpoints drop the padding.
    padded = text + "=" * (-len(text) % 4)
    try:
        return base64.b64decode(padded, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise _bad(f"SDES key {_show(text)} is not base64: {exc}") from exc


def _lifetime(text: str) -> int:
    if text.startswith("2^"):
        exponent = int(text[2:])
        if exponent > MAX_LIFETIME_EXPONENT:
            raise _bad(f"SDES lifetime {text} exceeds 2^{MAX_LIFETIME_EXPONENT} packets")
        return 1 << exponent
    value = int(text)
    if not 1 <= value <= 2**MAX_LIFETIME_EXPONENT:
        raise _bad(f"SDES lifetime {text} outside 1..2^{MAX_LIFETIME_EXPONENT} packets")
    return value


def _show(text: str) -> str:
    return repr(text if len(text) <= 60 else text[:57] + "...")


def _bad(message: str) -> ParseError:
    # 488 Not Acceptable Here: the offer/answer code refuses an SDP whose only crypto
    # line is unusable.
    return ParseError(message, (488, "Not Acceptable Here"))


class KeyedLater:
    """The packet path's ``ingress``/``egress`` for a party whose SRTP keys arrive later (a
    DTLS handshake, an SDES answer): packets are dropped (None) until :attr:`srtp` is set.
    Base of ``bridge.DtlsStream`` and ``sdes.SdesStream``."""

    __slots__ = ("srtp",)

    def __init__(self) -> None:
        self.srtp: SrtpTransform | None = None

    def unprotect(self, data: bytes, rtcp: bool) -> bytes | None:
        srtp = self.srtp
        return None if srtp is None else srtp.unprotect(data, rtcp)

    def protect(self, data: bytes, rtcp: bool) -> bytes | None:
        srtp = self.srtp
        return None if srtp is None else srtp.protect(data, rtcp)
