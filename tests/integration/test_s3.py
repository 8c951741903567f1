"""`pixyproxy serve` with its bytes in S3 (a moto server process), driven over real HTTP."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.support.moto_server import FAKE_AWS_ENV, MotoServer, new_bucket_name
from tests.support.real_parts import free_port
from tests.support.server import running_server
from tests.support.stack import s3_client, s3_env

pytestmark = pytest.mark.s3


def _s3_env(moto: MotoServer, tmp_path: Path, bucket: str, **extra: str) -> dict[str, str]:
    """Bytes in S3, records in the embedded SQLite."""
    return {
        **s3_env(moto, bucket),
        "PIXYPROXY_REPOSITORY": "sqlite",
        "PIXYPROXY_DATA_DIR": str(tmp_path / "data"),
        **extra,
    }


def _serve_and_fail(env: dict[str, str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """Run `pixyproxy serve` expecting it to stop at start-up."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("PIXYPROXY_", "AWS_"))}
    return subprocess.run(
        [sys.executable, "-m", "pixyproxy.entrypoints.cli", "serve", "--port", str(free_port())],
        env={**full_env, **FAKE_AWS_ENV, "PIXYPROXY_DATA_DIR": str(tmp_path / "data"), **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_s3_without_a_bucket_stops_start_up_with_one_line(tmp_path: Path) -> None:
    result = _serve_and_fail({"PIXYPROXY_BLOB_STORE": "s3"}, tmp_path)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "PIXYPROXY_S3_BUCKET" in lines[0]
    assert "Traceback" not in result.stderr + result.stdout


def test_absent_bucket_stops_start_up_unless_creation_is_allowed(moto: MotoServer, tmp_path: Path) -> None:
    bucket = new_bucket_name()
    env = _s3_env(moto, tmp_path, bucket, PIXYPROXY_S3_CREATE_BUCKET="false")
    result = _serve_and_fail(env, tmp_path)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "PIXYPROXY_S3_BUCKET" in lines[0]
    assert f"bucket {bucket!r} does not exist" in lines[0]
    assert "Traceback" not in result.stderr + result.stdout


def test_images_round_trip_through_s3(moto: MotoServer, tmp_path: Path) -> None:
    bucket = new_bucket_name()
    env = _s3_env(moto, tmp_path, bucket, PIXYPROXY_S3_PREFIX="pictures")
    with running_server(env, tmp_path / "server.log") as server, server.client() as client:
        created = client.post("/image", json={"prompt": "a lighthouse at dusk"})
        assert created.status_code == 201, created.text
        detail = created.json()

        content = client.get(f"/image/{detail['guid']}/content")
        assert content.status_code == 200
        assert content.headers["content-type"] == "image/png"
        assert hashlib.sha256(content.content).hexdigest() == detail["sha256"]
        etag = content.headers["etag"]
        assert etag == f'"{detail["sha256"]}"'

        head = client.head(f"/image/{detail['guid']}/content")
        assert head.status_code == 200
        assert head.headers["content-length"] == str(detail["size_bytes"])
        assert (
            client.get(f"/image/{detail['guid']}/content", headers={"If-None-Match": etag}).status_code == 304
        )

    listed = s3_client(moto).list_objects_v2(Bucket=bucket)["Contents"]
    assert [o["Key"] for o in listed] == [f"pictures/{detail['filename']}"]


def test_presigned_mode_redirects_to_the_bytes(moto: MotoServer, tmp_path: Path) -> None:
    env = _s3_env(
        moto, tmp_path, new_bucket_name(), PIXYPROXY_S3_PRESIGN="true", PIXYPROXY_S3_PRESIGN_EXPIRES_S="120"
    )
    with running_server(env, tmp_path / "server.log") as server, server.client() as client:
        detail = client.post("/image", json={"prompt": "a lighthouse at dusk"}).json()
        url = f"/image/{detail['guid']}/content"

        redirect = client.get(url)
        assert redirect.status_code == 307
        etag = redirect.headers["etag"]
        assert etag == f'"{detail["sha256"]}"'
        location = redirect.headers["location"]
        assert location.startswith(moto.endpoint_url)
        assert "X-Amz-Expires=120" in location

        fetched = httpx.get(location)
        assert fetched.status_code == 200
        assert hashlib.sha256(fetched.content).hexdigest() == detail["sha256"]
        followed = client.get(url, follow_redirects=True)
        assert followed.content == fetched.content

        # The 304 comes before any redirect; HEAD is answered from the record, never redirected.
        assert client.get(url, headers={"If-None-Match": etag}).status_code == 304
        head = client.head(url)
        assert head.status_code == 200
        assert head.headers["content-length"] == str(detail["size_bytes"])
        assert head.headers["etag"] == etag


def test_s3_outage_answers_503_and_recovers_without_a_restart(moto: MotoServer, tmp_path: Path) -> None:
    bucket = new_bucket_name()
    env = _s3_env(moto, tmp_path, bucket)
    with running_server(env, tmp_path / "server.log") as server, server.client() as client:
        first = client.post("/image", json={"prompt": "before the outage"})
        assert first.status_code == 201, first.text
        guid = first.json()["guid"]
        before = client.get("/image").json()

        moto.stop()
        failed = client.post("/image", json={"prompt": "during the outage"})
        assert failed.status_code == 503
        assert failed.headers["content-type"] == "application/problem+json"
        problem = failed.json()
        assert problem["status"] == 503
        assert problem["request_id"]
        assert moto.endpoint_url not in failed.text
        assert "testing" not in failed.text
        assert client.get("/image").json() == before  # no record points at bytes that are not there

        content = client.get(f"/image/{guid}/content")
        assert content.status_code == 503
        assert content.headers["content-type"] == "application/problem+json"

        moto.start()  # same port; moto's buckets were in memory, so the bucket must be made again
        s3_client(moto).create_bucket(Bucket=bucket)
        again = client.post("/image", json={"prompt": "after the outage"})
        assert again.status_code == 201, again.text
        assert len(client.get("/image").json()) == len(before) + 1
        bytes_again = client.get(f"/image/{again.json()['guid']}/content")
        assert hashlib.sha256(bytes_again.content).hexdigest() == again.json()["sha256"]
