"""Named API keys, owners and tenant isolation, over ASGI with in-memory adapters."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import AsyncIterator

import httpx
import pytest

from pixyproxy.domain.exceptions import ConfigurationError
from pixyproxy.entrypoints.api_keys import Caller, NamedKey, bare_key_name, parse_api_keys
from pixyproxy.entrypoints.container import build_container
from pixyproxy.entrypoints.http.app import create_app

ALICE, BOB, ADMIN, BARE = "sk-alice-SECRET-1a", "sk-bob-SECRET-2b", "sk-admin-SECRET-3c", "sk-bare-SECRET-4d"
KEYS = f"alice:{ALICE}, bob:{BOB}, admin-ops:{ADMIN}, {BARE}"


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def client_for(monkeypatch: pytest.MonkeyPatch, **env: str) -> httpx.AsyncClient:
    for name, value in {
        "PIXYPROXY_REPOSITORY": "memory",
        "PIXYPROXY_BLOB_STORE": "memory",
        "PIXYPROXY_GENERATOR": "memory",
        **env,
    }.items():
        monkeypatch.setenv(name, value)
    app = create_app(build_container())
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver")


@pytest.fixture
async def isolated(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[httpx.AsyncClient]:
    async with await client_for(
        monkeypatch, PIXYPROXY_API_KEYS=KEYS, PIXYPROXY_TENANT_ISOLATION="true"
    ) as client:
        yield client


@pytest.fixture
async def shared(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[httpx.AsyncClient]:
    async with await client_for(monkeypatch, PIXYPROXY_API_KEYS=KEYS) as client:
        yield client


async def generate(client: httpx.AsyncClient, key: str, prompt: str) -> dict[str, object]:
    response = await client.post("/image", json={"prompt": prompt}, headers=auth(key))
    assert response.status_code == 201, response.text
    body: dict[str, object] = response.json()
    return body


# --- parsing -------------------------------------------------------------------------------------


def test_named_and_bare_keys_parse() -> None:
    keys = parse_api_keys(KEYS)
    assert [k.name for k in keys] == [
        "alice",
        "bob",
        "admin-ops",
        hashlib.sha256(BARE.encode()).hexdigest()[:8],
    ]
    assert [k.key for k in keys] == [ALICE, BOB, ADMIN, BARE]
    assert [k.caller for k in keys] == [
        Caller("alice"),
        Caller("bob"),
        Caller("admin-ops", is_admin=True),
        Caller(bare_key_name(BARE)),
    ]


def test_a_name_with_an_empty_key_is_refused_and_odd_text_is_a_bare_key() -> None:
    with pytest.raises(ValueError, match="empty key"):
        parse_api_keys("alice: ")
    odd = parse_api_keys("not a name:sk-x")  # not a valid name before the colon: the whole is the key
    assert odd == [NamedKey(bare_key_name("not a name:sk-x"), "not a name:sk-x")]


def test_a_named_key_never_shows_in_its_repr() -> None:
    assert ALICE not in repr(NamedKey("alice", ALICE))
    assert ALICE not in repr(parse_api_keys(f"alice:{ALICE}"))


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (f"alice:{ALICE},alice:{BOB}", "given twice"),
        (f"alice:{ALICE},bob:{ALICE}", "repeats an earlier key"),
        (f"anonymous:{ALICE}", "reserved"),
    ],
)
def test_bad_key_lists_stop_start_up_without_quoting_a_key(
    monkeypatch: pytest.MonkeyPatch, raw: str, reason: str
) -> None:
    monkeypatch.setenv("PIXYPROXY_API_KEYS", raw)
    with pytest.raises(ConfigurationError) as caught:
        build_container().settings()
    message = str(caught.value)
    assert "PIXYPROXY_API_KEYS" in message
    assert reason in message
    assert ALICE not in message
    assert BOB not in message


# --- owners --------------------------------------------------------------------------------------


async def test_each_image_and_job_records_its_keys_name(shared: httpx.AsyncClient) -> None:
    mine = await generate(shared, ALICE, "alice's fox")
    bare = await generate(shared, BARE, "a bare key's fox")
    assert mine["owner"] == "alice"
    assert bare["owner"] == bare_key_name(BARE)
    detail = (await shared.get(f"/image/{mine['guid']}", headers=auth(BOB))).json()
    assert detail["owner"] == "alice"  # without isolation, everyone sees everyone's
    jobs = (await shared.get("/jobs", headers=auth(ADMIN))).json()
    assert {(j["prompt"], j["owner"]) for j in jobs} == {
        ("alice's fox", "alice"),
        ("a bare key's fox", bare_key_name(BARE)),
    }
    for key in (ALICE, BOB, ADMIN, BARE):
        assert key not in str(jobs)
        assert key not in str(detail)


async def test_without_authentication_the_owner_is_anonymous(monkeypatch: pytest.MonkeyPatch) -> None:
    async with await client_for(monkeypatch, PIXYPROXY_API_KEYS="") as client:
        response = await client.post("/image", json={"prompt": "nobody's fox"})
        assert response.json()["owner"] == "anonymous"
        assert (await client.get("/jobs")).json()[0]["owner"] == "anonymous"


async def test_the_owner_filter_narrows_listings(shared: httpx.AsyncClient) -> None:
    await generate(shared, ALICE, "one")
    await generate(shared, BOB, "two")
    images = (await shared.get("/image", params={"owner": "bob"}, headers=auth(ALICE))).json()
    assert [i["prompt"] for i in images] == ["two"]
    jobs = (await shared.get("/jobs", params={"owner": "alice"}, headers=auth(BOB))).json()
    assert [j["prompt"] for j in jobs] == ["one"]


async def test_the_request_log_names_the_owner_never_the_key(
    shared: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO):
        await generate(shared, ALICE, "logged fox")
    ends = [r.getMessage() for r in caplog.records if r.getMessage().startswith("REQUEST END POST /image")]
    assert ends
    assert ends[-1].endswith("owner=alice")
    assert all(ALICE not in r.getMessage() for r in caplog.records)


# --- isolation -----------------------------------------------------------------------------------


async def test_another_owners_image_answers_404_like_an_unknown_one(isolated: httpx.AsyncClient) -> None:
    theirs = await generate(isolated, BOB, "bob's private fox")
    unknown = "3f2b1c9e-8c1d-4e5f-9a7b-1c2d3e4f5a6b"
    for path in ("/image/{}", "/image/{}/content", "/image/{}/thumbnail"):
        foreign = await isolated.get(path.format(theirs["guid"]), headers=auth(ALICE))
        missing = await isolated.get(path.format(unknown), headers=auth(ALICE))
        assert foreign.status_code == missing.status_code == 404, path
        assert foreign.json()["type"] == missing.json()["type"]
        assert foreign.json()["title"] == missing.json()["title"]
        assert (await isolated.get(path.format(theirs["guid"]), headers=auth(BOB))).status_code == 200
    assert (await isolated.head(f"/image/{theirs['guid']}/content", headers=auth(ALICE))).status_code == 404


async def test_a_tenant_lists_only_its_own(isolated: httpx.AsyncClient) -> None:
    await generate(isolated, ALICE, "alice one")
    await generate(isolated, BOB, "bob one")
    await generate(isolated, ALICE, "alice two")
    assert [i["prompt"] for i in (await isolated.get("/image", headers=auth(ALICE))).json()] == [
        "alice two",
        "alice one",
    ]
    assert [j["prompt"] for j in (await isolated.get("/jobs", headers=auth(BOB))).json()] == ["bob one"]
    # Asking for another owner's never widens the view.
    assert (await isolated.get("/image", params={"owner": "bob"}, headers=auth(ALICE))).json() == []
    assert (await isolated.get("/jobs", params={"owner": "bob"}, headers=auth(ALICE))).json() == []
    # The cursor pages within the tenant's own.
    first = await isolated.get("/image", params={"limit": 1}, headers=auth(ALICE))
    next_url = first.headers["link"].split(";")[0].strip("<>")
    second = await isolated.get(next_url, headers=auth(ALICE))
    assert [i["prompt"] for i in second.json()] == ["alice one"]
    assert "link" not in second.headers


async def test_administrators_see_everyones(isolated: httpx.AsyncClient) -> None:
    theirs = await generate(isolated, BOB, "bob's fox")
    await generate(isolated, ALICE, "alice's fox")
    assert len((await isolated.get("/image", headers=auth(ADMIN))).json()) == 2
    assert len((await isolated.get("/jobs", headers=auth(ADMIN))).json()) == 2
    assert (await isolated.get(f"/image/{theirs['guid']}", headers=auth(ADMIN))).status_code == 200
    assert (await isolated.delete(f"/image/{theirs['guid']}", headers=auth(ADMIN))).status_code == 204


async def test_a_tenant_cannot_delete_or_cancel_anothers(isolated: httpx.AsyncClient) -> None:
    theirs = await generate(isolated, BOB, "bob's fox")
    job_id = (await isolated.get("/jobs", headers=auth(BOB))).json()[0]["id"]
    assert (await isolated.delete(f"/image/{theirs['guid']}", headers=auth(ALICE))).status_code == 404
    assert (await isolated.get(f"/jobs/{job_id}", headers=auth(ALICE))).status_code == 404
    cancel = await isolated.post(f"/jobs/{job_id}/cancel", headers=auth(ALICE))
    assert cancel.status_code == 404
    assert cancel.json()["type"].endswith("job-not-found")
    # Untouched: the owner still has both.
    assert (await isolated.get(f"/image/{theirs['guid']}", headers=auth(BOB))).status_code == 200
    assert (await isolated.get(f"/jobs/{job_id}", headers=auth(BOB))).json()["status"] == "succeeded"
    assert (await isolated.delete(f"/image/{theirs['guid']}", headers=auth(BOB))).status_code == 204


async def test_openai_route_images_belong_to_the_caller(isolated: httpx.AsyncClient) -> None:
    response = await isolated.post(
        "/v1/images/generations", json={"prompt": "two foxes", "n": 2}, headers=auth(BOB)
    )
    assert response.status_code == 200, response.text
    urls = [d["url"] for d in response.json()["data"]]
    for url in urls:
        assert (await isolated.get(url, headers=auth(BOB))).status_code == 200
        assert (await isolated.get(url, headers=auth(ALICE))).status_code == 404
    assert (await isolated.get("/image", headers=auth(ALICE))).json() == []
    assert {i["owner"] for i in (await isolated.get("/image", headers=auth(BOB))).json()} == {"bob"}


async def test_equal_idempotency_keys_of_two_tenants_are_two_requests(isolated: httpx.AsyncClient) -> None:
    body = {"prompt": "same body"}
    headers = {"Idempotency-Key": "shared-key-1"}
    a = await isolated.post("/image", json=body, headers=headers | auth(ALICE))
    b = await isolated.post("/image", json=body, headers=headers | auth(BOB))
    again = await isolated.post("/image", json=body, headers=headers | auth(ALICE))
    assert a.status_code == b.status_code == 201
    assert a.json()["guid"] != b.json()["guid"]
    assert again.json()["guid"] == a.json()["guid"]
    assert b.json()["owner"] == "bob"
