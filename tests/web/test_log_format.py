"""Logs are one JSON object per line with time, level, msg, type and context."""

from __future__ import annotations

import io
import logging

import orjson

from fastpaca.observability.logging import configure_logging


def test_lines_are_json_with_required_fields_and_context() -> None:
    stream = io.StringIO()
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    try:
        configure_logging("info", stream=stream)
        log = logging.getLogger("fastpaca.test")
        log.info("appended", extra={"type": "store.appended", "conversation_id": "c1", "seq": 7})
        log.debug("hidden at info")
        try:
            raise ValueError("boom")
        except ValueError:
            log.exception("failed")
    finally:
        root.handlers[:], _ = saved
        root.setLevel(saved[1])
    lines = [orjson.loads(line) for line in stream.getvalue().splitlines()]
    assert len(lines) == 2
    first, second = lines
    assert first["msg"] == "appended" and first["level"] == "info"
    assert first["type"] == "store.appended"
    assert (first["conversation_id"], first["seq"]) == ("c1", 7)
    assert first["time"].endswith("Z") and "T" in first["time"]
    # Without an explicit type the logger name stands in; tracebacks stay inside the JSON.
    assert second["type"] == "fastpaca.test" and second["level"] == "error"
    assert "ValueError: boom" in second["exception"]
