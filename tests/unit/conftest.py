"""Fixtures for the HTTP tests: the real app and container, bound to in-memory fakes."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI

from pixyproxy.entrypoints.container import Container, build_container
from pixyproxy.entrypoints.http.app import create_app


@pytest.fixture
def container(monkeypatch: pytest.MonkeyPatch) -> Container:
    """The production container, configured through the environment for in-memory adapters."""
    monkeypatch.setenv("PIXYPROXY_REPOSITORY", "memory")
    monkeypatch.setenv("PIXYPROXY_BLOB_STORE", "memory")
    monkeypatch.setenv("PIXYPROXY_GENERATOR", "memory")
    return build_container()


@pytest.fixture
def app(container: Container) -> FastAPI:
    return create_app(container)


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        yield client
