"""Operating PixyProxy: several workers and servers on shared data, graceful shutdown, probes,
metrics and JSON logs, each on real `pixyproxy serve` processes with MariaDB, moto S3 and the
fake OpenAI upstream."""

from __future__ import annotations

import hashlib
import json
import re
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from pixyproxy.adapters.mysql import parse_mysql_url
from tests.support.fake_openai import FakeOpenAI
from tests.support.moto_server import MotoServer, new_bucket_name
from tests.support.mysql import admin_connection, connection_ids
from tests.support.real_parts import free_port
from tests.support.server import RunningServer, running_server, start_server
from tests.support.stack import openai_env, s3_client, stack_env

API_KEY = "sk-test-ops-0c4d"
GENERATIONS = "pixyproxy_generations_total"
REQUEST_ID = re.compile(r"-\d{20}-(\d+)(?:-\d+)?$")  # host (may hold dashes)-datetime-thread[-n]
NEXT_LINK = re.compile(r'<([^>]+)>;\s*rel="next"')


def upstream_env(fake: FakeOpenAI, data_dir: Path, **extra: str) -> dict[str, str]:
    """The OpenAI generator aimed at the fake, with no retries, over the embedded default."""
    return {
        **openai_env(fake, api_key=API_KEY, timeout_s=10, max_retries=0),
        "PIXYPROXY_DATA_DIR": str(data_dir),
        **extra,
    }


def database_of(url: str) -> str:
    """The database name in a mysql:// URL."""
    return parse_mysql_url(url).database


def image_count(database: str) -> int:
    """Rows in the images table, read straight from MariaDB."""
    with admin_connection(database) as admin, admin.cursor() as cursor:
        cursor.execute("SELECT COUNT(*) FROM images")
        return int(cursor.fetchone()[0])


def child_pids(pid: int) -> list[int]:
    """The processes whose parent is `pid`, read from /proc."""
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # the process ended while we looked
            continue
        if int(fields[1]) == pid:
            children.append(int(stat.parent.name))
    return children


def worker_pids(server: RunningServer) -> set[int]:
    """The serving worker processes under a `--workers N` server (not multiprocessing's helpers)."""
    workers = set()
    for pid in child_pids(server.process.pid):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue
        if b"spawn_main" in cmdline:
            workers.add(pid)
    return workers


def serving_pid(response: httpx.Response) -> int:
    """The thread id in our X-Request-ID: the worker's event-loop thread, i.e. its process id."""
    found = REQUEST_ID.search(response.headers["x-request-id"])
    assert found, response.headers["x-request-id"]
    return int(found.group(1))


def follow_pages(clients: list[httpx.Client], limit: int) -> list[str]:
    """Every GUID of the newest-first listing, fetching page i through clients[i % len(clients)]."""
    guids: list[str] = []
    url: str | None = f"/image?limit={limit}"
    for page in range(100):
        if url is None:
            break
        answer = clients[page % len(clients)].get(url)
        assert answer.status_code == 200, answer.text
        guids += [d["guid"] for d in answer.json()]
        link = NEXT_LINK.search(answer.headers.get("link", ""))
        url = link.group(1) if link else None
    assert url is None, "the listing did not end within 100 pages"
    return guids


def wait_for(condition: Any, what: str, timeout_s: float = 30) -> None:
    """Poll `condition()` until it is true; fail naming `what` after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.05)


def wait_for_workers(server: RunningServer, count: int) -> None:
    """Until `count` workers have finished their start-up (the first alone already answers HTTP)."""
    wait_for(
        lambda: server.logs().count("Application startup complete") >= count,
        f"{count} workers to start",
        timeout_s=60,
    )


def metric_lines(server: RunningServer) -> list[str]:
    """/metrics as lines."""
    answer = httpx.get(server.base_url + "/metrics", timeout=10)
    assert answer.status_code == 200
    return answer.text.splitlines()


# --- 1. several workers, several servers, one set of data -----------------------------------------


@pytest.mark.mysql
@pytest.mark.s3
@pytest.mark.slow
def test_two_workers_both_serve_one_database_and_bucket(
    mysql_url: str, moto: MotoServer, tmp_path: Path
) -> None:
    env = stack_env(
        mysql_url=mysql_url,
        moto=moto,
        bucket=new_bucket_name(),
        data_dir=tmp_path / "data",
        fake=None,
        PIXYPROXY_PROCEDURAL_SIZE="64x64",
    )
    with running_server(env, tmp_path / "server.log", extra_args=["--workers", "2"]) as server:
        wait_for_workers(server, 2)
        workers = worker_pids(server)
        assert len(workers) == 2, server.logs()

        def post(i: int) -> httpx.Response:
            # A new connection each time, so the kernel hands each request to whichever worker accepts.
            return httpx.post(server.base_url + "/image", json={"prompt": f"worker test {i}"}, timeout=30)

        created: list[httpx.Response] = []
        with ThreadPoolExecutor(max_workers=8) as pool:
            for batch in range(4):  # 40 requests, up to 160 if one worker keeps winning every accept
                created += pool.map(post, range(batch * 40, batch * 40 + 40))
                if len({serving_pid(r) for r in created}) == 2:
                    break
        assert [r.status_code for r in created] == [201] * len(created)
        served_by = {serving_pid(r) for r in created}
        assert served_by == workers, f"requests were served by {served_by}, workers are {workers}"

        # Whichever worker answers, every image reads back whole.
        for response in created[:10]:
            detail = response.json()
            assert httpx.get(f"{server.base_url}/image/{detail['guid']}", timeout=10).json() == detail
            content = httpx.get(f"{server.base_url}/image/{detail['guid']}/content", timeout=10)
            assert hashlib.sha256(content.content).hexdigest() == detail["sha256"]
    assert image_count(database_of(mysql_url)) == len(created)


@pytest.mark.mysql
@pytest.mark.s3
@pytest.mark.slow
def test_two_servers_share_one_database_and_bucket(mysql_url: str, moto: MotoServer, tmp_path: Path) -> None:
    bucket = new_bucket_name()
    env_a = stack_env(
        mysql_url=mysql_url,
        moto=moto,
        bucket=bucket,
        data_dir=tmp_path / "a",
        fake=None,
        PIXYPROXY_PROCEDURAL_SIZE="64x64",
    )
    env_b = stack_env(
        mysql_url=mysql_url,
        moto=moto,
        bucket=bucket,
        data_dir=tmp_path / "b",
        fake=None,
        PIXYPROXY_PROCEDURAL_SIZE="64x64",
    )
    database = database_of(mysql_url)
    with (
        running_server(env_a, tmp_path / "a.log") as server_a,
        running_server(env_b, tmp_path / "b.log") as server_b,
        server_a.client() as a,
        server_b.client() as b,
    ):
        made = [a.post("/image", json={"prompt": f"made on A {i}"}) for i in range(4)]
        made += [b.post("/image", json={"prompt": f"made on B {i}"}) for i in range(3)]
        assert [r.status_code for r in made] == [201] * 7
        details = [r.json() for r in made]

        for detail, reader in zip(details, [b] * 4 + [a] * 3, strict=True):
            assert reader.get(f"/image/{detail['guid']}").json() == detail
            content = reader.get(f"/image/{detail['guid']}/content")
            assert content.status_code == 200
            assert hashlib.sha256(content.content).hexdigest() == detail["sha256"]

        newest_first = [d["guid"] for d in reversed(details)]
        assert [d["guid"] for d in b.get("/image").json()] == newest_first
        # Keyset pages: a cursor from one server continues the listing on the other.
        assert follow_pages([a, b], limit=2) == newest_first
        assert follow_pages([b, a], limit=3) == newest_first

        key = {"Idempotency-Key": "ops-shared-key-1"}
        first = a.post("/image", json={"prompt": "exactly once"}, headers=key)
        assert first.status_code == 201, first.text
        count = image_count(database)
        retried = b.post("/image", json={"prompt": "exactly once"}, headers=key)
        assert retried.status_code == 201, retried.text
        assert retried.json() == first.json()
        assert image_count(database) == count == len(details) + 1
        # B generated its own three images and nothing for the retry.
        b_generations = [line for line in metric_lines(server_b) if line.startswith(GENERATIONS + "{")]
        assert b_generations == [f'{GENERATIONS}{{generator="procedural",outcome="ok"}} 3.0']

        conflict = b.post("/image", json={"prompt": "another body"}, headers=key)
        assert conflict.status_code == 409
        assert image_count(database) == count

        # The same key sent to both servers at once: one generates, the other answers with its image.
        both_key = {"Idempotency-Key": "ops-shared-key-2"}
        with ThreadPoolExecutor(max_workers=2) as pool:
            racing = list(
                pool.map(lambda c: c.post("/image", json={"prompt": "raced"}, headers=both_key), [a, b])
            )
        assert [r.status_code for r in racing] == [201, 201], [r.text for r in racing]
        assert racing[0].json() == racing[1].json()
        assert image_count(database) == count + 1


# --- 2. graceful shutdown -------------------------------------------------------------------------


@pytest.mark.mysql
@pytest.mark.slow
def test_sigterm_finishes_the_generation_in_flight_then_exits_0(
    mysql_url: str, upstream: FakeOpenAI, tmp_path: Path
) -> None:
    upstream.set_mode("slow", delay_s=3)
    env = upstream_env(
        upstream,
        tmp_path / "data",
        PIXYPROXY_REPOSITORY="mysql",
        PIXYPROXY_MYSQL_URL=mysql_url,
        PIXYPROXY_SHUTDOWN_GRACE_S="15",
    )
    server = start_server(env, tmp_path / "server.log")
    try:
        answers: list[httpx.Response] = []
        posting = threading.Thread(
            target=lambda: answers.append(
                httpx.post(server.base_url + "/image", json={"prompt": "finish me"}, timeout=60)
            )
        )
        posting.start()
        wait_for(lambda: upstream.stats()["in_flight"] == 1, "the generation to reach the upstream")
        server.process.send_signal(signal.SIGTERM)
        # uvicorn logs this once it has closed its listening socket, with our request still open.
        wait_for(lambda: "Waiting for connections to close" in server.logs(), "the server to stop listening")

        with pytest.raises(httpx.ConnectError):
            httpx.get(server.base_url + "/healthz", timeout=5)
        posting.join(timeout=60)
        status = server.process.wait(timeout=30)
    finally:
        server.stop(signal.SIGKILL)

    assert status == 0, server.logs()
    assert len(answers) == 1
    assert answers[0].status_code == 201, answers[0].text
    detail = answers[0].json()
    logs = server.logs()
    # The request was still in flight when the shutdown began, and the pools closed after it ended.
    assert logs.index("Shutting down") < logs.index("REQUEST END POST /image 201")
    assert logs.index("REQUEST END POST /image 201") < logs.index("Application shutdown complete")
    assert "Cancel" not in logs
    assert "closing" not in logs  # close_adapters logs each adapter that failed to close

    database = database_of(mysql_url)
    wait_for(lambda: connection_ids(database) == [], "MariaDB to drop the closed connections", 10)
    assert connection_ids(database) == []

    upstream.set_mode("ok")
    with running_server(env, tmp_path / "again.log") as again, again.client() as client:
        assert client.get(f"/image/{detail['guid']}").json() == detail
        content = client.get(f"/image/{detail['guid']}/content")
        assert hashlib.sha256(content.content).hexdigest() == detail["sha256"]
    assert upstream.stats()["requests"] == 1


def test_ctrl_c_also_drains_and_exits_0(tmp_path: Path) -> None:
    server = start_server({"PIXYPROXY_DATA_DIR": str(tmp_path / "data")}, tmp_path / "server.log")
    try:
        assert httpx.post(server.base_url + "/image", json={"prompt": "one"}, timeout=30).status_code == 201
        status = server.stop(signal.SIGINT)
    finally:
        server.stop(signal.SIGKILL)
    assert status == 0, server.logs()
    assert "Application shutdown complete." in server.logs()
    assert "KeyboardInterrupt" not in server.logs()


def test_the_command_module_imports_no_sdk() -> None:
    # Each `--workers N` worker re-imports it before answering uvicorn's 5 s health ping.
    probe = (
        "import sys, pixyproxy.entrypoints.cli\n"
        "print(sorted({'openai', 'boto3', 'aiomysql', 'fastapi'} & set(sys.modules)))"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.strip() == "[]"


# --- 3. readiness on real parts -------------------------------------------------------------------


def checks_of(answer: httpx.Response) -> dict[str, bool]:
    """Each check's name and whether it is ok."""
    return {check["name"]: check["ok"] for check in answer.json()["checks"]}


@pytest.mark.mysql
@pytest.mark.s3
def test_readyz_follows_s3_down_and_back_without_restart(
    mysql_url: str, moto: MotoServer, tmp_path: Path
) -> None:
    bucket = new_bucket_name()
    env = stack_env(
        mysql_url=mysql_url,
        moto=moto,
        bucket=bucket,
        data_dir=tmp_path / "data",
        fake=None,
        PIXYPROXY_PROCEDURAL_SIZE="64x64",
    )
    with running_server(env, tmp_path / "server.log") as server, server.client() as client:
        ready = client.get("/readyz")
        assert ready.status_code == 200, ready.text
        assert ready.json()["ready"] is True
        assert checks_of(ready) == {"repository": True, "blob_store": True}

        moto.stop()
        down = client.get("/readyz")
        assert down.status_code == 503
        assert down.json()["ready"] is False
        assert checks_of(down) == {"repository": True, "blob_store": False}
        assert moto.endpoint_url not in down.text
        assert client.get("/healthz").status_code == 200

        moto.start()  # same port; moto's buckets were in memory, so the bucket is made again
        s3_client(moto).create_bucket(Bucket=bucket)
        back = client.get("/readyz")
        assert back.status_code == 200, back.text
        assert checks_of(back) == {"repository": True, "blob_store": True}


def test_readyz_names_an_unreachable_database_while_healthz_stays_up(tmp_path: Path) -> None:
    closed = f"mysql://root@127.0.0.1:{free_port()}/pixyproxy_nowhere"
    env = {
        "PIXYPROXY_REPOSITORY": "mysql",
        "PIXYPROXY_MYSQL_URL": closed,
        "PIXYPROXY_MYSQL_CONNECT_TIMEOUT_S": "1",
        "PIXYPROXY_DATA_DIR": str(tmp_path / "data"),
    }
    with running_server(env, tmp_path / "server.log") as server, server.client() as client:
        not_ready = client.get("/readyz")
        assert not_ready.status_code == 503
        assert checks_of(not_ready) == {"repository": False, "blob_store": True}
        assert client.get("/healthz").status_code == 200
        assert client.get("/healthz").json() == {"status": "ok"}
    assert urlsplit(closed).netloc not in not_ready.text


# --- 4. metrics on a real server ------------------------------------------------------------------


@pytest.mark.slow
def test_metrics_count_generations_bytes_and_routes(upstream: FakeOpenAI, tmp_path: Path) -> None:
    with running_server(upstream_env(upstream, tmp_path / "data"), tmp_path / "server.log") as server:
        with server.client() as client:
            created = client.post("/image", json={"prompt": "count me"})
            assert created.status_code == 201, created.text
            detail = created.json()
            assert client.get(f"/image/{detail['guid']}").status_code == 200
            assert client.get(f"/image/{detail['guid']}/content").status_code == 200
        lines = metric_lines(server)
        assert 'pixyproxy_generations_total{generator="openai",outcome="ok"} 1.0' in lines
        assert f"pixyproxy_blob_bytes_stored_total {float(detail['size_bytes'])}" in lines
        assert 'pixyproxy_http_requests_total{method="POST",route="/image",status="201"} 1.0' in lines
        assert 'pixyproxy_http_requests_total{method="GET",route="/image/{guid}",status="200"} 1.0' in lines
        assert (
            'pixyproxy_http_requests_total{method="GET",route="/image/{guid}/content",status="200"} 1.0'
            in lines
        )
        assert "pixyproxy_generations_in_flight 0.0" in lines
        assert not any(detail["guid"] in line for line in lines)  # labels carry templates, not GUIDs

        upstream.set_mode("rate_limit", retry_after="5")
        refused = httpx.post(server.base_url + "/image", json={"prompt": "too many"}, timeout=30)
        assert refused.status_code == 503
        lines = metric_lines(server)
        assert (
            'pixyproxy_generations_total{generator="openai",outcome="GeneratorRateLimitedError"} 1.0' in lines
        )
        assert 'pixyproxy_generations_total{generator="openai",outcome="ok"} 1.0' in lines
        assert 'pixyproxy_http_requests_total{method="POST",route="/image",status="503"} 1.0' in lines
        assert f"pixyproxy_blob_bytes_stored_total {float(detail['size_bytes'])}" in lines


METRICS_DIR = re.compile(r"metrics of \d+ workers are gathered in (\S+)")


@pytest.mark.slow
def test_every_scrape_sees_the_counts_of_every_worker(tmp_path: Path) -> None:
    env = {"PIXYPROXY_DATA_DIR": str(tmp_path / "data"), "PIXYPROXY_PROCEDURAL_SIZE": "64x64"}
    server = start_server(env, tmp_path / "server.log", extra_args=["--workers", "2"])
    try:
        wait_for_workers(server, 2)
        workers = worker_pids(server)
        created: list[httpx.Response] = []
        for batch in range(8):  # a new connection each time: whichever worker accepts answers
            created += [
                httpx.post(server.base_url + "/image", json={"prompt": f"metrics {batch} {i}"}, timeout=30)
                for i in range(5)
            ]
            if {serving_pid(r) for r in created} == workers:
                break
        assert {serving_pid(r) for r in created} == workers
        assert [r.status_code for r in created] == [201] * len(created)

        total = float(len(created))
        scrapes = [httpx.get(server.base_url + "/metrics", timeout=10) for _ in range(6)]
        for scrape in scrapes:
            lines = scrape.text.splitlines()
            assert (
                f'pixyproxy_http_requests_total{{method="POST",route="/image",status="201"}} {total}' in lines
            )
            assert f'{GENERATIONS}{{generator="procedural",outcome="ok"}} {total}' in lines
            assert "pixyproxy_generations_in_flight 0.0" in lines
        gathered_in = METRICS_DIR.search(server.logs())
        assert gathered_in, server.logs()
        assert Path(gathered_in.group(1)).is_dir()
        assert server.stop() == 0
    finally:
        server.stop()
    assert not Path(gathered_in.group(1)).exists(), "the parent removes the metrics files it made"


# --- 5. JSON logs ---------------------------------------------------------------------------------


@pytest.mark.slow
def test_json_logs_in_every_worker_carry_the_request_id(tmp_path: Path) -> None:
    env = {
        "PIXYPROXY_LOG_FORMAT": "json",
        "PIXYPROXY_DATA_DIR": str(tmp_path / "data"),
        "PIXYPROXY_PROCEDURAL_SIZE": "64x64",
    }
    server = start_server(env, tmp_path / "server.log", extra_args=["--workers", "2"])
    try:
        wait_for_workers(server, 2)
        workers = worker_pids(server)
        answers = [httpx.post(server.base_url + "/image", json={"prompt": f"log {i}"}) for i in range(3)]
        answers += [httpx.get(server.base_url + "/image/not-a-guid") for _ in range(2)]
        status = server.stop()
    finally:
        server.stop()  # SIGTERM, so the parent stops its workers too (SIGKILL would orphan them)
    assert status == 0
    assert [a.status_code for a in answers] == [201] * 3 + [422] * 2

    lines = server.logs().splitlines()
    entries = []
    for line in lines:
        entry = json.loads(line)  # every line, uvicorn's too, is one JSON object
        assert isinstance(entry, dict)
        entries.append(entry)
    for answer in answers:
        request_id = answer.headers["x-request-id"]
        mine = [e for e in entries if e["request_id"] == request_id]
        messages = [e["message"] for e in mine]
        assert messages[0].startswith(f"REQUEST START {answer.request.method} {answer.request.url.path}")
        assert messages[-1].startswith(
            f"REQUEST END {answer.request.method} {answer.request.url.path} {answer.status_code} "
        )
        assert {e["thread_id"] for e in mine} == {serving_pid(answer)}
    # Both workers wrote their own start-up and shutdown lines through the JSON formatter.
    started = {e["thread_id"] for e in entries if re.match(r"PixyProxy \S+ ready", e["message"])}
    assert started == workers
    finished = {e["thread_id"] for e in entries if e["message"] == "Application shutdown complete."}
    assert finished == workers
    assert set(entries[0]) >= {"time", "level", "request_id", "thread_id", "function", "line", "message"}
