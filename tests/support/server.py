"""Start `pixyproxy serve` as a real subprocess on a free loopback port, for integration tests."""

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

from tests.support import secrets_watch
from tests.support.real_parts import free_port


@dataclass
class RunningProcess:
    """A `pixyproxy` process and the file its output goes to."""

    process: subprocess.Popen[bytes]
    log_path: Path

    def logs(self) -> str:
        """Everything the process has written so far."""
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 15) -> int:
        """Send `sig` and wait for the exit status."""
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            return self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()


@dataclass
class RunningServer(RunningProcess):
    """A server process, its base URL and the file its standard error goes to."""

    base_url: str = ""

    def client(self, **kwargs: object) -> httpx.Client:
        """A synchronous httpx client aimed at the server."""
        return httpx.Client(base_url=self.base_url, timeout=30, **kwargs)  # type: ignore[arg-type]


def start_server(
    env: Mapping[str, str], log_path: Path, *, port: int | None = None, extra_args: list[str] | None = None
) -> RunningServer:
    """Start a server and wait until it answers HTTP; fail with its output if it does not."""
    port = port or free_port()
    full_env = {**os.environ, "PIXYPROXY_LOG_LEVEL": "INFO", **env}
    secrets_watch.watch(log_path, full_env)
    handle = log_path.open("ab")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pixyproxy.entrypoints.cli",
            "serve",
            "--port",
            str(port),
            *(extra_args or []),
        ],
        env=full_env,
        stdout=handle,
        stderr=subprocess.STDOUT,
    )
    server = RunningServer(process=process, base_url=f"http://127.0.0.1:{port}", log_path=log_path)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}:\n{server.logs()}")
        try:
            httpx.get(server.base_url + "/openapi.json", timeout=1)
            return server
        except httpx.HTTPError:
            time.sleep(0.1)
    server.stop(signal.SIGKILL)
    raise RuntimeError(f"server did not answer within 30s:\n{server.logs()}")


@contextmanager
def running_server(
    env: Mapping[str, str], log_path: Path, *, extra_args: list[str] | None = None
) -> Iterator[RunningServer]:
    """A server for the duration of the block, stopped with SIGTERM afterwards."""
    server = start_server(env, log_path, extra_args=extra_args)
    try:
        yield server
    finally:
        server.stop()


class RunningWorker(RunningProcess):
    """A `pixyproxy worker` process and the file its output goes to."""


def start_worker(
    env: Mapping[str, str], log_path: Path, *, concurrency: int, extra_args: list[str] | None = None
) -> RunningWorker:
    """Start a worker and wait until it says it is consuming; fail with its output if it does not."""
    full_env = {**os.environ, "PIXYPROXY_LOG_LEVEL": "INFO", **env}
    secrets_watch.watch(log_path, full_env)
    handle = log_path.open("ab")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pixyproxy.entrypoints.cli",
            "worker",
            "--concurrency",
            str(concurrency),
            *(extra_args or []),
        ],
        env=full_env,
        stdout=handle,
        stderr=subprocess.STDOUT,
    )
    worker = RunningWorker(process=process, log_path=log_path)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"worker exited with {process.returncode}:\n{worker.logs()}")
        if "worker ready" in worker.logs():
            return worker
        time.sleep(0.1)
    worker.stop(signal.SIGKILL)
    raise RuntimeError(f"worker was not ready within 30s:\n{worker.logs()}")
