"""Deleting for real: two `pixyproxy serve` processes on one MariaDB database and one S3 bucket, GETs
racing the delete, and a crash between the delete's two steps that `pixyproxy gc` reports and repairs."""

from __future__ import annotations

import hashlib
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from uuid import UUID

import httpx
import pytest

from pixyproxy.adapters.mysql import MySqlImageRepository, init_schema
from pixyproxy.adapters.procedural import ProceduralImageGenerator
from pixyproxy.adapters.s3 import S3BlobStore
from pixyproxy.app.service import ImageService
from pixyproxy.domain.exceptions import RepositoryUnavailableError
from tests.support.moto_server import MotoServer, new_bucket_name
from tests.support.server import running_server
from tests.support.stack import PREFIX, assert_logs_clean, mysql_env, object_keys, run_gc, s3_env, stack_env

# Workers and servers share no memory: another server's record cache trusts a record this long.
OTHER_NODE_DEADLINE_S = 5.0


@dataclass(frozen=True)
class Answer:
    """One GET as the load saw it: when it was sent, and what came back."""

    path: str
    sent_at: float
    status: int
    sha256: str | None


def hammer(base_url: str, paths: list[str], stop: threading.Event, answers: list[Answer]) -> None:
    """GET the paths in turn until told to stop, recording every answer."""
    with httpx.Client(base_url=base_url, timeout=30) as client:
        while not stop.is_set():
            for path in paths:
                sent_at = time.monotonic()
                response = client.get(path)
                digest = hashlib.sha256(response.content).hexdigest() if response.status_code == 200 else None
                answers.append(Answer(path, sent_at, response.status_code, digest))


@pytest.mark.mysql
@pytest.mark.s3
@pytest.mark.slow
def test_a_delete_on_one_server_reaches_the_other_within_5s_and_no_get_sees_a_500(
    mysql_url: str, moto: MotoServer, tmp_path: Path
) -> None:
    bucket = new_bucket_name()
    env_a = stack_env(mysql_url=mysql_url, moto=moto, bucket=bucket, data_dir=tmp_path / "a", fake=None)
    env_b = stack_env(mysql_url=mysql_url, moto=moto, bucket=bucket, data_dir=tmp_path / "b", fake=None)
    with (
        running_server(env_a, tmp_path / "a.log") as server_a,
        running_server(env_b, tmp_path / "b.log") as server_b,
        server_a.client() as a,
        server_b.client() as b,
    ):
        key = {"Idempotency-Key": "delete-across-servers"}
        victim = a.post("/image", json={"prompt": "a fox to erase"}, headers=key).json()
        kept = a.post("/image", json={"prompt": "a fox to keep"}).json()
        guid = victim["guid"]
        paths = [f"/image/{guid}", f"/image/{guid}/content"]
        # Both servers have the record cached before the delete.
        for client in (a, b):
            assert client.get(paths[0]).status_code == 200
            assert hashlib.sha256(client.get(paths[1]).content).hexdigest() == victim["sha256"]

        stop = threading.Event()
        answers: dict[str, list[Answer]] = {"a": [], "b": []}
        with ThreadPoolExecutor(max_workers=6) as pool:
            for name, server in (("a", server_a), ("b", server_b), ("a", server_a), ("b", server_b)):
                pool.submit(hammer, server.base_url, paths, stop, answers[name])
            time.sleep(0.5)
            deleted = a.delete(f"/image/{guid}")
            deleted_at = time.monotonic()
            assert deleted.status_code == 204, deleted.text

            # The answering server: at once.
            assert a.get(paths[0]).status_code == 404
            assert a.get(paths[1]).status_code == 404
            assert [d["guid"] for d in a.get("/image").json()] == [kept["guid"]]
            # Every server: the listing at once (it is never cached), the bytes at once (they are gone).
            assert [d["guid"] for d in b.get("/image", params={"q": "fox"}).json()] == [kept["guid"]]
            assert b.get(paths[1]).status_code == 404
            # The other server's detail within 5 s.
            while b.get(paths[0]).status_code != 404:
                assert time.monotonic() - deleted_at < OTHER_NODE_DEADLINE_S, "B still serves the detail"
                time.sleep(0.05)
            time.sleep(0.3)
            stop.set()

        every = answers["a"] + answers["b"]
        assert len(every) > 50, "the load did not run"
        assert {x.status for x in every} <= {200, 404}, sorted({x.status for x in every})
        # Bytes were served before the delete, and never to a request sent after its 204.
        content = [x for x in every if x.path.endswith("/content")]
        assert any(x.status == 200 and x.sent_at < deleted_at for x in content)
        assert [x for x in content if x.sent_at > deleted_at and x.status == 200] == []
        late_details = [x for x in answers["b"] if x.path == paths[0] and x.status == 200]
        assert all(x.sent_at - deleted_at < OTHER_NODE_DEADLINE_S for x in late_details)
        assert [x for x in answers["a"] if x.sent_at > deleted_at and x.status == 200] == []

        # Erased from S3, not hidden; its idempotency key answers 410 on either server.
        assert object_keys(moto, bucket) == [PREFIX + kept["filename"]]
        for client in (a, b):
            replay = client.post("/image", json={"prompt": "a fox to erase"}, headers=key)
            assert replay.status_code == 410, replay.text
            assert replay.json()["type"].endswith("/image-deleted")
        assert len(a.get("/image").json()) == 1
        assert_logs_clean(server_a.logs())
        assert_logs_clean(server_b.logs())


class RecordDeleteCrashes(MySqlImageRepository):
    """MariaDB as it is, but the process dies (the connection is lost) just as a record is deleted."""

    async def delete(self, guid: UUID) -> bool:
        raise RepositoryUnavailableError("the connection was lost")


@pytest.mark.mysql
@pytest.mark.s3
async def test_a_crash_between_the_two_deletes_leaves_what_gc_reports_and_repairs(
    mysql_url: str, moto: MotoServer, fake_aws_env: None
) -> None:
    bucket = new_bucket_name()
    await init_schema(mysql_url)
    repository = RecordDeleteCrashes(mysql_url)
    store = S3BlobStore(bucket=bucket, endpoint_url=moto.endpoint_url, prefix=PREFIX, create_bucket=True)
    await store.initialize()
    service = ImageService(
        repository=repository, generator=ProceduralImageGenerator(default_size="32x32"), blob_store=store
    )
    try:
        kept = await service.generate({"prompt": "kept"})
        victim = await service.generate({"prompt": "half deleted"})
        with pytest.raises(RepositoryUnavailableError):
            await service.delete(victim.guid)
        # The bytes went first; the record survived the crash.
        assert (await repository.get(victim.guid)).guid == victim.guid
        assert not await store.exists(victim.filename)
    finally:
        await repository.close()
        await store.close()

    env = {**mysql_env(mysql_url), **s3_env(moto, bucket), "PIXYPROXY_S3_PREFIX": PREFIX}
    report = run_gc(env)
    assert report["missing_blobs"] == [{"guid": str(victim.guid), "filename": victim.filename}]
    assert report["orphan_blobs"] == []
    assert report["forgotten_records"] == []

    repaired = run_gc(env, "--forget-missing")
    assert repaired["forgotten_records"] == [str(victim.guid)]
    clean = run_gc(env)
    assert clean["missing_blobs"] == []
    assert clean["orphan_blobs"] == []
    assert clean["records"] == 1
    assert object_keys(moto, bucket) == [PREFIX + kept.filename]
