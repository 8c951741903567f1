"""Databases made before search existed: their images become searchable and filterable on upgrade."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from pixyproxy.adapters.mysql import SCHEMA_VERSION, MySqlImageRepository, init_schema
from pixyproxy.adapters.sqlite import ROWS, SqliteImageRepository
from pixyproxy.domain import search
from pixyproxy.domain.models import ImageFilter
from tests.support.builders import new_image
from tests.support.mysql import admin_connection, fresh_database_url

OLD_SQLITE_IMAGES = """CREATE TABLE images (
    id INTEGER PRIMARY KEY AUTOINCREMENT, guid TEXT NOT NULL UNIQUE, prompt TEXT NOT NULL,
    filename TEXT NOT NULL, content_type TEXT NOT NULL, size_bytes INTEGER NOT NULL,
    sha256 TEXT NOT NULL, generation TEXT NOT NULL, created_at TEXT NOT NULL, updated_at TEXT NOT NULL
)"""
OLD_INSERT_SQLITE = (
    "INSERT INTO images (guid, prompt, filename, content_type, size_bytes, sha256, generation, created_at,"
    " updated_at) VALUES (:guid, :prompt, :filename, :content_type, :size_bytes, :sha256, :generation,"
    " :created_at, :updated_at)"
)


async def test_an_old_sqlite_file_is_indexed_on_first_open(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    old = [new_image(prompt="赤い狐 in the snow"), new_image(prompt="Un café", offset_us=1)]
    with sqlite3.connect(path) as db:
        db.execute(OLD_SQLITE_IMAGES)
        for image in old:
            db.execute(OLD_INSERT_SQLITE, ROWS.image_to_row(image))
    repository = SqliteImageRepository(path)
    try:
        found = await repository.list_page(limit=10, filters=ImageFilter(words=search.query_terms("狐")))
        assert [r.guid for r in found] == [old[0].guid]
        found = await repository.list_page(limit=10, filters=ImageFilter(words=search.query_terms("CAFE")))
        assert [r.guid for r in found] == [old[1].guid]
        by_generator = await repository.list_page(limit=10, filters=ImageFilter(generator="memory"))
        assert {r.guid for r in by_generator} == {i.guid for i in old}
        # New records are indexed beside them, and a deleted one leaves the index.
        newer = new_image(prompt="another 狐", offset_us=2)
        await repository.add(newer)
        assert await repository.delete(old[0].guid)
        found = await repository.list_page(limit=10, filters=ImageFilter(words=search.query_terms("狐")))
        assert [r.guid for r in found] == [newer.guid]
    finally:
        await repository.close()
    # A second open finds the work done and changes nothing.
    again = SqliteImageRepository(path)
    try:
        assert len(await again.list_page(limit=10, filters=ImageFilter(words=search.query_terms("狐")))) == 1
    finally:
        await again.close()


@pytest.mark.mysql
async def test_schema_version_4_fills_the_search_columns_of_existing_images() -> None:
    with fresh_database_url() as url:
        await init_schema(url)
        database = url.rsplit("/", 1)[1]
        old = [new_image(prompt="แมวสีดำนอนบนโซฟา"), new_image(prompt="Die Straße", offset_us=1)]
        repository = MySqlImageRepository(url)
        try:
            for image in old:
                await repository.add(image)
            # As a version-3 database had them: no search columns filled, version 4 not applied.
            with admin_connection(database) as admin, admin.cursor() as cursor:
                cursor.execute("UPDATE images SET generator = NULL, model = NULL, search_words = NULL")
                cursor.execute("DELETE FROM schema_version WHERE version = 4")
            assert await repository.list_page(limit=10, filters=ImageFilter(generator="memory")) == []
            assert await init_schema(url) == SCHEMA_VERSION  # and the fill runs on every set-up
            thai = await repository.list_page(limit=10, filters=ImageFilter(words=search.query_terms("แมว")))
            assert [r.guid for r in thai] == [old[0].guid]
            german = await repository.list_page(
                limit=10, filters=ImageFilter(words=search.query_terms("STRASSE"), model="memory-fake")
            )
            assert [r.guid for r in german] == [old[1].guid]
        finally:
            await repository.close()
