"""Quotas over ASGI with in-memory adapters and memory:// storage: 429s, headers, all-or-nothing."""

from __future__ import annotations

import re

import pytest

from pixyproxy.domain.exceptions import ConfigurationError
from pixyproxy.entrypoints.container import build_container
from tests.unit.test_tenants import ALICE, BOB, KEYS, auth, client_for

POLICY = re.compile(r'^"[a-z]+-\d+[a-z]+";q=\d+;w=\d+(, "[a-z]+-\d+[a-z]+";q=\d+;w=\d+)*$')


def windows(header: str) -> dict[str, tuple[int, int]]:
    """{policy name: (remaining, seconds)} of a RateLimit header."""
    found = re.findall(r'"([^"]+)";r=(\d+);t=(\d+)', header)
    return {name: (int(r), int(t)) for name, r, t in found}


async def test_the_generation_quota_refuses_with_a_problem_and_headers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with await client_for(
        monkeypatch, PIXYPROXY_API_KEYS=KEYS, PIXYPROXY_GENERATION_RATE="2/minute"
    ) as c:
        for left in (1, 0):
            made = await c.post("/image", json={"prompt": "fox"}, headers=auth(ALICE))
            assert made.status_code == 201
            assert made.headers["ratelimit-policy"] == '"generations-1minute";q=2;w=60'
            assert windows(made.headers["ratelimit"])["generations-1minute"][0] == left
        refused = await c.post("/image", json={"prompt": "fox"}, headers=auth(ALICE))
        assert refused.status_code == 429
        assert refused.headers["content-type"] == "application/problem+json"
        problem = refused.json()
        assert problem["type"].endswith("rate-limited")
        assert problem["status"] == 429
        assert 1 <= int(refused.headers["retry-after"]) <= 60
        assert windows(refused.headers["ratelimit"])["generations-1minute"][0] == 0
        assert ALICE not in refused.text
        # Nothing made, nothing queued for the refused request; another owner is unaffected.
        assert len((await c.get("/image", headers=auth(ALICE))).json()) == 2
        assert len((await c.get("/jobs", headers=auth(ALICE))).json()) == 2
        assert (await c.post("/image", json={"prompt": "fox"}, headers=auth(BOB))).status_code == 201
        # Reads are not generations: still answered, with the headers.
        listing = await c.get("/image", headers=auth(ALICE))
        assert listing.status_code == 200
        assert "ratelimit" in listing.headers


async def test_a_request_for_more_images_than_are_left_is_refused_whole(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with await client_for(
        monkeypatch, PIXYPROXY_API_KEYS=KEYS, PIXYPROXY_GENERATION_RATE="5/minute"
    ) as c:
        first = await c.post("/v1/images/generations", json={"prompt": "foxes", "n": 4}, headers=auth(ALICE))
        assert first.status_code == 200
        assert len(first.json()["data"]) == 4
        refused = await c.post(
            "/v1/images/generations", json={"prompt": "foxes", "n": 4}, headers=auth(ALICE)
        )
        assert refused.status_code == 429
        error = refused.json()["error"]
        assert error["code"] == "rate_limit_exceeded"
        assert error["type"] == "requests"
        assert int(refused.headers["retry-after"]) >= 1
        assert len((await c.get("/image", headers=auth(ALICE))).json()) == 4  # nothing of the 4 made
        assert len((await c.get("/jobs", headers=auth(ALICE))).json()) == 4
        # The one left is still there to spend.
        one = await c.post("/v1/images/generations", json={"prompt": "fox", "n": 1}, headers=auth(ALICE))
        assert one.status_code == 200
        assert windows(one.headers["ratelimit"])["generations-1minute"][0] == 0


async def test_the_async_route_spends_the_quota_too(monkeypatch: pytest.MonkeyPatch) -> None:
    async with await client_for(monkeypatch, PIXYPROXY_GENERATION_RATE="1/minute") as c:
        accepted = await c.post("/image", json={"prompt": "fox"}, headers={"Prefer": "respond-async"})
        assert accepted.status_code == 202
        refused = await c.post("/image", json={"prompt": "fox"}, headers={"Prefer": "respond-async"})
        assert refused.status_code == 429
        assert len((await c.get("/jobs")).json()) == 1


async def test_the_request_quota_counts_every_request_per_owner(monkeypatch: pytest.MonkeyPatch) -> None:
    async with await client_for(monkeypatch, PIXYPROXY_API_KEYS=KEYS, PIXYPROXY_REQUEST_RATE="3/minute") as c:
        answers = [await c.get("/image", headers=auth(ALICE)) for _ in range(3)]
        assert [a.status_code for a in answers] == [200, 200, 200]
        assert [windows(a.headers["ratelimit"])["requests-1minute"][0] for a in answers] == [2, 1, 0]
        assert answers[0].headers["ratelimit-policy"] == '"requests-1minute";q=3;w=60'
        refused = await c.get("/jobs", headers=auth(ALICE))
        assert refused.status_code == 429
        assert refused.json()["type"].endswith("rate-limited")
        assert "retry-after" in refused.headers
        v1 = await c.get("/v1/models", headers=auth(ALICE))
        assert v1.status_code == 429
        assert v1.json()["error"]["code"] == "rate_limit_exceeded"
        assert (await c.get("/image", headers=auth(BOB))).status_code == 200
        # The health probes are never counted nor refused.
        assert (await c.get("/healthz")).status_code == 200


async def test_both_quotas_are_reported_together(monkeypatch: pytest.MonkeyPatch) -> None:
    async with await client_for(
        monkeypatch, PIXYPROXY_REQUEST_RATE="100/minute", PIXYPROXY_GENERATION_RATE="20/minute;500/day"
    ) as c:
        made = await c.post("/image", json={"prompt": "fox"})
        assert POLICY.match(made.headers["ratelimit-policy"])
        assert windows(made.headers["ratelimit"]) == {
            "requests-1minute": (99, 60),
            "generations-1minute": (19, 60),
            "generations-1day": (499, 86400),
        }


async def test_without_quotas_there_are_no_headers(monkeypatch: pytest.MonkeyPatch) -> None:
    async with await client_for(monkeypatch) as c:
        answer = await c.get("/image")
        assert "ratelimit" not in answer.headers
        assert "ratelimit-policy" not in answer.headers


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("PIXYPROXY_GENERATION_RATE", "lots"),
        ("PIXYPROXY_REQUEST_RATE", "0/minute"),
        ("PIXYPROXY_RATE_LIMIT_STORAGE", "postgres://x"),
        ("PIXYPROXY_RATE_LIMIT_ON_ERROR", "maybe"),
    ],
)
def test_bad_quota_settings_stop_start_up(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigurationError) as caught:
        build_container().settings()
    assert name in str(caught.value)


DOWN_REDIS = "redis://127.0.0.1:9/0"  # port 9 (discard) refuses connections on loopback: Redis down


async def test_a_quota_storage_outage_fails_open_by_default_and_says_so(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with await client_for(
        monkeypatch,
        PIXYPROXY_API_KEYS=KEYS,
        PIXYPROXY_GENERATION_RATE="1/minute",
        PIXYPROXY_REQUEST_RATE="1/minute",
        PIXYPROXY_RATE_LIMIT_STORAGE=DOWN_REDIS,
    ) as c:
        for _ in range(3):  # far past both quotas: nothing can be counted, so nothing is refused
            made = await c.post("/image", json={"prompt": "fox"}, headers=auth(ALICE))
            assert made.status_code == 201, made.text
            assert "ratelimit" not in made.headers  # no window can be read: none is claimed
        ready = await c.get("/readyz")
        assert ready.status_code == 200  # serving on, as configured
        body = ready.json()
        assert body["ready"] is True
        assert body["degraded"] is True
        quota = next(check for check in body["checks"] if check["name"] == "quota_storage")
        assert quota["ok"] is False
        assert quota["degraded"] is True
        assert "PIXYPROXY_RATE_LIMIT_ON_ERROR=allow" in quota["detail"]
        assert "127.0.0.1:9" not in ready.text
        text = (await c.get("/metrics", headers=auth(ALICE))).text
        # 3 generation takes, and 4 request takes (the /metrics request included).
        assert 'pixyproxy_quota_storage_errors_total{decision="allowed",quota="generations"} 3.0' in text
        assert 'pixyproxy_quota_storage_errors_total{decision="allowed",quota="requests"} 4.0' in text


async def test_a_quota_storage_outage_with_deny_refuses_with_503_and_makes_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with await client_for(
        monkeypatch,
        PIXYPROXY_API_KEYS=KEYS,
        PIXYPROXY_GENERATION_RATE="5/minute",
        PIXYPROXY_RATE_LIMIT_STORAGE=DOWN_REDIS,
        PIXYPROXY_RATE_LIMIT_ON_ERROR="deny",
    ) as c:
        refused = await c.post("/image", json={"prompt": "fox"}, headers=auth(ALICE))
        assert refused.status_code == 503
        assert refused.json()["type"].endswith("quota-unavailable")
        assert int(refused.headers["retry-after"]) >= 1
        v1 = await c.post("/v1/images/generations", json={"prompt": "fox"}, headers=auth(ALICE))
        assert v1.status_code == 503
        assert "error" in v1.json()
        assert (await c.get("/image", headers=auth(ALICE))).json() == []  # nothing made
        assert (await c.get("/jobs", headers=auth(ALICE))).json() == []  # nothing queued
        ready = await c.get("/readyz")
        assert ready.status_code == 503  # failing closed: this node cannot serve generations
        assert ready.json()["degraded"] is False
        text = (await c.get("/metrics", headers=auth(ALICE))).text
        assert 'pixyproxy_quota_storage_errors_total{decision="refused",quota="generations"} 2.0' in text


async def test_a_request_quota_outage_with_deny_refuses_every_request_with_503(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with await client_for(
        monkeypatch,
        PIXYPROXY_API_KEYS=KEYS,
        PIXYPROXY_REQUEST_RATE="5/minute",
        PIXYPROXY_RATE_LIMIT_STORAGE=DOWN_REDIS,
        PIXYPROXY_RATE_LIMIT_ON_ERROR="deny",
    ) as c:
        refused = await c.get("/image", headers=auth(ALICE))
        assert refused.status_code == 503
        assert refused.json()["type"].endswith("quota-unavailable")
        assert (await c.get("/healthz")).status_code == 200  # the probes are never metered


async def test_metrics_count_requests_generations_and_refusals_by_owner(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with await client_for(
        monkeypatch, PIXYPROXY_API_KEYS=KEYS, PIXYPROXY_GENERATION_RATE="1/minute"
    ) as c:
        assert (await c.post("/image", json={"prompt": "fox"}, headers=auth(ALICE))).status_code == 201
        assert (await c.post("/image", json={"prompt": "fox"}, headers=auth(ALICE))).status_code == 429
        assert (await c.get("/image", headers=auth(BOB))).status_code == 200
        assert (await c.get("/image", headers={"Authorization": "Bearer sk-wrong"})).status_code == 401
        text = (await c.get("/metrics", headers=auth(ALICE))).text
    alice, bob = "alice", "bob"
    assert f'pixyproxy_owner_requests_total{{owner="{alice}",status="201"}} 1.0' in text
    assert f'pixyproxy_owner_requests_total{{owner="{alice}",status="429"}} 1.0' in text
    assert f'pixyproxy_owner_requests_total{{owner="{bob}",status="200"}} 1.0' in text
    assert 'pixyproxy_owner_requests_total{owner="anonymous",status="401"} 1.0' in text
    assert f'pixyproxy_owner_generations_total{{owner="{alice}",status="succeeded"}} 1.0' in text
    assert f'pixyproxy_quota_refusals_total{{owner="{alice}",quota="generations"}} 1.0' in text
    assert "sk-wrong" not in text
    for key in (ALICE, BOB):
        assert key not in text


async def test_every_gated_route_declares_the_key_and_quota_answers(monkeypatch: pytest.MonkeyPatch) -> None:
    async with await client_for(monkeypatch) as c:
        schema = (await c.get("/openapi.json")).json()
    open_paths = {"/healthz", "/readyz", "/"}
    checked = 0
    for path, operations in schema["paths"].items():
        if path in open_paths:
            continue
        for method, operation in operations.items():
            responses = operation["responses"]
            for status in ("401", "429", "503"):
                assert status in responses, f"{method.upper()} {path} does not declare {status}"
                media = responses[status].get("content", {})
                ref = "OpenAIError" if path.startswith("/v1/") else "Problem"
                assert any(ref in str(m) for m in media.values()), (method, path, status, media)
            checked += 1
    assert checked == 14  # every operation of /image, /jobs, /metrics and /v1
