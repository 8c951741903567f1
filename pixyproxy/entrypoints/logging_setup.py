"""Logging in the seed's format, with the current request's id on every line:

2026-11-26 07:14:05,123 INFO myhost-20261126071405123456-140245 [140245] [dispatch:42] REQUEST START GET /
"""

from __future__ import annotations

import contextvars
import itertools
import json
import logging
import re
import socket
import sys
import threading
from datetime import datetime
from typing import Any, TextIO

NO_REQUEST = "-"
TEXT_FORMAT = "%(asctime)s %(levelname)s %(request_id)s [%(thread_id)d] [%(funcName)s:%(lineno)d] %(message)s"

current_request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default=NO_REQUEST)

# C0 controls (tab included), DEL, C1 controls (NEL among them) and the Unicode line and paragraph
# separators: anything a terminal or a log reader may take as the end of a line or an escape.
_LINE_BREAKERS = re.compile("[\\x00-\\x1f\\x7f-\\x9f\\u2028\\u2029]")

_HOST = socket.gethostname().split(".")[0] or "pixyproxy"
_sequence_lock = threading.Lock()
_last_base = ""
_repeats = itertools.count()


def new_request_id() -> str:
    """host-YYYYmmddHHMMSSffffff-threadid, with a -N suffix when that is not unique already.

    Many requests share one event-loop thread and can start within the same microsecond;
    the suffix keeps ids unique without lengthening the common case.
    """
    global _last_base, _repeats
    base = f"{_HOST}-{datetime.now():%Y%m%d%H%M%S%f}-{threading.get_native_id()}"
    with _sequence_lock:
        if base != _last_base:
            _last_base, _repeats = base, itertools.count(1)
            return base
        return f"{base}-{next(_repeats)}"


class RequestContextFilter(logging.Filter):
    """Stamps every record with the current request's id and the OS thread id."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Add request_id and thread_id; never drops a record."""
        record.request_id = current_request_id.get()
        record.thread_id = threading.get_native_id()
        return True


def escape_controls(text: str) -> str:
    """`text` with every control and line-separator character written as a Python escape (\\n, \\x1b).

    Request paths, headers and prompts reach log lines; escaped, they can never end a line and
    start a forged one, nor send escape sequences to an operator's terminal.
    """
    if text.isprintable():  # the common case, in C: no regex pass
        return text
    return _LINE_BREAKERS.sub(_escape_one, text)


def _escape_one(match: re.Match[str]) -> str:
    return repr(match.group())[1:-1]


class SeedFormatter(logging.Formatter):
    """The seed's text format, in which only the logger starts a line.

    The message is escaped; a traceback keeps its lines but each is indented, so that no text an
    exception carries can begin a line that reads as a log entry.
    """

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        """One entry: the line, then any traceback or stack indented beneath it."""
        record.message = escape_controls(record.getMessage())
        record.asctime = self.formatTime(record, self.datefmt)
        parts = [self.formatMessage(record)]
        # Formatted afresh, never from record.exc_text: another handler may have cached it unindented.
        if record.exc_info:
            parts.append(_indented(self.formatException(record.exc_info)))
        elif record.exc_text:
            parts.append(_indented(record.exc_text))
        if record.stack_info:
            parts.append(_indented(self.formatStack(record.stack_info)))
        return "\n".join(parts)


def _indented(text: str) -> str:
    return "\n".join("    " + escape_controls(line) for line in text.splitlines())


class JsonFormatter(logging.Formatter):
    """The text format's fields as one JSON object per line, for log shippers."""

    def format(self, record: logging.LogRecord) -> str:
        """One JSON line."""
        entry: dict[str, Any] = {
            "time": self.formatTime(record),
            "level": record.levelname,
            "request_id": getattr(record, "request_id", NO_REQUEST),
            "thread_id": getattr(record, "thread_id", record.thread),
            "function": record.funcName,
            "line": record.lineno,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def configure_logging(level: str = "INFO", fmt: str = "text", *, stream: TextIO | None = None) -> None:
    """Send pixyproxy's and uvicorn's logs to standard error in one format."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.addFilter(RequestContextFilter())
    handler.setFormatter(JsonFormatter() if fmt == "json" else SeedFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        if getattr(old, "pixyproxy", False):
            root.removeHandler(old)
    handler.pixyproxy = True  # type: ignore[attr-defined]  # marks our handler for reconfiguration
    root.addHandler(handler)
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers = []
        logging.getLogger(name).propagate = True
    # Our middleware writes one START and one END line a request; uvicorn's access line would be a third.
    logging.getLogger("uvicorn.access").handlers = []
    logging.getLogger("uvicorn.access").propagate = False
