"""Fixtures shared by every test package: the fake OpenAI upstream, an S3 server, fake AWS credentials."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.fake_openai import FakeOpenAI, running_fake_openai
from tests.support.moto_server import FAKE_AWS_ENV, MotoServer, moto_server


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


@pytest.fixture
def fake_aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fake AWS credentials and region in the environment for one test, and no real ones to find."""
    for name, value in FAKE_AWS_ENV.items():
        monkeypatch.setenv(name, value)


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    """One moto S3 server process for the session, with fake AWS credentials in the environment."""
    with pytest.MonkeyPatch.context() as patch:
        for name, value in FAKE_AWS_ENV.items():
            patch.setenv(name, value)
        with moto_server(tmp_path_factory.mktemp("moto") / "moto.log") as server:
            yield server
