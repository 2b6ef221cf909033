"""Structured logs: one JSON object per line with the event's fields."""

from __future__ import annotations

import json
import logging

from sipedge.server.logsetup import JsonFormatter


def test_json_lines_carry_message_level_and_extra_fields() -> None:
    record = logging.LogRecord("sipedge.proxy.core", logging.INFO, __file__, 1, "relayed %s", ("INVITE",), None)
    record.call_id = "abc@host"
    line = JsonFormatter().format(record)
    assert "\n" not in line
    data = json.loads(line)
    assert data["level"] == "info" and data["logger"] == "sipedge.proxy.core"
    assert data["msg"] == "relayed INVITE" and data["call_id"] == "abc@host"


def test_exceptions_stay_on_one_line() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        import sys

        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    data = json.loads(JsonFormatter().format(record))
    assert "ValueError: boom" in data["exc"]
