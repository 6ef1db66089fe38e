"""Structured logs: one JSON object per line on stderr.

Owns the log format (DESIGN section 6): every line has ``time``, ``level``,
``msg`` and ``type``, plus any of ``conversation_id``, ``seq``, ``node_id``,
``group_id``, ``term`` passed through ``extra=``. It configures the root logger
once at start and does nothing else.
"""

from __future__ import annotations

import logging
import sys
from datetime import UTC, datetime
from typing import Any, TextIO

import orjson

__all__ = ["JsonFormatter", "configure_logging"]

# LogRecord attributes that are the record's own, not context passed via extra=.
_RESERVED = frozenset(
    logging.LogRecord("", 0, "", 0, "", None, None).__dict__.keys() | {"message", "asctime"}
)


class JsonFormatter(logging.Formatter):
    def __init__(self, *, static_fields: dict[str, Any] | None = None) -> None:
        super().__init__()
        self._static = dict(static_fields or {})

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, tz=UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "msg": record.getMessage(),
            "type": getattr(record, "type", None) or record.name,
        }
        line.update(self._static)
        for key, value in record.__dict__.items():
            if key not in _RESERVED and key != "type":
                line[key] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(line, default=str).decode()


def configure_logging(
    level: str, *, static_fields: dict[str, Any] | None = None, stream: TextIO | None = None
) -> None:
    """Route every logger to one JSON handler at ``level`` (debug/info/...)."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter(static_fields=static_fields))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # aiohttp's access log costs a line per request; keep it for debugging only.
    logging.getLogger("aiohttp.access").setLevel(
        logging.DEBUG if level == "debug" else logging.WARNING
    )
