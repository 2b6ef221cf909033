"""Configuration: one frozen :class:`Config` built once from TOML (``load_config``).

Each section lives in its own module; all share the mechanism in ``_schema``.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ._schema import build, non_negative, one_of, option, positive, render
from .dialog import AccountingConfig, DialogConfig
from .dispatcher import DispatcherConfig
from .dns import DnsConfig
from .media import MediaConfig
from .nat import NatConfig
from .redis import RedisConfig
from .sip import AuthConfig, LimitsConfig, RegistrarConfig, RoutingConfig, SipConfig, TimersConfig
from .turn import TurnConfig
from .web import WebConfig

__all__ = [
    "AccountingConfig",
    "AuthConfig",
    "Config",
    "DialogConfig",
    "DispatcherConfig",
    "DnsConfig",
    "GeneralConfig",
    "LimitsConfig",
    "MediaConfig",
    "NatConfig",
    "RedisConfig",
    "RegistrarConfig",
    "RoutingConfig",
    "SipConfig",
    "TimersConfig",
    "TlsConfig",
    "TurnConfig",
    "WebConfig",
    "default_toml",
    "load_config",
]


@dataclass(frozen=True, slots=True)
class GeneralConfig:
    """Process-wide settings."""

    data_dir: str = option("./sipedge-data", "directory for the database, certificates and state")
    log_level: str = option("info", "log level", one_of("debug", "info", "warning", "error"))
    log_format: str = option("text", "log line format", one_of("text", "json"))
    gc_interval: float = option(
        300.0,
        "seconds between full garbage collections, run by sipedge instead of CPython's "
        "schedule, whose frequent full passes over live transactions pause a loaded server "
        "(0 = CPython's schedule)",
        non_negative,
    )
    control_socket: str = option(
        "",
        "Unix socket that `sipedge ctl` talks to, readable by this user only (empty = "
        '<data_dir>/control.sock; "off" = none)',
    )
    workers: int = option(
        1,
        "SIP worker processes serving the same listeners (1 = one process, as before; "
        "more: a supervisor starts them, docs/workers.md)",
        positive,
    )


def database_url(v: Any) -> str | None:
    """A SQLite file path (plain or ``sqlite:///path``) or a ``postgresql://`` URL."""
    text = str(v)
    if "://" not in text:
        return None
    scheme, _, rest = text.partition("://")
    if scheme == "sqlite":
        return None if rest.startswith("/") and len(rest) > 1 else "sqlite:///ABSOLUTE/PATH (three slashes)"
    if scheme in ("postgresql", "postgres"):
        return None
    return 'a SQLite path, "sqlite:///path" or "postgresql://user@host:port/dbname"'


@dataclass(frozen=True, slots=True)
class DatabaseConfig:
    """Where subscribers, locations, dialogs, CDRs, keepalive and TURN users are kept
    (docs/storage.md)."""

    url: str = option(
        "",
        'SQLite file path or "sqlite:///path", or "postgresql://user:password@host:port/dbname" '
        "(empty = <data_dir>/sipedge.db)",
        database_url,
    )
    pool_size: int = option(4, "PostgreSQL: connections per process, at most", positive)
    connect_timeout: float = option(
        5.0, "PostgreSQL: seconds to connect, or to wait for a pooled connection", positive
    )
    statement_timeout: float = option(
        2.0, "PostgreSQL: seconds a statement may run before the server cancels it (0 = no limit)",
        non_negative,
    )
    migrate: str = option(
        "auto",
        'PostgreSQL: "auto" brings the schema up to date at start; "manual" refuses to start on '
        "an old schema until `sipedge db migrate` (SQLite files are always migrated)",
        one_of("auto", "manual"),
    )

    @property
    def dialect(self) -> str:
        return "postgresql" if self.url.startswith(("postgresql://", "postgres://")) else "sqlite"


@dataclass(frozen=True, slots=True)
class TlsConfig:
    """Certificate for TLS/WSS (generated self-signed on first start when empty)."""

    cert: str = option("", "PEM certificate chain (empty = <data_dir>/tls/cert.pem, generated)")
    key: str = option("", "PEM private key (empty = <data_dir>/tls/key.pem, generated)")
    verify_peer: bool = option(False, "require and verify client certificates")
    ca: str = option("", "CA bundle used to verify peers (with verify_peer)")


@dataclass(frozen=True, slots=True)
class Config:
    """sipedge configuration."""

    general: GeneralConfig = GeneralConfig()
    database: DatabaseConfig = DatabaseConfig()
    redis: RedisConfig = RedisConfig()
    tls: TlsConfig = TlsConfig()
    sip: SipConfig = SipConfig()
    auth: AuthConfig = AuthConfig()
    registrar: RegistrarConfig = RegistrarConfig()
    routing: RoutingConfig = RoutingConfig()
    dns: DnsConfig = DnsConfig()
    dispatcher: DispatcherConfig = DispatcherConfig()
    turn: TurnConfig = TurnConfig()
    media: MediaConfig = MediaConfig()
    nat: NatConfig = NatConfig()
    web: WebConfig = WebConfig()
    dialog: DialogConfig = DialogConfig()
    accounting: AccountingConfig = AccountingConfig()

    @property
    def database_path(self) -> Path:
        """The SQLite file of ``[database] url`` (for a PostgreSQL URL: not a file, an error)."""
        url = self.database.url
        if self.database.dialect != "sqlite":
            raise ConfigError("database.url is a PostgreSQL URL, not a SQLite file")
        if url.startswith("sqlite://"):
            return Path(url[len("sqlite://"):])
        return Path(url) if url else Path(self.general.data_dir) / "sipedge.db"



def parse_config(data: dict[str, Any]) -> Config:
    """Build a Config from parsed TOML; raises ConfigError naming key, value, expectation."""
    import dataclasses
    import typing

    hints = typing.get_type_hints(Config)
    known = {f.name for f in dataclasses.fields(Config)}
    kwargs: dict[str, Any] = {}
    for section, table in data.items():
        if section not in known:
            raise ConfigError(
                f"[{section}]: unknown section; known sections are " + ", ".join(sorted(known))
            )
        kwargs[section] = build(hints[section], table, section)
    return Config(**kwargs)


def load_config(path: str | Path | None) -> Config:
    """Read a TOML file (or return the embedded defaults when ``path`` is None)."""
    if path is None:
        return Config()
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config file {p}: {exc.strerror}; run `sipedge init {p}` to create one") from exc
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{p}: not valid TOML: {exc}") from exc
    return parse_config(data)


def default_toml() -> str:
    """The commented TOML that ``sipedge init`` writes: every option at its default."""
    import dataclasses
    import typing

    hints = typing.get_type_hints(Config)
    out = ["# sipedge configuration. Every option is shown at its default.", ""]
    for f in dataclasses.fields(Config):
        out.extend(render(hints[f.name], f.name))
        out.append("")
    return "\n".join(out)
