"""The fast logging path writes exactly what the seed's formatter wrote, character for character.

`_ReferenceFormatter` below is the SeedFormatter as it was before the fast path (TEXT_FORMAT through
logging's own formatTime and `%`-style mapping), kept here as the oracle: every record, made up or
real, must come out of both the same.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import random
import re
import socket
import sys
import threading
import time
import types
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest

from pixyproxy.entrypoints.http import middleware
from pixyproxy.entrypoints.logging_setup import (
    NO_REQUEST,
    RequestContextFilter,
    SeedFormatter,
    TurnBufferedHandler,
    configure_logging,
    current_request_id,
    log_line,
    new_request_id,
)

_REFERENCE_BREAKERS = re.compile("[\\x00-\\x1f\\x7f-\\x9f\\u2028\\u2029]")


def _reference_escape(text: str) -> str:
    if text.isprintable():
        return text
    return _REFERENCE_BREAKERS.sub(lambda m: repr(m.group())[1:-1], text)


class _ReferenceFormatter(logging.Formatter):
    """The seed formatter before the fast path, verbatim but for names."""

    def __init__(self) -> None:
        super().__init__(
            "%(asctime)s %(levelname)s %(request_id)s [%(thread_id)d] [%(funcName)s:%(lineno)d] %(message)s"
        )

    def format(self, record: logging.LogRecord) -> str:
        record.message = _reference_escape(record.getMessage())
        record.asctime = self.formatTime(record, self.datefmt)
        parts = [self.formatMessage(record)]
        if record.exc_info:
            parts.append(_reference_indented(self.formatException(record.exc_info)))
        elif record.exc_text:
            parts.append(_reference_indented(record.exc_text))
        if record.stack_info:
            parts.append(_reference_indented(self.formatStack(record.stack_info)))
        return "\n".join(parts)


def _reference_indented(text: str) -> str:
    return "\n".join("    " + _reference_escape(line) for line in text.splitlines())


def _both(record: logging.LogRecord) -> tuple[str, str]:
    """The record through the reference and through SeedFormatter, each on its own copy."""
    old = logging.makeLogRecord(dict(record.__dict__))
    new = logging.makeLogRecord(dict(record.__dict__))
    return _ReferenceFormatter().format(old), SeedFormatter().format(new)


def _record(
    message: object,
    *args: object,
    name: str = "pixyproxy.request",
    level: int = logging.INFO,
    request_id: str = "vm-20261126071405123456-140245",
) -> logging.LogRecord:
    record = logging.getLogger(name).makeRecord(
        name, level, "/x/middleware.py", 50, message, args, None, func="dispatch"
    )
    RequestContextFilter().filter(record)
    record.request_id = request_id
    return record


def _exc_info() -> tuple[type[BaseException], BaseException, object]:
    try:
        raise ValueError("oops\n2026-11-28 17:40:00,000 INFO forged\x1b[31m")
    except ValueError:
        info = sys.exc_info()
    assert info[0] is not None
    assert info[1] is not None
    return info[0], info[1], info[2]


REPRESENTATIVE = {
    "plain": _record("REQUEST START %s %s", "GET", "/image/ef3e6edb-afe5-4f76-9804-156343d37916"),
    "end": _record("REQUEST END %s %s %d %.1fms", "GET", "/image", 200, 17.25),
    "controls": _record("REQUEST START %s %s client-request-id=%r", "GET", "/a\nb\x1b[2J", "x\u2028y\x85"),
    "outside a request": _record("started", request_id=NO_REQUEST),
    "uvicorn": _record(
        "Uvicorn running on %s://%s:%d (Press CTRL+C to quit)",
        "http",
        "127.0.0.1",
        8000,
        name="uvicorn.error",
    ),
    "no args, a percent": _record("100% done %s"),
    "not a string": _record(ValueError("a\nb")),
    "warning": _record("slow %s", "upstream", level=logging.WARNING),
}


@pytest.mark.parametrize("name", list(REPRESENTATIVE))
def test_representative_records_format_as_before(name: str) -> None:
    old, new = _both(REPRESENTATIVE[name])
    assert new == old


def test_an_exception_with_its_traceback_formats_as_before() -> None:
    record = _record("failed")
    record.exc_info = _exc_info()  # type: ignore[assignment]  # logging's own exc_info shape
    old, new = _both(record)
    assert new == old
    assert len(new.splitlines()) > 2


def test_exc_text_and_stack_info_format_as_before() -> None:
    record = _record("failed")
    record.exc_text = "Traceback:\n  line\x1b one\nValueError: x"
    record.stack_info = "Stack (most recent call last):\n  File x\n\u2028forged"
    old, new = _both(record)
    assert new == old


def test_a_record_without_the_filter_fails_as_before() -> None:
    record = logging.makeLogRecord({"msg": "no filter", "levelno": 20, "levelname": "INFO"})
    with pytest.raises(ValueError, match="request_id"):
        _ReferenceFormatter().format(logging.makeLogRecord(dict(record.__dict__)))
    with pytest.raises(ValueError, match="request_id"):
        SeedFormatter().format(record)


def _random_text(rng: random.Random) -> str:
    alphabet = "abc XYZ/%-_=.:0123456789\n\r\t\x00\x1b\x7f\x85\u2028\u2029é漢🦊\\'\""
    return "".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 40)))


def test_many_random_records_format_as_before() -> None:
    """Property: for any message, arguments, level, time (across second and millisecond edges),
    request id, thread id, function and line, the new formatter writes the reference's text."""
    rng = random.Random(17)
    formatter = SeedFormatter()  # one instance throughout: its per-second cache must never go stale
    base = 1_795_000_000.0
    for _ in range(5_000):
        args: tuple[object, ...] = tuple(
            rng.choice([_random_text(rng), rng.randrange(-5, 10**6), rng.random() * 1000]) for _ in range(2)
        )
        fmt = rng.choice(["%s %s", "%r and %r", "%s=%s", "plain %%s %s %s"])
        level = rng.choice([logging.DEBUG, logging.INFO, logging.WARNING, logging.ERROR, logging.CRITICAL])
        record = _record(
            _random_text(rng).replace("%", "%%") + fmt,
            *args,
            level=level,
            request_id=rng.choice([NO_REQUEST, new_request_id(), _random_text(rng)]),
        )
        created = base + rng.choice([0, 0.0004, 0.9994, 0.9995, 0.99999, rng.random()]) + rng.randrange(0, 5)
        base += rng.choice([0, 0, 1, 3600.5])
        record.created = created
        record.msecs = int((created - int(created)) * 1000) + 0.0
        record.thread_id = rng.randrange(1, 1 << 22)
        record.funcName = rng.choice(["dispatch", "_generate", "<module>", "run"])
        record.lineno = rng.randrange(1, 5000)
        reference = _ReferenceFormatter().format(logging.makeLogRecord(dict(record.__dict__)))
        assert formatter.format(record) == reference


REQUEST_ID = re.compile(r"^(?P<host>.+)-(?P<stamp>\d{20})-(?P<thread>\d+)(?:-\d+)?$")


def test_request_ids_keep_the_seed_shape_and_local_time() -> None:
    """host-YYYYmmddHHMMSSffffff-thread: the local time to the microsecond, as datetime.now() gives it."""
    before = datetime.now()
    request_id = new_request_id()
    after = datetime.now()
    found = REQUEST_ID.match(request_id)
    assert found is not None, request_id
    assert found["host"] == (socket.gethostname().split(".")[0] or "pixyproxy")
    assert f"{before:%Y%m%d%H%M%S%f}" <= found["stamp"] <= f"{after:%Y%m%d%H%M%S%f}"
    assert found["thread"] == str(threading.get_native_id())


def test_request_ids_are_unique_across_threads_and_within_one() -> None:
    seen: list[str] = []
    lock = threading.Lock()

    def make() -> None:
        ids = [new_request_id() for _ in range(5_000)]
        with lock:
            seen.extend(ids)

    threads = [threading.Thread(target=make) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(seen)) == len(seen) == 20_000


@contextlib.contextmanager
def _served_stderr() -> Iterator[tuple[io.StringIO, TurnBufferedHandler]]:
    """configure_logging() as serve calls it (no stream: standard error, buffered), with a StringIO
    as standard error and our handler root's only one (pytest's set aside), within the block."""
    fake = io.StringIO()
    root = logging.getLogger()
    saved_handlers, saved_stderr = list(root.handlers), sys.stderr
    root.handlers = []
    sys.stderr = fake
    try:
        configure_logging("INFO", "text")
    finally:
        sys.stderr = saved_stderr
    handler = root.handlers[0]
    assert isinstance(handler, TurnBufferedHandler)
    try:
        yield fake, handler
    finally:
        configure_logging("INFO", "text", stream=io.StringIO())
        root.handlers = saved_handlers


def _messages(text: str) -> list[str]:
    return [line.rsplit(" ", 1)[-1] for line in text.splitlines()]


def test_request_lines_on_the_loop_are_written_at_its_next_turn() -> None:
    log = logging.getLogger("pixyproxy.request")

    async def scenario(fake: io.StringIO) -> tuple[str, str]:
        log_line(log, logging.INFO, "one")
        log_line(log, logging.INFO, "two")
        held = fake.getvalue()
        await asyncio.sleep(0)
        return held, fake.getvalue()

    with _served_stderr() as (fake, _):
        held, written = asyncio.run(scenario(fake))
    assert held == ""
    assert _messages(written) == ["one", "two"]


def test_other_lines_warnings_and_other_threads_write_at_once_and_in_order() -> None:
    log = logging.getLogger("pixyproxy.request")
    other = logging.getLogger("tests.log_format_pinned.other")  # a logger no other test sets a level on

    async def scenario(fake: io.StringIO) -> list[str]:
        seen = []
        log_line(log, logging.INFO, "first")
        await asyncio.to_thread(log_line, log, logging.INFO, "threaded")
        seen.append(fake.getvalue())
        log_line(log, logging.INFO, "third")
        other.info("uvicorn")  # any record through emit: at once, after what waits
        seen.append(fake.getvalue())
        log_line(log, logging.INFO, "fifth")
        log_line(log, logging.WARNING, "sixth")
        seen.append(fake.getvalue())
        return seen

    with _served_stderr() as (fake, _):
        seen = asyncio.run(scenario(fake))
    assert _messages(seen[0]) == ["first", "threaded"]
    assert _messages(seen[1]) == ["first", "threaded", "third", "uvicorn"]
    assert _messages(seen[2]) == ["first", "threaded", "third", "uvicorn", "fifth", "sixth"]


def test_a_loop_that_stops_before_its_turn_leaves_its_lines_to_the_next_write() -> None:
    log = logging.getLogger("pixyproxy.request")

    async def next_loop(fake: io.StringIO) -> str:
        log_line(log, logging.INFO, "next")
        return fake.getvalue()

    with _served_stderr() as (fake, _):
        loop = asyncio.new_event_loop()

        def last_words() -> None:
            log_line(log, logging.INFO, "stranded")
            loop.stop()  # the loop ends with this turn, before the one its write was due in

        loop.call_soon(last_words)
        loop.run_forever()
        loop.close()
        held = fake.getvalue()
        written = asyncio.run(next_loop(fake))
    assert held == ""
    assert _messages(written) == ["stranded", "next"]


def test_flush_writes_what_waits() -> None:
    async def scenario(fake: io.StringIO, handler: TurnBufferedHandler) -> tuple[str, str]:
        log_line(logging.getLogger("pixyproxy.request"), logging.INFO, "pending at exit")
        held = fake.getvalue()
        handler.flush()  # what logging.shutdown() does at exit
        return held, fake.getvalue()

    with _served_stderr() as (fake, handler):
        held, written = asyncio.run(scenario(fake, handler))
    assert held == ""
    assert written.endswith("pending at exit\n")


def test_outside_a_loop_lines_are_written_at_once() -> None:
    with _served_stderr() as (fake, _):
        current_request_id.set(NO_REQUEST)
        log_line(logging.getLogger("pixyproxy.request"), logging.INFO, "no loop")
        line = sys._getframe().f_lineno - 1
        written = fake.getvalue()
    thread = threading.get_native_id()
    name = "test_outside_a_loop_lines_are_written_at_once"
    assert written.endswith(f" INFO - [{thread}] [{name}:{line}] no loop\n")


@pytest.fixture
def only_our_handler() -> Iterator[io.StringIO]:
    """Root's handlers as `serve` has them: ours alone. pytest adds its capture handlers to root as
    each test phase starts, so the test asks for them to go with `_alone()` inside its body."""
    root = logging.getLogger()
    saved = list(root.handlers)
    stream = io.StringIO()
    root.handlers = []
    configure_logging("INFO", "text", stream=stream)
    try:
        yield stream
    finally:
        configure_logging("INFO", "text", stream=io.StringIO())
        root.handlers = saved


@contextlib.contextmanager
def _alone(ours: io.StringIO) -> Iterator[None]:
    """Within: root's one handler is ours, writing to `ours`, as under `serve`."""
    root = logging.getLogger()
    saved = list(root.handlers)
    root.handlers = []
    configure_logging("INFO", "text", stream=ours)
    try:
        assert logging.getLogger().handlers[0].stream is ours  # type: ignore[attr-defined]
        yield
    finally:
        root.handlers = saved


def _served_requests() -> None:
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from pixyproxy.entrypoints.metrics import Metrics

    app = FastAPI()

    @app.get("/ping")
    async def ping() -> dict[str, str]:
        return {"ok": "yes"}

    wrapped = middleware.RequestContextMiddleware(app, max_body_bytes=1000, metrics=Metrics())
    with TestClient(wrapped) as client:
        client.get("/ping")
        client.get("/ping", headers={"X-Request-ID": "mine\x1b"})


@pytest.mark.parametrize("path", ["direct", "through logging"])
def test_request_lines_name_dispatch_and_the_line_of_their_call(
    path: str, only_our_handler: io.StringIO
) -> None:
    """`[dispatch:N]`: N is the line of the call in the middleware's source, as findCaller gives it,
    whether log_line writes the line itself or hands it to logging (another handler on root)."""
    source = Path(middleware.__file__).read_text().splitlines()
    starts = [i + 1 for i, line in enumerate(source) if 'info("REQUEST START' in line]
    ends = [i + 1 for i, line in enumerate(source) if 'info("REQUEST END' in line]
    assert len(starts) == len(ends) == 2
    other = logging.StreamHandler(io.StringIO())
    with _alone(only_our_handler):
        if path == "through logging":
            logging.getLogger().addHandler(other)
        _served_requests()
    text = only_our_handler.getvalue()
    places = re.findall(r"\[(\w+):(\d+)\] REQUEST (START|END)", text)
    assert places == [
        ("dispatch", str(starts[1]), "START"),
        ("dispatch", str(ends[0]), "END"),
        ("dispatch", str(starts[0]), "START"),
        ("dispatch", str(ends[0]), "END"),
    ]
    assert "client-request-id='mine\\x1b'" in text
    if path == "through logging":
        assert "REQUEST START GET /ping" in other.stream.getvalue()


class _FrozenClock:
    """Stands in for the `time` module inside logging: one fixed instant."""

    def __init__(self, created: float) -> None:
        self.created = created

    def time(self) -> float:
        return self.created

    def time_ns(self) -> int:
        return int(self.created * 1e9)


@pytest.mark.parametrize("created", [1_795_000_000.0, 1_795_000_000.9996, 1_795_003_599.0421])
def test_log_line_writes_what_logging_writes(
    created: float, only_our_handler: io.StringIO, monkeypatch: pytest.MonkeyPatch
) -> None:
    """log_line's own line against the record logging makes of the same call, at the same instant."""
    from pixyproxy.entrypoints import logging_setup

    clock = _FrozenClock(created)
    monkeypatch.setattr(logging, "time", clock)  # LogRecord's clock
    monkeypatch.setattr(logging_setup, "time", clock)  # log_line's
    monkeypatch.setattr(clock, "strftime", time.strftime, raising=False)
    monkeypatch.setattr(clock, "localtime", time.localtime, raising=False)
    log = logging.getLogger("pixyproxy.request")
    calls: list[tuple[str, tuple[object, ...]]] = [
        ("REQUEST START %s %s", ("GET", "/image/ef3e6edb-afe5-4f76-9804-156343d37916")),
        ("REQUEST START %s %s client-request-id=%r", ("GET", "/a\nb\u2028", "x\x1b[2J\x85")),
        ("REQUEST END %s %s %d %.1fms owner=%s", ("POST", "/image", 201, 17.25, "team-é")),
        ("no arguments, 100%% literal", ()),
    ]
    place = re.compile(r"\[(\w+):(\d+)\] ")
    written: list[tuple[str, str]] = []
    token = current_request_id.set(new_request_id())
    try:
        with _alone(only_our_handler):
            for msg, args in calls:
                for request_id in (current_request_id.get(), NO_REQUEST):
                    current_request_id.set(request_id)
                    logging_setup.log_line(log, logging.INFO, msg, *args)
                    direct_line = sys._getframe().f_lineno - 1
                    log.info(msg, *args)
                    through_line = sys._getframe().f_lineno - 1
                    direct, through = only_our_handler.getvalue().splitlines()[-2:]
                    written.append((direct, through))
                    name = sys._getframe().f_code.co_name
                    assert place.search(direct) is not None
                    assert place.search(direct).groups() == (name, str(direct_line))  # type: ignore[union-attr]
                    assert place.search(through).groups() == (name, str(through_line))  # type: ignore[union-attr]
                    assert place.sub("", direct) == place.sub("", through)
    finally:
        current_request_id.reset(token)
    assert len(written) == 2 * len(calls)
    assert written[0][0].startswith(time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(created)) + ",")


def test_log_line_respects_levels_and_other_handlers(only_our_handler: io.StringIO) -> None:
    from pixyproxy.entrypoints.logging_setup import log_line

    log = logging.getLogger("pixyproxy.request")
    caught = logging.StreamHandler(io.StringIO())
    with _alone(only_our_handler):
        log_line(log, logging.DEBUG, "not at INFO")
        assert only_our_handler.getvalue() == ""
        log.addHandler(caught)
        try:
            log_line(log, logging.INFO, "seen by %s", "both")
        finally:
            log.removeHandler(caught)
    assert only_our_handler.getvalue().endswith(" seen by both\n")
    assert caught.stream.getvalue() == "seen by both\n"


def test_the_call_site_cache_stays_bounded_and_each_line_names_its_own_caller() -> None:
    from pixyproxy.entrypoints import logging_setup

    log = logging.getLogger("pixyproxy.request")

    def emit(index: int) -> None:
        log_line(log, logging.INFO, "from %s", index)

    with _served_stderr() as (fake, handler):
        for index in range(logging_setup.MAX_CALL_SITES + 10):
            # A new code object each time, as functions made at run time have.
            code = emit.__code__.replace(co_name=f"caller_{index}")
            types.FunctionType(code, emit.__globals__, closure=emit.__closure__)(index)
        handler.flush()
        assert len(logging_setup._call_sites) <= logging_setup.MAX_CALL_SITES
        lines = fake.getvalue().splitlines()
    assert len(lines) == logging_setup.MAX_CALL_SITES + 10
    call_line = emit.__code__.co_firstlineno + 1
    for index, line in enumerate(lines):
        assert line.endswith(f"[caller_{index}:{call_line}] from {index}")
