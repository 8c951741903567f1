"""The FastAPI app factory: builds the container, wires the routes, installs the one handler."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException as StarletteHTTPException

from pixyproxy import __version__
from pixyproxy.domain.exceptions import ImageGenerationException
from pixyproxy.entrypoints.api_keys import KeyRing, NamedKey
from pixyproxy.entrypoints.container import (
    Container,
    adapters_open,
    build_container,
)
from pixyproxy.entrypoints.http import docs, gallery, jobs_routes, openai_routes, ops, routes
from pixyproxy.entrypoints.http.auth import OPEN_PATHS, OPEN_PREFIXES, ApiKeyMiddleware, reload_api_keys
from pixyproxy.entrypoints.http.detail_bodies import DetailBodies
from pixyproxy.entrypoints.http.middleware import RequestContextMiddleware
from pixyproxy.entrypoints.http.openai_errors import OPENAI_ERROR_DESCRIPTIONS
from pixyproxy.entrypoints.http.problems import (
    PROBLEM_DESCRIPTIONS,
    PROBLEM_MEDIA_TYPE,
    Problem,
    handle_exception,
    leaf_routes,
)
from pixyproxy.entrypoints.http.quota_headers import QuotaMiddleware
from pixyproxy.entrypoints.http.reused import Reused
from pixyproxy.entrypoints.job_runner import jobs_running
from pixyproxy.entrypoints.logging_setup import configure_logging

log = logging.getLogger(__name__)

DESCRIPTION = """
Generate images from prompts, store them, and serve them back.

Every error is an RFC 9457 `application/problem+json` document with a `request_id`.
A prompt refused by the generator's content policy is **422** (type `prompt-rejected`).

`/v1/images/generations` and `/v1/models` speak OpenAI's images API for OpenAI's clients; their
errors have OpenAI's shape (`OpenAIError`) and statuses instead.
"""


def create_app(container: Container | None = None) -> FastAPI:
    """The PixyProxy ASGI app, with adapters bound from containers.yml unless a container is given."""
    container = container or build_container()
    http_settings = container.settings().http
    # The table the key check reads; a SIGHUP swaps in the keys file's new contents.
    key_ring = KeyRing(http_settings.named_keys())

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Build the adapters now, so a bad binding fails start-up rather than the first request.
        container.blob_store()
        container.generator()
        with _reload_keys_on_sighup(key_ring, http_settings.inline_keys(), http_settings.api_keys_file):
            async with (
                adapters_open(container),
                jobs_running(
                    container.job_service(),
                    container.job_queue(),
                    # Without a broker the API runs the jobs itself; with one, only workers do.
                    consume=container.job_queue().in_process,
                    concurrency=container.config.generator.max_concurrent(),
                    sweep_interval_s=container.config.jobs.sweep_interval_s(),
                    webhooks=container.webhook_service(),
                    webhook_interval_s=container.config.webhooks.poll_interval_s(),
                ),
            ):
                log.info(
                    "PixyProxy %s ready: repository=%s blob_store=%s generator=%s job_queue=%s",
                    __version__,
                    container.config.repository.kind(),
                    container.config.blob_store.kind(),
                    container.config.generator.kind(),
                    container.config.jobs.queue(),
                )
                yield
        container.metrics().forget_this_process()

    app = FastAPI(
        title="PixyProxy",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        # Served by docs.router from packaged files, not FastAPI's CDN defaults.
        docs_url=None,
        redoc_url=None,
    )
    app.state.container = container
    app.state.detail_bodies = DetailBodies()  # GET /image/{guid}'s JSON, made once per record
    # The hot reads' ImageService, made again only when a collaborator is another object (overrides).
    app.state.image_service = Reused(
        container.image_service, container.repository, container.blob_store, container.generator
    )
    container.wire(modules=[routes, jobs_routes, ops, openai_routes])
    app.include_router(routes.router)
    app.include_router(jobs_routes.router)
    app.include_router(ops.router)
    app.include_router(openai_routes.router)
    app.include_router(docs.router)
    gallery.install(app)
    for exc_type in (ImageGenerationException, RequestValidationError, StarletteHTTPException):
        app.add_exception_handler(exc_type, handle_exception)
    # Added innermost first: the request context (logs, metrics) wraps auth's refusals too.
    # With no keys configured there is nothing to check, so no layer for it on every request.
    # Inside the key check, which names the owner whose quota is spent; none when no quota is set.
    requests_quota, generations_quota = container.request_quota(), container.generation_quota()
    if requests_quota.configured or generations_quota.configured:
        app.add_middleware(QuotaMiddleware, requests=requests_quota, generations=generations_quota)
    # With a keys file the check is installed even while it names no key, so a reload can add some.
    if key_ring.entries or http_settings.api_keys_file:
        app.add_middleware(ApiKeyMiddleware, ring=key_ring)
    app.state.key_ring = key_ring
    app.add_middleware(
        RequestContextMiddleware,
        # Never below the largest valid request of either API.
        max_body_bytes=max(container.settings().http.body_cap(), openai_routes.largest_valid_body_bytes()),
        metrics=container.metrics(),
    )
    _declare_gate_answers(app)
    _publish_problem_schema(app)
    openai_routes.document_served_models(app, container.served_models())
    return app


# What the layers in front of every route but the open ones may answer, whichever route it is: a
# missing key (401), a spent request quota (429), a quota storage that is down under `deny` (503).
GATE_STATUSES = (401, 429, 503)


def _declare_gate_answers(app: FastAPI) -> None:
    """Declare the key and quota layers' answers in every gated route's OpenAPI, in its API's shape
    (OpenAI's error under /v1/, a problem elsewhere), where the route does not declare them itself."""
    for route in leaf_routes(app.routes):
        if (
            not isinstance(route, APIRoute)
            or route.path in OPEN_PATHS
            or route.path.startswith(OPEN_PREFIXES)
        ):
            continue
        openai = route.path.startswith("/v1/")
        schema = "OpenAIError" if openai else "Problem"
        media_type = "application/json" if openai else PROBLEM_MEDIA_TYPE
        descriptions = OPENAI_ERROR_DESCRIPTIONS if openai else PROBLEM_DESCRIPTIONS
        for status in GATE_STATUSES:
            if status in route.responses or str(status) in route.responses:
                continue
            # A $ref rather than a `model`: FastAPI reads models when the route is made, not now.
            route.responses[status] = {
                "description": descriptions.get(status, "Error"),
                "content": {media_type: {"schema": {"$ref": f"#/components/schemas/{schema}"}}},
            }


@contextmanager
def _reload_keys_on_sighup(ring: KeyRing, inline: list[NamedKey], path: str | None) -> Iterator[None]:
    """While the app serves, SIGHUP re-reads the keys file into `ring` (when a file is configured)."""
    if not path:
        yield
        return
    loop = asyncio.get_running_loop()
    try:
        loop.add_signal_handler(signal.SIGHUP, reload_api_keys, ring, inline, path)
    except (NotImplementedError, RuntimeError, ValueError):  # not the main thread, or no SIGHUP here
        log.warning("SIGHUP cannot reload PIXYPROXY_API_KEYS_FILE in this process")
        yield
        return
    try:
        yield
    finally:
        loop.remove_signal_handler(signal.SIGHUP)


def create_served_app() -> FastAPI:
    """The app as `pixyproxy serve` runs it: logging set up first, in whichever process builds it.

    With `--workers N` (or `--reload`) uvicorn builds the app in fresh worker processes, where
    the command's own logging set-up never ran: without this their lines would be lost.
    """
    container = build_container()
    settings = container.settings()
    configure_logging(settings.logging.level, settings.logging.format)
    return create_app(container)


def _publish_problem_schema(app: FastAPI) -> None:
    """Make the Problem schema a named component that every route's error responses point at."""
    original = app.openapi

    def openapi() -> dict[str, object]:
        if app.openapi_schema is None:
            schema = original()
            # Listed as declared, not in the order routes are tried (routes.py tries hot reads first).
            declared = {path: rank for rank, path in enumerate(routes.DOCUMENTED_PATHS)}
            paths: dict[str, object] = schema.get("paths", {})
            schema["paths"] = dict(
                sorted(paths.items(), key=lambda item: declared.get(item[0], len(declared)))
            )
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            components["Problem"] = Problem.model_json_schema(ref_template="#/components/schemas/{model}")
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's documented way to extend the schema
