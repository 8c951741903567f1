"""The jobs API over ASGI, on the in-memory adapters: Prefer, /jobs, cancel, and their problems."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any
from uuid import uuid4

import httpx
import pytest

from pixyproxy.adapters.memory import InMemoryImageGenerator
from pixyproxy.entrypoints.container import Container
from tests.unit.test_http import assert_problem

ASYNC = {"Prefer": "respond-async"}


@pytest.fixture
def generator(container: Container) -> InMemoryImageGenerator:
    """The fake every job of the test uses; tests set its delay or failure."""
    fake = InMemoryImageGenerator()
    container.generator.override(fake)
    return fake


@pytest.fixture
async def consumer(container: Container, generator: InMemoryImageGenerator) -> AsyncIterator[None]:
    """The in-process consumers the lifespan runs in `pixyproxy serve` (ASGITransport has no lifespan)."""
    task = asyncio.create_task(container.job_queue().consume(container.job_service().run_job, concurrency=4))
    yield
    task.cancel()


async def _finished(client: httpx.AsyncClient, location: str) -> dict[str, Any]:
    async with asyncio.timeout(5):
        while True:
            response = await client.get(location)
            assert response.status_code == 200, response.text
            if response.json()["status"] in {"succeeded", "failed", "canceled"}:
                assert "retry-after" not in response.headers
                job: dict[str, Any] = response.json()
                return job
            assert response.headers["retry-after"] == "1"
            await asyncio.sleep(0.02)


async def test_respond_async_is_202_with_a_job_to_poll(client: httpx.AsyncClient, consumer: None) -> None:
    accepted = await client.post("/image", json={"prompt": "a fox"}, headers=ASYNC)
    assert accepted.status_code == 202, accepted.text
    job = accepted.json()
    assert accepted.headers["location"] == f"/jobs/{job['id']}"
    assert accepted.headers["preference-applied"] == "respond-async"
    assert accepted.headers["retry-after"] == "1"
    assert job["status"] in {"queued", "running"}
    assert job["image"] is None
    assert job["error"] is None
    done = await _finished(client, accepted.headers["location"])
    assert done["status"] == "succeeded"
    assert done["attempts"] == 1
    image = await client.get(f"/image/{done['image']['guid']}")
    assert image.status_code == 200


async def test_wait_returns_the_image_when_it_is_ready_in_time(
    client: httpx.AsyncClient, consumer: None
) -> None:
    created = await client.post("/image", json={"prompt": "quick"}, headers={"Prefer": "wait=5"})
    assert created.status_code == 201, created.text
    assert created.headers["location"] == f"/image/{created.json()['guid']}"
    assert created.headers["preference-applied"] == "wait=5"


async def test_wait_answers_202_when_the_job_outlasts_it(
    client: httpx.AsyncClient, generator: InMemoryImageGenerator, consumer: None
) -> None:
    generator.delay_s = 3
    accepted = await client.post("/image", json={"prompt": "slow"}, headers={"Prefer": "wait=1"})
    assert accepted.status_code == 202, accepted.text
    assert accepted.headers["location"].startswith("/jobs/")


@pytest.mark.parametrize("prefer", ["wait=0", "wait=61", "wait=soon"])
async def test_a_bad_wait_is_422(client: httpx.AsyncClient, prefer: str) -> None:
    body = assert_problem(await client.post("/image", json={"prompt": "x"}, headers={"Prefer": prefer}), 422)
    assert "wait" in body["detail"]


async def test_a_failed_job_carries_its_problem(
    client: httpx.AsyncClient, generator: InMemoryImageGenerator, consumer: None
) -> None:
    from pixyproxy.domain.exceptions import PromptRejectedError

    generator.fail_with = PromptRejectedError("content policy")
    accepted = await client.post("/image", json={"prompt": "forbidden"}, headers=ASYNC)
    done = await _finished(client, accepted.headers["location"])
    assert done["status"] == "failed"
    assert done["error"]["status"] == 422
    assert done["error"]["type"].endswith("/prompt-rejected")
    assert done["error"]["instance"] == accepted.headers["location"]


async def test_cancel_a_queued_job(client: httpx.AsyncClient) -> None:
    accepted = await client.post("/image", json={"prompt": "never"}, headers=ASYNC)
    location = accepted.headers["location"]
    canceled = await client.post(f"{location}/cancel")
    assert canceled.status_code == 200
    assert canceled.json()["status"] == "canceled"
    assert canceled.json()["finished_at"] is not None
    again = await client.post(f"{location}/cancel")
    assert again.json()["status"] == "canceled"


async def test_cancel_a_running_job(
    client: httpx.AsyncClient, generator: InMemoryImageGenerator, consumer: None
) -> None:
    generator.delay_s = 30
    accepted = await client.post("/image", json={"prompt": "slow"}, headers=ASYNC)
    location = accepted.headers["location"]
    async with asyncio.timeout(5):
        while (await client.get(location)).json()["status"] != "running":
            await asyncio.sleep(0.02)
    answer = await client.post(f"{location}/cancel")
    assert answer.json()["status"] in {"running", "canceled"}
    done = await _finished(client, location)
    assert done["status"] == "canceled"
    assert (await client.get("/image")).json() == []


async def test_jobs_are_listed_newest_first_with_status_and_link(
    client: httpx.AsyncClient, consumer: None
) -> None:
    for n in range(3):
        assert (await client.post("/image", json={"prompt": f"p{n}"})).status_code == 201
    first = await client.get("/jobs", params={"limit": 2})
    assert [j["prompt"] for j in first.json()] == ["p2", "p1"]
    next_url = first.headers["link"].split(";")[0].strip("<>")
    second = await client.get(next_url)
    assert [j["prompt"] for j in second.json()] == ["p0"]
    assert "link" not in second.headers
    succeeded = await client.get("/jobs", params={"status": "succeeded"})
    assert len(succeeded.json()) == 3
    assert (await client.get("/jobs", params={"status": "queued"})).json() == []
    assert_problem(await client.get("/jobs", params={"status": "done"}), 422)


async def test_unknown_and_malformed_job_ids(client: httpx.AsyncClient) -> None:
    body = assert_problem(await client.get(f"/jobs/{uuid4()}"), 404)
    assert body["type"].endswith("/job-not-found")
    assert_problem(await client.get("/jobs/not-a-uuid"), 422)
    assert_problem(await client.post(f"/jobs/{uuid4()}/cancel"), 404)


async def test_idempotent_async_replay_is_the_same_job(client: httpx.AsyncClient, consumer: None) -> None:
    headers = {**ASYNC, "Idempotency-Key": "async-1"}
    first = await client.post("/image", json={"prompt": "once"}, headers=headers)
    await _finished(client, first.headers["location"])
    replay = await client.post("/image", json={"prompt": "once"}, headers=headers)
    assert replay.status_code == 200
    assert replay.json()["id"] == first.json()["id"]
    conflict = await client.post("/image", json={"prompt": "other"}, headers=headers)
    assert_problem(conflict, 409)


async def test_a_synchronous_post_is_listed_as_a_job(client: httpx.AsyncClient) -> None:
    created = await client.post("/image", json={"prompt": "sync"})
    [job] = (await client.get("/jobs")).json()
    assert job["status"] == "succeeded"
    assert job["image"]["guid"] == created.json()["guid"]


async def test_openapi_describes_the_jobs_api(client: httpx.AsyncClient) -> None:
    spec = (await client.get("/openapi.json")).json()
    post = spec["paths"]["/image"]["post"]
    assert {"201", "202", "409", "422", "503"} <= set(post["responses"])
    assert any(p["name"] == "Prefer" for p in post["parameters"])
    assert {"200", "404", "422"} <= set(spec["paths"]["/jobs/{job_id}"]["get"]["responses"])
    assert "/jobs" in spec["paths"]
    assert "/jobs/{job_id}/cancel" in spec["paths"]
