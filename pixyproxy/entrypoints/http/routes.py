"""The image endpoints. Each parses input, calls one use-case, and shapes the response.

No `from __future__ import annotations` here: dependency-injector reads the real annotations.
"""

import contextlib
import email.message
import json
from collections.abc import AsyncIterator
from typing import Annotated, Any
from urllib.parse import quote, urlencode

from dependency_injector.wiring import inject
from fastapi import APIRouter, Depends, Header, Path, Query, Request, Response
from fastapi.responses import JSONResponse, RedirectResponse, StreamingResponse
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import BaseRoute

from pixyproxy.app.jobs import JobService, JobView
from pixyproxy.app.requests import (
    DEFAULT_PAGE_LIMIT,
    GUID_PATTERN,
    IDEMPOTENCY_KEY_PATTERN,
    ISO_TIME_PATTERN,
    MAX_GENERATOR_CHARS,
    MAX_MODEL_CHARS,
    MAX_PAGE_LIMIT,
    MAX_SEARCH_CHARS,
    GenerateImageRequest,
)
from pixyproxy.app.service import ImageService
from pixyproxy.app.thumbnails import DEFAULT_THUMBNAIL_WIDTH, THUMBNAIL_WIDTHS
from pixyproxy.domain.exceptions import InvalidRequestError
from pixyproxy.domain.models import ImageDetail, JobStatus
from pixyproxy.entrypoints.api_keys import KEY_NAME_PATTERN
from pixyproxy.entrypoints.container import Container
from pixyproxy.entrypoints.http.detail_bodies import DetailBodies
from pixyproxy.entrypoints.http.identity import CurrentViewer, viewer_of
from pixyproxy.entrypoints.http.injection import AsyncProvide
from pixyproxy.entrypoints.http.jobs_routes import poll_headers
from pixyproxy.entrypoints.http.problems import problem_responses
from pixyproxy.entrypoints.job_documents import JobOut
from pixyproxy.entrypoints.settings import Settings

router = APIRouter(tags=["images"])

GuidPath = Annotated[str, Path(pattern=GUID_PATTERN, description="The image's GUID.")]
Service = Annotated[ImageService, Depends(AsyncProvide[Container.image_service])]
Jobs = Annotated[JobService, Depends(AsyncProvide[Container.job_service])]
Config = Annotated[Settings, Depends(AsyncProvide[Container.settings])]
MAX_PREFER_WAIT_S = 60
OWNER_PATTERN = "^" + KEY_NAME_PATTERN + "$"


def parse_prefer(header: str | None) -> tuple[bool, int | None]:
    """(respond-async asked, wait=N asked) from an RFC 7240 Prefer header; other preferences are ignored."""
    respond_async, wait = False, None
    for preference in (header or "").split(","):
        name, _, value = preference.split(";")[0].strip().partition("=")
        name = name.strip().lower()
        if name == "respond-async":
            respond_async = True
        elif name == "wait":
            seconds = value.strip().strip('"')
            if not seconds.isdigit() or not 1 <= int(seconds) <= MAX_PREFER_WAIT_S:
                raise InvalidRequestError(f"wait must be 1 to {MAX_PREFER_WAIT_S} seconds", field="Prefer")
            wait = int(seconds)
    return respond_async, wait


def _refuse_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """An object hook that refuses a key given twice, rather than silently keeping the last."""
    seen: dict[str, Any] = {}
    for key, value in pairs:
        if key in seen:
            raise InvalidRequestError(f"the key {key!r} appears more than once", field="body")
        seen[key] = value
    return seen


async def require_json_body(request: Request) -> None:
    """Refuse a body that is not JSON with 415, and JSON with a repeated key with 422.

    FastAPI only parses `application/json` and `application/*+json` as JSON, and answers any
    other body with a misleading "not an object" 422; a repeated key would silently keep the
    last value, so a proxy that checked the first one and PixyProxy could disagree.
    """
    content_type = request.headers.get("content-type", "")
    header = email.message.Message()
    header["content-type"] = content_type
    subtype = header.get_content_subtype()
    is_json = header.get_content_maintype() == "application" and (
        subtype == "json" or subtype.endswith("+json")
    )
    if not content_type or not is_json:
        raise StarletteHTTPException(415, "the request body must be application/json")
    body = await request.body()  # already read (and cached) by FastAPI; parsing it is cheap under the cap
    if body:
        # Malformed JSON was already answered by FastAPI's own parse; only the duplicate check is new.
        with contextlib.suppress(json.JSONDecodeError):
            json.loads(body, object_pairs_hook=_refuse_duplicate_keys)


@router.post(
    "/image",
    status_code=201,
    response_model=ImageDetail,
    summary="Generate an image from a prompt",
    responses={
        201: {
            "description": "Created; Location names the new image",
            "headers": {"Location": {"schema": {"type": "string"}}},
        },
        202: {
            "model": JobOut,
            "description": (
                "Accepted as a job (Prefer: respond-async, or a Prefer: wait=N that ran out); "
                "Location names the job, Retry-After says when to look"
            ),
            "headers": {
                "Location": {"schema": {"type": "string"}},
                "Preference-Applied": {"schema": {"type": "string"}},
                "Retry-After": {"schema": {"type": "integer"}},
            },
        },
        200: {
            "model": JobOut,
            "description": "An idempotent replay of an async request whose job has finished",
        },
        **problem_responses(401, 409, 410, 413, 415, 422, 429, 500, 502, 503),
    },
    dependencies=[Depends(require_json_body)],
)
@inject
async def generate_image(
    body: GenerateImageRequest,
    response: Response,
    jobs: Jobs,
    viewer: CurrentViewer,
    idempotency_key: Annotated[
        str | None,
        Header(
            alias="Idempotency-Key",
            pattern=IDEMPOTENCY_KEY_PATTERN,
            description="A retry with the same key and body returns the first result and generates nothing.",
        ),
    ] = None,
    prefer: Annotated[
        str | None,
        Header(
            alias="Prefer",
            description=(
                "`respond-async`: answer 202 with the job at once. `wait=N` (1 to 60): the image if it "
                "is ready within N seconds, else 202 with the job. Without it: wait for the image."
            ),
        ),
    ] = None,
) -> Any:
    """Generate an image, store it, and return its detail; or accept it as a job and return the job."""
    respond_async, wait_s = parse_prefer(prefer)
    if not respond_async and wait_s is None:
        detail = await jobs.generate_now(body, idempotency_key=idempotency_key, owner=viewer.owner)
        response.headers["Location"] = f"/image/{detail.guid}"
        return detail
    job, created = await jobs.submit(body, idempotency_key=idempotency_key, owner=viewer.owner)
    if wait_s is not None and not respond_async:
        job = await jobs.wait(job.id, timeout_s=wait_s)
        if job.status.finished:
            detail = await jobs.outcome(job)
            response.headers["Location"] = f"/image/{detail.guid}"
            response.headers["Preference-Applied"] = f"wait={wait_s}"
            return detail
    # A job this request has just recorded is answered as recorded (queued, no image, no deliveries
    # yet): reading it back cost every accept a database round trip (make bench figure 6).
    fresh = created and respond_async
    view = JobView(job=job, image=None, deliveries=[]) if fresh else await jobs.get(job.id)
    if not created and view.job.status == JobStatus.SUCCEEDED and view.image is None:
        await jobs.outcome(view.job)  # its image was deleted: a replay answers 410, never a new job
    status = 200 if not created and view.job.status.finished else 202
    headers = {
        "Location": f"/jobs/{job.id}",
        "Preference-Applied": "respond-async" if respond_async else f"wait={wait_s}",
        **poll_headers(view),
    }
    return _job_response(view, status=status, headers=headers)


def _job_response(view: JobView, *, status: int, headers: dict[str, str]) -> JSONResponse:
    return JSONResponse(JobOut.of(view).model_dump(mode="json"), status_code=status, headers=headers)


@router.get(
    "/image",
    response_model=list[ImageDetail],
    summary="List images, newest first",
    responses={
        200: {
            "description": "A page of images; Link rel=next names the next page",
            "headers": {"Link": {"schema": {"type": "string"}}},
        },
        **problem_responses(401, 422, 500, 503),
    },
)
@inject
async def list_images(
    request: Request,
    response: Response,
    service: Service,
    viewer: CurrentViewer,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE_LIMIT)] = DEFAULT_PAGE_LIMIT,
    cursor: Annotated[str | None, Query(max_length=200, description="Opaque; from a Link header.")] = None,
    q: Annotated[
        str | None,
        Query(
            max_length=MAX_SEARCH_CHARS,
            description=(
                "Words the prompt must all contain (case, accents and width ignored; in Chinese, "
                "Japanese, Korean and Thai any run of characters). Quotes and operators such as "
                "`*`, `+`, `-` are taken as plain text."
            ),
        ),
    ] = None,
    generator: Annotated[
        str | None, Query(max_length=MAX_GENERATOR_CHARS, description="Only images by this generator.")
    ] = None,
    model: Annotated[
        str | None, Query(max_length=MAX_MODEL_CHARS, description="Only images by this model.")
    ] = None,
    created_after: Annotated[
        str | None,
        Query(
            pattern=ISO_TIME_PATTERN,
            description="ISO-8601; only images created strictly after (UTC if no zone).",
        ),
    ] = None,
    created_before: Annotated[
        str | None,
        Query(
            pattern=ISO_TIME_PATTERN,
            description="ISO-8601; only images created strictly before (UTC if no zone).",
        ),
    ] = None,
    owner: Annotated[
        str | None, Query(pattern=OWNER_PATTERN, description="Only images made with this key name.")
    ] = None,
) -> list[ImageDetail]:
    """A page of image details, filtered if asked; the next page is announced in a Link header."""
    page = await service.list_details(
        limit=limit,
        cursor=cursor,
        words=q,
        generator=generator,
        model=model,
        created_after=created_after,
        created_before=created_before,
        owner=owner,
        visible_to=viewer.visible_to,
    )
    if page.next_cursor is not None:
        filters = {
            "q": q,
            "generator": generator,
            "model": model,
            "created_after": created_after,
            "created_before": created_before,
            "owner": owner,
        }
        given = {name: value for name, value in filters.items() if value is not None}
        query = urlencode({"limit": limit, **given, "cursor": page.next_cursor})
        response.headers["Link"] = f'<{request.url.path}?{query}>; rel="next"'
    return page.items


@router.get(
    "/image/{guid}",
    response_model=ImageDetail,
    summary="Get one image's detail",
    responses=problem_responses(401, 404, 422, 500, 503),
)
async def get_image(guid: GuidPath, request: Request) -> Response:
    """The detail of one image."""
    # (Not in the docstring, which is the OpenAPI description.) The hottest read, so it pays for no
    # dependency and no per-call injection (make bench figure 1's profile: `solve_dependencies`,
    # dependency-injector's `_patched`), and answers bytes made once per record (detail_bodies):
    # returning a Response makes FastAPI skip `response_model`, which stays for the OpenAPI document.
    service: ImageService = request.app.state.image_service()  # reused.Reused: not one per request
    record = await service.get_record(guid, visible_to=viewer_of(request).visible_to)
    bodies: DetailBodies = request.app.state.detail_bodies
    return Response(bodies.body(record), media_type="application/json")


@router.delete(
    "/image/{guid}",
    status_code=204,
    response_class=Response,
    summary="Delete an image: its bytes, then its record",
    responses={204: {"description": "Deleted"}, **problem_responses(401, 404, 422, 500, 503)},
)
@inject
async def delete_image(guid: GuidPath, service: Service, viewer: CurrentViewer) -> Response:
    """Delete an image; its idempotency key then replays 410."""
    await service.delete(guid, visible_to=viewer.visible_to)
    return Response(status_code=204)


# Documented as a header parameter, read from the request (get_image_content): FastAPI's parameter
# machinery cost the offloaded content route a fifth of its time in process (make bench 2-offload).
IF_NONE_MATCH_PARAMETER = {
    "name": "If-None-Match",
    "in": "header",
    "required": False,
    "description": "ETags the client holds; a match answers 304 without the bytes.",
    "schema": {"type": "string"},
}
CONTENT_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "The image bytes", "content": {"image/png": {}, "image/jpeg": {}, "image/webp": {}}},
    304: {"description": "Not modified (If-None-Match matched the ETag)"},
    307: {"description": "Redirect to a presigned URL, when presigning is on"},
    **problem_responses(401, 404, 422, 500, 503),
}


@router.get(
    "/image/{guid}/content",
    summary="Get an image's bytes",
    operation_id="get_image_content",
    response_class=Response,
    responses=CONTENT_RESPONSES,
    openapi_extra={"parameters": [IF_NONE_MATCH_PARAMETER]},
)
@router.head(
    "/image/{guid}/content",
    summary="Get an image's headers without its bytes",
    operation_id="head_image_content",
    response_class=Response,
    responses=CONTENT_RESPONSES,
    openapi_extra={"parameters": [IF_NONE_MATCH_PARAMETER]},
)
async def get_image_content(guid: GuidPath, request: Request) -> Response:
    """The image bytes, with an ETag of their sha256 and the configured (by default immutable) caching."""
    # Hot under an nginx offload (make bench figure 2-offload): no dependencies, as get_image, and
    # If-None-Match read here (its first value, as Header() read it) rather than as a parameter.
    if_none_match = request.headers.get("if-none-match")
    container: Container = request.app.state.container
    service: ImageService = request.app.state.image_service()
    config = container.settings()
    record = await service.get_record(guid, visible_to=viewer_of(request).visible_to)
    bodies: DetailBodies = request.app.state.detail_bodies
    detail = bodies.detail(record)
    etag = f'"{detail.sha256}"'
    headers = {
        "ETag": etag,
        "Cache-Control": config.http.content_cache_control,
        "X-Content-Type-Options": "nosniff",
        "Content-Disposition": f'inline; filename="{detail.filename}"',
    }
    if if_none_match is not None and _etag_matches(if_none_match, etag):
        return Response(status_code=304, headers=headers)
    if request.method == "HEAD":
        # Answered from the record: a presigned URL is signed for GET, so HEAD must not be redirected.
        headers["Content-Length"] = str(detail.size_bytes)
        return Response(status_code=200, headers=headers, media_type=detail.content_type)
    location = await service.locate_content(detail)
    if location is not None:
        return RedirectResponse(location, status_code=307, headers={"ETag": etag})
    file_path = await service.locate_file(detail)
    if file_path is not None:
        # nginx in front sends the file itself (sendfile), keeping these headers; the body stays empty.
        headers["X-Accel-Redirect"] = config.http.content_offload_prefix + quote(file_path)
        return Response(headers=headers, media_type=detail.content_type)
    # A piece at a time: 32 downloads of a 1 MiB image at once held 32 MiB read whole (make bench 5-rss).
    chunks = await service.content_chunks(detail)
    first = await anext(chunks, b"")  # the bytes being gone is a 404 problem, before anything is sent
    headers["Content-Length"] = str(detail.size_bytes)
    return StreamingResponse(_then(first, chunks), headers=headers, media_type=detail.content_type)


async def _then(first: bytes, rest: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    if first:
        yield first
    async for piece in rest:
        yield piece


@router.get(
    "/image/{guid}/thumbnail",
    summary="Get a WebP thumbnail of an image, made on first request and stored",
    operation_id="get_image_thumbnail",
    response_class=Response,
    responses={
        200: {"description": "The thumbnail (WebP, at most w pixels wide)", "content": {"image/webp": {}}},
        304: {"description": "Not modified (If-None-Match matched the ETag)"},
        **problem_responses(401, 404, 422, 500, 503),
    },
)
@inject
async def get_image_thumbnail(
    guid: GuidPath,
    service: Service,
    config: Config,
    viewer: CurrentViewer,
    w: Annotated[
        int,
        Query(
            description="The largest width, in pixels.", json_schema_extra={"enum": list(THUMBNAIL_WIDTHS)}
        ),
    ] = DEFAULT_THUMBNAIL_WIDTH,
    if_none_match: Annotated[str | None, Header(alias="If-None-Match")] = None,
) -> Response:
    """A thumbnail, with an ETag of its own sha256 and the same caching as the content."""
    thumbnail = await service.thumbnail(await service.get_detail(guid, visible_to=viewer.visible_to), w)
    etag = f'"{thumbnail.sha256}"'
    headers = {
        "ETag": etag,
        "Cache-Control": config.http.content_cache_control,
        "X-Content-Type-Options": "nosniff",
    }
    if if_none_match is not None and _etag_matches(if_none_match, etag):
        return Response(status_code=304, headers=headers)
    return Response(thumbnail.data, headers=headers, media_type=thumbnail.content_type)


def _etag_matches(if_none_match: str, etag: str) -> bool:
    candidates = {c.strip().removeprefix("W/") for c in if_none_match.split(",")}
    return "*" in candidates or etag in candidates


# The routes in the order they are declared above, which is the order the OpenAPI document lists
# them in (app._publish_problem_schema restores it).
DOCUMENTED_PATHS = tuple(dict.fromkeys(route.path for route in router.routes if isinstance(route, APIRoute)))
# Starlette tries an app's routes in order, and here twice a request (the app's included router, then
# its own match): the hot reads first. The offloaded content route had twelve routes tried before it,
# a fifth of its time in process (make bench 2-offload); no two of these routes answer one request.
_HOT_FIRST = (("/image/{guid}/content", "GET"), ("/image/{guid}", "GET"), ("/image/{guid}/content", "HEAD"))


def _hot_first(route: BaseRoute) -> int:
    if isinstance(route, APIRoute):
        for rank, (path, method) in enumerate(_HOT_FIRST):
            if route.path == path and method in (route.methods or ()):
                return rank
    return len(_HOT_FIRST)


router.routes.sort(key=_hot_first)  # stable: the others keep their order
