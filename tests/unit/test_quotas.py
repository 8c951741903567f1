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
