"""Fixtures shared by every test package: the OpenAI-compatible fake upstream."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.fake_openai import FakeOpenAI, running_fake_openai


@pytest.fixture(scope="session")
def fake_openai() -> Iterator[FakeOpenAI]:
    """The OpenAI-compatible fake server, in a subprocess, for the whole session."""
    with running_fake_openai() as fake:
        yield fake


@pytest.fixture
def upstream(fake_openai: FakeOpenAI) -> FakeOpenAI:
    """The fake, reset to fast normal answers and zero counts for one test."""
    fake_openai.reset()
    return fake_openai
