"""Log forging (CWE-117) against a real `pixyproxy serve`: only the logger starts a line.

Every control and line-separator character is sent through the path, the query and the client's
X-Request-ID; afterwards every line of the server's log must have the seed's shape and carry an
id PixyProxy issued (or `-` outside a request).
"""

from __future__ import annotations

import re
import socket
from collections.abc import Iterator
from urllib.parse import quote

import pytest

from tests.support.server import RunningServer, running_server

LINE = re.compile(
    r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2},\d{3} (DEBUG|INFO|WARNING|ERROR|CRITICAL) (\S+) "
    r"\[\d+\] \[[\w<>]+:\d+\] "
)
# host-YYYYmmddHHMMSSffffff-threadid[-N]: the shape of an id PixyProxy issues.
OUR_ID = re.compile(r"^[A-Za-z0-9_.-]+-\d{20}-\d+(-\d+)?$")
SEPARATORS = [chr(c) for c in [*range(0x00, 0x20), 0x7F, *range(0x80, 0xA0), 0x2028, 0x2029]]
FORGED = "2026-11-28 17:40:00,000 INFO forged-id [1] [dispatch:1] REQUEST END GET /admin 200 1.0ms"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    tmp = tmp_path_factory.mktemp("forging")
    env = {"PIXYPROXY_DATA_DIR": str(tmp / "data"), "PIXYPROXY_LOG_FORMAT": "text"}
    with running_server(env, tmp / "server.log") as running:
        yield running


ISSUED: set[str] = set()


def _raw_request(server: RunningServer, target: bytes, headers: bytes = b"") -> bytes:
    """Send one request byte for byte (no client library cleans it up) and return the answer."""
    host, port = server.base_url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(b"GET " + target + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n" + headers + b"\r\n")
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    answer = b"".join(chunks)
    if found := re.search(rb"(?im)^x-request-id: (\S+)\r$", answer):
        ISSUED.add(found.group(1).decode())
    return answer


def _assert_every_line_is_the_loggers(server: RunningServer) -> None:
    lines = server.logs().splitlines()
    assert lines
    for line in lines:
        match = LINE.match(line)
        assert match, f"a line the logger did not start: {line!r}"
        request_id = match.group(2)
        assert request_id == "-" or OUR_ID.match(request_id), line
    assert ISSUED
    assert all(OUR_ID.match(request_id) for request_id in ISSUED)


@pytest.mark.parametrize("char", SEPARATORS, ids=[f"U+{ord(c):04X}" for c in SEPARATORS])
def test_a_control_in_the_path_query_or_client_id_cannot_start_a_log_line(
    server: RunningServer, char: str
) -> None:
    forged = quote(char + FORGED + char, safe="").encode()
    answer = _raw_request(server, b"/image/" + forged + b"?cursor=" + forged)
    assert answer.startswith(b"HTTP/1.1 4"), answer[:200]
    client_id = (char + FORGED).encode("utf-8")
    if b"\n" not in client_id and b"\r" not in client_id:  # the HTTP parser itself refuses CR and LF
        answer = _raw_request(server, b"/healthz", b"X-Request-ID: " + client_id + b"\r\n")
        # uvicorn's parser refuses some controls in a header (400); the rest reach the middleware.
        assert answer.startswith((b"HTTP/1.1 200", b"HTTP/1.1 400")), answer[:200]
    _assert_every_line_is_the_loggers(server)


def test_a_raw_escape_byte_in_the_target_never_reaches_the_log_raw(server: RunningServer) -> None:
    _raw_request(server, b"/image\x1b[2J\x1b[31m")
    _assert_every_line_is_the_loggers(server)
    assert "\x1b" not in server.logs()


def test_an_ordinary_request_keeps_the_seed_line_exactly(server: RunningServer) -> None:
    _raw_request(server, b"/healthz")
    starts = [line for line in server.logs().splitlines() if "REQUEST START GET /healthz" in line]
    assert starts
    assert starts[-1].endswith("REQUEST START GET /healthz")
