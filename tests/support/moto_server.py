"""Run moto's S3 server as a separate process on loopback, spoken to over real HTTP by boto3."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from uuid import uuid4

import httpx

from tests.support.real_parts import free_port, missing_real_part

# Fake credentials, and no way for botocore to find real ones (files, instance metadata).
FAKE_AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_CONFIG_FILE": os.devnull,
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
    "AWS_EC2_METADATA_DISABLED": "true",
}

HOW_TO_START = "install the dev extra (`pip install -e '.[dev]'`, which brings moto[server])"


@dataclass
class MotoServer:
    """A moto server process on a fixed loopback port; it can be stopped and started again there."""

    log_path: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def endpoint_url(self) -> str:
        """Where boto3 reaches the server."""
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 30) -> None:
        """Start the server and wait until it answers HTTP; raise RuntimeError if it does not."""
        handle = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            env={**os.environ, **FAKE_AWS_ENV},
            stdout=handle,
            stderr=subprocess.STDOUT,
        )
        handle.close()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"moto server exited with {self.process.returncode}:\n{self.logs()}")
            try:
                httpx.get(self.endpoint_url + "/moto-api/", timeout=1)
                return
            except httpx.HTTPError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"moto server did not answer within {timeout_s}s:\n{self.logs()}")

    def stop(self) -> None:
        """Stop the server (its in-memory buckets are lost) and wait until the port is closed."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def logs(self) -> str:
        """What the server has written so far."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


@contextmanager
def moto_server(log_path: Path) -> Iterator[MotoServer]:
    """A started moto server for the block; a test that cannot get one skips (fails in CI)."""
    try:
        import moto.server  # noqa: F401  # only to learn whether moto[server] is installed
    except ImportError:
        missing_real_part("the moto S3 server", HOW_TO_START)
    server = MotoServer(log_path=log_path)
    try:
        server.start()
    except RuntimeError as err:
        missing_real_part("the moto S3 server", f"{HOW_TO_START}; it failed to start: {err}")
    try:
        yield server
    finally:
        server.stop()


def new_bucket_name() -> str:
    """A bucket name no other test uses."""
    return f"pixyproxy-test-{uuid4().hex[:16]}"
