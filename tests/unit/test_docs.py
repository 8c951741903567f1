"""`/docs` and `/redoc` load everything from this host, under a CSP that allows nothing else."""

from __future__ import annotations

import re

import httpx
import pytest
from fastapi import FastAPI

from pixyproxy.entrypoints.http.docs import ASSETS

PAGES = ["/docs", "/redoc"]
# Whatever an HTML page can point at: src, href, and the spec-url of ReDoc's element.
REFERENCE = re.compile(r'\b(?:src|href|spec-url|data-openapi-url)="([^"]*)"')
EXPECTED_TYPES = {".js": "text/javascript", ".css": "text/css", ".png": "image/png"}


def _references(page: str) -> list[str]:
    return REFERENCE.findall(page)


@pytest.mark.parametrize("path", PAGES)
async def test_page_references_nothing_outside_this_host(client: httpx.AsyncClient, path: str) -> None:
    response = await client.get(path)

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    refs = _references(response.text)
    assert refs, "the page loads no assets at all"
    assert all(ref.startswith("/") and not ref.startswith("//") for ref in refs), refs
    assert "http://" not in response.text
    assert "https://" not in response.text


@pytest.mark.parametrize("path", PAGES)
async def test_page_sets_a_self_only_csp_and_has_no_inline_script(
    client: httpx.AsyncClient, path: str
) -> None:
    response = await client.get(path)

    csp = response.headers["content-security-policy"]
    directives = dict(d.strip().split(" ", 1) for d in csp.split(";"))
    assert directives["default-src"] == "'self'"
    assert "script-src" not in directives  # so scripts fall back to default-src: 'self' alone
    assert "unsafe-eval" not in csp
    # No source list may name another host: only 'self', 'none', and the page's own data:/blob:.
    # ReDoc alone may add inline styles (its styled-components), which load nothing.
    allowed_styles = {"'unsafe-inline'"} if path == "/redoc" else set()
    for name, sources in directives.items():
        extra = allowed_styles if name == "style-src" else set()
        assert set(sources.split()) <= {"'self'", "'none'", "data:", "blob:", *extra}, csp
    if path == "/docs":
        assert "unsafe-inline" not in csp
    # Every <script> has a src (so the CSP lets it run) and there is no <style> block.
    assert re.findall(r"<script(?![^>]*\bsrc=)[^>]*>", response.text) == []
    assert "<style" not in response.text
    assert " style=" not in response.text


@pytest.mark.parametrize("path", PAGES)
async def test_every_asset_a_page_references_is_served(client: httpx.AsyncClient, path: str) -> None:
    page = (await client.get(path)).text

    for ref in _references(page):
        response = await client.get(ref)
        assert response.status_code == 200, ref
        if ref == "/openapi.json":
            assert response.headers["content-type"] == "application/json"
            continue
        suffix = ref[ref.rindex(".") :]
        assert response.headers["content-type"].split(";")[0] == EXPECTED_TYPES[suffix], ref
        assert response.headers["x-content-type-options"] == "nosniff"
        assert len(response.content) > 0


async def test_swagger_init_script_points_nowhere_else(client: httpx.AsyncClient) -> None:
    script = (await client.get("/docs/static/swagger-init.js")).text

    assert "validatorUrl: null" in script
    assert "http://" not in script
    assert "https://" not in script


async def test_every_listed_asset_exists() -> None:
    for name, (path, _media_type) in ASSETS.items():
        assert path.is_file(), name


async def test_an_unknown_asset_is_404_and_never_reaches_the_file_system(client: httpx.AsyncClient) -> None:
    for path in ["/docs/static/nope.js", "/docs/static/..%2F..%2Fdocs.py", "/docs/static/%2e%2e"]:
        response = await client.get(path)
        assert response.status_code == 404, path


async def test_the_cdn_defaults_are_off(app: FastAPI, client: httpx.AsyncClient) -> None:
    assert app.docs_url is None
    assert app.redoc_url is None
    swagger = (await client.get("/docs")).text
    assert "cdn.jsdelivr.net" not in swagger
    assert "fonts.googleapis.com" not in (await client.get("/redoc")).text
