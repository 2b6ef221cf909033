"""A real softphone set up the way desk phones usually are: baresip (Debian
``baresip-core``) with ``outbound="sip:SERVER;transport=udp"`` (or tcp, tls), so its REGISTER and its
INVITE carry a preloaded Route to ``sipedge serve``. It registers, calls a registered
local user, answers the 407 with its credentials, and the call reaches the callee (it got
482 Loop Detected before: the Route to us was popped and the request relayed to us)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from helpers.ports import free_port
from helpers.sipserver import running_server
from helpers.ua import UA
from sipedge.sip import message as m

pytestmark = pytest.mark.skipif(shutil.which("baresip") is None, reason="needs Debian baresip-core")

USERS = {"alice": "alice-pw", "bob": "bob-pw"}


def baresip_config(folder: Path, port: int, server_port: int, transport: str) -> None:
    folder.mkdir()
    (folder / "config").write_text(
        f"sip_listen 127.0.0.1:{port}\nnet_interface 127.0.0.1\nmodule_path /usr/lib/baresip/modules\n"
        "module g711.so\nmodule ausine.so\nmodule_app account.so\nmodule_app menu.so\n"
        "audio_source ausine,\naudio_player ausine,\n"
    )
    (folder / "accounts").write_text(
        f'<sip:alice@127.0.0.1>;auth_pass={USERS["alice"]};'
        f'outbound="sip:127.0.0.1:{server_port};transport={transport}";regint=300\n'
    )


@pytest.mark.parametrize("transport", ["udp", "tcp", "tls"])
def test_baresip_with_us_as_outbound_proxy_calls_a_local_user(tmp_path: Path, transport: str) -> None:
    with running_server(tmp_path / "server", users=USERS) as server:
        bob = UA("udp", (server.host, server.udp), "bob", server.host, USERS["bob"])
        cfg = tmp_path / "baresip"
        baresip_config(cfg, free_port("127.0.0.1"), server.tls if transport == "tls" else server.udp, transport)
        assert bob.register().status == 200
        phone = subprocess.Popen(["baresip", "-f", str(cfg), "-e", f"/dial sip:bob@{server.host}"],
                                 stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        try:
            invite = bob.wait("INVITE", 10)
            assert isinstance(invite, m.Request)
            assert invite.from_.uri.user == "alice"
            assert not invite.has("proxy-authorization") and not invite.has("route")
            bob.answer(invite, 486)
            assert bob.wait("ACK", 5)
        finally:
            phone.terminate()
            out = phone.communicate(timeout=10)[0].decode(errors="replace")
            bob.close()
        assert "482" not in out, out
        assert "alice@127.0.0.1: 200" in out or "registered" in out.lower() or "200 OK" in out, out
