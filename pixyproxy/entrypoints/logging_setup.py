"""Logging in the seed's format, with the current request's id on every line:

2026-11-26 07:14:05,123 INFO myhost-20261126071405123456-140245 [140245] [dispatch:42] REQUEST START GET /
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import itertools
import json
import logging
import re
import socket
import sys
import threading
import time
from typing import Any, TextIO

NO_REQUEST = "-"
TEXT_FORMAT = "%(asctime)s %(levelname)s %(request_id)s [%(thread_id)d] [%(funcName)s:%(lineno)d] %(message)s"

current_request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default=NO_REQUEST)

# C0 controls (tab included), DEL, C1 controls (NEL among them) and the Unicode line and paragraph
# separators: anything a terminal or a log reader may take as the end of a line or an escape.
_LINE_BREAKERS = re.compile("[\\x00-\\x1f\\x7f-\\x9f\\u2028\\u2029]")

_HOST = socket.gethostname().split(".")[0] or "pixyproxy"


class _IdClock(threading.local):
    """Per thread: the last id's base and its repeat counter, and the current second's id prefix."""

    def __init__(self) -> None:
        self.second = -1
        self.prefix = ""
        self.last_base = ""
        self.repeats = itertools.count(1)


_id_clock = _IdClock()


def new_request_id() -> str:
    """host-YYYYmmddHHMMSSffffff-threadid, with a -N suffix when that is not unique already.

    Many requests share one event-loop thread and can start within the same microsecond;
    the suffix keeps ids unique without lengthening the common case. The thread id is in the id,
    so uniqueness is a per-thread question: no lock. The date-time is the local time to the
    microsecond, floored, as `datetime.now()` gives it; its part down to the second is formatted
    once a second (strftime was most of this function's cost).
    """
    clock = _id_clock
    now_ns = time.time_ns()
    second, micros = now_ns // 1_000_000_000, now_ns // 1000 % 1_000_000
    if second != clock.second:
        clock.second = second
        clock.prefix = f"{_HOST}-{time.strftime('%Y%m%d%H%M%S', time.localtime(second))}"
    base = f"{clock.prefix}{micros:06d}-{threading.get_native_id()}"
    if base != clock.last_base:
        clock.last_base, clock.repeats = base, itertools.count(1)
        return base
    return f"{base}-{next(clock.repeats)}"


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
        self._second: tuple[int, str] = (-1, "")  # the last record's second and its formatted date-time

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # logging's name
        """`logging.Formatter.formatTime`'s text (`2026-11-26 07:14:05,123`), strftime run once a second."""
        if datefmt or record.created < 0:
            return super().formatTime(record, datefmt)
        return self.asctime(record.created, record.msecs)

    def asctime(self, created: float, msecs: float) -> str:
        """formatTime's default text for a record made at `created` (a positive time) with `msecs`."""
        whole = int(created)  # what the converter (localtime) floors it to
        second, text = self._second
        if whole != second:
            text = time.strftime(self.default_time_format, self.converter(created))
            self._second = (whole, text)
        return self.default_msec_format % (text, msecs) if self.default_msec_format else text

    def formatMessage(self, record: logging.LogRecord) -> str:  # logging's name
        """TEXT_FORMAT's line, with the same conversions (%s, %d) but without the mapping lookups."""
        try:
            fields = (
                record.asctime,
                record.levelname,
                record.request_id,  # type: ignore[attr-defined]  # RequestContextFilter sets it
                record.thread_id,  # type: ignore[attr-defined]
                record.funcName,
                record.lineno,
                record.message,
            )
        except AttributeError:  # no RequestContextFilter: the format's own KeyError, as before
            return super().formatMessage(record)
        return "%s %s %s [%d] [%s:%d] %s" % fields  # noqa: UP031  # TEXT_FORMAT's exact conversions

    def format(self, record: logging.LogRecord) -> str:
        """One entry: the line, then any traceback or stack indented beneath it."""
        record.message = escape_controls(record.getMessage())
        record.asctime = self.formatTime(record, self.datefmt)
        line = self.formatMessage(record)
        if not (record.exc_info or record.exc_text or record.stack_info):
            return line
        parts = [line]
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


class TurnBufferedHandler(logging.StreamHandler):  # type: ignore[type-arg]  # generic only in typeshed
    """A stream handler that can hold the hot path's lines until the end of the event loop's turn.

    A write to standard error is a system call per line (a line-buffered stream): at INFO that was
    two per request. Lines that `log_line` writes on a running event loop's thread (the request
    START/END lines) wait in a list that a callback, scheduled once per turn, writes in one call at
    the loop's next turn, microseconds later: a line is never held while the loop sleeps. Every
    other line (any record through `emit`: uvicorn's, the app's, errors and tracebacks; lines from
    other threads; everything when `buffered` is off) is written at once, after whatever waits, so
    the order is kept and a process that dies right after a line (uvicorn re-raises SIGTERM once it
    has shut down) has written it. `flush()` (called by `logging.shutdown` at exit) and `close()`
    write what is left; a crash can lose at most the request lines of the turn it happens in.
    """

    def __init__(self, stream: TextIO, *, buffered: bool = True) -> None:
        super().__init__(stream)
        self.buffered = buffered
        self._pending: list[str] = []
        self._flush_on: asyncio.AbstractEventLoop | None = None  # the loop whose callback will write
        self._last: logging.LogRecord | None = None  # for handleError, should a write fail

    def emit(self, record: logging.LogRecord) -> None:
        """Format and write now, after any line waiting for the loop (the caller holds the handler lock)."""
        try:
            text = self.format(record) + self.terminator
        except RecursionError:  # as logging.StreamHandler.emit does
            raise
        except Exception:
            self.handleError(record)
            return
        self._last = record
        self.write(text, defer=False)

    def write(self, text: str, *, defer: bool) -> None:
        """Write `text` (whole lines) now, or, with `defer` on a loop's thread, at the end of this turn.

        The caller holds the handler lock.
        """
        self._pending.append(text)
        loop = asyncio._get_running_loop() if defer and self.buffered else None
        if loop is not None and self._flush_on is None:
            self._flush_on = loop
            loop.call_soon(self._flush_turn)
        elif loop is None or loop is not self._flush_on:
            self._write_pending()

    def _flush_turn(self) -> None:
        self.acquire()
        try:
            self._write_pending()
        finally:
            self.release()

    def _write_pending(self) -> None:
        self._flush_on = None  # nothing waits now: a loop closed before its callback ran holds nothing
        if not self._pending:
            return
        text = "".join(self._pending)
        self._pending.clear()
        try:
            self.stream.write(text)
            self.stream.flush()
        except RecursionError:
            raise
        except Exception:
            if self._last is not None:
                self.handleError(self._last)

    def flush(self) -> None:
        """Write whatever waits for the loop's turn, then flush the stream."""
        self.acquire()
        try:
            self._write_pending()
            super().flush()
        finally:
            self.release()

    def close(self) -> None:
        """Write whatever waits, then close as a StreamHandler does (the stream stays open)."""
        self.flush()
        super().close()


# The handler configure_logging installed last (None before, or once it is no longer the root's).
_installed: TurnBufferedHandler | None = None

if sys.version_info >= (3, 13):

    def _record_clock() -> tuple[float, float]:
        """`created` and `msecs` as this Python's LogRecord computes them (from time_ns since 3.13)."""
        now = time.time_ns()
        return now / 1e9, (now % 1_000_000_000) // 1_000_000 + 0.0

else:

    def _record_clock() -> tuple[float, float]:
        """`created` and `msecs` as this Python's LogRecord computes them."""
        now = time.time()
        return now, int((now - int(now)) * 1000) + 0.0


def _sole_text_handler(logger: logging.Logger, level: int) -> TurnBufferedHandler | None:
    """The one handler a record of `logger` at `level` would reach, when it is ours in the seed's text
    format and no filter, other handler, disabled logger or record factory stands in between; else None."""
    handler = _installed
    root = logging.root
    if handler is None or len(root.handlers) != 1 or root.handlers[0] is not handler or root.filters:
        return None
    if level < handler.level or type(handler.formatter) is not SeedFormatter or len(handler.filters) != 1:
        return None
    if (
        type(handler.filters[0]) is not RequestContextFilter
        or logging.getLogRecordFactory() is not logging.LogRecord
    ):
        return None
    node: logging.Logger | None = logger
    while node is not None and node is not root:
        if node.handlers or node.filters or node.disabled or not node.propagate:
            return None
        node = node.parent
    return handler if not root.disabled else None


def log_line(logger: logging.Logger, level: int, msg: str, *args: object) -> None:
    """`logger.log(level, msg, *args)` for a hot path, such as the two lines every request writes.

    When the record would reach only our text handler (`_sole_text_handler`: how `serve` runs), the
    line is built here with no LogRecord, no findCaller stack walk and no handler chain: the same
    text the handler's SeedFormatter and RequestContextFilter make of the record (the caller's
    function and line from its own frame, the request id, the OS thread id, escaped controls), and
    below WARNING it waits for the end of the loop's turn (TurnBufferedHandler.write). Anywhere else
    (another handler, the JSON format, a test's caplog) it is `logger.log`, with the caller's frame
    as its `[function:line]`, written at once.
    """
    if not logger.isEnabledFor(level):
        return
    handler = _sole_text_handler(logger, level)
    if handler is None or (len(args) == 1 and isinstance(args[0], dict)):  # %(name)s args: the slow path
        logger.log(level, msg, *args, stacklevel=2)
        return
    caller = sys._getframe(1)
    formatter: SeedFormatter = handler.formatter  # type: ignore[assignment]  # checked by _sole_text_handler
    try:
        created, msecs = _record_clock()
        line = "%s %s %s [%d] [%s:%d] %s\n" % (  # noqa: UP031  # TEXT_FORMAT's exact conversions
            formatter.asctime(created, msecs),
            logging.getLevelName(level),
            current_request_id.get(),
            threading.get_native_id(),
            caller.f_code.co_name,
            caller.f_lineno,
            escape_controls(msg % args if args else msg),
        )
    except Exception:  # a message its arguments do not fit: let logging report it as it always has
        logger.log(level, msg, *args, stacklevel=2)
        return
    with handler.lock or contextlib.nullcontext():  # the lock Handler.handle takes around emit
        handler.write(line, defer=level < logging.WARNING)


def configure_logging(level: str = "INFO", fmt: str = "text", *, stream: TextIO | None = None) -> None:
    """Send pixyproxy's and uvicorn's logs to standard error in one format.

    On standard error the request lines are written once per event-loop turn (TurnBufferedHandler,
    log_line); a `stream` given by the caller gets every line at once, as it is read back at once (tests).
    """
    handler = TurnBufferedHandler(stream or sys.stderr, buffered=stream is None)
    handler.addFilter(RequestContextFilter())
    handler.setFormatter(JsonFormatter() if fmt == "json" else SeedFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        if getattr(old, "pixyproxy", False):
            old.flush()
            root.removeHandler(old)
    handler.pixyproxy = True  # type: ignore[attr-defined]  # marks our handler for reconfiguration
    root.addHandler(handler)
    global _installed
    _installed = handler if fmt != "json" else None
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers = []
        logging.getLogger(name).propagate = True
    # Our middleware writes one START and one END line a request; uvicorn's access line would be a third.
    logging.getLogger("uvicorn.access").handlers = []
    logging.getLogger("uvicorn.access").propagate = False
