"""Request logging in the seed's format, with one id per request on every line it causes."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import re
import threading
from collections.abc import Iterator

import httpx
import pytest

from pixyproxy.entrypoints.logging_setup import configure_logging, native_thread_id, new_request_id

SEED_LINE = re.compile(
    r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2},\d{3} INFO \S+ \[\d+\] \[\w+:\d+\] REQUEST (START|END)"
)


@pytest.fixture
def log_stream() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    configure_logging("INFO", "text", stream=stream)
    yield stream
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "pixyproxy", False):
            root.removeHandler(handler)


def request_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if "REQUEST " in line]


async def test_start_and_end_lines_match_the_seed_format(
    client: httpx.AsyncClient, log_stream: io.StringIO
) -> None:
    response = await client.get("/image")
    lines = request_lines(log_stream.getvalue())
    assert len(lines) == 2
    assert all(SEED_LINE.match(line) for line in lines), lines
    request_id = response.headers["x-request-id"]
    assert lines[0].split()[3] == lines[1].split()[3] == request_id
    assert lines[0].endswith("REQUEST START GET /image")
    assert re.search(r"REQUEST END GET /image 200 \d+\.\dms$", lines[1])
    thread_id = request_id.rsplit("-", 1)[-1]
    assert f"[{thread_id}]" in lines[0]


async def test_use_case_log_lines_carry_the_request_id(
    client: httpx.AsyncClient, log_stream: io.StringIO
) -> None:
    response = await client.post("/image", json={"prompt": "a fox"})
    request_id = response.headers["x-request-id"]
    service_lines = [line for line in log_stream.getvalue().splitlines() if "generated image" in line]
    assert len(service_lines) == 1
    assert service_lines[0].split()[3] == request_id
    assert "[_generate:" in service_lines[0]


async def test_lines_outside_a_request_carry_a_dash(log_stream: io.StringIO) -> None:
    logging.getLogger("pixyproxy.test").info("outside any request")
    assert log_stream.getvalue().split()[3] == "-"


async def test_client_request_id_is_logged_beside_ours_never_as_ours(
    client: httpx.AsyncClient, log_stream: io.StringIO
) -> None:
    response = await client.get("/image", headers={"X-Request-ID": "client-chosen-id"})
    assert response.headers["x-request-id"] != "client-chosen-id"
    start = request_lines(log_stream.getvalue())[0]
    assert "client-request-id='client-chosen-id'" in start
    assert start.split()[3] == response.headers["x-request-id"]


async def test_a_thousand_concurrent_requests_get_distinct_ids(
    client: httpx.AsyncClient, log_stream: io.StringIO
) -> None:
    responses = await asyncio.gather(*(client.get("/image") for _ in range(1000)))
    ids = {r.headers["x-request-id"] for r in responses}
    assert len(ids) == 1000
    lines = request_lines(log_stream.getvalue())
    assert len(lines) == 2000
    assert {line.split()[3] for line in lines} == ids


def test_request_ids_are_unique_in_a_tight_loop() -> None:
    ids = [new_request_id() for _ in range(10_000)]
    assert len(set(ids)) == len(ids)


async def test_error_responses_are_logged_with_status(
    client: httpx.AsyncClient, log_stream: io.StringIO
) -> None:
    await client.get("/image/not-a-guid")
    end = request_lines(log_stream.getvalue())[-1]
    assert re.search(r"REQUEST END GET /image/not-a-guid 422 ", end)


async def test_json_format_carries_the_same_fields(client: httpx.AsyncClient) -> None:
    stream = io.StringIO()
    configure_logging("INFO", "json", stream=stream)
    try:
        response = await client.get("/image")
    finally:
        configure_logging("INFO", "text", stream=io.StringIO())
    entries = [json.loads(line) for line in stream.getvalue().splitlines()]
    starts = [e for e in entries if e["message"].startswith("REQUEST START")]
    assert starts
    assert starts[0]["request_id"] == response.headers["x-request-id"]
    assert {"time", "level", "thread_id", "function", "line"} <= starts[0].keys()


@pytest.mark.parametrize("char", ["\n", "\r", "\x1b", "\x00", "\x7f", "\x85", "\u2028", "\u2029", "\t"])
def test_a_control_in_a_message_is_escaped_and_starts_no_line(log_stream: io.StringIO, char: str) -> None:
    logging.getLogger("pixyproxy.test").warning("before%safter", char)
    text = log_stream.getvalue()
    assert len(text.splitlines()) == 1
    assert char not in text.removesuffix("\n")
    assert f"before{repr(char)[1:-1]}after" in text


def test_a_traceback_keeps_its_lines_but_none_reads_as_a_log_entry(log_stream: io.StringIO) -> None:
    try:
        raise ValueError("oops\n2026-11-28 17:40:00,000 INFO forged")
    except ValueError:
        logging.getLogger("pixyproxy.test").exception("failed")
    lines = log_stream.getvalue().splitlines()
    assert "failed" in lines[0]
    assert len(lines) > 2
    assert all(line.startswith("    ") for line in lines[1:]), lines


def test_escape_controls_leaves_printable_text_alone() -> None:
    from pixyproxy.entrypoints.logging_setup import escape_controls

    assert escape_controls("a fox 🦊 漢字 café\u00a0x") == "a fox 🦊 漢字 café\u00a0x"
    assert escape_controls("a\nb\u2028c") == "a\\nb\\u2028c"


def test_each_thread_and_a_forked_child_name_their_own_os_thread_id() -> None:
    # The id is kept per thread (threading.get_native_id is a system call each time); a child made by
    # fork is a new OS thread and must not go on naming its parent's.
    assert native_thread_id() == threading.get_native_id()
    seen: list[int] = []
    worker = threading.Thread(target=lambda: seen.append(native_thread_id() - threading.get_native_id()))
    worker.start()
    worker.join()
    assert seen == [0]
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover  # the child reports, then leaves without running pytest's exit
        os.write(write, str(native_thread_id() - threading.get_native_id()).encode())
        os._exit(0)
    os.close(write)
    os.waitpid(child, 0)
    with os.fdopen(read) as answer:
        assert answer.read() == "0"
