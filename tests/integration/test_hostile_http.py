"""Hostile input over real HTTP against the embedded default server: refused cleanly or stored verbatim."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.support.server import RunningServer, running_server

PROBLEM = "application/problem+json"
JSON = {"content-type": "application/json"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """One embedded server (sqlite, local disk, procedural) for the whole module."""
    tmp = tmp_path_factory.mktemp("hostile")
    env = {"PIXYPROXY_DATA_DIR": str(tmp / "data"), "PIXYPROXY_PROCEDURAL_SIZE": "32x32"}
    with running_server(env, tmp / "server.log") as running:
        yield running


@pytest.fixture
def client(server: RunningServer) -> Iterator[httpx.Client]:
    """A client of the module's server; after the test, its log must show no 500 and nothing unhandled."""
    with server.client() as http:
        yield http
    logs = server.logs()
    assert " 500 " not in logs
    assert "unhandled" not in logs
    assert "Traceback" not in logs


def _all_guids(client: httpx.Client) -> list[str]:
    response = client.get("/image", params={"limit": 1000})
    assert response.status_code == 200, response.text
    return [d["guid"] for d in response.json()]


def _assert_problem(response: httpx.Response, status: int, slug: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert body["type"] == f"https://pixyproxy.dev/problems/{slug}"
    assert body["request_id"] == response.headers["x-request-id"]
    for leak in ("Traceback", 'File "', "/site-packages/", "sqlite3", "SELECT ", "INSERT "):
        assert leak not in response.text
    return body


HOSTILE_PROMPTS = {
    "sql": "'); DROP TABLE images;--",
    "sql-union": "x' UNION SELECT guid, prompt FROM images WHERE '1'='1",
    "html-script": "<script>alert(document.cookie)</script><img src=x onerror=alert(1)>",
    "emoji": "a fox 🦊 on ❄️ with 🧪, 漢字 and a 👩‍👩‍👧 family",
    "quotes-backslashes": 'say "hi" \\ and \\" and \\u0000 and %s %(prompt)s {prompt}',
    "bidi-and-zero-width": "abc\u202edef\u200bghi",
    "newline-tab": "line one\n\tline two",
    "json-in-prompt": '{"prompt": "nested", "__proto__": {"admin": true}}',
    "max-length": "é" * 4000,
}


@pytest.mark.parametrize("prompt", list(HOSTILE_PROMPTS.values()), ids=list(HOSTILE_PROMPTS))
def test_hostile_prompts_are_stored_verbatim_and_returned_as_json(client: httpx.Client, prompt: str) -> None:
    created = client.post("/image", json={"prompt": prompt})
    assert created.status_code == 201, created.text
    assert created.headers["content-type"] == "application/json"  # never text/html: nothing is interpreted
    detail = created.json()
    assert detail["prompt"] == prompt
    # The raw body is JSON-escaped text, not the markup itself interpreted or re-encoded.
    assert json.loads(created.text)["prompt"] == prompt

    fetched = client.get(f"/image/{detail['guid']}")
    assert fetched.status_code == 200
    assert fetched.headers["content-type"] == "application/json"
    assert fetched.json()["prompt"] == prompt
    assert detail["guid"] in _all_guids(client)  # the table is still there and lists it

    content = client.get(f"/image/{detail['guid']}/content")
    assert content.status_code == 200
    assert content.headers["content-type"] == "image/png"
    assert content.headers["x-content-type-options"] == "nosniff"
    assert hashlib.sha256(content.content).hexdigest() == detail["sha256"]


@pytest.mark.parametrize(
    "prompt",
    ["a\x00b", "a\x01b", "esc \x1b[31m red", "del \x7f", "c1 \x85 next line", "cr \r only", "   ", ""],
    ids=["nul", "soh", "ansi-escape", "del", "c1-nel", "carriage-return", "only-spaces", "empty"],
)
def test_control_characters_and_empty_prompts_are_refused(client: httpx.Client, prompt: str) -> None:
    before = _all_guids(client)
    response = client.post("/image", json={"prompt": prompt})
    body = _assert_problem(response, 422, "invalid-request")
    assert "\x00" not in body["detail"]
    assert _all_guids(client) == before


def test_bodies_over_the_cap_are_413_whether_declared_or_streamed(client: httpx.Client) -> None:
    before = _all_guids(client)
    big = json.dumps({"prompt": "x" * (1 << 20)}).encode()
    declared = client.post("/image", content=big, headers=JSON)
    _assert_problem(declared, 413, "request-too-large")

    def chunks() -> Iterator[bytes]:
        for start in range(0, len(big), 64 * 1024):
            yield big[start : start + 64 * 1024]

    # No Content-Length: the cap counts bytes as they arrive.
    streamed = client.post("/image", content=chunks(), headers=JSON)
    _assert_problem(streamed, 413, "request-too-large")
    assert _all_guids(client) == before


@pytest.mark.parametrize(
    ("content", "headers"),
    [
        (b'{"prompt": "a fox"}', {"content-type": "text/plain"}),
        (b'{"prompt": "a fox"}', {"content-type": "application/xml"}),
        (b'{"prompt": "a fox"}', {"content-type": "text/html; charset=utf-8"}),
        (b"prompt=a+fox", {"content-type": "application/x-www-form-urlencoded"}),
        (
            b'--b\r\ncontent-disposition: form-data; name="prompt"\r\n\r\na fox\r\n--b--\r\n',
            {"content-type": "multipart/form-data; boundary=b"},
        ),
        (b'{"prompt": "a fox"}', {}),
    ],
    ids=["text-plain", "xml", "html", "form-urlencoded", "multipart", "no-content-type"],
)
def test_bodies_that_are_not_json_are_415(
    client: httpx.Client, content: bytes, headers: dict[str, str]
) -> None:
    before = _all_guids(client)
    response = client.post("/image", content=content, headers=headers)
    body = _assert_problem(response, 415, "unsupported-media-type")
    assert body["detail"] == "the request body must be application/json"
    assert _all_guids(client) == before


@pytest.mark.parametrize(
    "content_type", ["application/json; charset=utf-8", "APPLICATION/JSON", "application/problem+json"]
)
def test_json_media_types_with_parameters_or_suffixes_are_accepted(
    client: httpx.Client, content_type: str
) -> None:
    response = client.post("/image", content=b'{"prompt": "a fox"}', headers={"content-type": content_type})
    assert response.status_code == 201, response.text
    assert response.json()["prompt"] == "a fox"


MALFORMED_JSON = {
    "truncated": b'{"prompt": "a fox',
    "not-json": b"prompt: a fox",
    "array": b'["a fox"]',
    "string": b'"a fox"',
    "number": b"42",
    "null": b"null",
    "empty-body": b"",
    "duplicate-keys": b'{"prompt": "a kitten", "prompt": "a fox"}',
    "nested-duplicate-keys": b'{"prompt": "a fox", "size": {"a": 1, "a": 2}}',
    "deeply-nested": b'{"prompt": ' + b"[" * 5000 + b"]" * 5000 + b"}",
    "prompt-not-a-string": b'{"prompt": ["a fox"]}',
    "unknown-field": b'{"prompt": "a fox", "admin": true}',
    "bad-size": b'{"prompt": "a fox", "size": "99999x99999"}',
    "not-utf8": b'{"prompt": "a \xff fox"}',
    "nan": b'{"prompt": "a fox", "size": NaN}',
}


@pytest.mark.parametrize("content", list(MALFORMED_JSON.values()), ids=list(MALFORMED_JSON))
def test_malformed_or_unexpected_json_is_422(client: httpx.Client, content: bytes) -> None:
    before = _all_guids(client)
    response = client.post("/image", content=content, headers=JSON)
    _assert_problem(response, 422, "invalid-request")
    assert _all_guids(client) == before


def test_duplicate_keys_are_named_in_the_refusal(client: httpx.Client) -> None:
    response = client.post("/image", content=MALFORMED_JSON["duplicate-keys"], headers=JSON)
    assert _assert_problem(response, 422, "invalid-request")["detail"] == (
        "body: the key 'prompt' appears more than once"
    )


@pytest.mark.parametrize(
    "path",
    [
        "/image/..%2F..%2Fetc%2Fpasswd",
        "/image/..%2F..%2Fetc%2Fpasswd/content",
        "/image/%2e%2e%2f%2e%2e%2fetc%2fpasswd/content",
        "/image/3f2b1c9e-8c1d-4e5f-9a7b-1c2d3e4f5a6b%2F..%2F..%2Fsecret/content",
    ],
    ids=["detail", "content", "dot-encoded", "behind-a-guid"],
)
def test_path_traversal_matches_no_route(client: httpx.Client, path: str) -> None:
    response = client.get(path)
    body = _assert_problem(response, 404, "not-found")
    assert "root:" not in response.text  # no file was read
    assert body["detail"] == "Not Found"


@pytest.mark.parametrize(
    "guid",
    [
        "a" * 10_000,
        "3f2b1c9e-8c1d-4e5f-9a7b-1c2d3e4f5a6b" + "0" * 10_000,
        "' OR '1'='1",
        "3F2B1C9E-8C1D-4E5F-9A7B-1C2D3E4F5A6",
        "%00",
    ],
    ids=["10000-chars", "guid-then-10000", "sql", "35-chars", "nul"],
)
@pytest.mark.parametrize("suffix", ["", "/content"])
def test_malformed_guids_are_422(client: httpx.Client, guid: str, suffix: str) -> None:
    response = client.get(f"/image/{guid}{suffix}")
    body = _assert_problem(response, 422, "invalid-request")
    assert body["detail"].startswith("guid: must be a UUID")


def test_unknown_guid_is_404(client: httpx.Client) -> None:
    response = client.get("/image/3f2b1c9e-8c1d-4e5f-9a7b-1c2d3e4f5a6b/content")
    _assert_problem(response, 404, "image-not-found")


@pytest.mark.parametrize(
    "params",
    [
        {"limit": "-1"},
        {"limit": "0"},
        {"limit": "1001"},
        {"limit": str(10**30)},
        {"limit": "ten"},
        {"cursor": "'); DROP TABLE images;--"},
        {"cursor": "x" * 10_000},
        {"cursor": "bm90fGEgY3Vyc29y"},
    ],
    ids=["negative", "zero", "over-max", "huge", "not-a-number", "sql-cursor", "long-cursor", "forged"],
)
def test_hostile_listing_parameters_are_422(client: httpx.Client, params: dict[str, str]) -> None:
    response = client.get("/image", params=params)
    _assert_problem(response, 422, "invalid-request")
    _all_guids(client)  # and the listing still answers 200
