"""DTLS-SRTP associations over pyOpenSSL (RFC 5763, RFC 5764, RFC 6347, RFC 8842).

This is the adapter side of :mod:`sipedge.media.secure`: the relay core decides roles and
fingerprints, and drives the objects made here through the ``DtlsEndpoint`` protocol.
OpenSSL lives only in ``server/`` (the import-linter forbids it in the cores).

- :func:`ensure_dtls_certificate`: the relay's certificate, ECDSA P-256 self-signed,
  generated on first use under ``<data_dir>/dtls/`` (``cert.pem``, ``key.pem`` mode 0600)
  and reused across restarts so the ``a=fingerprint`` we write stays stable. It is valid
  for :data:`VALIDITY_DAYS` and regenerated at start-up when it expires within
  :data:`RENEW_BEFORE`: browsers check only the fingerprint, never the dates (RFC 8122
  §5), but a certificate that is long expired still looks odd in a capture and some
  stacks reject it, so we never present one.
- :class:`DtlsContext` is the ``DtlsFactory``: one ``SSL.Context`` with that certificate,
  the SRTP profiles of :data:`sipedge.media.secure.SRTP_PROFILES`, and peer verification
  by fingerprint only.
- :class:`DtlsAssociation` is one ``DtlsEndpoint``: a ``SSL.Connection`` over memory BIOs,
  so no socket is involved; datagrams in through ``receive``, datagrams out as return
  values, and OpenSSL's retransmission timer exposed as ``get_timer``/``handle_timer``.
"""

from __future__ import annotations

import datetime
import enum
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from OpenSSL import SSL

from ..errors import ConfigError, UsageError
from ..media.secure import SRTP_PROFILES, SrtpKeys
from ..media.srtp import PROFILE_KEY_LENGTHS
from ..sdp import Fingerprint
from . import tls

log = logging.getLogger(__name__)

VALIDITY_DAYS = 365
RENEW_BEFORE = datetime.timedelta(days=1)

MTU = 1200
"""Largest datagram we send: what browsers use for DTLS (1200 bytes of UDP payload fits
a 1280-byte IPv6 minimum MTU behind a TURN relay with its ChannelData header)."""

CIPHERS = (
    b"ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:"
    b"ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-AES128-GCM-SHA256:"
    b"ECDHE-RSA-AES256-GCM-SHA384:ECDHE-RSA-CHACHA20-POLY1305:"
    b"ECDHE-ECDSA-AES128-SHA:ECDHE-RSA-AES128-SHA:ECDHE-ECDSA-AES256-SHA:ECDHE-RSA-AES256-SHA"
)
"""DTLS 1.2 suites with forward secrecy. Our certificate is ECDSA, so only the ECDSA
suites are ever chosen when we serve; the RSA ones are there for the client role
towards peers (older SIP phones, some gateways) whose certificate is RSA."""

HASHES: dict[str, hashes.HashAlgorithm] = {
    "sha-1": hashes.SHA1(),
    "sha-224": hashes.SHA224(),
    "sha-256": hashes.SHA256(),
    "sha-384": hashes.SHA384(),
    "sha-512": hashes.SHA512(),
}
"""The RFC 8122 §5 hash functions we can check a peer certificate with; ``md5``/``md2``
fingerprints are ignored (RFC 8122 deprecates them)."""

_ROLES = ("client", "server")
_DTLS1_2_VERSION = 0xFEFD  # OpenSSL's DTLS1_2_VERSION; pyOpenSSL does not export it
_HANDSHAKE, _ALERT = 22, 21
_RECORD_HEADER = 13  # type, version, epoch, sequence number, length (RFC 6347 §4.1)


class DtlsCertificate(NamedTuple):
    """The relay's DTLS certificate and key files, with the SHA-256 fingerprint for SDP."""

    cert: Path
    key: Path
    fingerprint: Fingerprint
    not_after: datetime.datetime


def dtls_certificate_paths(data_dir: str | Path) -> tuple[Path, Path]:
    """``<data_dir>/dtls/cert.pem`` and ``key.pem``: separate from the SIP TLS
    certificate, which an operator may replace with a CA-signed RSA one."""
    base = Path(data_dir) / "dtls"
    return base / "cert.pem", base / "key.pem"


def ensure_dtls_certificate(
    data_dir: str | Path, *, now: datetime.datetime | None = None
) -> DtlsCertificate:
    """Load the DTLS certificate from the data directory, generating it when absent or
    expiring within :data:`RENEW_BEFORE`. Raises ConfigError naming the file (and the
    fix) when only one of the two files exists, or a file is unreadable or corrupt."""
    cert_p, key_p = dtls_certificate_paths(data_dir)
    now = now or datetime.datetime.now(datetime.UTC)
    if tls.pair_present(cert_p, key_p, "dtls", "delete {have} to have a new DTLS certificate generated"):
        cert, _key = _load(cert_p, key_p)
        if cert.not_valid_after_utc - RENEW_BEFORE > now:
            return DtlsCertificate(cert_p, key_p, _fingerprint(cert), cert.not_valid_after_utc)
        log.info("- dtls certificate %s expires %s: generating a new one", cert_p, cert.not_valid_after_utc)
    cert = _generate(cert_p, key_p, now)
    return DtlsCertificate(cert_p, key_p, _fingerprint(cert), cert.not_valid_after_utc)


class DtlsContext:
    """The relay's ``DtlsFactory``: one OpenSSL context, shared by every association.

    Peer certificates are requested and required but not verified against any CA: a
    WebRTC peer's certificate is self-signed, and what authenticates it is the SDP
    fingerprint (RFC 8122 §6), which :class:`DtlsAssociation` checks after the
    handshake. Session tickets are off: DTLS-SRTP never resumes, and tickets would only
    grow the server's flight.
    """

    def __init__(self, data_dir: str | Path, *, mtu: int = MTU) -> None:
        self.certificate = ensure_dtls_certificate(data_dir)
        self.mtu = mtu
        ctx = SSL.Context(SSL.DTLS_METHOD)
        ctx.set_min_proto_version(_DTLS1_2_VERSION)  # DTLS 1.0 is RFC 8996's past
        # OpenSSL would otherwise ask the (memory) BIO for the path MTU and reset ours.
        ctx.set_options(SSL.OP_NO_TICKET | SSL.OP_NO_QUERY_MTU)
        ctx.set_verify(SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT, _accept_any)
        try:
            ctx.use_certificate_file(str(self.certificate.cert))
            ctx.use_privatekey_file(str(self.certificate.key))
            ctx.check_privatekey()
        except SSL.Error as exc:
            raise ConfigError(
                f"dtls: cannot use {self.certificate.cert} with {self.certificate.key}: {exc}; "
                "delete both files to have a new certificate generated"
            ) from exc
        ctx.set_cipher_list(CIPHERS)
        ctx.set_tlsext_use_srtp(":".join(SRTP_PROFILES).encode("ascii"))
        self._ctx = ctx

    @property
    def fingerprint(self) -> Fingerprint:
        return self.certificate.fingerprint

    def __call__(self, role: str, remote: Sequence[Fingerprint]) -> DtlsAssociation:
        return DtlsAssociation(self._ctx, role, remote, mtu=self.mtu)


class State(enum.Enum):
    """RFC 5763's life of an association (the W3C ``RTCDtlsTransportState`` names)."""

    NEW = "new"
    CONNECTING = "connecting"
    CONNECTED = "connected"
    FAILED = "failed"
    CLOSED = "closed"


class DtlsAssociation:
    """One DTLS-SRTP association, sans sockets: the relay feeds the party's DTLS
    datagrams to :meth:`receive` and sends what it returns.

    Rules for hostile input (none of them raises):

    - Garbage, truncated records and records that fail their MAC are dropped by
      OpenSSL's record layer, as RFC 6347 §4.1.2.7 asks; the handshake goes on.
    - A ClientHello arriving at a client, or at a server whose handshake is done, is
      dropped before OpenSSL sees it: it cannot be our peer's (a restarted peer comes
      with a new SDP and a new association), and letting it through would let any
      stranger on the 5-tuple kill the association with a flood of them.
    - A fatal alert, an unexpected handshake message or retransmissions that ran out
      end the handshake: :attr:`failure` says why, :attr:`keys` stays None.
    - After success, a close_notify or fatal alert from the peer (these are
      authenticated, so they are the peer's) also sets :attr:`failure`, and
      :attr:`keys` becomes None: the peer tore the association down (a closed
      PeerConnection), so the stream must stop relaying with those keys. The core
      reads ``keys``/``failure`` after each call.
    """

    def __init__(
        self, context: SSL.Context, role: str, remote: Sequence[Fingerprint], *, mtu: int = MTU
    ) -> None:
        if role not in _ROLES:
            raise UsageError(f"DTLS role must be 'client' or 'server', not {role!r}")
        self.role = role
        self.remote = tuple(remote)
        self.mtu = mtu
        self.state = State.NEW
        self._failure: str | None = None
        self._keys: SrtpKeys | None = None
        self._deadline: float | None = None
        self._ssl = SSL.Connection(context, None)
        self._ssl.set_ciphertext_mtu(mtu)
        if role == "client":
            self._ssl.set_connect_state()
        else:
            self._ssl.set_accept_state()

    # -- the DtlsEndpoint protocol ------------------------------------------------------

    def start(self, now: float) -> list[bytes]:
        if self.state is not State.NEW:
            return []
        self._set_state(State.CONNECTING)
        if self.role == "server":
            return []
        return self._drive(now)

    def receive(self, data: bytes, now: float) -> list[bytes]:
        if self.state in (State.FAILED, State.CLOSED) or not data:
            return []
        if self.state is State.NEW:
            self._set_state(State.CONNECTING)
        if _is_client_hello(data) and (self.role == "client" or self.state is State.CONNECTED):
            log.debug("x dtls %s: ClientHello dropped", self.role)
            return []
        try:
            self._ssl.bio_write(data)
        except SSL.Error as exc:
            log.debug("x dtls %s: bio_write: %s", self.role, exc)
            return []
        return self._drive(now)

    def get_timer(self) -> float | None:
        return self._deadline

    def handle_timer(self, now: float) -> list[bytes]:
        if self._deadline is None or now < self._deadline:
            return []
        if self.state is not State.CONNECTING:
            self._deadline = None
            return []
        try:
            # OpenSSL keeps its own clock: if it is not yet due by that clock (ours ran
            # a little ahead), nothing is resent and _rearm asks again for the rest.
            self._ssl.DTLSv1_handle_timeout()
        except SSL.Error as exc:
            self._fail(f"handshake timed out: {_reason(exc)}")
        out = self._flush()
        self._rearm(now)
        return out

    @property
    def keys(self) -> SrtpKeys | None:
        return self._keys if self._failure is None else None

    @property
    def closed(self) -> bool:
        return self.state is State.CLOSED

    @property
    def failure(self) -> str | None:
        return self._failure

    # -- the machinery --------------------------------------------------------------------

    def _drive(self, now: float) -> list[bytes]:
        if self.state is State.CONNECTING:
            try:
                self._ssl.do_handshake()
            except SSL.WantReadError:
                pass
            except SSL.ZeroReturnError:
                self._fail("peer closed the association during the handshake")
            except SSL.Error as exc:
                self._fail(f"handshake failed: {_reason(exc)}")
            else:
                self._handshake_done()
        elif self.state is State.CONNECTED:
            self._read_records()
        out = self._flush()
        self._rearm(now)
        return out

    def _read_records(self) -> None:
        """After the handshake: consume what the peer sent (alerts; application data,
        which a DTLS-SRTP peer does not send, is discarded), up to a bound so a flood
        cannot pin the loop."""
        for _ in range(16):
            try:
                self._ssl.recv(65536)
            except SSL.WantReadError:
                return
            except SSL.ZeroReturnError:
                self._fail("peer closed the association (close_notify)", State.CLOSED)
                return
            except SSL.Error as exc:
                self._fail(f"association ended: {_reason(exc)}")
                return

    def _handshake_done(self) -> None:
        cert = self._ssl.get_peer_certificate(as_cryptography=True)
        if cert is None:  # VERIFY_FAIL_IF_NO_PEER_CERT makes this unreachable, but be sure
            self._fail("fingerprint mismatch: the peer sent no certificate")
            return
        problem = _match_fingerprint(cert, self.remote)
        if problem is not None:
            self._fail(f"fingerprint mismatch: {problem}")
            return
        profile = self._ssl.get_selected_srtp_profile().decode("ascii", "replace")
        if profile not in PROFILE_KEY_LENGTHS:
            self._fail(f"no SRTP profile negotiated ({profile or 'peer offered no use_srtp'})")
            return
        key_len, salt_len = PROFILE_KEY_LENGTHS[profile]
        try:
            material = self._ssl.export_keying_material(
                b"EXTRACTOR-dtls_srtp", 2 * (key_len + salt_len)
            )
        except SSL.Error as exc:
            self._fail(f"exporting the SRTP keys failed: {_reason(exc)}")
            return
        # RFC 5764 §4.2: client key | server key | client salt | server salt.
        client_key = material[:key_len]
        server_key = material[key_len : 2 * key_len]
        client_salt = material[2 * key_len : 2 * key_len + salt_len]
        server_salt = material[2 * key_len + salt_len :]
        client, server = client_key + client_salt, server_key + server_salt
        if self.role == "client":
            self._keys = SrtpKeys(profile, client, server)
        else:
            self._keys = SrtpKeys(profile, server, client)
        self._set_state(State.CONNECTED)

    def _flush(self) -> list[bytes]:
        """Drain the memory BIO into datagrams of at most :attr:`mtu` bytes that never
        split a record. The memory BIO is a byte stream: OpenSSL's writes (one record
        each, already fragmented for the MTU we set) are concatenated, so we find the
        record boundaries from the 13-byte record headers and pack whole records."""
        chunks: list[bytes] = []
        while True:
            try:
                chunk = self._ssl.bio_read(65536)
            except SSL.Error:  # WantReadError: the BIO is empty
                break
            if not chunk:
                break
            chunks.append(chunk)
        data = b"".join(chunks)
        out: list[bytes] = []
        current = bytearray()
        pos = 0
        while pos < len(data):
            end = _record_end(data, pos)
            record = data[pos:end]
            pos = end
            if current and len(current) + len(record) > self.mtu:
                out.append(bytes(current))
                current.clear()
            current += record
        if current:
            out.append(bytes(current))
        return out

    def _rearm(self, now: float) -> None:
        if self.state is not State.CONNECTING:
            self._deadline = None
            return
        timeout = self._ssl.DTLSv1_get_timeout()
        self._deadline = None if timeout is None else now + timeout

    def _fail(self, reason: str, state: State = State.FAILED) -> None:
        if self._failure is None:
            self._failure = reason
            log.debug("x dtls %s: %s", self.role, reason)
        self._set_state(state)

    def _set_state(self, state: State) -> None:
        if state is not self.state:
            log.debug("- dtls %s: %s -> %s", self.role, self.state.value, state.value)
            self.state = state


def _match_fingerprint(cert: x509.Certificate, remote: Sequence[Fingerprint]) -> str | None:
    """None when the certificate matches one of ``remote`` (RFC 8122 §5: any of several
    fingerprints may match), else what the mismatch was, for the log."""
    tried: list[str] = []
    for fp in remote:
        algorithm = HASHES.get(fp.hash_func.lower())
        if algorithm is None:
            tried.append(f"{fp.hash_func} (unsupported)")
            continue
        ours = _hex(cert.fingerprint(algorithm))
        if ours == fp.value.upper():
            return None
        tried.append(f"{fp.hash_func} {fp.value} != {ours}")
    if not tried:
        return "no fingerprint to check against"
    return "; ".join(tried)


def _is_client_hello(data: bytes) -> bool:
    # A handshake record (22) whose first handshake message is client_hello (1).
    return len(data) > _RECORD_HEADER and data[0] == _HANDSHAKE and data[_RECORD_HEADER] == 1


def _record_end(data: bytes, pos: int) -> int:
    if pos + _RECORD_HEADER > len(data):
        return len(data)
    length = int.from_bytes(data[pos + 11 : pos + 13], "big")
    return min(len(data), pos + _RECORD_HEADER + length)


def _reason(exc: SSL.Error) -> str:
    """The OpenSSL reason strings of an error (``('SSL routines', '', 'certificate
    verify failed')`` → ``certificate verify failed``)."""
    parts: list[str] = []
    for item in exc.args[0] if exc.args and isinstance(exc.args[0], list) else ():
        if isinstance(item, tuple) and item:
            parts.append(str(item[-1]))
    return ", ".join(parts) or str(exc) or type(exc).__name__


def _accept_any(conn: SSL.Connection, cert: object, errno: int, depth: int, ok: int) -> bool:
    """Any certificate chain passes OpenSSL's check; the fingerprint decides later."""
    return True


def _hex(digest: bytes) -> str:
    return ":".join(f"{b:02X}" for b in digest)


def _fingerprint(cert: x509.Certificate) -> Fingerprint:
    return Fingerprint("sha-256", _hex(cert.fingerprint(hashes.SHA256())))


def _load(cert_p: Path, key_p: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    fix = "delete both files to have a new DTLS certificate generated"
    try:
        cert = x509.load_pem_x509_certificate(cert_p.read_bytes())
    except OSError as exc:
        raise ConfigError(f"dtls: cannot read {cert_p}: {exc.strerror}") from exc
    except ValueError as exc:
        raise ConfigError(f"dtls: {cert_p} is not a PEM certificate ({exc}); {fix}") from exc
    try:
        key = serialization.load_pem_private_key(key_p.read_bytes(), password=None)
    except OSError as exc:
        raise ConfigError(f"dtls: cannot read {key_p}: {exc.strerror}") from exc
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"dtls: {key_p} is not an unencrypted PEM private key ({exc}); {fix}") from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ConfigError(f"dtls: {key_p} is not an EC private key; {fix}")
    if key.public_key() != cert.public_key():
        raise ConfigError(f"dtls: {key_p} is not the key of {cert_p}; {fix}")
    return cert, key


def _generate(cert_p: Path, key_p: Path, now: datetime.datetime) -> x509.Certificate:
    key = ec.generate_private_key(ec.SECP256R1())
    # WebRTC stacks name their certificates at random ("WebRTC" in Chrome); the name
    # carries no meaning because the fingerprint is the identity.
    subject = x509.Name([
        x509.NameAttribute(NameOID.COMMON_NAME, "sipedge dtls"),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "sipedge self-signed"),
    ])
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))  # peers with a slow clock
        .not_valid_after(now + datetime.timedelta(days=VALIDITY_DAYS))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    try:
        cert_p.parent.mkdir(parents=True, exist_ok=True)
        tls.write_atomic(key_p, key_pem, 0o600)
        tls.write_atomic(cert_p, cert.public_bytes(serialization.Encoding.PEM), 0o644)
    except OSError as exc:
        raise ConfigError(
            f"dtls: cannot write the generated certificate to {cert_p} / {key_p}: {exc.strerror}; "
            "set general.data_dir to a writable place"
        ) from exc
    return cert


