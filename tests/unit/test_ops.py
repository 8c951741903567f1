"""Health probes, metrics and API-key authentication."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from pixyproxy.adapters.memory import InMemoryBlobStore, InMemoryImageRepository
from pixyproxy.domain.exceptions import BlobStoreUnavailableError
from pixyproxy.entrypoints.container import Container, build_container
from pixyproxy.entrypoints.http.app import create_app
from pixyproxy.entrypoints.metrics import SHARED_DIR_ENV, shared_between_workers
from tests.unit.test_http import assert_problem


async def test_healthz_answers_without_io(client: httpx.AsyncClient) -> None:
    response = await client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def test_readyz_lists_each_check(client: httpx.AsyncClient) -> None:
    response = await client.get("/readyz")
    assert response.status_code == 200
    body = response.json()
    assert body["ready"] is True
    assert {c["name"] for c in body["checks"]} == {"repository", "blob_store"}


async def test_readyz_is_503_when_a_dependency_is_down(
    client: httpx.AsyncClient, container: Container
) -> None:
    class DownStore(InMemoryBlobStore):
        async def ping(self) -> None:
            raise BlobStoreUnavailableError("bucket gone at s3.internal")

    with container.blob_store.override(DownStore()):
        response = await client.get("/readyz")
    assert response.status_code == 503
    checks = {c["name"]: c for c in response.json()["checks"]}
    assert checks["blob_store"]["ok"] is False
    assert checks["repository"]["ok"] is True
    assert "s3.internal" not in response.text


async def test_metrics_count_requests_generations_and_bytes(client: httpx.AsyncClient) -> None:
    created = (await client.post("/image", json={"prompt": "a fox"})).json()
    await client.get(f"/image/{created['guid']}")
    await client.get("/image/not-a-guid")
    text = (await client.get("/metrics")).text
    assert 'pixyproxy_http_requests_total{method="POST",route="/image",status="201"} 1.0' in text
    assert 'pixyproxy_http_requests_total{method="GET",route="/image/{guid}",status="200"} 1.0' in text
    assert 'pixyproxy_http_requests_total{method="GET",route="/image/{guid}",status="422"} 1.0' in text
    assert 'pixyproxy_generations_total{generator="memory",outcome="ok"} 1.0' in text
    assert f"pixyproxy_blob_bytes_stored_total {float(created['size_bytes'])}" in text
    assert "pixyproxy_generations_in_flight 0.0" in text
    assert "pixyproxy_generation_duration_seconds_count" in text


@pytest.fixture
async def keyed_client(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[httpx.AsyncClient]:
    monkeypatch.setenv("PIXYPROXY_REPOSITORY", "memory")
    monkeypatch.setenv("PIXYPROXY_BLOB_STORE", "memory")
    monkeypatch.setenv("PIXYPROXY_GENERATOR", "memory")
    monkeypatch.setenv("PIXYPROXY_API_KEYS", "key-one-secret, key-two-secret")
    app = create_app(build_container())
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        yield client


@pytest.mark.parametrize(
    "authorization",
    [None, "", "Bearer", "Bearer ", "Basic a2V5LW9uZS1zZWNyZXQ=", "Bearer wrong", "Bearer key-one-secre"],
)
async def test_without_a_valid_key_every_endpoint_is_401(
    keyed_client: httpx.AsyncClient, authorization: str | None
) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}
    for method, path in [
        ("GET", "/image"),
        ("POST", "/image"),
        ("GET", "/metrics"),
        ("GET", "/openapi.json"),
    ]:
        response = await keyed_client.request(method, path, headers=headers, json={"prompt": "x"})
        assert_problem(response, 401)
        assert response.headers["www-authenticate"].startswith("Bearer")
        assert "key-one-secret" not in response.text


async def test_any_configured_key_is_accepted(keyed_client: httpx.AsyncClient) -> None:
    for key in ("key-one-secret", "key-two-secret"):
        response = await keyed_client.post(
            "/image", json={"prompt": "a fox"}, headers={"Authorization": f"Bearer {key}"}
        )
        assert response.status_code == 201


async def test_health_probes_need_no_key(keyed_client: httpx.AsyncClient) -> None:
    assert (await keyed_client.get("/healthz")).status_code == 200
    assert (await keyed_client.get("/readyz")).status_code == 200


async def test_keys_never_reach_the_log(
    keyed_client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    await keyed_client.get("/image", headers={"Authorization": "Bearer key-one-secret"})
    await keyed_client.get("/image", headers={"Authorization": "Bearer guessed-key"})
    assert "key-one-secret" not in caplog.text
    assert "guessed-key" not in caplog.text


async def test_memory_repository_binding_is_shared_per_container(container: Container) -> None:
    assert container.repository() is container.repository()
    assert isinstance(container.selected_repository(), InMemoryImageRepository)


def test_one_worker_keeps_its_metrics_in_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(SHARED_DIR_ENV, raising=False)
    with shared_between_workers(1):
        assert SHARED_DIR_ENV not in os.environ


def test_several_workers_share_a_fresh_directory_removed_afterwards(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(SHARED_DIR_ENV, raising=False)
    with shared_between_workers(2):
        shared_dir = Path(os.environ[SHARED_DIR_ENV])
        assert shared_dir.is_dir()
        assert list(shared_dir.iterdir()) == []
        (shared_dir / "counter_123.db").write_bytes(b"x")
    assert SHARED_DIR_ENV not in os.environ
    assert not shared_dir.exists()


def test_an_operators_metrics_directory_is_used_and_kept(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv(SHARED_DIR_ENV, str(tmp_path))
    with shared_between_workers(4):
        assert os.environ[SHARED_DIR_ENV] == str(tmp_path)
    assert os.environ[SHARED_DIR_ENV] == str(tmp_path)
    assert tmp_path.is_dir()
