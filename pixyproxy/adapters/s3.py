"""S3 blob store (boto3): image bytes in any S3-compatible bucket, every call in a worker thread."""

from __future__ import annotations

import base64
import hashlib
import logging
import threading
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from functools import partial
from typing import Any, TypeVar
from urllib.parse import urlsplit

import anyio
import anyio.to_thread
import boto3
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    FlexibleChecksumError,
    InvalidRegionError,
    NoCredentialsError,
    ReadTimeoutError,
)

from pixyproxy.domain.exceptions import (
    BlobNotFoundError,
    BlobStoreUnavailableError,
    ConfigurationError,
    InvalidBlobKeyError,
)
from pixyproxy.domain.models import BlobInfo, validate_blob_key

T = TypeVar("T")

# botocore says where it found credentials, at INFO, on every start: noise beside a one-line error.
logging.getLogger("botocore.credentials").setLevel(logging.WARNING)

# boto3 clients are thread-safe; this many calls may run at once, each on its own pooled connection,
# so a burst of uploads neither queues behind the loop's small default executor nor discards connections.
MAX_CONCURRENT_CALLS = 32

_NOT_FOUND_CODES = {"404", "NoSuchKey", "NotFound"}
_NO_BUCKET_CODES = {"NoSuchBucket"}
_DENIED_CODES = {"403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "Forbidden"}


class S3BlobStore:
    """Bytes as objects under `prefix` in one bucket; keys are validated before any call."""

    def __init__(
        self,
        *,
        bucket: str,
        endpoint_url: str | None = None,
        region: str = "us-east-1",
        prefix: str | None = "",
        create_bucket: bool = False,
        timeout_s: float = 10,
        max_attempts: int = 3,
        list_page_size: int = 1000,
    ) -> None:
        self._bucket = bucket
        self._list_page_size = list_page_size  # S3 answers at most 1,000 keys per list request
        self._region = region
        self._prefix = _normalise_prefix(prefix)
        self._create_bucket = create_bucket
        config = Config(
            region_name=region,
            signature_version="s3v4",  # presigned URLs too: SigV2 is refused by newer regions
            connect_timeout=timeout_s,
            read_timeout=timeout_s,
            # total_max_attempts counts the first try, so 1 means "never retry" as the setting reads.
            retries={"total_max_attempts": max_attempts, "mode": "standard"},
            max_pool_connections=MAX_CONCURRENT_CALLS,
            # S3-compatible servers (moto, MinIO) rarely resolve bucket.host names; AWS accepts paths too.
            s3={"addressing_style": "path"} if endpoint_url else None,
        )
        self._endpoint_url = _checked_endpoint(endpoint_url)
        self._config = config
        self._client: Any = None  # built on first use, in a worker thread: see _s3()
        self._client_lock = threading.Lock()
        self._limiter = anyio.CapacityLimiter(MAX_CONCURRENT_CALLS)

    def __repr__(self) -> str:
        return f"S3BlobStore(bucket={self._bucket!r}, prefix={self._prefix!r})"

    def _object_key(self, key: str) -> str:
        return self._prefix + validate_blob_key(key)

    def _s3(self) -> Any:
        """The one shared client, built on first use (worker threads only)."""
        # Building it resolves credentials through the AWS chain, which may ask the instance
        # metadata service over the network: that must never happen on the event loop's thread.
        with self._client_lock:
            if self._client is None:
                try:
                    self._client = boto3.session.Session().client(
                        "s3", endpoint_url=self._endpoint_url, config=self._config
                    )
                except InvalidRegionError as err:
                    raise ConfigurationError("PIXYPROXY_S3_REGION", "not a valid region name") from err
                except ValueError as err:  # botocore's word for an endpoint it cannot parse
                    raise ConfigurationError("PIXYPROXY_S3_ENDPOINT_URL", "not a valid URL") from err
            return self._client

    async def _run(self, func: Callable[[], T]) -> T:
        """Run blocking boto3 work in a worker thread, so the event loop never waits on S3."""
        return await anyio.to_thread.run_sync(func, limiter=self._limiter)

    async def _call(self, operation: str, **params: Any) -> Any:
        """One boto3 client call, by operation name, in a worker thread."""
        return await self._run(lambda: getattr(self._s3(), operation)(**params))

    async def initialize(self) -> None:
        """Check the bucket exists, creating it when allowed. Raises ConfigurationError."""
        try:
            await self._call("head_bucket", Bucket=self._bucket)
            return
        except ClientError as err:
            if _code(err) in _DENIED_CODES:
                raise ConfigurationError(
                    "AWS credentials", f"access to S3 bucket {self._bucket!r} was denied ({_code(err)})"
                ) from err
            if _code(err) not in _NOT_FOUND_CODES | _NO_BUCKET_CODES:
                raise self._unavailable(err) from err
        except NoCredentialsError as err:
            raise ConfigurationError(
                "AWS credentials", "none found (set AWS_ACCESS_KEY_ID and friends, a profile or a role)"
            ) from err
        except BotoCoreError as err:
            raise self._unavailable(err) from err
        if not self._create_bucket:
            raise ConfigurationError(
                "PIXYPROXY_S3_BUCKET",
                f"bucket {self._bucket!r} does not exist; create it or set PIXYPROXY_S3_CREATE_BUCKET=true",
            )
        await self._make_bucket()

    async def _make_bucket(self) -> None:
        params: dict[str, Any] = {"Bucket": self._bucket}
        if self._region != "us-east-1":  # us-east-1 refuses an explicit LocationConstraint
            params["CreateBucketConfiguration"] = {"LocationConstraint": self._region}
        try:
            await self._call("create_bucket", **params)
        except ClientError as err:
            if _code(err) in {"BucketAlreadyOwnedByYou"}:
                return  # another worker created it first
            if _code(err) in {"BucketAlreadyExists", "InvalidBucketName"}:
                reason = (
                    "is taken by another account" if _code(err) == "BucketAlreadyExists" else "is not valid"
                )
                raise ConfigurationError(
                    "PIXYPROXY_S3_BUCKET", f"bucket name {self._bucket!r} {reason}"
                ) from err
            raise self._unavailable(err) from err
        except BotoCoreError as err:
            raise self._unavailable(err) from err

    async def put(self, key: str, data: bytes, *, content_type: str) -> None:
        """Upload in one PUT, which S3 applies atomically; S3 verifies the SHA-256 we send."""
        object_key = self._object_key(key)
        try:
            await self._run(partial(self._write, object_key, data, content_type))
        except (BotoCoreError, ClientError) as err:
            raise self._unavailable(err) from err

    def _write(self, object_key: str, data: bytes, content_type: str) -> None:
        # Hashing megabytes takes milliseconds, so it belongs in the worker thread with the upload.
        checksum = base64.b64encode(hashlib.sha256(data).digest()).decode("ascii")
        self._s3().put_object(
            Bucket=self._bucket,
            Key=object_key,
            Body=data,
            ContentType=content_type,
            # Our own digest of the bytes we hold: S3 refuses the upload if what arrived differs,
            # and keeps it so that get() can check the download against it.
            ChecksumAlgorithm="SHA256",
            ChecksumSHA256=checksum,
        )

    async def read_chunks(self, key: str, *, chunk_bytes: int) -> AsyncIterator[bytes]:
        """The whole object, downloaded and checked as `get` does, then handed out in slices: its
        SHA-256 can only be checked once every byte is in (a client reading S3 without PixyProxy in
        between uses PIXYPROXY_S3_PRESIGN)."""
        data = await self.get(key)
        for start in range(0, len(data), chunk_bytes):
            yield data[start : start + chunk_bytes]

    async def get(self, key: str) -> bytes:
        """Download the object, its SHA-256 checked against the one stored with it."""
        object_key = self._object_key(key)
        try:
            return await self._run(partial(self._read, object_key))
        except ClientError as err:
            if _code(err) in _NOT_FOUND_CODES:
                raise BlobNotFoundError(key) from err
            raise self._unavailable(err) from err
        except BotoCoreError as err:
            raise self._unavailable(err) from err

    def _read(self, object_key: str) -> bytes:
        # The body is streamed, so reading it belongs in the same worker thread as the request.
        response = self._s3().get_object(Bucket=self._bucket, Key=object_key, ChecksumMode="ENABLED")
        body = response["Body"]
        try:
            data: bytes = body.read()
        finally:
            body.close()
        return data

    async def delete(self, key: str) -> None:
        """Delete the object; S3 answers success for a missing one too."""
        object_key = self._object_key(key)
        try:
            await self._call("delete_object", Bucket=self._bucket, Key=object_key)
        except ClientError as err:
            if _code(err) in _NOT_FOUND_CODES:
                return
            raise self._unavailable(err) from err
        except BotoCoreError as err:
            raise self._unavailable(err) from err

    async def exists(self, key: str) -> bool:
        """HEAD the object."""
        object_key = self._object_key(key)
        try:
            await self._call("head_object", Bucket=self._bucket, Key=object_key)
        except ClientError as err:
            if _code(err) in _NOT_FOUND_CODES:
                return False
            raise self._unavailable(err) from err
        except BotoCoreError as err:
            raise self._unavailable(err) from err
        return True

    async def list_blobs(self) -> list[BlobInfo]:
        """Every object under the prefix, with the prefix taken off; foreign keys are skipped."""
        try:
            return await self._run(self._list)
        except (BotoCoreError, ClientError) as err:
            raise self._unavailable(err) from err

    def _list(self) -> list[BlobInfo]:
        found = []
        pages = (
            self._s3()
            .get_paginator("list_objects_v2")
            .paginate(
                Bucket=self._bucket,
                Prefix=self._prefix,
                PaginationConfig={"PageSize": self._list_page_size},
            )
        )
        for page in pages:
            for item in page.get("Contents", []):
                key = str(item["Key"])[len(self._prefix) :]
                try:
                    validate_blob_key(key)
                except InvalidBlobKeyError:
                    continue  # not written by us (a folder marker, say); gc must not touch it
                modified: datetime = item["LastModified"]
                found.append(
                    BlobInfo(key=key, size_bytes=int(item["Size"]), modified_at=modified.astimezone(UTC))
                )
        return found

    async def presigned_url(self, key: str, *, expires_s: int) -> str | None:
        """A time-limited GET URL signed with the current credentials."""
        object_key = self._object_key(key)
        try:
            url: str = await self._call(
                "generate_presigned_url",
                ClientMethod="get_object",
                Params={"Bucket": self._bucket, "Key": object_key},
                ExpiresIn=expires_s,
            )
        except (BotoCoreError, ClientError) as err:
            raise self._unavailable(err) from err
        return url

    async def file_path(self, key: str) -> str | None:
        """S3 keeps no local files (presigned URLs are its way to hand bytes off)."""
        self._object_key(key)
        return None

    async def ping(self) -> None:
        """HEAD the bucket."""
        try:
            await self._call("head_bucket", Bucket=self._bucket)
        except (BotoCoreError, ClientError) as err:
            raise self._unavailable(err) from err

    async def close(self) -> None:
        """Close the client's connection pool."""
        with self._client_lock:
            client, self._client = self._client, None
        if client is not None:
            await self._run(client.close)

    def _unavailable(self, err: BotoCoreError | ClientError) -> BlobStoreUnavailableError:
        """The domain error for an SDK error, worded without URLs or credentials."""
        return BlobStoreUnavailableError(_reason(err, self._bucket))


def _code(err: ClientError) -> str:
    return str(err.response.get("Error", {}).get("Code", ""))


def _status(err: ClientError) -> int:
    return int(err.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))


def _reason(err: BotoCoreError | ClientError, bucket: str) -> str:
    """Why S3 failed, in words safe to show: botocore's own messages may carry the endpoint URL."""
    if isinstance(err, ClientError):
        code = _code(err)
        if code in _NO_BUCKET_CODES:
            return f"bucket {bucket!r} does not exist"
        if code in _DENIED_CODES:
            return f"S3 refused access ({code})"
        if code == "SlowDown" or _status(err) >= 500:
            return f"S3 is overloaded or failing ({code or _status(err)})"
        return f"S3 refused the request ({code or _status(err)})"
    if isinstance(err, FlexibleChecksumError):
        return "the bytes S3 returned do not match their stored checksum"
    if isinstance(err, ConnectTimeoutError):
        return "timed out connecting to S3"
    if isinstance(err, ReadTimeoutError):
        return "timed out waiting for S3"
    if isinstance(err, EndpointConnectionError):
        return "cannot connect to S3"
    if isinstance(err, ConnectionClosedError):
        return "S3 closed the connection"
    if isinstance(err, NoCredentialsError):
        return "no AWS credentials found"
    return f"S3 call failed ({type(err).__name__})"


def _checked_endpoint(endpoint_url: str | None) -> str | None:
    """The endpoint URL if it is an http(s) URL with a host; None for AWS's own endpoints."""
    if not endpoint_url:
        return None
    parsed = urlsplit(endpoint_url)
    if parsed.scheme not in {"http", "https"} or not parsed.hostname:
        raise ConfigurationError(
            "PIXYPROXY_S3_ENDPOINT_URL", "must be an http:// or https:// URL with a host"
        )
    return endpoint_url


def _normalise_prefix(prefix: str | None) -> str:
    """'images', '/images/' and 'images/' all become 'images/'; empty stays empty."""
    stripped = (prefix or "").strip("/")
    if not stripped:
        return ""
    try:
        validate_blob_key(stripped)
    except InvalidBlobKeyError as err:
        raise ConfigurationError("PIXYPROXY_S3_PREFIX", f"not a safe key prefix: {prefix!r}") from err
    return stripped + "/"
