"""International input over real HTTP: 4,000 characters in any script fit, escaped or raw, and one
text typed on two keyboards (NFC, NFD) is one prompt."""

from __future__ import annotations

import json
import unicodedata
from collections.abc import Iterator

import httpx
import pytest

from pixyproxy.app.requests import MAX_PROMPT_CHARS, largest_valid_body_bytes
from tests.support.server import RunningServer, running_server

JSON = {"content-type": "application/json"}
SCRIPTS = {
    "japanese": "富士山の夕焼け",
    "chinese": "山水画中的小船",
    "thai": "ภูเขาในยามเย็น",
    "korean": "눈 속의 여우",
    "emoji": "🦊❄️🌲",
    "greek-decomposable": "\u1f82\u1f83",
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    tmp = tmp_path_factory.mktemp("international")
    env = {"PIXYPROXY_DATA_DIR": str(tmp / "data"), "PIXYPROXY_PROCEDURAL_SIZE": "32x32"}
    with running_server(env, tmp / "server.log") as running:
        yield running


@pytest.fixture
def client(server: RunningServer) -> Iterator[httpx.Client]:
    with server.client() as http:
        yield http


def _exactly(text: str, length: int) -> str:
    return (text * (length // len(text) + 1))[:length]


@pytest.mark.parametrize("ascii_escaped", [True, False], ids=["escaped", "raw"])
@pytest.mark.parametrize("script", list(SCRIPTS), ids=list(SCRIPTS))
def test_4000_characters_in_any_script_are_accepted_and_4001_are_not(
    client: httpx.Client, script: str, ascii_escaped: bool
) -> None:
    prompt = _exactly(SCRIPTS[script], MAX_PROMPT_CHARS)
    # Decomposed as a macOS keyboard may send it, and escaped as Python's json.dumps sends it.
    sent = unicodedata.normalize("NFD", prompt)
    body = json.dumps({"prompt": sent}, ensure_ascii=ascii_escaped).encode()
    created = client.post("/image", content=body, headers=JSON)
    assert created.status_code == 201, created.text[:300]
    assert created.json()["prompt"] == prompt

    too_long = json.dumps({"prompt": prompt + "x"}, ensure_ascii=ascii_escaped).encode()
    refused = client.post("/image", content=too_long, headers=JSON)
    assert refused.status_code == 422, refused.text[:300]
    assert refused.json()["type"].endswith("/invalid-request")


def test_a_body_one_byte_over_the_cap_is_413(client: httpx.Client) -> None:
    cap = largest_valid_body_bytes()
    body = b'{"prompt": "fox", "pad": "' + b"x" * cap + b'"}'
    refused = client.post("/image", content=body[: cap + 1] + b"", headers=JSON)
    assert refused.status_code == 413
    assert refused.json()["type"].endswith("/request-too-large")


def test_nfc_and_nfd_spellings_are_one_prompt_and_one_idempotent_request(client: httpx.Client) -> None:
    nfc, nfd = unicodedata.normalize("NFC", "un café crème"), unicodedata.normalize("NFD", "un café crème")
    assert nfc != nfd
    key = {"Idempotency-Key": "cafe-nfc-nfd", **JSON}
    first = client.post("/image", content=json.dumps({"prompt": nfc}), headers=key)
    second = client.post("/image", content=json.dumps({"prompt": nfd}), headers=key)
    assert first.status_code == 201, first.text
    assert second.status_code == 201, second.text
    assert first.json()["guid"] == second.json()["guid"]
    assert second.json()["prompt"] == nfc
