"""PIXYPROXY_API_KEYS_FILE: parsing, validation at start-up, and reloads that swap the key table."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from pixyproxy.domain.exceptions import ConfigurationError
from pixyproxy.entrypoints.api_keys import (
    KeyRing,
    NamedKey,
    combine_keys,
    parse_api_keys,
    parse_api_keys_file,
)
from pixyproxy.entrypoints.container import build_container
from pixyproxy.entrypoints.http.auth import reload_api_keys
from tests.unit.test_tenants import ALICE, BOB, auth, client_for

CAROL, DAVE = "sk-carol-SECRET-5e", "sk-dave-SECRET-6f"
SECRETS = (ALICE, BOB, CAROL, DAVE)


def write(path: Path, text: str) -> str:
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_a_keys_file_is_one_name_key_a_line_with_comments_and_blanks() -> None:
    text = f"# the team's keys\n\nalice:{ALICE}\n   # indented comment\n  bob:{BOB}  \n"
    keys = parse_api_keys_file(text)
    assert keys == [NamedKey("alice", ALICE), NamedKey("bob", BOB)]
    assert keys[0].caller.name == "alice"
    assert parse_api_keys_file("# nothing\n\n") == []


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        (f"alice:{ALICE}\nalice:{BOB}\n", "given twice"),
        (f"alice:{ALICE}\nbob:{ALICE}\n", "repeats an earlier key"),
        (f"anonymous:{ALICE}\n", "reserved"),
        ("alice:   \n", "empty key"),
        (f"{ALICE}\n", "line 1 is not name:key"),
    ],
)
def test_a_bad_keys_file_is_refused_without_quoting_a_key(text: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason) as caught:
        parse_api_keys_file(text)
    assert not any(secret in str(caught.value) for secret in SECRETS)


def test_keys_of_both_sources_combine_but_a_name_or_key_in_both_is_refused() -> None:
    inline = parse_api_keys(f"alice:{ALICE}")
    assert [k.name for k in combine_keys(inline, [NamedKey("bob", BOB)])] == ["alice", "bob"]
    with pytest.raises(ValueError, match="also in PIXYPROXY_API_KEYS"):
        combine_keys(inline, [NamedKey("alice", BOB)])
    with pytest.raises(ValueError, match="repeats a key") as caught:
        combine_keys(inline, [NamedKey("bob", ALICE)])
    assert ALICE not in str(caught.value)


@pytest.mark.parametrize(
    ("inline", "text", "reason"),
    [
        ("", f"alice:{ALICE}\nalice:{BOB}\n", "given twice"),
        ("", f"anonymous:{ALICE}\n", "reserved"),
        ("", "alice:\n", "empty key"),
        (f"alice:{ALICE}", f"alice:{BOB}\n", "also in PIXYPROXY_API_KEYS"),
        (f"alice:{ALICE}", f"bob:{ALICE}\n", "repeats a key"),
    ],
)
def test_a_bad_keys_file_stops_start_up_with_one_line_naming_the_setting(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, inline: str, text: str, reason: str
) -> None:
    monkeypatch.setenv("PIXYPROXY_API_KEYS", inline)
    monkeypatch.setenv("PIXYPROXY_API_KEYS_FILE", write(tmp_path / "keys", text))
    with pytest.raises(ConfigurationError) as caught:
        build_container().settings()
    message = str(caught.value)
    assert message.startswith("configuration error: PIXYPROXY_API_KEYS_FILE: ")
    assert reason in message
    assert "\n" not in message
    assert not any(secret in message for secret in SECRETS)


def test_a_missing_keys_file_stops_start_up(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PIXYPROXY_API_KEYS_FILE", str(tmp_path / "absent"))
    with pytest.raises(ConfigurationError, match="PIXYPROXY_API_KEYS_FILE: cannot read the file"):
        build_container().settings()


async def test_keys_from_the_file_and_the_environment_both_authenticate(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    path = write(tmp_path / "keys", f"bob:{BOB}\n")
    async with await client_for(
        monkeypatch, PIXYPROXY_API_KEYS=f"alice:{ALICE}", PIXYPROXY_API_KEYS_FILE=path
    ) as c:
        made = await c.post("/image", json={"prompt": "fox"}, headers=auth(BOB))
        assert made.status_code == 201
        assert made.json()["owner"] == "bob"
        assert (await c.get("/image", headers=auth(ALICE))).status_code == 200
        assert (await c.get("/image")).status_code == 401
        assert (await c.get("/image", headers=auth(CAROL))).status_code == 401


async def test_with_only_a_file_the_key_check_is_installed_and_a_reload_swaps_keys(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    keys_file = tmp_path / "keys"
    path = write(keys_file, f"alice:{ALICE}\n")
    async with await client_for(monkeypatch, PIXYPROXY_API_KEYS_FILE=path) as c:
        transport = c._transport
        app = transport.app  # type: ignore[attr-defined]
        ring: KeyRing = app.state.key_ring
        assert (await c.get("/image")).status_code == 401
        assert (await c.get("/image", headers=auth(ALICE))).status_code == 200

        write(keys_file, f"# rotated\ncarol:{CAROL}\n")
        assert (await c.get("/image", headers=auth(ALICE))).status_code == 200  # not before a reload
        with caplog.at_level(logging.INFO):
            assert reload_api_keys(ring, [], path)
        assert (await c.get("/image", headers=auth(ALICE))).status_code == 401
        made = await c.post("/image", json={"prompt": "fox"}, headers=auth(CAROL))
        assert made.status_code == 201
        assert made.json()["owner"] == "carol"

        # A file that fails validation, or names no key, keeps the old keys with one warning.
        for bad in (f"dave:{DAVE}\ndave:{BOB}\n", "# emptied\n"):
            write(keys_file, bad)
            caplog.clear()
            with caplog.at_level(logging.INFO):
                assert not reload_api_keys(ring, [], path)
            warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
            assert len(warnings) == 1
            assert "PIXYPROXY_API_KEYS_FILE" in warnings[0].getMessage()
            assert (await c.get("/image", headers=auth(CAROL))).status_code == 200
            assert (await c.get("/image", headers=auth(DAVE))).status_code == 401
        assert not any(secret in caplog.text for secret in SECRETS)


async def test_an_empty_keys_file_at_start_up_means_no_key_yet(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    keys_file = tmp_path / "keys"
    path = write(keys_file, "# none yet\n")
    async with await client_for(monkeypatch, PIXYPROXY_API_KEYS_FILE=path) as c:
        assert (await c.get("/image")).status_code == 200
        write(keys_file, f"alice:{ALICE}\n")
        assert reload_api_keys(c._transport.app.state.key_ring, [], path)  # type: ignore[attr-defined]
        assert (await c.get("/image")).status_code == 401
        assert (await c.get("/image", headers=auth(ALICE))).status_code == 200
