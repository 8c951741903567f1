"""Drive a load from a separate process: wrk when installed, else bench.load (async httpx)."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.servers import REPO_ROOT

MIB = 1024 * 1024


@dataclass(frozen=True)
class Request:
    """What every request of a steady load sends: a bare GET unless told otherwise.

    A body goes as `content-type: application/json` unless `headers` names another type.
    """

    method: str = "GET"
    body: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)

    def wire_headers(self) -> dict[str, str]:
        """The headers as sent: a body's JSON content type added when none is given."""
        headers = dict(self.headers)
        if self.body is not None and not any(name.lower() == "content-type" for name in headers):
            headers["content-type"] = "application/json"
        return headers


GET = Request()

# wrk's done() hook prints one JSON line, so nothing is scraped from its human-readable report.
_WRK_REPORT = """
done = function(summary, latency, requests)
  io.write(string.format(
    '{"requests": %d, "duration_us": %d, "bytes": %d, "status_errors": %d, "connect_errors": %d,'
    .. ' "read_errors": %d, "write_errors": %d, "timeouts": %d, "p50_us": %d, "p99_us": %d}\\n',
    summary.requests, summary.duration, summary.bytes, summary.errors.status, summary.errors.connect,
    summary.errors.read, summary.errors.write, summary.errors.timeout,
    latency:percentile(50), latency:percentile(99)))
end
"""


def _lua_string(text: str) -> str:
    """`text` as a Lua string literal: quotes, backslashes and bytes outside printable ASCII as `\\ddd`."""
    escaped = (chr(b) if 32 <= b < 127 and chr(b) not in '"\\' else f"\\{b:03d}" for b in text.encode())
    return '"' + "".join(escaped) + '"'


def _wrk_script(request: Request) -> str:
    """The wrk script: the request to send (unless a bare GET), then the JSON report."""
    if request == GET:
        return _WRK_REPORT
    lines = [f"wrk.method = {_lua_string(request.method)}"]
    if request.body is not None:
        lines.append(f"wrk.body = {_lua_string(request.body)}")
    lines.extend(
        f"wrk.headers[{_lua_string(name)}] = {_lua_string(value)}"
        for name, value in request.wire_headers().items()
    )
    return "\n".join(lines) + "\n" + _WRK_REPORT


def load_tool() -> str:
    """`wrk` when it is on PATH (unless BENCH_LOADGEN=httpx), else `httpx`."""
    if os.environ.get("BENCH_LOADGEN", "").lower() == "httpx":
        return "httpx"
    return "wrk" if shutil.which("wrk") else "httpx"


def _last_json_line(output: str) -> dict[str, Any]:
    for line in reversed(output.splitlines()):
        if line.startswith("{"):
            parsed: dict[str, Any] = json.loads(line)
            return parsed
    raise RuntimeError(f"the load generator printed no JSON:\n{output}")


def _run(command: list[str], timeout_s: float) -> str:
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=timeout_s, cwd=REPO_ROOT, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"{command[0]} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return done.stdout


def _wrk(url: str, *, concurrency: int, seconds: int, script: Path) -> dict[str, Any]:
    # One wrk thread: on 2 cores the load generator gets one core and the server the other.
    command = ["wrk", "-t1", f"-c{concurrency}", f"-d{seconds}s", "--timeout", "30s", "-s", str(script), url]
    return _last_json_line(_run(command, timeout_s=seconds + 60))


def steady(
    url: str, *, concurrency: int, duration_s: float, warmup_s: float, request: Request = GET
) -> dict[str, Any]:
    """Send `request` to `url` over `concurrency` connections: warm up, then measure for `duration_s`."""
    tool = load_tool()
    if tool == "httpx":
        command = [
            sys.executable,
            "-m",
            "bench.load",
            url,
            f"--concurrency={concurrency}",
            f"--duration={duration_s}",
            f"--warmup={warmup_s}",
            f"--method={request.method}",
        ]
        if request.body is not None:
            command.append(f"--body={request.body}")
        command.extend(f"--header={name}: {value}" for name, value in request.wire_headers().items())
        return _last_json_line(_run(command, timeout_s=duration_s + warmup_s + 120))
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as handle:
        handle.write(_wrk_script(request))
    script = Path(handle.name)
    try:
        if warmup_s > 0:
            _wrk(url, concurrency=concurrency, seconds=max(1, math.ceil(warmup_s)), script=script)
        raw = _wrk(url, concurrency=concurrency, seconds=max(1, math.ceil(duration_s)), script=script)
    finally:
        script.unlink(missing_ok=True)
    seconds = raw["duration_us"] / 1e6
    errors = raw["status_errors"] + raw["connect_errors"] + raw["read_errors"] + raw["write_errors"]
    return {
        "tool": "wrk",
        "mode": "steady",
        "url": url,
        "method": request.method,
        "concurrency": concurrency,
        "duration_s": seconds,
        "requests": raw["requests"],
        "non_2xx_3xx": raw["status_errors"],
        "transport_errors": errors - raw["status_errors"] + raw["timeouts"],
        "requests_per_s": raw["requests"] / seconds,
        "mib_per_s": raw["bytes"] / MIB / seconds,
        "p50_ms": raw["p50_us"] / 1000,
        "p99_ms": raw["p99_us"] / 1000,
    }


def burst(
    url: str,
    *,
    count: int,
    method: str,
    body: str | None,
    preconnect: str | None = None,
    headers: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Send `count` requests at once from bench.load; wrk has no burst mode."""
    command = [sys.executable, "-m", "bench.load", url, f"--burst={count}", f"--method={method}"]
    if body is not None:
        command.append(f"--body={body}")
    if preconnect is not None:
        command.append(f"--preconnect={preconnect}")
    command.extend(f"--header={name}: {value}" for name, value in (headers or {}).items())
    return _last_json_line(_run(command, timeout_s=300))


def each(urls: list[str], *, concurrency: int, request: Request = GET) -> dict[str, Any]:
    """Send `request` once to each of `urls`, `concurrency` at a time, from bench.load; measure every one.

    For what a fixed-duration load cannot do: a DELETE can be sent once per image, and a page that
    takes seconds leaves too few requests inside a window. wrk has no such mode, so both sides of a
    figure measured this way use the httpx generator.
    """
    with tempfile.NamedTemporaryFile("w", suffix=".urls", delete=False) as handle:
        handle.write("\n".join(urls) + "\n")
    path = Path(handle.name)
    command = [
        sys.executable,
        "-m",
        "bench.load",
        f"--urls-file={path}",
        f"--concurrency={concurrency}",
        f"--method={request.method}",
    ]
    if request.body is not None:
        command.append(f"--body={request.body}")
    command.extend(f"--header={name}: {value}" for name, value in request.wire_headers().items())
    try:
        return _last_json_line(_run(command, timeout_s=600))
    finally:
        path.unlink(missing_ok=True)
