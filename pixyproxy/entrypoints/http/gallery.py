"""The gallery page: `GET /` and its static files. The page is a client of the public API, nothing more."""

from __future__ import annotations

from functools import cache
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

STATIC_DIR = Path(__file__).with_name("static")
STATIC_PREFIX = "/static"
# Everything from this origin, nothing inline: an injected prompt can never become script or style.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; img-src 'self' blob: data:; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)
PAGE_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}
KEY_REQUIRED_MARK = "__KEY_REQUIRED__"


@cache
def _page_template() -> str:
    return (STATIC_DIR / "index.html").read_text(encoding="utf-8")


async def gallery_page(request: Request) -> HTMLResponse:
    """The page; it is told whether the service wants a key, so it asks before its first call."""
    key_required = bool(request.app.state.key_ring.entries)
    html = _page_template().replace(KEY_REQUIRED_MARK, "true" if key_required else "false")
    return HTMLResponse(html, headers=PAGE_HEADERS)


def install(app: FastAPI) -> None:
    """Serve the page at `/` and its script and stylesheet under /static (neither in the API schema)."""
    app.add_api_route(
        "/", gallery_page, methods=["GET"], include_in_schema=False, response_class=HTMLResponse
    )
    app.mount(STATIC_PREFIX, StaticFiles(directory=STATIC_DIR), name="static")
