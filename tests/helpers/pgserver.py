"""A real PostgreSQL server for the tests: Debian's postgresql-15, started on a private
port on 127.0.0.1 with its data and socket directory in a temporary directory.

``pg_server`` is session-scoped (one server for every test that asks); ``pg_url`` is a
fresh, empty database on it for one test. PostgreSQL refuses to run as root, so as root
the server runs as ``nobody`` (the temporary directory is given to that user). The
server keeps ``synchronous_commit`` on (a commit is in its WAL before the client hears
of it: the crash tests rely on that) but skips fsync (a test never outlives the OS).
"""

from __future__ import annotations

import atexit
import contextlib
import itertools
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from .ports import free_port

BIN = Path("/usr/lib/postgresql/15/bin")
_TEMPLATE: Path | None = None  # a fresh cluster (initdb output) that later servers copy


class PgServer:
    def __init__(self, root: Path, port: int) -> None:
        self.root, self.port = root, port
        self.data = root / "data"
        self.sockets = root / "sockets"
        self.log = root / "postgres.log"
        self._names = itertools.count(1)
        self._user = "nobody" if os.geteuid() == 0 else ""

    def _run(self, *args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        cmd = [str(BIN / args[0]), *args[1:]]
        if self._user:
            cmd = ["runuser", "-u", self._user, "--", *cmd]
        return subprocess.run(cmd, capture_output=True, text=True, check=check, timeout=timeout, cwd=self.root)

    def init(self) -> None:
        """A new cluster: initdb once per process, copied for every further server."""
        global _TEMPLATE
        self.sockets.mkdir()
        if self._user:
            pw = pwd.getpwnam(self._user)
            for p in (self.root, self.sockets):
                os.chown(p, pw.pw_uid, pw.pw_gid)
        if _TEMPLATE is not None and _TEMPLATE.exists():
            subprocess.run(["cp", "-a", str(_TEMPLATE), str(self.data)], check=True, timeout=60)
            return
        self._run("initdb", "-D", str(self.data), "-U", "sipedge", "--auth=trust", "-E", "UTF8",
                  "--locale=C.UTF-8", "--no-sync")
        template = Path(tempfile.mkdtemp(prefix="sipedge-pg-template-")) / "data"
        subprocess.run(["cp", "-a", str(self.data), str(template)], check=True, timeout=60)
        _TEMPLATE = template
        atexit.register(shutil.rmtree, template.parent, True)

    def start(self) -> None:
        opts = (f"-p {self.port} -h 127.0.0.1 -k {self.sockets} -c fsync=off -c full_page_writes=off "
                "-c max_connections=200 -c shared_buffers=16MB")
        r = self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", opts, "-w", "-t", "30", "start",
                      check=False)
        if r.returncode != 0:
            raise RuntimeError(f"postgres did not start: {r.stderr}\n{self.log_text()[-2000:]}")

    def stop(self, mode: str = "fast") -> None:
        """Stop the server; ``mode`` "immediate" is a crash (no checkpoint, recovery at
        the next start)."""
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "30", "stop", check=False)

    def log_text(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except OSError:
            return ""

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://sipedge@127.0.0.1:{self.port}/{dbname}"

    def create_database(self, prefix: str = "t") -> str:
        """A new empty database; returns its URL."""
        import psycopg

        name = f"{prefix}{next(self._names)}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)


@contextlib.contextmanager
def started_pg() -> Iterator[PgServer]:
    """A server of its own (a test that stops and restarts it), removed at the end."""
    if not (BIN / "postgres").exists():
        raise RuntimeError(f"{BIN}/postgres missing: run `scripts/setup test` (installs Debian's postgresql)")
    root = Path(tempfile.mkdtemp(prefix="sipedge-pg-"))  # under /tmp: `nobody` can reach it
    server = PgServer(root, free_port())
    try:
        server.init()
        server.start()
        yield server
    finally:
        server.stop("immediate")
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    with started_pg() as server:
        yield server


@pytest.fixture
def pg_url(pg_server: PgServer) -> str:
    """A fresh, empty database on the session's server (its URL)."""
    return pg_server.create_database()


__all__ = ["PgServer", "pg_server", "pg_url", "started_pg"]
