"""Structured logs: one JSON object per line, never a message body or a token.

Only the ``extra`` keys listed in ``ALLOWED_EXTRA`` are written, so a careless
``extra={"body": ...}`` cannot leak content into the logs.
"""

from __future__ import annotations

import json
import logging
import sys
import time

ALLOWED_EXTRA = frozenset(
    {"user_id", "device_id", "conversation_id", "seq", "port", "error", "count", "path", "status"}
)


class JsonFormatter(logging.Formatter):
    """Formats a record as JSON with its whitelisted extra fields."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, object] = {
            "ts": round(time.time(), 3),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key in ALLOWED_EXTRA:
            if key in record.__dict__:
                out[key] = record.__dict__[key]
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


def configure(level: str) -> None:
    """Send every log line to stderr as JSON at ``level``."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        lg = logging.getLogger(name)
        lg.handlers[:] = []
        lg.propagate = True
    # uvicorn's access log carries query strings; keep it off.
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
