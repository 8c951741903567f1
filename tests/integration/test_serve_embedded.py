"""`pixyproxy serve` on the embedded default, as a real process driven over HTTP."""

from __future__ import annotations

import hashlib
import io
import re
from pathlib import Path

from PIL import Image

from tests.support.server import running_server

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
