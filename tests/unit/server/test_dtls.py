"""DTLS-SRTP associations (server/dtls.py) handshaking in memory: keys, fingerprints,
retransmission, hostile input, the persisted certificate, and interop with aiortc."""

from __future__ import annotations

import datetime
import os
import stat
import time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sipedge.errors import ConfigError, UsageError
from sipedge.media.srtp import SrtpTransform
from sipedge.sdp import Fingerprint
from sipedge.server.dtls import (
    DtlsAssociation,
    DtlsContext,
    State,
    dtls_certificate_paths,
    ensure_dtls_certificate,
)

RTP = bytes.fromhex("80000001000000640000abcd") + b"voice" * 20
RTCP = bytes.fromhex("80c90001000000ab")  # an empty RR from SSRC 0xab


@pytest.fixture(scope="module")
def contexts(tmp_path_factory: pytest.TempPathFactory) -> tuple[DtlsContext, DtlsContext]:
    return (
        DtlsContext(tmp_path_factory.mktemp("relay")),
        DtlsContext(tmp_path_factory.mktemp("peer")),
    )


def pair(contexts: tuple[DtlsContext, DtlsContext]) -> tuple[DtlsAssociation, DtlsAssociation]:
    a, b = contexts
    return a("client", [b.fingerprint]), b("server", [a.fingerprint])


def shuttle(
    sender: DtlsAssociation, receiver: DtlsAssociation, first: list[bytes], now: float = 0.0
) -> int:
    """Deliver ``first`` (what ``sender`` sent) to ``receiver``, then datagrams back and
    forth until both sides are quiet; returns the number of flights delivered."""
    flights, out, target, other = 0, first, receiver, sender
    while out and flights < 20:
        out = [d for datagram in out for d in target.receive(datagram, now)]
        target, other = other, target
        flights += 1
    return flights


def test_handshake_exports_matching_keys(contexts: tuple[DtlsContext, DtlsContext]) -> None:
    client, server = pair(contexts)
    assert server.start(0.0) == []
    first = client.start(0.0)
    assert first and client.get_timer() is not None
    shuttle(client, server, first)
    assert client.failure is None and server.failure is None
    assert client.state is State.CONNECTED and server.state is State.CONNECTED
    ck, sk = client.keys, server.keys
    assert ck is not None and sk is not None
    assert ck.profile == sk.profile == "SRTP_AEAD_AES_128_GCM"
    assert ck.local == sk.remote and ck.remote == sk.local and ck.local != ck.remote
    assert len(ck.local) == 28
    assert client.get_timer() is None and server.get_timer() is None


def test_srtp_both_ways_with_exported_keys(contexts: tuple[DtlsContext, DtlsContext]) -> None:
    client, server = pair(contexts)
    shuttle(client, server, client.start(0.0))
    assert client.keys is not None and server.keys is not None
    a, b = SrtpTransform(client.keys), SrtpTransform(server.keys)
    for src, dst in ((a, b), (b, a)):
        srtp = src.protect(RTP, rtcp=False)
        assert srtp is not None and srtp != RTP
        assert dst.unprotect(srtp, rtcp=False) == RTP
        srtcp = src.protect(RTCP, rtcp=True)
        assert srtcp is not None
        assert dst.unprotect(srtcp, rtcp=True) == RTCP


def test_datagrams_respect_the_mtu(tmp_path: Path) -> None:
    a, b = DtlsContext(tmp_path / "a", mtu=300), DtlsContext(tmp_path / "b", mtu=300)
    client, server = a("client", [b.fingerprint]), b("server", [a.fingerprint])
    flight = server.receive(client.start(0.0)[0], 0.0)
    assert len(flight) > 1 and all(len(d) <= 300 for d in flight)
    shuttle(server, client, flight)
    assert client.keys is not None and server.keys is not None


def test_wrong_fingerprint_fails_without_keys(contexts: tuple[DtlsContext, DtlsContext]) -> None:
    a, b = contexts
    wrong = Fingerprint("sha-256", ":".join(["00"] * 32))
    client, server = a("client", [wrong]), b("server", [a.fingerprint])
    shuttle(client, server, client.start(0.0))
    assert client.keys is None
    assert client.failure is not None and client.failure.startswith("fingerprint mismatch: ")
    assert client.state is State.FAILED
    # for ever: more input changes nothing
    assert client.receive(b"\x16\xfe\xfd" + bytes(40), 1.0) == []
    assert client.keys is None and client.get_timer() is None


def test_server_checks_the_client_fingerprint(contexts: tuple[DtlsContext, DtlsContext]) -> None:
    a, b = contexts
    client = a("client", [b.fingerprint])
    server = b("server", [Fingerprint("sha-1", ":".join(["AB"] * 20))])
    shuttle(client, server, client.start(0.0))
    assert server.keys is None and server.failure is not None
    assert "sha-1" in server.failure


@pytest.mark.parametrize("hash_func", ["sha-1", "sha-384", "sha-512"])
def test_other_hash_functions_match(
    contexts: tuple[DtlsContext, DtlsContext], hash_func: str
) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes

    a, b = contexts
    cert = x509.load_pem_x509_certificate(a.certificate.cert.read_bytes())
    algorithm = {"sha-1": hashes.SHA1(), "sha-384": hashes.SHA384(), "sha-512": hashes.SHA512()}
    value = ":".join(f"{x:02x}" for x in cert.fingerprint(algorithm[hash_func]))  # lower case
    client = a("client", [b.fingerprint])
    server = b("server", [Fingerprint("md5", "00:11"), Fingerprint(hash_func, value)])
    shuttle(client, server, client.start(0.0))
    assert server.failure is None and server.keys is not None


def test_no_fingerprint_fails(contexts: tuple[DtlsContext, DtlsContext]) -> None:
    a, b = contexts
    client, server = a("client", [b.fingerprint]), b("server", [])
    shuttle(client, server, client.start(0.0))
    assert server.keys is None and server.failure == "fingerprint mismatch: no fingerprint to check against"


def test_lost_first_flight_is_retransmitted(contexts: tuple[DtlsContext, DtlsContext]) -> None:
    client, server = pair(contexts)
    now = 100.0
    lost = client.start(now)
    assert lost
    deadline = client.get_timer()
    assert deadline is not None and now < deadline <= now + 1.5
    assert client.handle_timer(now) == []  # not due yet
    # OpenSSL keeps its own (wall) clock for the retransmission, 1 s at first: wait it out.
    time.sleep(max(0.0, deadline - now) + 0.05)
    again = client.handle_timer(deadline + 0.05)
    assert again, "the ClientHello was not retransmitted"
    backoff = client.get_timer()
    assert backoff is not None and backoff - (deadline + 0.05) > 1.5  # doubled
    shuttle(client, server, again, deadline + 0.1)
    assert client.keys is not None and server.keys is not None


def test_lost_last_flight_is_answered_again(contexts: tuple[DtlsContext, DtlsContext]) -> None:
    """The server's final flight (ChangeCipherSpec, Finished) is lost: the server is
    already connected, the client retransmits its flight, and the connected server
    answers it again."""
    client, server = pair(contexts)
    flight2 = server.receive(client.start(0.0)[0], 0.0)
    flight3 = [d for datagram in flight2 for d in client.receive(datagram, 0.0)]
    lost = [d for datagram in flight3 for d in server.receive(datagram, 0.0)]
    assert lost and server.keys is not None and client.keys is None
    deadline = client.get_timer()
    assert deadline is not None
    time.sleep(deadline + 0.05)
    again = client.handle_timer(deadline + 0.05)
    assert again
    shuttle(client, server, again, deadline + 0.1)
    assert client.keys is not None and client.keys.local == server.keys.remote


def test_garbage_and_client_hello_to_a_client(contexts: tuple[DtlsContext, DtlsContext]) -> None:
    a, b = contexts
    client, server = pair(contexts)
    hello = client.start(0.0)[0]
    other = a("client", [b.fingerprint])
    other.start(0.0)
    assert other.receive(hello, 0.0) == []  # a ClientHello to a client: dropped
    assert other.failure is None
    for junk in (b"", b"\x16", b"\x16\xfe\xfd" + bytes(10), hello[:30], bytes(300), b"\x15\xfe\xfd" + bytes(20)):
        server.receive(junk, 0.0)
        assert server.failure is None
    shuttle(client, server, [hello])
    assert client.keys is not None and server.keys is not None
    # after the handshake, a stranger's ClientHello and garbage change nothing
    assert server.receive(hello, 1.0) == []
    assert server.receive(b"\x17\xfe\xfd" + bytes(30), 1.0) == []
    assert server.keys is not None and server.failure is None


def test_truncated_flight_does_not_kill_the_handshake(contexts: tuple[DtlsContext, DtlsContext]) -> None:
    client, server = pair(contexts)
    hello = client.start(0.0)[0]
    flight = server.receive(hello, 0.0)
    for datagram in flight:
        assert client.receive(datagram[: len(datagram) // 2], 0.0) == []
    assert client.failure is None
    shuttle(server, client, flight)
    assert client.keys is not None and server.keys is not None


@given(datagrams=st.lists(st.binary(max_size=200), max_size=8))
def test_random_bytes_never_raise(
    contexts: tuple[DtlsContext, DtlsContext], datagrams: list[bytes]
) -> None:
    client, server = pair(contexts)
    hello = client.start(0.0)
    for d in datagrams:
        server.receive(d, 0.0)
        client.receive(d, 0.0)
        server.receive(b"\x16\xfe\xfd" + d, 0.0)
        client.receive(b"\x16\xfe\xfd" + d, 0.0)
    server.handle_timer(10.0)
    client.handle_timer(10.0)
    if client.failure is None and server.failure is None:
        shuttle(client, server, hello)


def test_close_notify_after_success_ends_the_keys(contexts: tuple[DtlsContext, DtlsContext]) -> None:
    client, server = pair(contexts)
    shuttle(client, server, client.start(0.0))
    assert client.keys is not None
    server._ssl.shutdown()  # the peer closes (a closed PeerConnection)
    notify = server._flush()
    assert notify
    for datagram in notify:
        client.receive(datagram, 1.0)
    assert client.keys is None and client.failure is not None
    assert "close_notify" in client.failure and client.state is State.CLOSED


def test_role_is_checked(contexts: tuple[DtlsContext, DtlsContext]) -> None:
    with pytest.raises(UsageError):
        contexts[0]("passive", [])


def test_start_is_idempotent(contexts: tuple[DtlsContext, DtlsContext]) -> None:
    client, _ = pair(contexts)
    assert client.start(0.0)
    assert client.start(0.0) == []


# -- the certificate ------------------------------------------------------------------------


def test_certificate_persisted_and_reused(tmp_path: Path) -> None:
    first = DtlsContext(tmp_path)
    cert_p, key_p = dtls_certificate_paths(tmp_path)
    assert first.certificate.cert == cert_p and cert_p.exists()
    assert stat.S_IMODE(os.stat(key_p).st_mode) == 0o600
    second = DtlsContext(tmp_path)
    assert second.fingerprint == first.fingerprint
    assert first.fingerprint.hash_func == "sha-256"
    assert len(first.fingerprint.value.split(":")) == 32
    assert first.fingerprint.value == first.fingerprint.value.upper()


def test_expiring_certificate_is_regenerated(tmp_path: Path) -> None:
    old = ensure_dtls_certificate(tmp_path)
    later = old.not_after - datetime.timedelta(hours=1)
    new = ensure_dtls_certificate(tmp_path, now=later)
    assert new.fingerprint != old.fingerprint and new.not_after > old.not_after
    assert ensure_dtls_certificate(tmp_path, now=later).fingerprint == new.fingerprint


def test_corrupt_certificate_names_the_file(tmp_path: Path) -> None:
    ensure_dtls_certificate(tmp_path)
    cert_p, key_p = dtls_certificate_paths(tmp_path)
    cert_p.write_bytes(b"-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
    with pytest.raises(ConfigError, match=rf"{cert_p}.*delete both files"):
        DtlsContext(tmp_path)
    cert_p.unlink()
    with pytest.raises(ConfigError, match=rf"{key_p} exists but {cert_p} does not"):
        DtlsContext(tmp_path)


def test_corrupt_key_and_mismatched_pair(tmp_path: Path) -> None:
    ensure_dtls_certificate(tmp_path / "a")
    ensure_dtls_certificate(tmp_path / "b")
    _, key_a = dtls_certificate_paths(tmp_path / "a")
    _, key_b = dtls_certificate_paths(tmp_path / "b")
    key_a.write_bytes(key_b.read_bytes())
    with pytest.raises(ConfigError, match="is not the key of"):
        DtlsContext(tmp_path / "a")
    key_a.write_bytes(b"garbage")
    with pytest.raises(ConfigError, match=rf"{key_a} is not an unencrypted PEM private key"):
        DtlsContext(tmp_path / "a")
