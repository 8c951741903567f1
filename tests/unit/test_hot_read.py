"""GET /image/{guid} and its content without per-request dependencies, response_model work or label
lookups (issue 17): the same bytes, headers, document and tenant isolation as before."""

from __future__ import annotations

from datetime import UTC, datetime
from uuid import uuid4

import httpx
import pytest
from dependency_injector import providers
from fastapi import FastAPI
from prometheus_client import Counter, Histogram

from pixyproxy.adapters.memory import InMemoryBlobStore, InMemoryImageRepository
from pixyproxy.domain.models import GenerationInfo, ImageDetail, ImageRecord
from pixyproxy.entrypoints.container import Container
from pixyproxy.entrypoints.http import routes
from pixyproxy.entrypoints.http.detail_bodies import DetailBodies
from pixyproxy.entrypoints.http.reused import Reused
from pixyproxy.entrypoints.metrics import MAX_REMEMBERED_SERIES, Metrics
from tests.unit.test_tenants import ADMIN, ALICE, BOB, KEYS, auth, client_for, generate


def a_record(**changes: object) -> ImageRecord:
    fields: dict[str, object] = {
        "id": 7,
        "guid": uuid4(),
        "prompt": 'a "quoted" prompt \\ with </script>, é, 中文 and \u2028',
        "filename": "x.png",
        "content_type": "image/png",
        "size_bytes": 1234,
        "sha256": "ab" * 32,
        "generation": GenerationInfo(generator="memory", model="m 1", latency_ms=1.5),
        "created_at": datetime(2026, 11, 28, 7, 14, 5, 123456, tzinfo=UTC),
        "updated_at": datetime(2026, 11, 28, 7, 14, 5, tzinfo=UTC),
        "owner": "alice",
    }
    return ImageRecord.model_validate({**fields, **changes})


async def response_model_answer(record: ImageRecord) -> httpx.Response:
    """What FastAPI answers for `response_model=ImageDetail` and the detail returned: the old route."""
    app = FastAPI()

    @app.get("/detail", response_model=ImageDetail)
    async def detail() -> ImageDetail:
        return ImageDetail.from_record(record)

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        return await client.get("/detail")


async def test_a_body_is_byte_for_byte_what_response_model_made() -> None:
    record = a_record()
    old = await response_model_answer(record)
    assert DetailBodies().body(record) == old.content


async def test_the_route_answers_the_same_bytes_and_headers_as_response_model_did(
    client: httpx.AsyncClient,
) -> None:
    created = (await client.post("/image", json={"prompt": "a red fox, é"})).json()
    response = await client.get(f"/image/{created['guid']}")
    assert response.status_code == 200
    detail = ImageDetail.model_validate(created)
    app = FastAPI()

    @app.get("/detail", response_model=ImageDetail)
    async def old_route() -> ImageDetail:
        return detail

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as other:
        old = await other.get("/detail")
    assert response.content == old.content
    assert response.headers["content-type"] == old.headers["content-type"] == "application/json"
    assert response.headers["content-length"] == old.headers["content-length"]


async def test_the_detail_route_is_still_documented_by_its_response_model(client: httpx.AsyncClient) -> None:
    operation = (await client.get("/openapi.json")).json()["paths"]["/image/{guid}"]["get"]
    schema = operation["responses"]["200"]["content"]["application/json"]["schema"]
    assert schema == {"$ref": "#/components/schemas/ImageDetail"}
    assert [p["name"] for p in operation["parameters"]] == ["guid"]
    content = (await client.get("/openapi.json")).json()["paths"]["/image/{guid}/content"]["get"]
    assert [p["name"] for p in content["parameters"]] == ["guid", "If-None-Match"]


def test_the_same_record_object_is_serialised_once_and_a_fresh_one_again() -> None:
    bodies = DetailBodies()
    record = a_record()
    first = bodies.body(record)
    assert bodies.body(record) is first
    assert bodies.detail(record) is bodies.detail(record)
    reread = a_record(guid=record.guid, owner="bob")  # the repository read it afresh, changed
    assert bodies.body(reread) is not first
    assert b'"owner":"bob"' in bodies.body(reread)


def test_bodies_kept_are_bounded() -> None:
    bodies = DetailBodies(max_entries=2)
    records = [a_record() for _ in range(3)]
    made = [bodies.body(r) for r in records]
    assert bodies.body(records[2]) is made[2]
    assert bodies.body(records[0]) is not made[0]  # the oldest was let go
    assert bodies.body(records[0]) == made[0]


async def test_a_kept_body_never_reaches_another_tenant(monkeypatch: pytest.MonkeyPatch) -> None:
    async with await client_for(
        monkeypatch, PIXYPROXY_API_KEYS=KEYS, PIXYPROXY_TENANT_ISOLATION="true"
    ) as isolated:
        image = await generate(isolated, ALICE, "alice's own")
        path = f"/image/{image['guid']}"
        for _ in range(2):  # the second read is answered from the kept body
            assert (await isolated.get(path, headers=auth(ALICE))).status_code == 200
            assert (await isolated.get(path, headers=auth(BOB))).status_code == 404
            assert (await isolated.get(path + "/content", headers=auth(BOB))).status_code == 404
        assert (await isolated.get(path, headers=auth(ADMIN))).json() == image
        assert (await isolated.get(path + "/content", headers=auth(ALICE))).status_code == 200


async def test_a_deleted_image_is_not_answered_from_its_kept_body(client: httpx.AsyncClient) -> None:
    created = (await client.post("/image", json={"prompt": "short-lived"})).json()
    path = f"/image/{created['guid']}"
    assert (await client.get(path)).status_code == 200
    assert (await client.get(path + "/content")).status_code == 200
    assert (await client.delete(path)).status_code == 204
    assert (await client.get(path)).status_code == 404
    assert (await client.get(path + "/content")).status_code == 404


def sample(metric: Counter | Histogram, suffix: str, **labels: str) -> float | None:
    registry_value = metric._name + suffix  # the series' own name
    for family in metric.collect():
        for s in family.samples:
            if s.name == registry_value and s.labels == labels:
                return s.value
    return None


def test_request_series_are_remembered_and_still_count_each_request() -> None:
    metrics = Metrics()

    class Route:
        path = "/image/{guid}"

    scope = {"method": "GET", "route": Route()}
    for _ in range(3):
        metrics.observe_request(scope, 200, 0.002, owner="alice")
    metrics.observe_request(scope, 404, 0.001, owner="alice")
    counted = {"method": "GET", "route": "/image/{guid}"}
    assert sample(metrics.requests, "_total", **counted, status="200") == 3
    assert sample(metrics.requests, "_total", **counted, status="404") == 1
    assert sample(metrics.request_latency, "_count", **counted) == 4
    assert sample(metrics.owner_requests, "_total", owner="alice", status="200") == 3
    for n in range(MAX_REMEMBERED_SERIES + 5):  # methods a client invents: forgotten, still counted
        metrics.observe_request({"method": f"M{n}", "route": Route()}, 405, 0.001, owner="alice")
    metrics.observe_request(scope, 200, 0.002, owner="alice")
    assert sample(metrics.requests, "_total", **counted, status="200") == 4
    assert sample(metrics.owner_requests, "_total", owner="alice", status="405") == MAX_REMEMBERED_SERIES + 5


def test_the_reused_service_follows_its_providers_overrides(container: Container) -> None:
    reused = Reused(container.image_service, container.repository, container.blob_store, container.generator)
    first = reused()
    assert reused() is first
    store = InMemoryBlobStore()
    with container.blob_store.override(store):
        overridden = reused()
        assert overridden is not first
        assert overridden._blob_store is container.blob_store()  # what it was made with
    assert reused()._blob_store is not store
    with container.image_service.override(providers.Object(first)):
        assert reused() is first


async def test_a_read_sees_a_repository_overridden_after_the_first_read(
    client: httpx.AsyncClient, container: Container
) -> None:
    created = (await client.post("/image", json={"prompt": "before the override"})).json()
    assert (await client.get(f"/image/{created['guid']}")).status_code == 200
    with container.repository.override(InMemoryImageRepository()):
        assert (await client.get(f"/image/{created['guid']}")).status_code == 404
        assert (await client.get(f"/image/{created['guid']}/content")).status_code == 404
    assert (await client.get(f"/image/{created['guid']}")).status_code == 200


async def test_hot_reads_are_tried_first_and_documented_where_they_were_declared(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    # Starlette tries routes in order: the content and detail reads come first (make bench 2-offload)
    # while the OpenAPI document keeps the order a reader expects, generation first.
    tried = [(route.path, sorted(route.methods or ())) for route in routes.router.routes[:3]]  # type: ignore[attr-defined]
    assert tried == [
        ("/image/{guid}/content", ["GET"]),
        ("/image/{guid}", ["GET"]),
        ("/image/{guid}/content", ["HEAD"]),
    ]
    paths = list((await client.get("/openapi.json")).json()["paths"])
    assert paths[:4] == ["/image", "/image/{guid}", "/image/{guid}/content", "/image/{guid}/thumbnail"]
    assert paths.index("/jobs") > paths.index("/image/{guid}/thumbnail")


async def test_if_none_match_is_read_and_documented_on_get_and_head_content(
    client: httpx.AsyncClient,
) -> None:
    detail = (await client.post("/image", json={"prompt": "a fox"})).json()
    url = f"/image/{detail['guid']}/content"
    etag = (await client.get(url)).headers["etag"]
    for method in ("GET", "HEAD"):
        assert (await client.request(method, url, headers={"If-None-Match": etag})).status_code == 304
        assert (await client.request(method, url, headers={"If-None-Match": '"other"'})).status_code == 200
    document = (await client.get("/openapi.json")).json()["paths"]["/image/{guid}/content"]
    for operation in ("get", "head"):
        headers = [p["name"] for p in document[operation]["parameters"] if p["in"] == "header"]
        assert headers == ["If-None-Match"]
