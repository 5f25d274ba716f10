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
    # Counts and times only: a push worker's id and figures, a retention run's report.
    | {"worker", "figures", "report", "started", "finished"}
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


# Third-party loggers that write payloads below these levels: PyMongo's DEBUG
# command log holds whole documents (message bodies, token hashes); the
# WebSocket layer's DEBUG frame trace (through ``uvicorn.error``) holds frames,
# the ``auth`` frame's token included.
QUIET_BELOW = {
    "pymongo": logging.WARNING,
    "uvicorn.error": logging.INFO,
    "websockets": logging.INFO,
    "uvicorn.access": logging.WARNING,  # carries query strings
}


class RedactQueryStrings(logging.Filter):
    """Drop the query string of URLs in uvicorn's lines (``"WebSocket /ws?..." [accepted]``).

    Tokens are never accepted in URLs, but a client may still put one there.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name.startswith("uvicorn") and isinstance(record.args, tuple):
            record.args = tuple(
                a.split("?", 1)[0] + "?<redacted>" if isinstance(a, str) and "?" in a else a
                for a in record.args
            )
        return True


def configure(level: str) -> None:
    """Send every log line to stderr as JSON at ``level``."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(RedactQueryStrings())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        lg = logging.getLogger(name)
        lg.handlers[:] = []
        lg.propagate = True
    wanted = logging.getLevelName(level)
    for name, floor in QUIET_BELOW.items():
        logging.getLogger(name).setLevel(max(floor, wanted))
