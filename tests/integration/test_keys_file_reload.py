"""A real `pixyproxy serve` re-reads PIXYPROXY_API_KEYS_FILE on SIGHUP: old keys refused, new accepted."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import httpx

from tests.support.server import RunningServer, running_server

OLD_KEY, NEW_KEY, BAD_KEY = "sk-old-SECRET-7a1", "sk-new-SECRET-8b2", "sk-bad-SECRET-9c3"


def status(server: RunningServer, key: str) -> int:
    with server.client(headers={"Authorization": f"Bearer {key}"}) as client:
        return client.get("/image").status_code


def wait_for_log(server: RunningServer, text: str, timeout_s: float = 10) -> None:
    deadline = time.monotonic() + timeout_s
    while text not in server.logs():
        assert time.monotonic() < deadline, f"{text!r} never logged:\n{server.logs()}"
        time.sleep(0.05)


def test_sighup_swaps_the_keys_and_a_bad_file_keeps_the_old_ones(tmp_path: Path) -> None:
    keys_file = tmp_path / "keys"
    keys_file.write_text(f"# start\nold-bot:{OLD_KEY}\n")
    keys_file.chmod(0o600)
    env = {"PIXYPROXY_API_KEYS_FILE": str(keys_file), "PIXYPROXY_DATA_DIR": str(tmp_path / "data")}
    with running_server(env, tmp_path / "server.log") as server:
        assert status(server, OLD_KEY) == 200
        assert status(server, NEW_KEY) == 401
        with httpx.Client(base_url=server.base_url) as anonymous:
            assert anonymous.get("/image").status_code == 401

        keys_file.write_text(f"new-bot:{NEW_KEY}\n")
        server.process.send_signal(signal.SIGHUP)
        wait_for_log(server, "PIXYPROXY_API_KEYS_FILE reloaded")
        assert status(server, OLD_KEY) == 401
        assert status(server, NEW_KEY) == 200
        assert server.process.poll() is None  # SIGHUP reloads; it does not stop the server

        keys_file.write_text(f"new-bot:{BAD_KEY}\nnew-bot:{OLD_KEY}\n")  # a name given twice
        server.process.send_signal(signal.SIGHUP)
        wait_for_log(server, "not reloaded")
        assert status(server, NEW_KEY) == 200
        assert status(server, BAD_KEY) == 401
    logs = server.logs()
    assert logs.count("not reloaded") == 1
    for key in (OLD_KEY, NEW_KEY, BAD_KEY):
        assert key not in logs
