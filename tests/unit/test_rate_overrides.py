"""PIXYPROXY_RATE_OVERRIDES: per key-name generation windows, over ASGI with memory:// storage."""

from __future__ import annotations

import pytest

from pixyproxy.adapters.quota_limits import parse_rate_overrides
from pixyproxy.domain.exceptions import ConfigurationError
from pixyproxy.entrypoints.container import build_container
from tests.unit.test_quotas import windows
from tests.unit.test_tenants import ALICE, BOB, KEYS, auth, client_for


def test_overrides_parse_with_commas_between_names_and_semicolons_within_a_rate() -> None:
    parsed = parse_rate_overrides(" batch-bot=200/minute;2000/day , alice=5/minute ")
    assert {name: [item.amount for item in items] for name, items in parsed.items()} == {
        "batch-bot": [200, 2000],
        "alice": [5],
    }
    assert parse_rate_overrides("") == {}
    assert parse_rate_overrides(None) == {}


@pytest.mark.parametrize(
    "value",
    ["alice", "alice=", "alice=lots", "=5/minute", "alice=5/minute,alice=6/minute", "al ice=5/minute"],
)
def test_a_malformed_override_is_one_line_naming_the_setting(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("PIXYPROXY_RATE_OVERRIDES", value)
    with pytest.raises(ConfigurationError) as caught:
        build_container().settings()
    message = str(caught.value)
    assert message.startswith("configuration error: PIXYPROXY_RATE_OVERRIDES: ")
    assert "\n" not in message


async def test_an_override_applies_to_its_owner_only(monkeypatch: pytest.MonkeyPatch) -> None:
    async with await client_for(
        monkeypatch,
        PIXYPROXY_API_KEYS=KEYS,
        PIXYPROXY_GENERATION_RATE="2/minute",
        PIXYPROXY_RATE_OVERRIDES="alice=4/minute;10/day",
    ) as c:
        for left in (3, 2, 1, 0):
            made = await c.post("/image", json={"prompt": "fox"}, headers=auth(ALICE))
            assert made.status_code == 201
            assert made.headers["ratelimit-policy"] == (
                '"generations-1minute";q=4;w=60, "generations-1day";q=10;w=86400'
            )
            assert windows(made.headers["ratelimit"])["generations-1minute"][0] == left
        assert (await c.post("/image", json={"prompt": "fox"}, headers=auth(ALICE))).status_code == 429
        # Bob has the default windows: 2 a minute.
        for _ in range(2):
            made = await c.post("/image", json={"prompt": "fox"}, headers=auth(BOB))
            assert made.status_code == 201
            assert made.headers["ratelimit-policy"] == '"generations-1minute";q=2;w=60'
        assert (await c.post("/image", json={"prompt": "fox"}, headers=auth(BOB))).status_code == 429


async def test_an_override_alone_limits_only_its_owner(monkeypatch: pytest.MonkeyPatch) -> None:
    async with await client_for(
        monkeypatch, PIXYPROXY_API_KEYS=KEYS, PIXYPROXY_RATE_OVERRIDES="bob=1/minute"
    ) as c:
        assert (await c.post("/image", json={"prompt": "fox"}, headers=auth(BOB))).status_code == 201
        assert (await c.post("/image", json={"prompt": "fox"}, headers=auth(BOB))).status_code == 429
        for _ in range(3):
            made = await c.post("/image", json={"prompt": "fox"}, headers=auth(ALICE))
            assert made.status_code == 201
            assert "ratelimit-policy" not in made.headers
