"""API documentation pages, `/docs` (Swagger UI) and `/redoc`, served with no request leaving the host.

FastAPI's defaults load Swagger UI and ReDoc from a CDN, so on a host without internet access the
pages are blank, and their inline script cannot live under a strict Content-Security-Policy. Here
the bundles come from the `fastapi-offline` package, our own start-up script and stylesheet from
`static/docs/`, and the pages themselves hold no inline script or style.
"""

from __future__ import annotations

import html
from importlib.resources import files
from pathlib import Path
from typing import Final

import fastapi_offline
from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import FileResponse, HTMLResponse

OPENAPI_URL: Final = "/openapi.json"
ASSETS_URL: Final = "/docs/static"

# Only 'self': data: and blob: are content the page makes itself (Swagger UI's icons are data: SVGs
# in its stylesheet; ReDoc runs its search index in a blob: worker), never a request to another host.
_DIRECTIVES: Final = [
    "default-src 'self'",
    "img-src 'self' data:",
    "worker-src 'self' blob:",
    "object-src 'none'",
    "base-uri 'self'",
    "form-action 'self'",
    "frame-ancestors 'self'",
]
CONTENT_SECURITY_POLICY: Final = "; ".join(_DIRECTIVES)
# ReDoc styles itself with styled-components, which writes <style> elements at run time and cannot
# be given a nonce from outside its bundle: without 'unsafe-inline' styles it shows only an error.
# Scripts, fonts, images and connections stay 'self'-only, so a style can still load nothing.
REDOC_CONTENT_SECURITY_POLICY: Final = "; ".join([*_DIRECTIVES, "style-src 'self' 'unsafe-inline'"])

_BUNDLES = Path(str(files(fastapi_offline) / "static"))
_OWN = Path(__file__).parent / "static" / "docs"

# Every file the pages may ask for: a fixed table, so no request path ever reaches the file system.
ASSETS: Final[dict[str, tuple[Path, str]]] = {
    "swagger-ui-bundle.js": (_BUNDLES / "swagger-ui-bundle.js", "text/javascript"),
    "swagger-ui.css": (_BUNDLES / "swagger-ui.css", "text/css"),
    "redoc.standalone.js": (_BUNDLES / "redoc.standalone.js", "text/javascript"),
    "favicon.png": (_BUNDLES / "favicon.png", "image/png"),
    "swagger-init.js": (_OWN / "swagger-init.js", "text/javascript"),
    "docs.css": (_OWN / "docs.css", "text/css"),
}

router = APIRouter(include_in_schema=False)

_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<link rel="icon" type="image/png" href="{assets}/favicon.png">
{stylesheets}
</head>
<body data-openapi-url="{openapi_url}">
{body}
{scripts}
</body>
</html>
"""


def _page(
    request: Request,
    *,
    title: str,
    stylesheets: list[str],
    body: str,
    scripts: list[str],
    policy: str = CONTENT_SECURITY_POLICY,
) -> HTMLResponse:
    """An HTML page that loads only the given assets from 'self', under the given CSP."""
    root = html.escape(request.scope.get("root_path", ""), quote=True)
    assets = f"{root}{ASSETS_URL}"
    content = _PAGE.format(
        title=html.escape(title),
        assets=assets,
        openapi_url=f"{root}{OPENAPI_URL}",
        stylesheets="\n".join(f'<link rel="stylesheet" href="{assets}/{name}">' for name in stylesheets),
        body=body.format(openapi_url=f"{root}{OPENAPI_URL}"),
        scripts="\n".join(f'<script src="{assets}/{name}"></script>' for name in scripts),
    )
    return HTMLResponse(
        content,
        headers={
            "Content-Security-Policy": policy,
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer",
        },
    )


@router.get("/docs")
async def swagger_ui(request: Request) -> HTMLResponse:
    """Swagger UI: try every operation from the browser."""
    return _page(
        request,
        title=f"{request.app.title} - Swagger UI",
        stylesheets=["swagger-ui.css", "docs.css"],
        body='<div id="swagger-ui"></div>',
        scripts=["swagger-ui-bundle.js", "swagger-init.js"],
    )


@router.get("/redoc")
async def redoc(request: Request) -> HTMLResponse:
    """ReDoc: the whole API on one page."""
    return _page(
        request,
        title=f"{request.app.title} - ReDoc",
        stylesheets=["docs.css"],
        body='<redoc spec-url="{openapi_url}"></redoc>',
        scripts=["redoc.standalone.js"],
        policy=REDOC_CONTENT_SECURITY_POLICY,
    )


@router.get(ASSETS_URL + "/{name}")
async def asset(name: str) -> FileResponse:
    """One of the pages' scripts, stylesheets or icon; anything else is 404."""
    if name not in ASSETS:
        raise HTTPException(status_code=404, detail=f"no documentation asset named {name!r}")
    path, media_type = ASSETS[name]
    return FileResponse(
        path,
        media_type=media_type,
        headers={"Cache-Control": "public, max-age=3600", "X-Content-Type-Options": "nosniff"},
    )
