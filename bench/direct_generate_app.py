"""PixyProxy as it generated before the jobs issue: `POST /image` calls `ImageService.generate` directly.

Figure 4-generate-p50's baseline. The app is the one `pixyproxy serve` runs (middleware, auth, the
other routes, the in-process job runner) with one route swapped: the synchronous `POST /image` no
longer records a job, runs it and waits for it, but generates, stores and answers the detail.

No `from __future__ import annotations` here: FastAPI reads the route's real annotations.
"""

from typing import Annotated

from fastapi import Depends, FastAPI, Response
from fastapi.routing import APIRoute

from pixyproxy.app.requests import GenerateImageRequest
from pixyproxy.app.service import ImageService
from pixyproxy.domain.models import ImageDetail
from pixyproxy.entrypoints.container import Container
from pixyproxy.entrypoints.http import routes
from pixyproxy.entrypoints.http.app import create_app as create_pixyproxy_app
from pixyproxy.entrypoints.http.identity import Viewer, current_viewer
from pixyproxy.entrypoints.http.routes import require_json_body


def create_app() -> FastAPI:
    """PixyProxy's app, its `POST /image` served by the pre-jobs path."""
    # This process serves only this app: drop the job path's route from the images router before
    # the app includes it (FastAPI matches an included router's own routes).
    routes.router.routes[:] = [
        route
        for route in routes.router.routes
        if not (isinstance(route, APIRoute) and route.path == "/image" and "POST" in (route.methods or ()))
    ]
    app = create_pixyproxy_app()
    container: Container = app.state.container

    @app.post(
        "/image", status_code=201, response_model=ImageDetail, dependencies=[Depends(require_json_body)]
    )
    async def generate_directly(
        body: GenerateImageRequest, response: Response, viewer: Annotated[Viewer, Depends(current_viewer)]
    ) -> ImageDetail:
        """The pre-jobs path: generate, store, answer the detail; no job."""
        images: ImageService = container.image_service()
        detail = await images.generate(body, owner=viewer.owner)
        response.headers["Location"] = f"/image/{detail.guid}"
        return detail

    return app
