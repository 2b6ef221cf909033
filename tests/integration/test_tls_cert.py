"""server/tls.py: first-start self-signed certificate and SSL contexts, checked by real
TLS handshakes on loopback."""

from __future__ import annotations

import asyncio
import ipaddress
import ssl
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from sipedge.errors import ConfigError
from sipedge.server import tls

T = 5.0


def test_generate_then_reuse(tmp_path: Path) -> None:
    cert_p, key_p = tls.certificate_paths("", "", tmp_path)
    assert (cert_p, key_p) == (tmp_path / "tls" / "cert.pem", tmp_path / "tls" / "key.pem")
    c = tls.ensure_certificate(cert_p, key_p, ["sip.example.com", "192.0.2.7", "[2001:db8::1]"])
    assert c.cert == cert_p and c.key == key_p
    assert stat.S_IMODE(key_p.stat().st_mode) == 0o600
    x = x509.load_pem_x509_certificate(cert_p.read_bytes())
    assert c.fingerprint == ":".join(f"{b:02X}" for b in x.fingerprint(hashes.SHA256()))
    assert isinstance(x.public_key(), ec.EllipticCurvePublicKey)
    assert x.public_key().curve.name == "secp256r1"  # type: ignore[union-attr]
    san = x.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(san.get_values_for_type(x509.DNSName)) == {"localhost", "sip.example.com"}
    assert set(san.get_values_for_type(x509.IPAddress)) == {
        ipaddress.ip_address(a) for a in ("127.0.0.1", "::1", "192.0.2.7", "2001:db8::1")
    }
    # second start: the same certificate, not a new one
    assert tls.ensure_certificate(cert_p, key_p, ["other.example"]) == c
    assert tls.fingerprint(cert_p) == c.fingerprint


def test_configured_paths_are_used(tmp_path: Path) -> None:
    assert tls.certificate_paths("/x/c.pem", "/x/k.pem", tmp_path) == (Path("/x/c.pem"), Path("/x/k.pem"))
    empty_cert = tmp_path / "c.pem"
    empty_cert.write_bytes(b"")  # empty files count as missing: generated there
    c = tls.ensure_certificate(empty_cert, tmp_path / "sub" / "k.pem")
    assert c.cert.stat().st_size > 0 and c.key.exists()


def test_errors_name_the_file(tmp_path: Path) -> None:
    c = tls.ensure_certificate(tmp_path / "c.pem", tmp_path / "k.pem")
    with pytest.raises(ConfigError, match=r"k2\.pem does not"):
        tls.ensure_certificate(c.cert, tmp_path / "k2.pem")
    bad = tmp_path / "bad.pem"
    bad.write_text("not a certificate")
    with pytest.raises(ConfigError, match=r"bad\.pem is not a PEM certificate"):
        tls.ensure_certificate(bad, c.key)
    other = tls.ensure_certificate(tmp_path / "o.pem", tmp_path / "ok.pem")
    with pytest.raises(ConfigError, match="cannot load certificate"):
        tls.ensure_certificate(c.cert, other.key)  # a key that does not match
    blocker = tmp_path / "a-file"
    blocker.write_text("")  # a file where a directory is needed: not writable, even as root
    with pytest.raises(ConfigError, match="writable"):
        tls.ensure_certificate(blocker / "c.pem", blocker / "k.pem")


async def _handshake(server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext, name: str) -> bytes:
    async def serve(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        w.write(b"ok")
        await w.drain()
        w.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=server_ctx)
    port = server.sockets[0].getsockname()[1]
    try:
        r, w = await asyncio.wait_for(
            asyncio.open_connection("127.0.0.1", port, ssl=client_ctx, server_hostname=name), T
        )
        data = await asyncio.wait_for(r.read(), T)
        w.close()
        return data
    finally:
        server.close()


async def test_contexts_handshake_and_verify(tmp_path: Path) -> None:
    c = tls.ensure_certificate(tmp_path / "c.pem", tmp_path / "k.pem", ["sip.example.com"])
    srv = tls.server_context(c.cert, c.key)
    assert await _handshake(srv, tls.client_context(), "anything") == b"ok"
    verifying = tls.client_context(verify=True, ca=c.cert)
    for name in ("localhost", "sip.example.com", "127.0.0.1"):
        assert await _handshake(srv, verifying, name) == b"ok"
    with pytest.raises(ssl.SSLCertVerificationError):
        await _handshake(srv, verifying, "wrong.example.com")


async def test_mutual_tls(tmp_path: Path) -> None:
    s = tls.ensure_certificate(tmp_path / "s.pem", tmp_path / "sk.pem")
    cl = tls.ensure_certificate(tmp_path / "c.pem", tmp_path / "ck.pem")
    srv = tls.server_context(s.cert, s.key, verify_peer=True, ca=cl.cert)
    assert await _handshake(srv, tls.client_context(cert=cl.cert, key=cl.key), "x") == b"ok"
    with pytest.raises((ssl.SSLError, ConnectionError, asyncio.IncompleteReadError)):
        data = await _handshake(srv, tls.client_context(), "x")  # no client certificate
        if not data:
            raise ConnectionError("closed")


def test_context_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot load certificate"):
        tls.server_context(tmp_path / "none.pem", tmp_path / "none.key")
    with pytest.raises(ConfigError, match=r"tls\.ca"):
        tls.client_context(verify=True, ca=tmp_path / "none.pem")
