"""The connections of the transport layer (server/ws.py, udp.py, stream.py,
tls_listener.py) use only its public connection interface: no ``_``-prefixed attribute
of the layer is read or written outside server/transport.py."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import sipedge.server

SERVER = Path(sipedge.server.__file__).parent
CONNECTIONS = ("ws.py", "udp.py", "stream.py", "tls_listener.py")


def layer_privates(source: str) -> list[str]:
    """``layer._x`` and ``self.layer._x`` in ``source``, with their line numbers."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Attribute) or not node.attr.startswith("_"):
            continue
        base = node.value
        named = (isinstance(base, ast.Name) and base.id == "layer") or (
            isinstance(base, ast.Attribute) and base.attr == "layer")
        if named:
            found.append(f"{node.lineno}: .{node.attr}")
    return sorted(found)


@pytest.mark.parametrize("module", CONNECTIONS)
def test_connections_use_no_private_attribute_of_the_layer(module: str) -> None:
    assert layer_privates((SERVER / module).read_text()) == []


def test_the_check_sees_a_private_access() -> None:
    assert layer_privates("def f(self, layer):\n    layer._stat['x'] += 1\n    self.layer._loop\n") == [
        "2: ._stat", "3: ._loop"]
