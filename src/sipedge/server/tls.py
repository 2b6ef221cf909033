"""TLS for SIP (TLS listeners, outbound TLS) and WSS: contexts and the first-start certificate.

- :func:`server_context` / :func:`client_context` build ``ssl.SSLContext`` objects
  (TLS 1.2 or newer).
- :func:`ensure_certificate` returns a usable certificate and key, generating a
  self-signed one (EC P-256, SANs for localhost, 127.0.0.1, ::1 and the given names) when
  the configured files do not exist yet, with its SHA-256 fingerprint so the CLI can
  print where it is and what a browser will show.
- :func:`certificate_paths` turns ``[tls] cert``/``key`` (empty = generated under
  ``<data_dir>/tls/``) into paths.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import ssl
from collections.abc import Iterable
from pathlib import Path
from typing import NamedTuple

from ..errors import ConfigError

DEFAULT_HOSTNAMES = ("localhost", "127.0.0.1", "::1")
VALIDITY_DAYS = 825


class Certificate(NamedTuple):
    """A certificate chain file, its key file and the SHA-256 fingerprint of the leaf
    (``AB:CD:...``, as browsers and SDP ``a=fingerprint`` show it)."""

    cert: Path
    key: Path
    fingerprint: str


def certificate_paths(cert: str, key: str, data_dir: str | Path) -> tuple[Path, Path]:
    """Configured paths, or ``<data_dir>/tls/cert.pem`` and ``key.pem`` when empty."""
    base = Path(data_dir) / "tls"
    return (Path(cert) if cert else base / "cert.pem", Path(key) if key else base / "key.pem")


def ensure_certificate(
    cert_path: str | Path, key_path: str | Path, hostnames: Iterable[str] = ()
) -> Certificate:
    """Use the certificate at ``cert_path``/``key_path``; when neither file exists (or
    both are empty), generate a self-signed one there. Raises ConfigError naming the file
    when only one exists or a file cannot be read, parsed or written."""
    cert_p, key_p = Path(cert_path), Path(key_path)
    if not pair_present(cert_p, key_p, "tls", "give both files, or neither to generate a self-signed certificate"):
        _generate(cert_p, key_p, hostnames)
    fp = fingerprint(cert_p)
    try:  # the pair must load together
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert_p, key_p)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"tls: cannot load certificate {cert_p} with key {key_p}: {exc}") from exc
    return Certificate(cert_p, key_p, fp)


def fingerprint(cert_path: str | Path) -> str:
    """SHA-256 fingerprint of the first certificate in a PEM file, ``AB:CD:...``."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes

    p = Path(cert_path)
    try:
        cert = x509.load_pem_x509_certificate(p.read_bytes())
    except OSError as exc:
        raise ConfigError(f"tls.cert: cannot read {p}: {exc.strerror}") from exc
    except ValueError as exc:
        raise ConfigError(f"tls.cert: {p} is not a PEM certificate: {exc}") from exc
    return ":".join(f"{b:02X}" for b in cert.fingerprint(hashes.SHA256()))


def server_context(
    cert: str | Path, key: str | Path, *, verify_peer: bool = False, ca: str | Path | None = None
) -> ssl.SSLContext:
    """A server context for TLS/WSS listeners; ``verify_peer`` requires client certs."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"tls: cannot load certificate {cert} with key {key}: {exc}") from exc
    if verify_peer:
        ctx.verify_mode = ssl.CERT_REQUIRED
        _load_ca(ctx, ca)
    return ctx


def client_context(
    *,
    verify: bool = False,
    ca: str | Path | None = None,
    cert: str | Path | None = None,
    key: str | Path | None = None,
) -> ssl.SSLContext:
    """A client context for outbound TLS. SIP peers often present self-signed
    certificates, so verification is off unless asked for (``verify``: the peer's chain
    against ``ca`` or the system store, and its name). ``cert``/``key``: our own client
    certificate (mutual TLS)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if verify:
        _load_ca(ctx, ca)
    else:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if cert is not None:
        try:
            ctx.load_cert_chain(cert, key)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"tls: cannot load client certificate {cert}: {exc}") from exc
    return ctx


def _load_ca(ctx: ssl.SSLContext, ca: str | Path | None) -> None:
    try:
        if ca:
            ctx.load_verify_locations(cafile=str(ca))
        else:
            ctx.load_default_certs(ssl.Purpose.CLIENT_AUTH if ctx.protocol == ssl.PROTOCOL_TLS_SERVER else ssl.Purpose.SERVER_AUTH)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"tls.ca: cannot load {ca}: {exc}") from exc


def pair_present(cert_p: Path, key_p: Path, section: str, fix: str) -> bool:
    """Whether a certificate and its key are both there (non-empty); ConfigError naming
    the one that is missing when only one is (``fix``: what to do, ``{have}`` for the one
    present). Shared by the SIP TLS and the DTLS certificates."""
    cert_ok, key_ok = _present(cert_p), _present(key_p)
    if cert_ok != key_ok:
        have, missing = (cert_p, key_p) if cert_ok else (key_p, cert_p)
        raise ConfigError(f"{section}: {have} exists but {missing} does not; {fix.format(have=have)}")
    return cert_ok


def _present(p: Path) -> bool:
    try:
        return p.stat().st_size > 0
    except OSError:
        return False


def _generate(cert_p: Path, key_p: Path, hostnames: Iterable[str]) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    names: list[str] = []
    for n in (*DEFAULT_HOSTNAMES, *hostnames):
        n = n.strip().strip("[]")
        if n and n not in names:
            names.append(n)
    sans: list[x509.GeneralName] = []
    for n in names:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(n)))
        except ValueError:
            sans.append(x509.DNSName(n))
    common = next((n for n in names if n not in DEFAULT_HOSTNAMES), "localhost")
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([
        x509.NameAttribute(NameOID.COMMON_NAME, common[:64]),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "sipedge self-signed"),
    ])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=VALIDITY_DAYS))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=True, key_cert_sign=False,
                crl_sign=False, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    try:
        key_p.parent.mkdir(parents=True, exist_ok=True)
        cert_p.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(key_p, key_pem, 0o600)
        cert_p.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    except OSError as exc:
        raise ConfigError(
            f"tls: cannot write the generated certificate to {cert_p} / {key_p}: {exc.strerror}; "
            "set general.data_dir or tls.cert/tls.key to a writable place"
        ) from exc


def write_atomic(path: Path, data: bytes, mode: int) -> None:
    """Write through a temporary file so that a crash never leaves half a key that the
    next start would report as corrupt (``mode`` is set before any byte is written)."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.write(fd, data)
        os.fchmod(fd, mode)
    finally:
        os.close(fd)
    os.replace(tmp, path)
