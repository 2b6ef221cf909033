"""What the relay core needs of DTLS-SRTP (RFC 5763/5764), as protocols: the core
decides when a stream facing a DTLS party gets an association, in which role, against
which fingerprints, and feeds it the party's DTLS records; the adapter
(``sipedge.server.dtls``) implements the association over pyOpenSSL, because OpenSSL
objects stay out of the cores.

Once the handshake is done and the peer's certificate matched a fingerprint of its SDP,
:attr:`DtlsEndpoint.keys` gives the SRTP master keys, from which ``media.srtp`` builds
the per-stream protect/unprotect transforms (libsrtp through pylibsrtp).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from ..sdp import Fingerprint  # hash_func as in SDP ("sha-256"), value "AB:CD:..."

SRTP_PROFILES = ("SRTP_AEAD_AES_128_GCM", "SRTP_AES128_CM_SHA1_80", "SRTP_AES128_CM_SHA1_32")
"""The DTLS-SRTP protection profiles offered, in our order of preference (RFC 5764 §4.1.2,
RFC 7714)."""


@dataclass(frozen=True, slots=True)
class SrtpKeys:
    """The SRTP master keys a DTLS handshake exported (RFC 5764 §4.2): ``local`` is what we
    protect with (our write key + salt), ``remote`` what we unprotect with."""

    profile: str
    local: bytes
    remote: bytes


class DtlsEndpoint(Protocol):
    """One DTLS association on one stream's 5-tuple (``role`` "server": we wait for the
    ClientHello, ``a=setup:passive``; "client": we send it, ``a=setup:active``).

    Every method returns the datagrams to send to the party (a flight may be several);
    ``now`` is the relay's monotonic clock."""

    def start(self, now: float) -> list[bytes]:
        """Begin: the client's first flight (the server sends nothing yet)."""
        ...

    def receive(self, data: bytes, now: float) -> list[bytes]:
        """One DTLS datagram from the party: the handshake's next flight, alerts, or nothing."""
        ...

    def get_timer(self) -> float | None:
        """When :meth:`handle_timer` must run (a flight to retransmit); None when idle."""
        ...

    def handle_timer(self, now: float) -> list[bytes]:
        """Retransmit a lost flight, with the backoff of RFC 6347 §4.2.4.1."""
        ...

    @property
    def keys(self) -> SrtpKeys | None:
        """The exported SRTP keys once the handshake completed and the party's certificate
        matched one of its SDP fingerprints; None before, and for ever after a failure."""
        ...

    @property
    def closed(self) -> bool:
        """The peer ended an established association with close_notify (a hang-up, not a
        failure; ``failure`` says so too, and the keys are gone)."""
        ...

    @property
    def failure(self) -> str | None:
        """Why the association failed (no fingerprint matched, an alert, a bad record that
        ended the handshake, or the party closed it with close_notify after success, which
        also makes :attr:`keys` None), for the log and the counters; None while it is fine."""
        ...


class DtlsFactory(Protocol):
    """Makes associations with the relay's certificate (generated on first start, kept in
    the data directory)."""

    @property
    def fingerprint(self) -> Fingerprint:
        """Our certificate's SHA-256 fingerprint, written into every SDP we send a DTLS party."""
        ...

    def __call__(self, role: str, remote: Sequence[Fingerprint]) -> DtlsEndpoint:
        """A new association in ``role`` ("client" or "server") that accepts only a peer
        certificate matching one of ``remote``."""
        ...
