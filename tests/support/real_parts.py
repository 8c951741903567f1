"""How tests reach real parts: skip with a hint outside CI, fail in CI (CI=true)."""

from __future__ import annotations

import os
import socket
from typing import NoReturn

import pytest


def in_ci() -> bool:
    """Whether this run is CI, where a missing real part is a failure."""
    return os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def missing_real_part(what: str, how_to_start: str) -> NoReturn:
    """Fail in CI, skip elsewhere, saying what to start."""
    message = f"{what} is not available: {how_to_start}"
    if in_ci():
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def free_port() -> int:
    """A free TCP port on loopback."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port
