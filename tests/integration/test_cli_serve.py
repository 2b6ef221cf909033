"""The command line a newcomer meets: init, serve with a bad config, clean shutdown,
restart keeping registrations."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

from helpers.sipserver import SIPEDGE, cli, running_server
from helpers.ua import UA


def test_init_writes_every_option_and_refuses_to_overwrite(tmp_path: Path) -> None:
    cfg = tmp_path / "sipedge.toml"
    r = cli(["init", str(cfg)])
    assert "sipedge serve --config" in r.stdout
    text = cfg.read_text()
    for section in ("[general]", "[sip]", "[sip.timers]", "[sip.limits]", "[auth]", "[registrar]", "[routing]", "[web]"):
        assert section in text
    again = cli(["init", str(cfg)], check=False)
    assert again.returncode == 2 and "--force" in again.stderr


def test_bad_config_refuses_to_start_naming_key_value_and_expectation(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text('[registrar]\nmin_expires = "soon"\n')
    r = subprocess.run([SIPEDGE, "serve", "--config", str(cfg)], capture_output=True, text=True, timeout=30)
    assert r.returncode == 2
    assert "registrar.min_expires = 'soon': expected integer" in r.stderr
    assert "Traceback" not in r.stderr


def test_missing_routing_module_is_a_config_error(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text(f'[general]\ndata_dir = "{tmp_path}/d"\n[sip]\nlisten = ["udp:127.0.0.1:0"]\n[web]\nenabled = false\n[routing]\nmodule = "{tmp_path}/nope.py"\n')
    r = subprocess.run([SIPEDGE, "serve", "--config", str(cfg)], capture_output=True, text=True, timeout=30)
    assert r.returncode == 2
    assert "routing.module" in r.stderr and "no such file" in r.stderr


def test_sigterm_and_sigint_shut_down_cleanly(tmp_path: Path) -> None:
    for sig in (signal.SIGTERM, signal.SIGINT):
        with running_server(tmp_path / sig.name) as s:
            s.proc.send_signal(sig)
            assert s.proc.wait(10) == 0
            assert "shutting down" in s.log_text()


def test_registrations_survive_a_restart(tmp_path: Path) -> None:
    users = {"dora": "dora-pw", "eve": "eve-pw"}
    with running_server(tmp_path, users=users) as s:
        dora = UA("udp", (s.host, s.udp), "dora", s.host, users["dora"])
        assert dora.register(expires=600).status == 200
        port = s.udp
    # same config, same database: the binding is still there after a restart
    cfg = tmp_path / "sipedge.toml"
    log = (tmp_path / "second.log").open("wb")
    proc = subprocess.Popen([SIPEDGE, "serve", "--config", str(cfg)], stdout=log, stderr=subprocess.STDOUT)
    try:
        from helpers.sipserver import wait_ready

        wait_ready("127.0.0.1", port, proc)
        eve = UA("udp", ("127.0.0.1", port), "eve", "127.0.0.1", users["eve"])
        inv = eve.build("INVITE", dora.aor)
        eve.send(inv)
        eve.send(eve.authorize(inv, eve.expect(407)))
        seen = dora.wait("INVITE")
        dora.answer(seen, 486)  # type: ignore[arg-type]
        assert eve.expect(486).status == 486
        eve.close()
        dora.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(10)
        log.close()
    time.sleep(0)


def test_expired_contacts_are_purged_from_the_database_by_the_timer(tmp_path: Path) -> None:
    """Nobody looks the binding up: the purge timer alone deletes the expired row."""
    import sqlite3

    users = {"fred": "fred-pw"}
    extra = "[registrar]\nmin_expires = 1\npurge_interval = 0.5\n"
    with running_server(tmp_path, users=users, extra=extra) as s:
        fred = UA("udp", (s.host, s.udp), "fred", s.host, users["fred"])
        try:
            assert fred.register(expires=1).status == 200

            def rows() -> int:
                with sqlite3.connect(s.data_dir / "sipedge.db") as db:
                    return int(db.execute("SELECT count(*) FROM location").fetchone()[0])

            assert rows() == 1
            deadline = time.monotonic() + 5
            while rows() and time.monotonic() < deadline:
                time.sleep(0.2)
            assert rows() == 0
        finally:
            fred.close()


def test_serve_shows_the_generated_certificate_path_and_fingerprint(tmp_path: Path) -> None:
    """What a browser user needs to trust the self-signed WSS certificate, on the console."""
    import re

    from sipedge.server import tls

    with running_server(tmp_path) as s:
        found = re.search(r"TLS certificate (\S+) \(SHA-256 fingerprint ([0-9A-F:]{95})\)", s.log_text())
        assert found, s.log_text()
        cert = Path(found.group(1))
        assert cert.is_file() and cert.is_relative_to(s.data_dir)
        assert tls.fingerprint(cert) == found.group(2)
