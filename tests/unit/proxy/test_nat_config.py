"""NatConfig ([nat]): defaults render and load back; bad values name key, value and what
is expected; the [nat] section loads as part of the whole config."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from sipedge.config import load_config
from sipedge.config._schema import build, render
from sipedge.config.nat import NatConfig
from sipedge.errors import ConfigError


def test_defaults_round_trip() -> None:
    text = "\n".join(render(NatConfig, "nat"))
    assert build(NatConfig, tomllib.loads(text)["nat"], "nat") == NatConfig()
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if "=" in line and not line.startswith("#"):
            assert lines[i - 1].startswith("# "), line


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        ({"keepalive_interval": -1}, "nat.keepalive_interval = -1: expected a number >= 0"),
        ({"keepalive_method": "PING"}, "nat.keepalive_method = 'PING': expected one of 'udp', 'OPTIONS', 'NOTIFY'"),
        ({"ping_from": "pinger@x"}, "nat.ping_from = 'pinger@x': expected a sip: URI"),
        ({"ping_headers": ["NoColon"]}, 'expected a list of "Name: value" header lines'),
        ({"ping_headers": ["X-A: 1\r\nX-B: 2"]}, "header lines"),
        ({"advertise": ["udp:1.2.3.4:5060"]}, "nat.advertise = ['udp:1.2.3.4:5060']: expected a list like"),
        ({"dialog_lifetime": 0}, "nat.dialog_lifetime = 0: expected a number greater than 0"),
        ({"nope": 1}, "nat.nope: unknown option"),
    ],
)
def test_bad_values_are_named(data: dict[str, object], needle: str) -> None:
    with pytest.raises(ConfigError) as info:
        build(NatConfig, data, "nat")
    assert needle in str(info.value)


def test_the_nat_section_is_part_of_the_config(tmp_path: Path) -> None:
    cfg = tmp_path / "s.toml"
    cfg.write_text('[sip]\nlisten = ["udp:127.0.0.1:0"]\n\n[nat]\nkeepalive_interval = 5\nkeepalive_method = "NOTIFY"\n')
    config = load_config(cfg)
    assert config.sip.listen == ["udp:127.0.0.1:0"]
    assert (config.nat.keepalive_interval, config.nat.keepalive_method) == (5.0, "NOTIFY")
    cfg.write_text("[nat]\nkeepalive_interval = -2\n")
    with pytest.raises(ConfigError, match=r"nat\.keepalive_interval"):
        load_config(cfg)
