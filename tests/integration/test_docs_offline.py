"""`/docs` and `/redoc` in Debian's headless Chromium, with every request off this host refused.

The pages must render the operations from packaged files alone, with no CSP violation, console
error or failed request.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from playwright import sync_api as playwright_api

from tests.support.browser import headless_chromium
from tests.support.server import RunningServer, running_server

WAIT_MS = 15_000
# ReDoc's side menu links to Redocly with this logo; the CSP blocks it before any request is made,
# which is the CSP doing its job, so it is the one problem a page may report.
REDOC_LOGO = "https://cdn.redoc.ly/redoc/logo-mini.svg"


def _csp_blocked_redoc_logo(problem: str) -> bool:
    return REDOC_LOGO in problem and ("Content Security Policy" in problem or problem.endswith(": csp"))


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """One headless Chromium for the module."""
    with headless_chromium() as chromium:
        yield chromium


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """The embedded default, as `make run` starts it."""
    root = tmp_path_factory.mktemp("docs")
    with running_server({"PIXYPROXY_DATA_DIR": str(root / "data")}, root / "server.log") as running:
        yield running


@pytest.fixture
def open_offline(browser: Any, server: RunningServer) -> Iterator[Callable[[str], tuple[Any, list[str]]]]:
    """Open a path with every non-local request aborted; afterwards, fail on any problem the page had."""
    problems: list[str] = []
    blocked: list[str] = []
    context = browser.new_context(base_url=server.base_url)
    context.set_default_timeout(WAIT_MS)
    local = urlsplit(server.base_url).netloc

    def route(request_route: Any) -> None:
        url = request_route.request.url
        if urlsplit(url).scheme in ("http", "https", "ws", "wss") and urlsplit(url).netloc != local:
            blocked.append(url)
            request_route.abort()
        else:
            request_route.continue_()

    context.route("**/*", route)

    def open_path(path: str) -> tuple[Any, list[str]]:
        page = context.new_page()
        page.on("console", lambda m: problems.append(f"console {m.text}") if m.type == "error" else None)
        page.on("pageerror", lambda e: problems.append(f"page error {e}"))
        page.on("requestfailed", lambda r: problems.append(f"failed {r.method} {r.url}: {r.failure}"))
        page.goto(path)
        return page, blocked

    try:
        yield open_path
        assert blocked == []
        assert [p for p in problems if not _csp_blocked_redoc_logo(p)] == []
    finally:
        context.close()


def test_swagger_ui_lists_the_operations_offline(
    open_offline: Callable[[str], tuple[Any, list[str]]], tmp_path: Path
) -> None:
    page, blocked = open_offline("/docs")

    operations = page.locator(".opblock")
    playwright_api.expect(operations.first).to_be_visible()
    assert operations.count() >= 10
    playwright_api.expect(
        page.locator(".opblock-summary-path", has_text="/image/{guid}").first
    ).to_be_visible()
    assert blocked == []


def test_redoc_lists_the_operations_offline(open_offline: Callable[[str], tuple[Any, list[str]]]) -> None:
    page, blocked = open_offline("/redoc")

    playwright_api.expect(page.get_by_role("heading", name="PixyProxy", exact=False).first).to_be_visible()
    operations = page.locator("[data-section-id^='operation/']")
    playwright_api.expect(operations.first).to_be_attached()
    assert operations.count() >= 10
    assert blocked == []
