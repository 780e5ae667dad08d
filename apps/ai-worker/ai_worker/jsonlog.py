"""JSON-lines logging on the standard logging module: one object per event."""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

_RESERVED = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "color_message"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": int(record.created * 1000),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for k, v in record.__dict__.items():
            if k not in _RESERVED and not k.startswith("_"):
                out[k] = v
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str, ensure_ascii=False)


class _JsonHandler(logging.StreamHandler):
    pass


def setup_logging(level: str = "info", stream: Any = None) -> None:
    """Install one JSON handler on the root logger (idempotent)."""
    root = logging.getLogger()
    for h in list(root.handlers):
        if isinstance(h, _JsonHandler):
            root.removeHandler(h)
    handler = _JsonHandler(stream or sys.stdout)
    handler.setFormatter(JsonFormatter())
    root.addHandler(handler)
    root.setLevel(level.upper())
    logging.Formatter.converter = time.gmtime


def event(logger: logging.Logger, level: int, msg: str, **fields: Any) -> None:
    """Log one event with structured fields (become top-level JSON keys)."""
    logger.log(level, msg, extra=fields)
