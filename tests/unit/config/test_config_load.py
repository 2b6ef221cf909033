"""Config: defaults render to TOML that loads back; bad values name key, value, expectation."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from sipedge.config import Config, default_toml, load_config, parse_config
from sipedge.errors import ConfigError


def test_default_toml_round_trips() -> None:
    assert parse_config(tomllib.loads(default_toml())) == Config()


def test_every_option_is_documented() -> None:
    text = default_toml()
    for line in text.splitlines():
        if "=" in line and not line.startswith("#"):
            idx = text.splitlines().index(line)
            assert text.splitlines()[idx - 1].startswith("# "), line


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        ({"sip": {"limits": {"max_message_size": -1}}}, "sip.limits.max_message_size = -1: expected a number greater than 0"),
        ({"sip": {"listen": ["bogus"]}}, "sip.listen = ['bogus']: expected a list like"),
        ({"sip": {"nope": 1}}, "sip.nope: unknown option"),
        ({"nosuch": {}}, "[nosuch]: unknown section"),
        ({"auth": {"register": "yes"}}, "auth.register = 'yes': expected boolean"),
        ({"routing": {"forking": "random"}}, "routing.forking = 'random': expected one of 'parallel', 'serial'"),
    ],
)
def test_bad_values_are_named(data: dict[str, object], needle: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(data)
    assert needle in str(info.value)


def test_load_missing_file_says_how_to_fix(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="sipedge init"):
        load_config(tmp_path / "absent.toml")


def test_load_invalid_toml(tmp_path: Path) -> None:
    p = tmp_path / "bad.toml"
    p.write_text("[sip\nlisten = 3")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(p)
