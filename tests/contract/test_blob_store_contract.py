"""The BlobStore contract, run against every blob-store adapter."""

from __future__ import annotations

import asyncio
import os

import httpx
import pytest

from pixyproxy.domain.exceptions import BlobNotFoundError, InvalidBlobKeyError
from pixyproxy.ports import BlobStore

ESCAPING_KEYS = [
    "../outside.png",
    "a/../../outside.png",
    "/etc/passwd",
    "nul\x00byte.png",
    "..",
    ".",
    "",
    "back\\slash.png",
    "a//b.png",
    "trailing/",
    "~/home.png",
]


async def test_put_then_get_is_byte_exact(blob_store: BlobStore) -> None:
    data = bytes(range(256)) * 3
    await blob_store.put("a.png", data, content_type="image/png")
    assert await blob_store.get("a.png") == data
    assert await blob_store.exists("a.png")


@pytest.mark.parametrize("size", [0, 1, 999, 1000, 1001, 5 * 1000 + 3])
async def test_read_chunks_gives_the_bytes_in_pieces_of_at_most_the_size_asked(
    blob_store: BlobStore, size: int
) -> None:
    data = bytes(i % 251 for i in range(size))
    await blob_store.put("chunked.png", data, content_type="image/png")
    pieces = [piece async for piece in blob_store.read_chunks("chunked.png", chunk_bytes=1000)]
    assert b"".join(pieces) == data
    assert all(0 < len(piece) <= 1000 for piece in pieces)
    assert len(pieces) == -(-size // 1000)  # no empty piece, none short but the last


async def test_read_chunks_of_a_missing_key_is_not_found_before_any_piece(blob_store: BlobStore) -> None:
    chunks = blob_store.read_chunks("absent.png", chunk_bytes=1000)
    with pytest.raises(BlobNotFoundError):
        await anext(chunks)


async def test_put_overwrites_what_was_there(blob_store: BlobStore) -> None:
    await blob_store.put("a.png", b"first", content_type="image/png")
    await blob_store.put("a.png", b"second", content_type="image/png")
    assert await blob_store.get("a.png") == b"second"


async def test_missing_key_is_not_found(blob_store: BlobStore) -> None:
    with pytest.raises(BlobNotFoundError):
        await blob_store.get("missing.png")
    assert not await blob_store.exists("missing.png")


async def test_delete_removes_and_is_idempotent(blob_store: BlobStore) -> None:
    await blob_store.put("a.png", b"bytes", content_type="image/png")
    await blob_store.delete("a.png")
    assert not await blob_store.exists("a.png")
    await blob_store.delete("a.png")
    with pytest.raises(BlobNotFoundError):
        await blob_store.get("a.png")


async def test_nested_keys_work(blob_store: BlobStore) -> None:
    await blob_store.put("2026/11/a.png", b"nested", content_type="image/png")
    assert await blob_store.get("2026/11/a.png") == b"nested"


@pytest.mark.parametrize("key", ESCAPING_KEYS, ids=repr)
async def test_keys_that_could_escape_are_refused(blob_store: BlobStore, key: str) -> None:
    with pytest.raises(InvalidBlobKeyError):
        await blob_store.put(key, b"x", content_type="image/png")
    with pytest.raises(InvalidBlobKeyError):
        await blob_store.get(key)
    with pytest.raises(InvalidBlobKeyError):
        await blob_store.delete(key)
    with pytest.raises(InvalidBlobKeyError):
        await blob_store.exists(key)
    assert await blob_store.list_blobs() == []


async def test_five_mebibyte_objects_round_trip(blob_store: BlobStore) -> None:
    data = os.urandom(5 * 1024 * 1024)
    await blob_store.put("big.png", data, content_type="image/png")
    assert await blob_store.get("big.png") == data


async def test_concurrent_puts_are_all_kept(blob_store: BlobStore) -> None:
    payloads = {f"img-{i}.png": os.urandom(64) + bytes([i % 256]) for i in range(100)}
    await asyncio.gather(*(blob_store.put(k, v, content_type="image/png") for k, v in payloads.items()))
    fetched = await asyncio.gather(*(blob_store.get(k) for k in payloads))
    assert dict(zip(payloads, fetched, strict=True)) == payloads


async def test_list_blobs_names_every_object_with_its_size(blob_store: BlobStore) -> None:
    await blob_store.put("a.png", b"12345", content_type="image/png")
    await blob_store.put("b.png", b"123", content_type="image/png")
    listed = {b.key: b.size_bytes for b in await blob_store.list_blobs()}
    assert listed == {"a.png": 5, "b.png": 3}


async def test_ping_answers(blob_store: BlobStore) -> None:
    await blob_store.ping()


async def test_presigned_url_is_absent_or_serves_the_exact_bytes(blob_store: BlobStore) -> None:
    data = os.urandom(2048)
    await blob_store.put("signed/a.png", data, content_type="image/png")
    url = await blob_store.presigned_url("signed/a.png", expires_s=60)
    if url is None:
        return  # a store without URLs of its own: the content route serves the bytes itself
    async with httpx.AsyncClient() as client:
        fetched = await client.get(url)
    assert fetched.status_code == 200
    assert fetched.content == data
    assert fetched.headers["content-type"] == "image/png"


@pytest.mark.parametrize("key", ESCAPING_KEYS, ids=repr)
async def test_presigned_url_refuses_keys_that_could_escape(blob_store: BlobStore, key: str) -> None:
    with pytest.raises(InvalidBlobKeyError):
        await blob_store.presigned_url(key, expires_s=60)


async def test_file_path_is_absent_or_a_relative_path_to_the_stored_file(blob_store: BlobStore) -> None:
    await blob_store.put("files/a.png", b"bytes", content_type="image/png")
    path = await blob_store.file_path("files/a.png")
    if path is None:
        return  # a store without local files: the content route serves the bytes itself
    assert path == "files/a.png"  # below the root as the key names it, as nginx's alias maps it
    with pytest.raises(BlobNotFoundError):
        await blob_store.file_path("files/missing.png")


@pytest.mark.parametrize("key", ESCAPING_KEYS, ids=repr)
async def test_file_path_refuses_keys_that_could_escape(blob_store: BlobStore, key: str) -> None:
    with pytest.raises(InvalidBlobKeyError):
        await blob_store.file_path(key)
