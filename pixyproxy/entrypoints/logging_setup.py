"""Logging in the seed's format, with the current request's id on every line:

2026-11-26 07:14:05,123 INFO myhost-20261126071405123456-140245 [140245] [dispatch:42] REQUEST START GET /
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import itertools
import json
import logging
import os
import re
import socket
import sys
import threading
import time
from collections.abc import Callable
from types import CodeType
from typing import Any, TextIO

NO_REQUEST = "-"
TEXT_FORMAT = "%(asctime)s %(levelname)s %(request_id)s [%(thread_id)d] [%(funcName)s:%(lineno)d] %(message)s"

current_request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default=NO_REQUEST)

# C0 controls (tab included), DEL, C1 controls (NEL among them) and the Unicode line and paragraph
# separators: anything a terminal or a log reader may take as the end of a line or an escape.
_LINE_BREAKERS = re.compile("[\\x00-\\x1f\\x7f-\\x9f\\u2028\\u2029]")

_HOST = socket.gethostname().split(".")[0] or "pixyproxy"


class _IdClock(threading.local):
    """Per thread: its OS thread id, the last id's base and its repeat counter, and the current
    second's id prefix."""

    def __init__(self) -> None:
        # threading.get_native_id() is a system call (gettid) each time; a thread keeps its id.
        self.native_id = threading.get_native_id()
        self.second = -1
        self.prefix = ""
        self.last_base = ""
        self.repeats = itertools.count(1)


_id_clock = _IdClock()


def _after_fork_in_child() -> None:
    """A forked child's one thread is a new OS thread: forget what the parent's threads held."""
    global _id_clock
    _id_clock = _IdClock()


os.register_at_fork(after_in_child=_after_fork_in_child)


def native_thread_id() -> int:
    """threading.get_native_id(), without its system call after a thread's first."""
    return _id_clock.native_id


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
    base = f"{clock.prefix}{micros:06d}-{clock.native_id}"
    if base != clock.last_base:
        clock.last_base, clock.repeats = base, itertools.count(1)
        return base
    return f"{base}-{next(clock.repeats)}"


class RequestContextFilter(logging.Filter):
    """Stamps every record with the current request's id and the OS thread id."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Add request_id and thread_id; never drops a record."""
        record.request_id = current_request_id.get()
        record.thread_id = _id_clock.native_id
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
            text = self.second_text(created)
        return self.default_msec_format % (text, msecs) if self.default_msec_format else text

    def second_text(self, created: float) -> str:
        """The date-time down to the second of `created` (`2026-11-26 07:14:05`), kept for the next call."""
        text = time.strftime(self.default_time_format, self.converter(created))
        self._second = (int(created), text)
        return text

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
        self._flush_thread = 0  # that loop's thread (threading.get_ident), valid while _flush_on is set
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
        if defer and self.buffered:
            flush_on = self._flush_on
            if flush_on is not None and self._flush_thread == threading.get_ident() and flush_on.is_running():
                return  # the loop running on this thread writes it with the rest of this turn's lines
            # A running loop is one per thread. (On 3.11 this costs a getpid system call: once a turn.)
            loop = asyncio._get_running_loop()
            if loop is not None and self._flush_on is None:
                self._flush_on, self._flush_thread = loop, threading.get_ident()
                loop.call_soon(self._flush_turn)
                return
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
    """`logger.log(level, msg, *args)` for a hot path (`line_writer`'s line, decided for this one line)."""
    if not logger.isEnabledFor(level):
        return
    handler = _sole_text_handler(logger, level)
    if handler is None:
        logger.log(level, msg, *args, stacklevel=2)
    else:
        _write_or_log(handler, _head(level), logger, level, 2, msg, *args)


LineWriter = Callable[..., None]
"""A `line_writer`'s result: called as `logger.log` would be, `(msg, *args)`."""


def line_writer(logger: logging.Logger, level: int) -> LineWriter | None:
    """`logger.log` at `level` for a hot path, such as the two lines of every request; None when
    `logger` is not enabled for `level`. Decided once for the lines that follow, in this thread and
    this request's context (its request id is read now): the middleware asks at a request's start, and
    both its lines use the answer.

    When the record would reach only our text handler (`_sole_text_handler`: how `serve` runs), each
    line is built with no LogRecord, no findCaller stack walk and no handler chain: the same text the
    handler's SeedFormatter and RequestContextFilter make of the record (the caller's function and
    line from its own frame, the request id, the OS thread id, escaped controls), and below WARNING it
    waits for the end of the loop's turn (TurnBufferedHandler.write). Anywhere else (another handler,
    the JSON format, a test's caplog) it is `logger.log`, with the caller's frame as its
    `[function:line]`, written at once. Call the writer directly (a partial adds no Python frame):
    the caller's frame is the one a line names.
    """
    if not logger.isEnabledFor(level):
        return None
    handler = _sole_text_handler(logger, level)
    if handler is None:
        return functools.partial(_log_from_caller, logger, level)
    return functools.partial(_write_or_log, handler, _head(level), logger, level, 1)


def _log_from_caller(logger: logging.Logger, level: int, msg: str, *args: object) -> None:
    logger.log(level, msg, *args, stacklevel=2)


def _head(level: int) -> str:
    """What follows the date-time on a line at `level` written now, up to `[function:line]`."""
    return f"{logging.getLevelName(level)} {current_request_id.get()} [{_id_clock.native_id}]"


# Per calling code object (by id, the object itself kept so that its id cannot be reused): its
# `[function:line]` text by the instruction that called. A frame's f_lineno is a search of its code's
# line table, which a long function such as the middleware's dispatch pays on every line.
_call_sites: dict[int, tuple[CodeType, dict[int, str]]] = {}
MAX_CALL_SITES = 256  # code objects kept alive by the cache, at most
# formatTime's milliseconds (`%03d`), looked up rather than formatted.
_MILLIS = [f"{ms:03d}" for ms in range(1000)]


def _write_or_log(
    handler: TurnBufferedHandler,
    head: str,
    logger: logging.Logger,
    level: int,
    depth: int,
    msg: str,
    *args: object,
) -> None:
    """Write the line `handler` would make of `logger.log(level, msg, *args)` called `depth` frames up,
    `head` (_head) after its date-time; or, when the arguments do not fit the message, hand it to
    `logger.log`, which reports it as it always has. One Python frame: this is every request's cost."""
    try:
        if len(args) == 1 and isinstance(args[0], dict):  # %(name)s arguments: logging's own path
            raise TypeError("mapping arguments")
        message = msg % args if args else msg
        if not message.isprintable():  # escape_controls, with its common case inline
            message = escape_controls(message)
    except Exception:  # arguments that do not fit, or a message that is not a string
        logger.log(level, msg, *args, stacklevel=depth + 1)
        return
    caller = sys._getframe(depth)
    code = caller.f_code
    site = _call_sites.get(id(code))
    if site is None or site[0] is not code:
        if len(_call_sites) >= MAX_CALL_SITES:  # callers made at run time (lambdas, tests): start again
            _call_sites.clear()
        site = _call_sites[id(code)] = (code, {})
    where = site[1].get(caller.f_lasti)
    if where is None:
        where = site[1][caller.f_lasti] = f"[{code.co_name}:{caller.f_lineno}]"
    # The date-time as formatTime writes a record's (`%s,%03d`, milliseconds floored), strftime once a second.
    formatter: SeedFormatter = handler.formatter  # type: ignore[assignment]  # checked by _sole_text_handler
    now = time.time()
    whole = int(now)
    second, stamp = formatter._second
    if whole != second:
        stamp = formatter.second_text(now)
    line = f"{stamp},{_MILLIS[int((now - whole) * 1000)]} {head} {where} {message}\n"
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
