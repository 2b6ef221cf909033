"""``sipedge user ...``: in-process through cli.main, and once through the installed script."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from sipedge.cli.main import main
from sipedge.cli.user import UserCommandError, read_password
from sipedge.sip.auth import ha1
from sipedge.store.sqlite import SqliteDatabase, SqliteSubscriberStore


class FakeTty(io.StringIO):
    def isatty(self) -> bool:
        return True


def run(argv: list[str], capsys: pytest.CaptureFixture[str], stdin: str = "",
        monkeypatch: pytest.MonkeyPatch | None = None) -> tuple[int, str, str]:
    if monkeypatch is not None:
        monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def subscribers(db: Path) -> SqliteSubscriberStore:
    return SqliteSubscriberStore(SqliteDatabase(db))


def test_add_list_passwd_del(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                             monkeypatch: pytest.MonkeyPatch) -> None:
    db = tmp_path / "s.db"
    d = ["--db", str(db)]
    assert run(["user", "add", "alice@Example.com", "--password", "pw1", *d], capsys) == (0, "added alice@example.com\n", "")
    assert run(["user", "add", "bob@example.com", *d], capsys, "pw2\n", monkeypatch)[0] == 0
    assert run(["user", "add", "carol@other.org", "-p", "x", *d], capsys)[0] == 0
    assert run(["user", "list", *d], capsys) == (0, "alice@example.com\nbob@example.com\ncarol@other.org\n", "")
    assert run(["user", "ls", "other.org", *d], capsys) == (0, "carol@other.org\n", "")
    s = subscribers(db)
    assert s.ha1("bob", "example.com", "SHA-256") == ha1("bob", "example.com", "pw2", "SHA-256")
    assert run(["user", "passwd", "alice@example.com", *d], capsys, "new\n", monkeypatch) == (
        0, "password changed for alice@example.com\n", "")
    assert s.ha1("alice", "example.com", "MD5") == ha1("alice", "example.com", "new", "MD5")
    assert run(["user", "del", "bob@example.com", *d], capsys) == (0, "deleted bob@example.com\n", "")
    assert run(["user", "list", *d], capsys)[1] == "alice@example.com\ncarol@other.org\n"
    s.db.close()


@pytest.mark.parametrize(
    ("argv", "stdin", "message"),
    [
        (["user", "add", "alice@example.com", "-p", "again"], "", "user alice@example.com already exists; change its password with `sipedge user passwd alice@example.com`"),
        (["user", "del", "nobody@example.com"], "", "no user nobody@example.com; see `sipedge user list`"),
        (["user", "passwd", "nobody@example.com", "-p", "x"], "", "no user nobody@example.com; add it with `sipedge user add nobody@example.com`"),
        (["user", "add", "alice", "-p", "x"], "", "'alice' is not USER@DOMAIN (for example alice@example.com)"),
        (["user", "add", "a b@example.com", "-p", "x"], "", "'a b@example.com' is not USER@DOMAIN"),
        (["user", "add", "dave@example.com"], "", "no password given: pass --password P or pipe one line on stdin"),
        (["user", "add", "dave@example.com"], "\n", "empty password; choose a non-empty one"),
    ],
)
def test_errors_are_one_line_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                    monkeypatch: pytest.MonkeyPatch, argv: list[str], stdin: str,
                                    message: str) -> None:
    db = tmp_path / "s.db"
    assert run(["user", "add", "alice@example.com", "-p", "pw", "--db", str(db)], capsys)[0] == 0
    code, out, err = run([*argv, "--db", str(db)], capsys, stdin, monkeypatch)
    assert code == 2 and out == ""
    assert err.startswith("sipedge: " + message)
    assert err.count("\n") == 1


def test_config_names_the_database(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "sipedge.toml"
    cfg.write_text(f'[database]\nurl = "{tmp_path / "from-config.db"}"\n', encoding="utf-8")
    assert run(["user", "add", "alice@example.com", "-p", "x", "--config", str(cfg)], capsys)[0] == 0
    assert (tmp_path / "from-config.db").exists()
    assert run(["user", "list", "-c", str(cfg)], capsys)[1] == "alice@example.com\n"


def test_bad_config_and_bad_database(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(["user", "list", "--config", str(tmp_path / "missing.toml")], capsys)
    assert code == 2 and err.startswith("sipedge: cannot read config file") and err.count("\n") == 1
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"garbage" * 1000)
    code, _, err = run(["user", "list", "--db", str(junk)], capsys)
    assert code == 2 and "move it away" in err and err.count("\n") == 1


def test_read_password_sources() -> None:
    assert read_password("given") == "given"
    assert read_password(None, io.StringIO("piped\r\nsecond line\n")) == "piped"
    answers = iter(["tty", "tty"])
    assert read_password(None, FakeTty(), prompt=lambda _: next(answers)) == "tty"
    answers = iter(["one", "two"])
    with pytest.raises(UserCommandError, match="differ"):
        read_password(None, FakeTty(), prompt=lambda _: next(answers))
    with pytest.raises(UserCommandError, match="empty"):
        read_password("")


def test_installed_script(tmp_path: Path) -> None:
    script = Path(sys.executable).parent / "sipedge"
    if not script.exists():
        found = shutil.which("sipedge")
        if found is None:
            pytest.skip("the sipedge script is not installed")
        script = Path(found)
    db = str(tmp_path / "s.db")
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    r = subprocess.run([str(script), "user", "add", "alice@example.com", "--db", db],
                       input="s3cret\n", capture_output=True, text=True, timeout=30, env=env)
    assert (r.returncode, r.stdout, r.stderr) == (0, "added alice@example.com\n", "")
    r = subprocess.run([str(script), "user", "add", "alice@example.com", "--db", db, "-p", "x"],
                       capture_output=True, text=True, timeout=30, env=env)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "Traceback" not in r.stderr
    r = subprocess.run([str(script), "user", "list", "--db", db], capture_output=True, text=True,
                       timeout=30, env=env)
    assert (r.returncode, r.stdout) == (0, "alice@example.com\n")
