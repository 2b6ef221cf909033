"""STUN credentials and integrity (RFC 8489 §9, §14.5-14.8)."""

from __future__ import annotations

import hashlib
import hmac
import zlib

from .attributes import PasswordAlgorithmCode

FINGERPRINT_XOR = 0x5354554E


def long_term_key(
    username: str,
    realm: str,
    password: str,
    algorithm: PasswordAlgorithmCode = PasswordAlgorithmCode.MD5,
) -> bytes:
    """RFC 8489 §9.2.2: the key of the long-term credential mechanism.

    (The OpaqueString/SASLprep profile is not applied: keys are computed from the
    UTF-8 text as given, like most deployed servers do.)
    """
    text = f"{username}:{realm}:{password}".encode()
    if algorithm == PasswordAlgorithmCode.SHA256:
        return hashlib.sha256(text).digest()
    return hashlib.md5(text).digest()


def short_term_key(password: str) -> bytes:
    """RFC 8489 §9.1.1."""
    return password.encode("utf-8")


def userhash(username: str, realm: str) -> bytes:
    """RFC 8489 §14.4: SHA-256(username ":" realm)."""
    return hashlib.sha256(f"{username}:{realm}".encode()).digest()


def hmac_sha1(key: bytes, data: bytes) -> bytes:
    return hmac.new(key, data, hashlib.sha1).digest()


def hmac_sha256(key: bytes, data: bytes) -> bytes:
    return hmac.new(key, data, hashlib.sha256).digest()


def crc(data: bytes) -> int:
    return (zlib.crc32(data) ^ FINGERPRINT_XOR) & 0xFFFFFFFF
