"""Start ASGI apps as uvicorn subprocesses on free loopback ports, all with the same uvicorn settings."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.support.real_parts import free_port

REPO_ROOT = Path(__file__).resolve().parent.parent

# The one set of uvicorn settings every server in the bench runs with, PixyProxy and baseline alike.
UVICORN_SETTINGS = (
    "--workers",
    "1",
    "--loop",
    "auto",
    "--http",
    "auto",
    "--no-access-log",
    "--log-level",
    "warning",
)

PIXYPROXY_APP = "pixyproxy.entrypoints.http.app:create_app"
BASELINE_APP = "bench.baseline_app:create_app"


def peak_rss_bytes(pid: int) -> int | None:
    """The process's peak resident set size (VmHWM), or None when /proc does not say."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return None


@dataclass
class Server:
    """One uvicorn process: its pid is the one worker, since --workers 1 serves in-process."""

    name: str
    process: subprocess.Popen[bytes]
    base_url: str
    log_path: Path

    @property
    def pid(self) -> int:
        """The worker's process id."""
        return self.process.pid

    def peak_rss_bytes(self) -> int | None:
        """The worker's peak RSS so far."""
        return peak_rss_bytes(self.pid)

    def logs(self) -> str:
        """What the server wrote so far."""
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it lingers."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def start_uvicorn(
    name: str, app: str, *, env: Mapping[str, str], log_dir: Path, ready_path: str = "/openapi.json"
) -> Server:
    """Start `app` (a factory) under uvicorn and wait until `ready_path` answers 200."""
    port = free_port()
    log_path = log_dir / f"{name}.log"
    handle = log_path.open("ab")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            app,
            "--factory",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            *UVICORN_SETTINGS,
        ],
        env={**os.environ, **env},
        cwd=REPO_ROOT,
        stdout=handle,
        stderr=subprocess.STDOUT,
    )
    handle.close()
    server = Server(name=name, process=process, base_url=f"http://127.0.0.1:{port}", log_path=log_path)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited with {process.returncode}:\n{server.logs()}")
        try:
            if httpx.get(server.base_url + ready_path, timeout=2).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    server.stop()
    raise RuntimeError(f"{name} did not answer within 60 s:\n{server.logs()}")


@contextmanager
def running(
    name: str, app: str, *, env: Mapping[str, str], log_dir: Path, ready_path: str = "/openapi.json"
) -> Iterator[Server]:
    """A server for the duration of the block."""
    server = start_uvicorn(name, app, env=env, log_dir=log_dir, ready_path=ready_path)
    try:
        yield server
    finally:
        server.stop()
