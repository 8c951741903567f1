"""What only the S3 adapter shows: prefixes, checksums, bucket checks and error translation over real HTTP."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import socket
import threading
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import boto3
import pytest

from pixyproxy.adapters.s3 import S3BlobStore
from pixyproxy.domain.exceptions import (
    BlobStoreUnavailableError,
    ConfigurationError,
)
from tests.support.moto_server import MotoServer, new_bucket_name
from tests.support.real_parts import free_port

pytestmark = pytest.mark.s3


@pytest.fixture
def raw_client(s3_server: MotoServer) -> Any:
    """A plain boto3 client on the same server, to look behind the adapter's back."""
    return boto3.client("s3", endpoint_url=s3_server.endpoint_url, region_name="us-east-1")


@pytest.fixture
async def store(s3_server: MotoServer) -> AsyncIterator[S3BlobStore]:
    """An adapter on a fresh bucket, under the default 'images/' prefix."""
    blob_store = S3BlobStore(
        bucket=new_bucket_name(), endpoint_url=s3_server.endpoint_url, prefix="images", create_bucket=True
    )
    await blob_store.initialize()
    try:
        yield blob_store
    finally:
        await blob_store.close()


def _bucket(store: S3BlobStore) -> str:
    return store._bucket


async def test_objects_live_under_the_prefix_and_list_without_it(store: S3BlobStore, raw_client: Any) -> None:
    await store.put("2026/a.png", b"abc", content_type="image/png")
    raw_client.put_object(Bucket=_bucket(store), Key="elsewhere.png", Body=b"not ours")
    raw_client.put_object(Bucket=_bucket(store), Key="images/folder/", Body=b"")

    keys = {o["Key"] for o in raw_client.list_objects_v2(Bucket=_bucket(store))["Contents"]}
    assert "images/2026/a.png" in keys
    assert [b.key for b in await store.list_blobs()] == ["2026/a.png"]


async def test_list_pages_through_more_than_one_page(s3_server: MotoServer) -> None:
    store = S3BlobStore(
        bucket=new_bucket_name(), endpoint_url=s3_server.endpoint_url, create_bucket=True, list_page_size=2
    )
    await store.initialize()
    keys = {f"k{i}.png" for i in range(7)}
    await asyncio.gather(*(store.put(k, b"x", content_type="image/png") for k in keys))
    assert {b.key for b in await store.list_blobs()} == keys
    await store.close()


async def test_put_sends_content_type_and_sha256(store: S3BlobStore, raw_client: Any) -> None:
    data = b"\x89PNG\r\n\x1a\n" + bytes(100)
    await store.put("a.png", data, content_type="image/png")
    head = raw_client.head_object(Bucket=_bucket(store), Key="images/a.png", ChecksumMode="ENABLED")
    assert head["ContentType"] == "image/png"
    assert head["ChecksumSHA256"] == base64.b64encode(hashlib.sha256(data).digest()).decode()


async def test_get_refuses_bytes_that_do_not_match_their_checksum(
    store: S3BlobStore, raw_client: Any
) -> None:
    wrong = base64.b64encode(hashlib.sha256(b"other bytes").digest()).decode()
    raw_client.put_object(
        Bucket=_bucket(store),
        Key="images/bad.png",
        Body=b"these bytes",
        ChecksumAlgorithm="SHA256",
        ChecksumSHA256=wrong,
    )
    with pytest.raises(BlobStoreUnavailableError, match="checksum"):
        await store.get("bad.png")


async def test_absent_bucket_stops_start_up_unless_creation_is_allowed(
    s3_server: MotoServer, raw_client: Any
) -> None:
    bucket = new_bucket_name()
    strict = S3BlobStore(bucket=bucket, endpoint_url=s3_server.endpoint_url)
    with pytest.raises(ConfigurationError, match="does not exist") as caught:
        await strict.initialize()
    assert caught.value.setting == "PIXYPROXY_S3_BUCKET"
    with pytest.raises(BlobStoreUnavailableError, match="does not exist"):
        await strict.put("a.png", b"x", content_type="image/png")
    assert bucket not in {b["Name"] for b in raw_client.list_buckets()["Buckets"]}

    creating = S3BlobStore(bucket=bucket, endpoint_url=s3_server.endpoint_url, create_bucket=True)
    await creating.initialize()
    await creating.initialize()  # a second worker finding it there is fine
    assert bucket in {b["Name"] for b in raw_client.list_buckets()["Buckets"]}
    await strict.initialize()
    await strict.close()
    await creating.close()


async def test_invalid_bucket_name_is_a_configuration_error(s3_server: MotoServer) -> None:
    store = S3BlobStore(bucket="ab", endpoint_url=s3_server.endpoint_url, create_bucket=True)
    with pytest.raises(ConfigurationError, match="PIXYPROXY_S3_BUCKET"):
        await store.initialize()


@pytest.mark.parametrize("prefix", ["images", "/images/", "images/"])
async def test_prefix_is_normalised_to_one_trailing_slash(
    s3_server: MotoServer, raw_client: Any, prefix: str
) -> None:
    store = S3BlobStore(
        bucket=new_bucket_name(), endpoint_url=s3_server.endpoint_url, prefix=prefix, create_bucket=True
    )
    await store.initialize()
    await store.put("a.png", b"x", content_type="image/png")
    listed = raw_client.list_objects_v2(Bucket=store._bucket)["Contents"]
    assert [o["Key"] for o in listed] == ["images/a.png"]
    await store.close()


@pytest.mark.parametrize("prefix", ["../up", "a//b", "a/./b"])
def test_unsafe_prefix_is_a_configuration_error(prefix: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        S3BlobStore(bucket="some-bucket", endpoint_url="http://127.0.0.1:9", prefix=prefix)
    assert caught.value.setting == "PIXYPROXY_S3_PREFIX"


async def _every_call(store: S3BlobStore) -> list[Exception]:
    calls = [
        store.put("a.png", b"x", content_type="image/png"),
        store.get("a.png"),
        store.delete("a.png"),
        store.exists("a.png"),
        store.list_blobs(),
        store.ping(),
    ]
    results = await asyncio.gather(*calls, return_exceptions=True)
    return [r for r in results if isinstance(r, Exception)]


@pytest.mark.usefixtures("fake_aws_env")
async def test_unreachable_endpoint_is_unavailable_without_leaking_the_url() -> None:
    port = free_port()  # nothing listens here
    store = S3BlobStore(
        bucket="some-bucket", endpoint_url=f"http://127.0.0.1:{port}", timeout_s=2, max_attempts=1
    )
    errors = await _every_call(store)
    assert len(errors) == 6
    for err in errors:
        assert isinstance(err, BlobStoreUnavailableError)
        assert "cannot connect to S3" in str(err)
        assert str(port) not in str(err)
        assert "testing" not in str(err)
    with pytest.raises(BlobStoreUnavailableError):
        await store.initialize()
    await store.close()


@pytest.fixture
def silent_endpoint() -> Iterator[str]:
    """A TCP port that accepts connections and never answers: a hung S3."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stop.set()
        thread.join()
        for conn in accepted:
            conn.close()
        listener.close()


@pytest.mark.usefixtures("fake_aws_env")
async def test_a_hung_store_times_out_without_blocking_the_event_loop(silent_endpoint: str) -> None:
    store = S3BlobStore(bucket="some-bucket", endpoint_url=silent_endpoint, timeout_s=1, max_attempts=1)
    fetch = asyncio.create_task(store.get("a.png"))
    other = asyncio.create_task(asyncio.sleep(0.01))
    done, _ = await asyncio.wait({fetch, other}, return_when=asyncio.FIRST_COMPLETED)
    # Had boto3 run on the loop's thread, the sleep could not have finished before the call.
    assert done == {other}
    with pytest.raises(BlobStoreUnavailableError, match="timed out waiting for S3"):
        await fetch
    await store.close()


class _FailingS3(BaseHTTPRequestHandler):
    """Answers every request with the S3 error named by the server's `answer`."""

    def _fail(self) -> None:
        status, code = self.server.answer  # type: ignore[attr-defined]
        body = f"<Error><Code>{code}</Code><Message>no</Message></Error>".encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_GET = do_PUT = do_DELETE = do_HEAD = _fail

    def log_message(self, format: str, *args: Any) -> None:
        """Keep test output quiet."""


@pytest.mark.parametrize(
    ("status", "code", "reason"),
    [
        (503, "SlowDown", "overloaded or failing"),
        (500, "InternalError", "overloaded or failing"),
        (403, "AccessDenied", "refused access"),
    ],
)
@pytest.mark.usefixtures("fake_aws_env")
async def test_error_answers_become_unavailable(status: int, code: str, reason: str) -> None:
    http = ThreadingHTTPServer(("127.0.0.1", 0), _FailingS3)
    http.answer = (status, code)  # type: ignore[attr-defined]
    thread = threading.Thread(target=http.serve_forever, daemon=True)
    thread.start()
    store = S3BlobStore(
        bucket="some-bucket", endpoint_url=f"http://127.0.0.1:{http.server_address[1]}", max_attempts=1
    )
    try:
        errors = await _every_call(store)
    finally:
        await store.close()
        http.shutdown()
        http.server_close()
    assert len(errors) == 6
    assert all(isinstance(e, BlobStoreUnavailableError) for e in errors), errors
    assert all(reason in str(e) for e in errors), errors


def test_repr_names_the_bucket_only() -> None:
    store = S3BlobStore(bucket="some-bucket", endpoint_url="http://user:secret@127.0.0.1:9")
    assert "secret" not in repr(store)
    assert "some-bucket" in repr(store)


@pytest.mark.parametrize("endpoint", ["127.0.0.1:9000", "ftp://host", "http://:9000"])
def test_unusable_endpoint_is_a_configuration_error(endpoint: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        S3BlobStore(bucket="some-bucket", endpoint_url=endpoint)
    assert caught.value.setting == "PIXYPROXY_S3_ENDPOINT_URL"
    assert endpoint not in str(caught.value)  # a URL may carry credentials: never echoed


@pytest.mark.usefixtures("fake_aws_env")
async def test_unusable_region_is_a_configuration_error() -> None:
    store = S3BlobStore(bucket="some-bucket", region="not a region!")
    with pytest.raises(ConfigurationError) as caught:
        await store.initialize()
    assert caught.value.setting == "PIXYPROXY_S3_REGION"


@pytest.mark.usefixtures("fake_aws_env")
async def test_no_credentials_anywhere_is_a_configuration_error(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    store = S3BlobStore(bucket="some-bucket", endpoint_url=f"http://127.0.0.1:{free_port()}")
    with pytest.raises(ConfigurationError) as caught:
        await store.initialize()
    assert caught.value.setting == "AWS credentials"
    with pytest.raises(BlobStoreUnavailableError, match="no AWS credentials"):
        await store.get("a.png")
