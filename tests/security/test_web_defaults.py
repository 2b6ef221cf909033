"""The web endpoints are closed by default (issue 10 item 8), through a real
``sipedge serve``:

- ``GET /turn/ice-servers`` hands out TURN credentials only with the ``[turn] api_key``
  or a SIP subscriber's HTTP digest credentials (curl as the independent client), unless
  ``[turn] ice_servers_open``; with ``secrets`` set and ``api_key`` empty (the defaults)
  it used to answer anyone;
- ``/metrics`` answers only ``web.metrics_allow`` (loopback by default) or the Bearer
  ``web.metrics_token``;
- a WebSocket upgrade whose ``Origin`` is not one of the server's own web origins gets
  403; its own origin and no ``Origin`` at all (a SIP client that is no browser) pass;
  ``sip.websocket.origins = ["*"]`` opens it.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest

from helpers.metrics import metrics
from helpers.sipserver import Server, running_server
from helpers.turnserver import running_turn_server

USERS = {"alice": "alice-pw"}
SECRET = "s3cret-for-tests"
KEY = "k3y-for-tests"
TOKEN = "metrics-t0ken"


@pytest.fixture(scope="module")
def defaults(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """TURN REST on (``secrets``), everything else at its default: no api_key."""
    with running_turn_server(tmp_path_factory.mktemp("web-defaults"), f'secrets = ["{SECRET}"]', users=USERS) as s:
        yield s


@pytest.fixture(scope="module")
def keyed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    turn = f'secrets = ["{SECRET}"]\napi_key = "{KEY}"'
    with running_turn_server(tmp_path_factory.mktemp("web-keyed"), turn, users=USERS) as s:
        yield s


@pytest.fixture(scope="module")
def opened(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """Every door opened on purpose, except /metrics, which allows only a network that
    is not ours (so 127.0.0.1 is a stranger) plus the token."""
    turn = f'secrets = ["{SECRET}"]\nice_servers_open = true'
    web = f'metrics_allow = ["192.0.2.0/24"]\nmetrics_token = "{TOKEN}"'
    with running_turn_server(tmp_path_factory.mktemp("web-open"), turn, web=web) as s:
        yield s


def get(server: Server, path: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, list[str]], bytes]:
    req = urllib.request.Request(f"http://127.0.0.1:{server.http}{path}", headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, _headers(r.headers), bytes(r.read())
    except urllib.error.HTTPError as e:
        return e.code, _headers(e.headers), bytes(e.read())


def _headers(msg: object) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for k, v in msg.items():  # type: ignore[attr-defined]
        out.setdefault(k.lower(), []).append(v)
    return out


def turn_username(body: bytes) -> str:
    doc = json.loads(body)
    entry = next(e for e in doc["iceServers"] if any(u.startswith("turn:") for u in e["urls"]))
    assert entry["credential"]
    return str(entry["username"])


def curl_digest(server: Server, path: str, user: str, password: str) -> tuple[int, bytes]:
    """An independent HTTP digest client: curl answers the 401 challenge."""
    if shutil.which("curl") is None:
        pytest.skip("curl not installed")
    r = subprocess.run(
        ["curl", "-s", "--noproxy", "*", "--digest", "-u", f"{user}:{password}", "-w", "\n%{http_code}",
         f"http://127.0.0.1:{server.http}{path}"],
        capture_output=True, timeout=15, check=True, env={**os.environ, "http_proxy": "", "HTTP_PROXY": ""},
    )
    body, _, code = r.stdout.rpartition(b"\n")
    return int(code), body


# -- /turn/ice-servers ---------------------------------------------------------------


def test_ice_servers_without_credentials_is_refused_by_default(defaults: Server) -> None:
    before = metrics(defaults)
    status, headers, body = get(defaults, "/turn/ice-servers?user=mallory")
    assert status == 401, body
    assert b"iceServers" not in body
    challenges = headers["www-authenticate"]
    assert any(c.startswith("Digest ") and 'realm="127.0.0.1"' in c for c in challenges), challenges
    after = metrics(defaults)
    assert after["web_ice_servers_refused"] == before["web_ice_servers_refused"] + 1
    assert after["web_ice_servers_issued"] == before["web_ice_servers_issued"]


def test_ice_servers_with_subscriber_digest_credentials(defaults: Server) -> None:
    status, body = curl_digest(defaults, "/turn/ice-servers?user=mallory&domain=127.0.0.1", "alice", USERS["alice"])
    assert status == 200, body
    # the credential names the subscriber who authenticated, not the ?user= asked for
    assert turn_username(body).endswith(":alice")


def test_ice_servers_with_a_wrong_password_is_refused(defaults: Server) -> None:
    status, body = curl_digest(defaults, "/turn/ice-servers?domain=127.0.0.1", "alice", "not-the-password")
    assert status == 401, body
    status, body = curl_digest(defaults, "/turn/ice-servers?domain=127.0.0.1", "nobody", "x")
    assert status == 401, body


def test_ice_servers_with_the_api_key(keyed: Server) -> None:
    assert get(keyed, "/turn/ice-servers?user=bob")[0] == 401
    assert get(keyed, "/turn/ice-servers?user=bob", {"Authorization": "Bearer wrong"})[0] == 401
    status, _, body = get(keyed, "/turn/ice-servers?user=bob", {"Authorization": f"Bearer {KEY}"})
    assert status == 200 and turn_username(body).endswith(":bob")
    status, _, body = get(keyed, f"/turn/ice-servers?user=bob&key={KEY}")
    assert status == 200 and turn_username(body).endswith(":bob")
    # subscribers still get in with the key configured
    status, body = curl_digest(keyed, "/turn/ice-servers?domain=127.0.0.1", "alice", USERS["alice"])
    assert status == 200, body


def test_ice_servers_opened_on_purpose(opened: Server) -> None:
    status, _, body = get(opened, "/turn/ice-servers?user=webapp")
    assert status == 200 and turn_username(body).endswith(":webapp")


# -- /metrics --------------------------------------------------------------------------


def test_metrics_from_loopback_by_default(defaults: Server) -> None:
    status, _, body = get(defaults, "/metrics")
    assert status == 200 and b"sipedge_web_metrics_refused 0" in body


def test_metrics_outside_the_allow_list_is_refused(opened: Server) -> None:
    status, _, body = get(opened, "/metrics")
    assert status == 403 and b"sipedge_" not in body
    assert get(opened, "/metrics", {"Authorization": "Bearer wrong"})[0] == 403
    status, _, body = get(opened, "/metrics", {"Authorization": f"Bearer {TOKEN}"})
    assert status == 200
    assert b"sipedge_web_metrics_refused 2" in body


# -- WebSocket Origin --------------------------------------------------------------------


def upgrade(server: Server, origin: str | None) -> int:
    """A raw WebSocket upgrade to the ws listener; the HTTP status of the answer."""
    key = base64.b64encode(os.urandom(16)).decode()
    lines = [
        "GET / HTTP/1.1", f"Host: 127.0.0.1:{server.ws}", "Upgrade: websocket", "Connection: Upgrade",
        f"Sec-WebSocket-Key: {key}", "Sec-WebSocket-Version: 13", "Sec-WebSocket-Protocol: sip",
    ]
    if origin is not None:
        lines.append(f"Origin: {origin}")
    with socket.create_connection(("127.0.0.1", server.ws), timeout=5) as s:
        s.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        head = b""
        while b"\r\n" not in head:
            chunk = s.recv(4096)
            if not chunk:
                break
            head += chunk
    return int(head.split(b" ", 2)[1])


def test_websocket_origin_defaults_to_our_own(defaults: Server) -> None:
    """A foreign page is refused (403, counted); the softphone page's own origin, its
    localhost spelling and a client without Origin (RFC 7118 SIP clients that are not
    browsers) pass."""
    before = metrics(defaults)
    assert upgrade(defaults, "https://evil.example.net") == 403
    assert upgrade(defaults, f"http://127.0.0.1:{defaults.http + 1}") == 403  # another port is another origin
    assert metrics(defaults)["sip_ws_origins_refused"] == before["sip_ws_origins_refused"] + 2
    assert upgrade(defaults, f"http://127.0.0.1:{defaults.http}") == 101  # the softphone page
    assert upgrade(defaults, f"http://localhost:{defaults.http}") == 101
    assert upgrade(defaults, None) == 101


def test_websocket_origins_option(tmp_path_factory: pytest.TempPathFactory) -> None:
    """``["*"]`` opens it; a list replaces the default."""
    with running_server(tmp_path_factory.mktemp("ws-any"), extra='\n[sip.websocket]\norigins = ["*"]\n') as s:
        assert upgrade(s, "https://elsewhere.example.org") == 101
    extra = '\n[sip.websocket]\norigins = ["https://phone.example.com"]\n'
    with running_server(tmp_path_factory.mktemp("ws-listed"), extra=extra) as s:
        assert upgrade(s, "https://phone.example.com") == 101
        assert upgrade(s, f"http://127.0.0.1:{s.http}") == 403
