"""The FastAPI app factory: builds the container, wires the routes, installs the one handler."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from pixyproxy import __version__
from pixyproxy.domain.exceptions import ImageGenerationException, RepositoryUnavailableError
from pixyproxy.entrypoints.container import Container, build_container
from pixyproxy.entrypoints.http import routes
from pixyproxy.entrypoints.http.middleware import RequestContextMiddleware
from pixyproxy.entrypoints.http.problems import Problem, handle_exception

log = logging.getLogger(__name__)

DESCRIPTION = """
Generate images from prompts, store them, and serve them back.

Every error is an RFC 9457 `application/problem+json` document with a `request_id`.
A prompt refused by the generator's content policy is **422** (type `prompt-rejected`).
"""


async def close_adapters(container: Container) -> None:
    """Close every adapter the container has built, even when one of them fails to close."""
    for provider in (container.generator, container.blob_store, container.repository):
        try:
            await provider().close()
        except Exception:
            log.exception("closing %s failed", provider)


async def _initialize_repository(container: Container) -> None:
    """Let a repository that can (mysql) create its schema and check its server before serving.

    A server that is down only delays this: the adapter retries on the first request, which
    answers 503 until the database is back, so PixyProxy need not be restarted.
    """
    repository = container.repository()
    initialize = getattr(repository, "initialize", None)
    if initialize is None:
        return
    try:
        await initialize()
    except RepositoryUnavailableError as err:
        log.warning("repository not ready at start-up, will retry on first use: %s", err)


def create_app(container: Container | None = None) -> FastAPI:
    """The PixyProxy ASGI app, with adapters bound from containers.yml unless a container is given."""
    container = container or build_container()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Build the adapters now, so a bad binding fails start-up rather than the first request.
        await _initialize_repository(container)
        container.blob_store()
        container.generator()
        log.info(
            "PixyProxy %s ready: repository=%s blob_store=%s generator=%s",
            __version__,
            container.config.repository.kind(),
            container.config.blob_store.kind(),
            container.config.generator.kind(),
        )
        yield
        await close_adapters(container)

    app = FastAPI(
        title="PixyProxy",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
    )
    app.state.container = container
    container.wire(modules=[routes])
    app.include_router(routes.router)
    for exc_type in (ImageGenerationException, RequestValidationError, StarletteHTTPException):
        app.add_exception_handler(exc_type, handle_exception)
    app.add_middleware(RequestContextMiddleware, max_body_bytes=container.config.http.max_body_bytes())
    _publish_problem_schema(app)
    return app


def _publish_problem_schema(app: FastAPI) -> None:
    """Make the Problem schema a named component that every route's error responses point at."""
    original = app.openapi

    def openapi() -> dict[str, object]:
        if app.openapi_schema is None:
            schema = original()
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            components["Problem"] = Problem.model_json_schema(ref_template="#/components/schemas/{model}")
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's documented way to extend the schema
