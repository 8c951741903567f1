"""The production-shaped stack for resilience tests: MariaDB + a moto S3 server + the fake OpenAI upstream.

Helpers to read back what really got stored (records through the API, objects straight from S3),
to run `pixyproxy gc` as an operator would, to check its report and the server logs, and to fire
bounded bursts of POSTs.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import httpx

from tests.support.fake_openai import FakeOpenAI
from tests.support.moto_server import FAKE_AWS_ENV, MotoServer

PREFIX = "images/"
API_KEY = "sk-test-resilience-SECRET-4b1d"


# --- environments for `pixyproxy serve`, one fragment per adapter, combined with `|` ---------------


def mysql_env(url: str) -> dict[str, str]:
    """Records in MariaDB, giving up on a connection after 2 s."""
    return {
        "PIXYPROXY_REPOSITORY": "mysql",
        "PIXYPROXY_MYSQL_URL": url,
        "PIXYPROXY_MYSQL_CONNECT_TIMEOUT_S": "2",
    }


def s3_env(moto: MotoServer, bucket: str) -> dict[str, str]:
    """Bytes in a bucket on the moto server (created at start-up), one attempt of 2 s per call."""
    return {
        **FAKE_AWS_ENV,
        "PIXYPROXY_BLOB_STORE": "s3",
        "PIXYPROXY_S3_BUCKET": bucket,
        "PIXYPROXY_S3_ENDPOINT_URL": moto.endpoint_url,
        "PIXYPROXY_S3_CREATE_BUCKET": "true",
        "PIXYPROXY_S3_TIMEOUT_S": "2",
        "PIXYPROXY_S3_MAX_ATTEMPTS": "1",
    }


def openai_env(
    fake: FakeOpenAI, *, api_key: str, timeout_s: float, max_retries: int | None = None
) -> dict[str, str]:
    """The OpenAI generator aimed at the fake upstream; retries as configured, else the default."""
    env = {
        "PIXYPROXY_GENERATOR": "openai",
        "OPENAI_BASE_URL": fake.base_url,
        "OPENAI_API_KEY": api_key,
        "PIXYPROXY_OPENAI_MODEL": "gpt-image-1",
        "PIXYPROXY_OPENAI_TIMEOUT_S": str(timeout_s),
    }
    if max_retries is not None:
        env["PIXYPROXY_OPENAI_MAX_RETRIES"] = str(max_retries)
    return env


def stack_env(
    *, mysql_url: str, moto: MotoServer, bucket: str, data_dir: Path, fake: FakeOpenAI | None, **extra: str
) -> dict[str, str]:
    """The environment of a server on MariaDB + S3 + (the fake OpenAI upstream, or procedural)."""
    env = {
        **mysql_env(mysql_url),
        **s3_env(moto, bucket),
        "PIXYPROXY_S3_PREFIX": PREFIX,
        "PIXYPROXY_DATA_DIR": str(data_dir),
        "PIXYPROXY_PROCEDURAL_SIZE": "32x32",
    }
    if fake is not None:
        env |= openai_env(fake, api_key=API_KEY, timeout_s=20)
    return {**env, **extra}


def s3_client(moto: MotoServer) -> Any:
    """A plain boto3 client on the moto server, as an operator would inspect the bucket."""
    return boto3.client(
        "s3",
        endpoint_url=moto.endpoint_url,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


def object_keys(moto: MotoServer, bucket: str) -> list[str]:
    """Every key under PREFIX in the bucket, through every list page."""
    keys: list[str] = []
    for page in s3_client(moto).get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=PREFIX):
        keys.extend(o["Key"] for o in page.get("Contents", []))
    return keys


def object_sha256s(moto: MotoServer, bucket: str, keys: list[str]) -> dict[str, str]:
    """The sha256 of each object's bytes, fetched from S3 a few at a time."""
    client = s3_client(moto)

    def digest(key: str) -> tuple[str, str]:
        body = client.get_object(Bucket=bucket, Key=key)["Body"].read()
        return key, hashlib.sha256(body).hexdigest()

    with ThreadPoolExecutor(max_workers=8) as pool:
        return dict(pool.map(digest, keys))


def all_records(base_url: str, *, limit: int = 1000, max_pages: int = 100) -> list[dict[str, Any]]:
    """Every record the API lists, following Link rel=next page by page."""
    records: list[dict[str, Any]] = []
    url: str | None = f"/image?limit={limit}"
    with httpx.Client(base_url=base_url, timeout=30) as client:
        for _ in range(max_pages):
            if url is None:
                return records
            response = client.get(url)
            assert response.status_code == 200, response.text
            records.extend(response.json())
            link = response.headers.get("link")
            url = link.split(";")[0].strip("<> ") if link else None
    raise AssertionError(f"more than {max_pages} pages of images")


def run_gc(env: Mapping[str, str], *args: str) -> dict[str, Any]:
    """`pixyproxy gc` as a subprocess with the server's settings; its JSON report."""
    done = subprocess.run(
        [sys.executable, "-m", "pixyproxy.entrypoints.cli", "gc", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    report: dict[str, Any] = json.loads(done.stdout)
    return report


def assert_no_orphans(report: dict[str, Any]) -> None:
    """A `pixyproxy gc` report with no bytes lacking a record and no record lacking its bytes."""
    assert report["orphan_blobs"] == []
    assert report["missing_blobs"] == []


def assert_logs_clean(logs: str) -> None:
    """Server logs with no 500 answer and no unhandled error."""
    assert " 500 " not in logs
    assert "unhandled" not in logs


@dataclass
class Outcome:
    """What one POST got: a response, or the transport error that stood for one."""

    index: int
    response: httpx.Response | None = None
    error: BaseException | None = None


@dataclass
class Burst:
    """The outcomes of a burst of POSTs, in completion order."""

    outcomes: list[Outcome] = field(default_factory=list)

    def statuses(self) -> list[int]:
        """The status of every answered request."""
        return [o.response.status_code for o in self.outcomes if o.response is not None]

    def created(self) -> list[dict[str, Any]]:
        """The details of every 201."""
        return [
            o.response.json()
            for o in self.outcomes
            if o.response is not None and o.response.status_code == 201
        ]

    def errors(self) -> list[BaseException]:
        """Transport errors (no HTTP answer at all)."""
        return [o.error for o in self.outcomes if o.error is not None]


async def post_burst(
    base_url: str,
    *,
    count: int,
    concurrency: int,
    body: Callable[[int], dict[str, Any]] = lambda i: {"prompt": f"burst image {i}"},
    headers: Callable[[int], dict[str, str]] | None = None,
    on_outcome: Callable[[Burst], Awaitable[None] | None] | None = None,
    timeout_s: float = 60,
) -> Burst:
    """POST `count` bodies with at most `concurrency` in flight; `on_outcome` sees the burst after each."""
    burst = Burst()
    slots = asyncio.Semaphore(concurrency)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=base_url, timeout=timeout_s, limits=limits) as client:

        async def one(i: int) -> None:
            async with slots:
                outcome = Outcome(index=i)
                try:
                    outcome.response = await client.post(
                        "/image", json=body(i), headers=headers(i) if headers else None
                    )
                except httpx.TransportError as err:
                    outcome.error = err
                burst.outcomes.append(outcome)
                if on_outcome is not None:
                    result = on_outcome(burst)
                    if result is not None:
                        await result

        await asyncio.wait_for(asyncio.gather(*(one(i) for i in range(count))), timeout=timeout_s * 3)
    return burst
