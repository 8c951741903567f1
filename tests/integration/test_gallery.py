"""The gallery page in a real headless Chromium (Debian's), against real `pixyproxy serve` processes.

Every test fails on any console error, page error or failed request the page caused.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright import sync_api as playwright_api

from tests.support.browser import headless_chromium
from tests.support.fake_openai import FakeOpenAI
from tests.support.server import RunningServer, running_server
from tests.support.stack import openai_env

WAIT_MS = 10_000
SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
API_KEY = "sk-gallery-test"
SUBJECTS = [
    "red fox in snow",
    "lighthouse at dusk",
    "zebra crossing a river",
    "tea garden in rain",
    "orbiting space station",
    "paper boat on a pond",
    "desert cactus bloom",
    "neon city alley",
    "mountain cabin at night",
    "koi pond from above",
    "autumn maple forest",
    "origami crane flock",
    "glass greenhouse",
    "harbour with sailboats",
    "owl on a branch",
]
SEEDED = 150
PAGE_SIZE = 48  # the page's own page size (static/app.js)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """One headless Chromium for the module."""
    with headless_chromium() as chromium:
        yield chromium


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """The embedded default (SQLite, local disk, the procedural generator), seeded with 150 images."""
    root = tmp_path_factory.mktemp("gallery")
    env = {"PIXYPROXY_DATA_DIR": str(root / "data"), "PIXYPROXY_PROCEDURAL_SIZE": "96x96"}
    with running_server(env, root / "server.log") as running, running.client() as client:
        for i in range(SEEDED):
            prompt = f"{SUBJECTS[i % len(SUBJECTS)]}, study {i // len(SUBJECTS) + 1}"
            client.post("/image", json={"prompt": prompt}).raise_for_status()
        yield running


@pytest.fixture(scope="module")
def openai_server(
    fake_openai: FakeOpenAI, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningServer]:
    """A server whose generator is the fake OpenAI upstream, switched per test with set_mode."""
    root = tmp_path_factory.mktemp("gallery-openai")
    env = {
        "PIXYPROXY_DATA_DIR": str(root / "data"),
        **openai_env(fake_openai, api_key="sk-upstream", timeout_s=30, max_retries=0),
    }
    with running_server(env, root / "server.log") as running:
        yield running


@pytest.fixture(scope="module")
def keyed_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """The embedded default with an API key required."""
    root = tmp_path_factory.mktemp("gallery-keyed")
    env = {
        "PIXYPROXY_DATA_DIR": str(root / "data"),
        "PIXYPROXY_PROCEDURAL_SIZE": "64x64",
        "PIXYPROXY_API_KEYS": API_KEY,
    }
    with running_server(env, root / "server.log") as running:
        yield running


@pytest.fixture
def open_page(browser: Any) -> Iterator[Callable[..., Any]]:
    """Open the gallery of a server in a fresh context; afterwards, fail on any error the page caused."""
    problems: list[str] = []
    contexts: list[Any] = []

    def open_gallery(server: RunningServer, *, width: int = 1280, height: int = 900) -> Any:
        context = browser.new_context(
            viewport={"width": width, "height": height}, base_url=server.base_url, accept_downloads=True
        )
        context.set_default_timeout(WAIT_MS)
        context.grant_permissions(["clipboard-read", "clipboard-write"], origin=server.base_url)
        contexts.append(context)
        page = context.new_page()
        page.on("console", lambda m: problems.append(f"console {m.text}") if m.type == "error" else None)
        page.on("pageerror", lambda e: problems.append(f"page error {e}"))
        page.on("requestfailed", lambda r: problems.append(f"failed {r.method} {r.url}: {r.failure}"))
        page.on(
            "response", lambda r: problems.append(f"HTTP {r.status} {r.url}") if r.status >= 400 else None
        )
        page.goto("/")
        return page

    yield open_gallery
    try:
        assert problems == []
    finally:
        for context in contexts:
            context.close()


def expect(locator: Any) -> Any:
    return playwright_api.expect(locator)


def card_of(page: Any, prompt: str) -> Any:
    return page.locator("#grid li.card[data-guid]").filter(has=page.get_by_alt_text(prompt, exact=True))


def wait_for_thumbnails(page: Any) -> None:
    """Until every card in view shows its (lazy-loaded) thumbnail."""
    page.wait_for_function(
        """() => [...document.querySelectorAll('#grid img.thumb')]
                 .filter(img => img.getBoundingClientRect().top < innerHeight)
                 .every(img => img.complete && img.naturalWidth > 0)""",
        timeout=WAIT_MS,
    )


def newest(server: RunningServer, prompt: str, **headers: str) -> dict[str, Any]:
    with server.client(headers=headers) as client:
        found = client.get("/image", params={"limit": 1000}).json()
    return next(item for item in found if item["prompt"] == prompt)


def test_page_is_served_with_a_strict_content_security_policy(server: RunningServer) -> None:
    response = httpx.get(server.base_url + "/", timeout=10)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    policy = response.headers["content-security-policy"]
    assert "default-src 'self'" in policy
    assert "unsafe-inline" not in policy
    assert '<script type="module" src="/static/app.js">' in response.text


def test_generate_shows_a_placeholder_that_becomes_the_image(
    server: RunningServer, open_page: Callable[..., Any]
) -> None:
    page = open_page(server)
    wait_for_thumbnails(page)
    page.get_by_label("Prompt", exact=True).fill("a gallery generated this kite")
    page.get_by_label("Prompt", exact=True).press("Enter")
    expect(page.locator("#grid li.card.pending").first).to_be_visible()
    card = card_of(page, "a gallery generated this kite")
    expect(card).to_be_visible()
    expect(page.locator("#grid li.card.pending")).to_have_count(0)
    wait_for_thumbnails(page)
    assert newest(server, "a gallery generated this kite")["generator"] == "procedural"


def test_a_refused_prompt_shows_the_problem(
    openai_server: RunningServer, fake_openai: FakeOpenAI, open_page: Callable[..., Any]
) -> None:
    fake_openai.reset()
    fake_openai.set_mode("content_policy")
    page = open_page(openai_server)
    page.get_by_label("Prompt", exact=True).fill("something the upstream refuses")
    page.get_by_label("Prompt", exact=True).press("Enter")
    failed = page.locator("#grid li.card.failed")
    expect(failed).to_have_count(1)
    with openai_server.client() as client:
        job = client.get("/jobs", params={"limit": 1}).json()[0]
    assert job["status"] == "failed"
    expect(failed.locator(".problem-title")).to_have_text(job["error"]["title"])
    expect(failed.locator(".problem-detail")).to_have_text(job["error"]["detail"])
    failed.get_by_role("button", name="Dismiss").click()
    expect(failed).to_have_count(0)


def test_cancel_stops_a_running_generation(
    openai_server: RunningServer, fake_openai: FakeOpenAI, open_page: Callable[..., Any]
) -> None:
    fake_openai.reset()
    fake_openai.set_mode("ok", delay_s=8)
    page = open_page(openai_server)
    page.get_by_label("Prompt", exact=True).fill("a slow one to cancel")
    page.get_by_role("button", name="Generate").click()
    pending = page.locator("#grid li.card.pending")
    expect(pending.locator(".state")).to_have_text("Generating…")
    pending.get_by_role("button", name="Cancel").click()
    canceled = page.locator("#grid li.card.canceled")
    expect(canceled.locator(".state")).to_have_text("Canceled")
    with openai_server.client() as client:
        job = client.get("/jobs", params={"limit": 1}).json()[0]
        assert job["prompt"] == "a slow one to cancel"
        assert job["status"] == "canceled"
        assert all(item["prompt"] != "a slow one to cancel" for item in client.get("/image").json())
    fake_openai.reset()


def test_scrolling_loads_the_next_page(server: RunningServer, open_page: Callable[..., Any]) -> None:
    page = open_page(server)
    cards = page.locator("#grid li.card[data-guid]")
    expect(cards).to_have_count(PAGE_SIZE)
    page.locator("#more").scroll_into_view_if_needed()
    expect(cards).to_have_count(2 * PAGE_SIZE)
    page.locator("#more").scroll_into_view_if_needed()
    expect(cards).to_have_count(3 * PAGE_SIZE)
    page.locator("#more").scroll_into_view_if_needed()
    total = len(httpx.get(server.base_url + "/image", params={"limit": 1000}, timeout=10).json())
    expect(cards).to_have_count(total)
    assert total >= SEEDED
    expect(page.locator("#status")).to_have_text(f"{total} images.")


def test_search_narrows_the_grid(server: RunningServer, open_page: Callable[..., Any]) -> None:
    page = open_page(server)
    cards = page.locator("#grid li.card[data-guid]")
    expect(cards).to_have_count(PAGE_SIZE)
    page.get_by_label("Search prompts").fill("zebra")
    expect(cards).to_have_count(SEEDED // len(SUBJECTS))
    for prompt in cards.locator(".caption").all_inner_texts():
        assert "zebra" in prompt
    page.get_by_label("Search prompts").fill("zebra study 3")
    expect(cards).to_have_count(1)
    page.get_by_label("Search prompts").fill("no such words anywhere")
    expect(cards).to_have_count(0)
    expect(page.locator("#status")).to_contain_text("No image matches")
    page.get_by_label("Search prompts").fill("")
    expect(cards).to_have_count(PAGE_SIZE)


def test_detail_shows_provenance_copies_and_downloads(
    openai_server: RunningServer, fake_openai: FakeOpenAI, open_page: Callable[..., Any]
) -> None:
    fake_openai.reset()
    prompt = "a harbour seal reading the news"
    with openai_server.client() as client:
        detail = client.post("/image", json={"prompt": prompt}).raise_for_status().json()
        original = client.get(f"/image/{detail['guid']}/content").content
    page = open_page(openai_server)
    card_of(page, prompt).get_by_role("button").click()
    dialog = page.locator("#detail")
    expect(dialog).to_be_visible()
    generation = detail["generation"]
    expect(dialog.locator("#field-prompt")).to_have_text(prompt)
    expect(dialog.locator("#field-revised")).to_have_text(generation["revised_prompt"])
    expect(dialog.locator("#field-generator")).to_have_text("openai")
    expect(dialog.locator("#field-model")).to_have_text(generation["model"])
    expect(dialog.locator("#field-latency")).to_have_text(f"{generation['latency_ms']} ms")
    expect(dialog.locator("#field-sha256")).to_have_text(detail["sha256"])
    expect(dialog.locator("#field-size")).to_contain_text("32 \u00d7 32 px")
    expect(dialog.locator("#field-created")).not_to_be_empty()
    if "owner" in detail:
        expect(dialog.locator("#field-owner")).to_have_text(str(detail["owner"]))
    expect(dialog.get_by_alt_text(prompt, exact=True)).to_be_visible()

    dialog.get_by_role("button", name="Copy prompt").click()
    expect(dialog.locator("#detail-status")).to_have_text("Prompt copied.")
    assert page.evaluate("navigator.clipboard.readText()") == prompt

    with page.expect_download(timeout=WAIT_MS) as download_info:
        dialog.get_by_role("button", name="Download").click()
    download = download_info.value
    assert download.suggested_filename == detail["filename"]
    saved = Path(download.path()).read_bytes()
    assert hashlib.sha256(saved).hexdigest() == detail["sha256"]
    assert saved == original

    page.keyboard.press("Escape")
    expect(dialog).to_be_hidden()
    assert page.evaluate("document.activeElement.closest('li.card')?.dataset.guid") == detail["guid"]


def test_delete_asks_quoting_the_prompt_then_removes_the_card_and_the_image(
    server: RunningServer, open_page: Callable[..., Any]
) -> None:
    prompt = "a sandcastle the tide will take"
    with server.client() as client:
        guid = client.post("/image", json={"prompt": prompt}).raise_for_status().json()["guid"]
    page = open_page(server)
    card = card_of(page, prompt)
    card.get_by_role("button").focus()
    page.keyboard.press("Enter")  # keyboard reachable
    page.locator("#detail").get_by_role("button", name="Delete").click()
    confirm = page.locator("#confirm-delete")
    expect(confirm).to_be_visible()
    expect(confirm.locator("blockquote")).to_have_text(prompt)
    confirm.get_by_role("button", name="Keep it").click()
    expect(confirm).to_be_hidden()
    expect(page.locator("#detail")).to_be_visible()
    page.locator("#detail").get_by_role("button", name="Delete").click()
    confirm.get_by_role("button", name="Delete").click()
    expect(page.locator("#detail")).to_be_hidden()
    expect(card).to_have_count(0)
    assert page.evaluate("document.getElementById('grid').contains(document.activeElement)")
    with server.client() as client:
        assert client.get(f"/image/{guid}").status_code == 404
        assert client.get(f"/image/{guid}/content").status_code == 404
        assert client.get(f"/image/{guid}/thumbnail").status_code == 404


def test_with_keys_the_page_asks_for_one_and_works_after(
    keyed_server: RunningServer, open_page: Callable[..., Any]
) -> None:
    auth = {"Authorization": f"Bearer {API_KEY}"}
    with keyed_server.client(headers=auth) as client:
        client.post("/image", json={"prompt": "a locked treasure chest"}).raise_for_status()
    page = open_page(keyed_server)
    dialog = page.locator("#key-dialog")
    expect(dialog).to_be_visible()
    dialog.get_by_label("Key").fill(API_KEY)
    dialog.get_by_role("button", name="Use this key").click()
    expect(dialog).to_be_hidden()
    expect(card_of(page, "a locked treasure chest")).to_be_visible()
    wait_for_thumbnails(page)
    assert page.evaluate("sessionStorage.getItem('pixyproxy.api-key')") == API_KEY
    page.get_by_label("Prompt", exact=True).fill("a key-holder's own picture")
    page.get_by_label("Prompt", exact=True).press("Enter")
    expect(card_of(page, "a key-holder's own picture")).to_be_visible()
    # Reloading keeps the key for the tab: no question asked again.
    page.reload()
    expect(card_of(page, "a key-holder's own picture")).to_be_visible()
    expect(dialog).to_be_hidden()
    assert newest(keyed_server, "a key-holder's own picture", **auth)["generator"] == "procedural"


@pytest.mark.parametrize("width", [1280, 360])
def test_screenshots_of_grid_and_detail(
    server: RunningServer, open_page: Callable[..., Any], width: int, tmp_path: Path
) -> None:
    # The screenshots take a run's own creation times: rewritten only when asked, so that a test run
    # leaves the tree as it found it (`PIXYPROXY_WRITE_SCREENSHOTS=1 pytest -k screenshots`).
    target = SCREENSHOTS if os.environ.get("PIXYPROXY_WRITE_SCREENSHOTS") == "1" else tmp_path
    target.mkdir(parents=True, exist_ok=True)
    page = open_page(server, width=width, height=800)
    expect(page.locator("#grid li.card[data-guid]").first).to_be_visible()
    wait_for_thumbnails(page)
    page.screenshot(path=str(target / f"gallery-grid-{width}.png"))
    page.locator("#grid li.card[data-guid] button").first.click()
    expect(page.locator("#detail")).to_be_visible()
    page.wait_for_function(
        "() => { const i = document.getElementById('detail-image'); return i.complete && i.naturalWidth > 0 }"
    )
    expect(page.locator("#field-size")).to_contain_text("px")
    page.screenshot(path=str(target / f"gallery-detail-{width}.png"))
    for view in ("grid", "detail"):
        assert (target / f"gallery-{view}-{width}.png").read_bytes().startswith(b"\x89PNG")
