"""[media] config: defaults, validation messages naming key, value and expectation."""

from __future__ import annotations

import pytest

from sipedge.config import default_toml, parse_config
from sipedge.errors import ConfigError


def test_defaults_and_derived() -> None:
    m = parse_config({}).media
    assert (m.enabled, m.listen, m.advertised_address, m.ng_address) == (True, "127.0.0.1", "127.0.0.1", None)
    assert parse_config({"media": {"ng_listen": "127.0.0.1:22222"}}).media.ng_address == ("127.0.0.1", 22222)
    m = parse_config({"media": {"listen": "::", "advertise": "2001:db8::5", "ng_listen": "[::1]:2223"}}).media
    assert m.advertised_address == "2001:db8::5" and m.ng_address == ("::1", 2223)
    assert parse_config({"media": {"ng_listen": ""}}).media.ng_address is None
    assert "[media]" in default_toml() and "offer_timeout = 3600.0" in default_toml()
    m = parse_config({"media": {"interfaces": ["priv/10.0.0.5", "pub/0.0.0.0!203.0.113.10"]}}).media
    assert m.interface_list == [("priv", "10.0.0.5", "10.0.0.5"), ("pub", "0.0.0.0", "203.0.113.10")]
    assert m.advertised_address == "10.0.0.5"  # the first is the default
    assert m.describe_interfaces() == "priv 10.0.0.5, pub 0.0.0.0 (as 203.0.113.10)"


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"listen": "eth0"}, "media.listen = 'eth0': expected an IPv4 or IPv6 address literal"),
        ({"listen": "0.0.0.0"}, "expected an advertise address"),
        ({"port_min": 40000, "port_max": 30000}, "expected port_min < port_max"),
        ({"port_max": 70000}, "expected a port number"),
        ({"ng_listen": "localhost"}, 'expected an "ip:port"'),
        ({"ice": "sometimes"}, "expected one of 'auto', 'remove', 'force', 'relay'"),
        ({"timeout": 0}, "expected a number greater than 0"),
        ({"interfaces": ["pub"]}, "name/listen-ip"),
        ({"interfaces": ["pub/0.0.0.0"]}, "needed when listening on 0.0.0.0"),
        ({"interfaces": ["a/10.0.0.1", "a/10.0.0.2"]}, "'a' appears twice"),
        ({"bogus": 1}, "media.bogus: unknown option"),
    ],
)
def test_errors(table: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as exc:
        parse_config({"media": table})
    assert message in str(exc.value)
