"""`pixyproxy serve` on the embedded default, as a real process driven over HTTP."""

from __future__ import annotations

import hashlib
import io
import re
import socket
import time
from pathlib import Path
from urllib.parse import urlsplit

from PIL import Image

from tests.support.server import RunningServer, running_server

LINE = re.compile(
    r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2},\d{3} INFO (\S+) \[\d+\] \[\w+:\d+\] "
    r"REQUEST (START|END) (\S+) (\S+)",
    re.MULTILINE,
)


def test_embedded_server_serves_all_four_endpoints(tmp_path: Path) -> None:
    env = {"PIXYPROXY_DATA_DIR": str(tmp_path / "data")}
    with running_server(env, tmp_path / "server.log") as server, server.client() as client:
        created = client.post("/image", json={"prompt": "a red fox in snow"})
        assert created.status_code == 201, created.text
        detail = created.json()
        assert created.headers["location"] == f"/image/{detail['guid']}"
        assert detail["generator"] == "procedural"

        assert client.get(f"/image/{detail['guid']}").json() == detail
        assert [d["guid"] for d in client.get("/image").json()] == [detail["guid"]]

        content = client.get(f"/image/{detail['guid']}/content")
        assert content.status_code == 200
        assert content.headers["content-type"] == "image/png"
        assert hashlib.sha256(content.content).hexdigest() == detail["sha256"]
        with Image.open(io.BytesIO(content.content)) as image:
            assert image.format == "PNG"
            assert image.size == (512, 512)

    # Read after the server has stopped: the last END line may not be written before that.
    logs = server.logs()
    lines = LINE.findall(logs)
    starts = {(rid, method, path) for rid, kind, method, path in lines if kind == "START"}
    ends = {(rid, method, path) for rid, kind, method, path in lines if kind == "END"}
    assert ("POST", "/image") in {(m, p) for _, m, p in starts}
    assert starts == ends, logs
    assert (tmp_path / "data" / "pixyproxy.sqlite3").exists()


# --- keep-alive ----------------------------------------------------------------------------------

HEALTHZ = b"GET /healthz HTTP/1.1\r\nHost: pixyproxy\r\n\r\n"


def _connect(server: RunningServer) -> socket.socket:
    address = urlsplit(server.base_url)
    return socket.create_connection((address.hostname, address.port), timeout=5)


def _ask_healthz(sock: socket.socket) -> bytes:
    """Send one request on `sock` and read its whole answer (headers and the short JSON body)."""
    sock.sendall(HEALTHZ)
    answer = b""
    while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
        chunk = sock.recv(4096)
        if not chunk:
            break
        answer += chunk
    return answer


def test_an_idle_connection_outlives_the_five_second_pools_of_common_clients(tmp_path: Path) -> None:
    # httpx (and so the openai SDK) reuses a pooled connection for up to 5 s. If the server also
    # closed idle connections at 5 s, a request sent as the server closes is reset: the load test
    # saw exactly that. The server must be the one that waits longer.
    env = {"PIXYPROXY_DATA_DIR": str(tmp_path / "data")}
    with running_server(env, tmp_path / "server.log") as server, _connect(server) as sock:
        assert _ask_healthz(sock).startswith(b"HTTP/1.1 200 ")
        time.sleep(5.5)
        assert _ask_healthz(sock).startswith(b"HTTP/1.1 200 ")


def test_idle_connections_are_closed_after_the_configured_keep_alive(tmp_path: Path) -> None:
    env = {"PIXYPROXY_DATA_DIR": str(tmp_path / "data"), "PIXYPROXY_KEEP_ALIVE_S": "1"}
    with running_server(env, tmp_path / "server.log") as server, _connect(server) as sock:
        assert _ask_healthz(sock).startswith(b"HTTP/1.1 200 ")
        time.sleep(2.5)
        sock.settimeout(0.5)  # an open connection would raise TimeoutError here
        assert sock.recv(1) == b"", "the server should have closed the idle connection"
