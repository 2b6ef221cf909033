"""DTLS-SRTP associations over pyOpenSSL (RFC 5763/5764): the adapter behind the relay
core's :class:`~sipedge.media.secure.DtlsFactory`.

One :class:`DtlsContext` per relay holds the certificate (ECDSA P-256, self-signed,
generated on first start under ``<data_dir>/dtls/`` and reused after, like the SIP TLS
one) and an OpenSSL context offering the DTLS-SRTP profiles. Each
:class:`DtlsAssociation` is an ``SSL.Connection`` over memory BIOs: datagrams in through
:meth:`receive`, flights out as return values, retransmission by OpenSSL's DTLS timer
read through :meth:`get_timer` / run by :meth:`handle_timer` on the relay's clock.

The peer's certificate is not checked against a CA (WebRTC certificates are self-signed)
but against the fingerprints its SDP carried (RFC 8122 §5); without a match the
association fails and no key leaves it. Anything a peer sends (garbage, truncated
records, alerts) fails the association at worst: never an exception into the packet path.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from OpenSSL import SSL

from ..media.secure import SRTP_PROFILES, SrtpKeys
from ..sdp import Fingerprint
from . import tls

log = logging.getLogger(__name__)

MTU = 1500  # the most read from OpenSSL per datagram: a flight with an ECDSA P-256
# certificate is well under it, so records are never split across datagrams
_KEY_SALT = {"SRTP_AES128_CM_SHA1_80": (16, 14), "SRTP_AES128_CM_SHA1_32": (16, 14),
             "SRTP_AEAD_AES_128_GCM": (16, 12)}
_HASHES = {"sha-1": hashes.SHA1(), "sha-224": hashes.SHA224(), "sha-256": hashes.SHA256(),
           "sha-384": hashes.SHA384(), "sha-512": hashes.SHA512()}
_CIPHERS = b"ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:" \
    b"ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-ECDSA-AES128-SHA:ECDHE-RSA-AES128-SHA"


def _digest(cert: x509.Certificate, algorithm: str) -> str | None:
    h = _HASHES.get(algorithm.lower())
    if h is None:
        return None
    return ":".join(f"{b:02X}" for b in cert.fingerprint(h))


class DtlsContext:
    """The relay's DTLS certificate and OpenSSL context; calling it makes an association."""

    def __init__(self, data_dir: str | Path) -> None:
        base = Path(data_dir) / "dtls"
        cert = tls.ensure_certificate(base / "cert.pem", base / "key.pem", ("sipedge-dtls",))
        self.cert_path, self.key_path = cert.cert, cert.key
        self._fingerprint = Fingerprint("sha-256", cert.fingerprint)
        ctx = SSL.Context(SSL.DTLS_METHOD)
        ctx.use_certificate_file(str(cert.cert))
        ctx.use_privatekey_file(str(cert.key))
        ctx.check_privatekey()
        ctx.set_cipher_list(_CIPHERS)
        ctx.set_tlsext_use_srtp(":".join(SRTP_PROFILES).encode())
        # the peer must show a certificate; its authenticity is the SDP fingerprint's job
        ctx.set_verify(SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT, lambda *args: True)
        self._ctx = ctx

    @property
    def fingerprint(self) -> Fingerprint:
        return self._fingerprint

    def __call__(self, role: str, remote: Sequence[Fingerprint]) -> DtlsAssociation:
        return DtlsAssociation(self._ctx, role, remote)


class DtlsAssociation:
    """One DTLS association (client or server) over memory BIOs."""

    def __init__(self, ctx: SSL.Context, role: str, remote: Sequence[Fingerprint]) -> None:
        if role not in ("client", "server"):
            raise ValueError(f"DTLS role {role!r}: client or server")
        self.role = role
        self._remote = tuple(remote)
        self._conn = SSL.Connection(ctx, None)
        if role == "server":
            self._conn.set_accept_state()
        else:
            self._conn.set_connect_state()
        self._keys: SrtpKeys | None = None
        self._failure: str | None = None
        self._done = False
        self._timer_at: float | None = None

    # -- DtlsEndpoint ------------------------------------------------------------------
    @property
    def keys(self) -> SrtpKeys | None:
        return self._keys

    @property
    def failure(self) -> str | None:
        return self._failure

    def start(self, now: float) -> list[bytes]:
        if self.role == "client" and not self._done and self._failure is None:
            self._step()
        return self._flush(now)

    def receive(self, data: bytes, now: float) -> list[bytes]:
        if self._failure is not None:
            return []
        try:
            self._conn.bio_write(data)
        except SSL.Error as exc:
            self._fail(f"bad record: {exc}")
            return []
        if not self._done:
            self._step()
        else:
            self._read_app()
        return self._flush(now)

    def get_timer(self) -> float | None:
        return None if self._done or self._failure is not None else self._timer_at

    def handle_timer(self, now: float) -> list[bytes]:
        if self._done or self._failure is not None:
            return []
        try:
            self._conn.DTLSv1_handle_timeout()
        except SSL.Error as exc:
            self._fail(f"handshake timed out: {exc}")
            return []
        return self._flush(now)

    # -- inside --------------------------------------------------------------------------
    def _step(self) -> None:
        try:
            self._conn.do_handshake()
        except SSL.WantReadError:
            return
        except SSL.Error as exc:
            self._fail(f"handshake failed: {exc}")
            return
        self._done = True
        self._finish()

    def _read_app(self) -> None:
        """After the handshake only alerts (close_notify) arrive on this path."""
        try:
            self._conn.recv(MTU)
        except SSL.WantReadError:
            return
        except SSL.ZeroReturnError:
            self._fail("peer closed the association (close_notify)")
        except SSL.Error as exc:
            self._fail(f"bad record after the handshake: {exc}")

    def _finish(self) -> None:
        peer = self._conn.get_peer_certificate()
        if peer is None:
            self._fail("peer sent no certificate")
            return
        cert = peer.to_cryptography()
        matched = any(_digest(cert, fp.hash_func) == fp.value.upper() for fp in self._remote)
        if not matched:
            got = _digest(cert, "sha-256")
            want = ", ".join(str(fp) for fp in self._remote) or "none in the SDP"
            self._fail(f"fingerprint mismatch: certificate sha-256 {got}, SDP {want}")
            return
        profile = self._conn.get_selected_srtp_profile().decode()
        sizes = _KEY_SALT.get(profile)
        if sizes is None:
            self._fail(f"no SRTP profile agreed ({profile or 'none'})")
            return
        key_len, salt_len = sizes
        material = self._conn.export_keying_material(b"EXTRACTOR-dtls_srtp", 2 * (key_len + salt_len))
        client_key = material[:key_len]
        server_key = material[key_len:2 * key_len]
        client_salt = material[2 * key_len:2 * key_len + salt_len]
        server_salt = material[2 * key_len + salt_len:]
        client, server = client_key + client_salt, server_key + server_salt
        local, remote = (client, server) if self.role == "client" else (server, client)
        self._keys = SrtpKeys(profile, local, remote)

    def _flush(self, now: float) -> list[bytes]:
        out: list[bytes] = []
        while True:
            try:
                chunk = self._conn.bio_read(MTU)
            except SSL.WantReadError:
                break
            except SSL.Error:
                break
            if not chunk:
                break
            out.append(chunk)
        if not self._done and self._failure is None:
            try:
                left = self._conn.DTLSv1_get_timeout()
            except SSL.Error:
                left = None
            self._timer_at = None if left is None else now + left
        return out

    def _fail(self, why: str) -> None:
        if self._failure is None:
            self._failure = why
            self._keys = None
