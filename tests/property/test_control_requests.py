"""Whatever bytes reach the control API (socket line or HTTP body), the answer is a
JSON-RPC response or nothing, never an exception; against a real App that is not started,
so every command that needs a role answers 503."""

from __future__ import annotations

import asyncio
import json

from hypothesis import given, settings
from hypothesis import strategies as st

from sipedge.config import Config
from sipedge.server.app import App
from sipedge.server.control import Control

CONTROL = Control(App(Config()))
METHODS = st.sampled_from([*CONTROL.commands, "no.such", ""])
VALUES = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
                      lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
                      max_leaves=8)


def answer(body: bytes, allow_writes: bool = True) -> dict[str, object] | None:
    return asyncio.run(CONTROL.handle(body, allow_writes=allow_writes))


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_any_bytes_get_a_jsonrpc_error_or_result(body: bytes) -> None:
    reply = answer(body)
    assert reply is None or ("error" in reply) != ("result" in reply)


@settings(max_examples=300, deadline=None)
@given(METHODS, st.dictionaries(st.sampled_from(["aor", "contact", "source", "seconds", "level", "prefix",
                                                 "call_id", "x"]), VALUES, max_size=3), st.booleans())
def test_any_params_of_any_command_are_answered(method: str, params: dict[str, object], writes: bool) -> None:
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}).encode()
    reply = answer(body, allow_writes=writes)
    assert reply is not None and reply["id"] == 1
    if "error" in reply:
        error = reply["error"]
        assert isinstance(error, dict) and error["code"] != -32603, error  # a refusal, not a bug
