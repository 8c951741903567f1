"""The MySQL repository's two search plans (a bounded newest-first walk, then FULLTEXT) give the same pages.

A search first walks newest first testing each term as a whole token, within a budget of rows
examined; a walk that runs out of budget falls back to the FULLTEXT index. Small budgets force the
fallback, a large one lets the walk answer alone, and 0 asks FULLTEXT alone: every one must page
through exactly what the in-memory repository (the reference) does.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any
from uuid import UUID

import pytest

from pixyproxy.adapters.memory import InMemoryImageRepository
from pixyproxy.adapters.mysql import MySqlImageRepository
from pixyproxy.domain import search
from pixyproxy.domain.models import ImageFilter, NewImage, PageKey
from pixyproxy.ports import ImageRepository
from tests.support.builders import BASE_TIME, new_image
from tests.support.mysql import fresh_mysql_repository

pytestmark = pytest.mark.mysql


def _images() -> list[NewImage]:
    """60 images: `fox` in half, `narwhal` in 3, `red` in a third, `foxes` (not `fox`) in some."""
    images = []
    for i in range(60):
        words = ["fox" if i % 2 else "foxes", "red" if i % 3 == 0 else "blue"]
        if i in (4, 31, 57):
            words.append("narwhal")
        image = new_image(prompt=" ".join(words) + f" number {i}", offset_us=i // 2)  # pairs share a time
        generator = "openai" if i % 4 < 2 else "procedural"
        generation = image.generation.model_copy(update={"generator": generator})
        image = image.model_copy(update={"generation": generation, "owner": "alice" if i % 5 else "bob"})
        images.append(image)
    return images


def _words(query: str, **rest: Any) -> ImageFilter:
    return ImageFilter(words=search.query_terms(query), **rest)


CASES = {
    "common": _words("fox"),
    "rare": _words("narwhal"),
    "two-terms": _words("red fox"),
    "two-terms-rare": _words("narwhal red"),
    "none": _words("fo"),
    "whole-token": _words("foxes"),
    "with-generator": _words("fox", generator="openai"),
    "with-owner": _words("fox red", owner="alice"),
    "with-model": _words("fox", model="memory-fake"),
    "with-times": _words(
        "fox",
        created_after=BASE_TIME + timedelta(microseconds=3),
        created_before=BASE_TIME + timedelta(microseconds=25),
    ),
    "rare-with-owner": _words("narwhal", owner="bob"),
}


async def _pages(repository: ImageRepository, filters: ImageFilter, *, limit: int) -> list[list[UUID]]:
    pages: list[list[UUID]] = []
    after: PageKey | None = None
    while True:
        page = await repository.list_page(limit=limit, after=after, filters=filters)
        pages.append([record.guid for record in page])
        if len(page) < limit:
            return pages
        after = PageKey(created_at=page[-1].created_at, guid=page[-1].guid)


def _record_statements(repository: MySqlImageRepository, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every statement the repository sends from now on."""
    statements: list[str] = []
    run = repository._run

    class Recording:
        def __init__(self, cursor: Any) -> None:
            self._cursor = cursor

        async def execute(self, sql: str, params: Any = None) -> Any:
            statements.append(sql)
            return await self._cursor.execute(sql, params)

        def __getattr__(self, name: str) -> Any:
            return getattr(self._cursor, name)

    async def recording_run(operation: Callable[[Any], Awaitable[Any]], *, retry_lost: bool) -> Any:
        return await run(lambda cursor: operation(Recording(cursor)), retry_lost=retry_lost)

    monkeypatch.setattr(repository, "_run", recording_run)
    return statements


@pytest.mark.parametrize("budget", [0, 1, 5, 20, 100_000], ids=lambda b: f"walk-{b}")
async def test_both_plans_page_like_the_reference(budget: int, monkeypatch: pytest.MonkeyPatch) -> None:
    images = _images()
    reference = InMemoryImageRepository()
    async with fresh_mysql_repository(search_walk_rows=budget) as mysql:
        for image in images:
            await reference.add(image)
            await mysql.add(image)
        statements = _record_statements(mysql, monkeypatch)
        for name, filters in CASES.items():
            for limit in (1, 4, 100):
                expected = await _pages(reference, filters, limit=limit)
                assert await _pages(mysql, filters, limit=limit) == expected, (name, limit)
        walked = [sql for sql in statements if "ROWS EXAMINED" in sql]
        full_text = [sql for sql in statements if "MATCH" in sql]
        if budget == 0:
            assert full_text
            assert not walked
        elif budget >= len(images):
            assert walked
            assert not full_text
        else:
            assert walked
            assert full_text


async def test_a_walk_that_ends_within_budget_is_the_whole_answer(monkeypatch: pytest.MonkeyPatch) -> None:
    async with fresh_mysql_repository(search_walk_rows=1_000) as mysql:
        for image in _images():
            await mysql.add(image)
        statements = _record_statements(mysql, monkeypatch)
        page = await mysql.list_page(limit=100, filters=_words("narwhal"))
        assert len(page) == 3
        assert statements[0].count("LIKE") == 1
        assert "ROWS EXAMINED" in statements[0]
        assert not any("MATCH" in sql for sql in statements)


async def test_a_walk_out_of_budget_asks_the_full_text_index(monkeypatch: pytest.MonkeyPatch) -> None:
    async with fresh_mysql_repository(search_walk_rows=5) as mysql:
        for image in _images():
            await mysql.add(image)
        statements = _record_statements(mysql, monkeypatch)
        page = await mysql.list_page(limit=100, filters=_words("narwhal"))
        assert len(page) == 3
        # The walk stops with a warning (read in order) or an aborted sort (sorted); then FULLTEXT.
        assert "ROWS EXAMINED" in statements[0]
        assert "MATCH" in statements[-1]
        assert statements[1:-1] in ([], ["SHOW WARNINGS"])
