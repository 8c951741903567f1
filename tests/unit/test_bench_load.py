"""The bench's load generator really loads: run it as make bench does, for about a second."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import pytest

from bench import drive

REPO_ROOT = Path(__file__).resolve().parents[2]


class _Hello(BaseHTTPRequestHandler):
    """Answers every GET with a small keep-alive 200."""

    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        body = b'{"hello": "bench"}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: the test output is not the place for an access log."""


@pytest.fixture
def tiny_server() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Hello)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hello"
    finally:
        server.shutdown()
        server.server_close()


def test_load_generator_reports_requests_per_second_and_latency(tiny_server: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench.load", tiny_server, "--concurrency=4", "--duration=1", "--warmup=0.2"],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        timeout=60,
        check=True,
    )
    result = json.loads(done.stdout)
    assert result["requests"] > 0
    assert result["statuses"] == {"200": result["requests"]}
    assert result["requests_per_s"] > 0
    assert 0 < result["p50_ms"] <= result["p99_ms"]


class _Accept(BaseHTTPRequestHandler):
    """Answers every POST with a 202, keeping what it was sent."""

    protocol_version = "HTTP/1.1"
    seen: ClassVar[list[tuple[str, str, str, bytes]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.seen.append((self.command, self.headers["Content-Type"], self.headers["Prefer"], body))
        self.send_response(202)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: the test output is not the place for an access log."""


def test_steady_load_can_post_a_json_body_with_headers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BENCH_LOADGEN", "httpx")
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Accept)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    request = drive.Request(method="POST", body='{"prompt": "a fox"}', headers={"Prefer": "respond-async"})
    try:
        result = drive.steady(
            f"http://127.0.0.1:{server.server_address[1]}/image",
            concurrency=2,
            duration_s=0.5,
            warmup_s=0.1,
            request=request,
        )
    finally:
        server.shutdown()
        server.server_close()
    assert result["method"] == "POST"
    assert result["requests"] > 0
    assert result["statuses"] == {"202": result["requests"]}
    assert set(_Accept.seen) == {("POST", "application/json", "respond-async", b'{"prompt": "a fox"}')}
