"""The one exception handler: every error leaves as RFC 9457 application/problem+json.

The table maps domain exception classes to a status and title; the handler walks the
exception's MRO, so a subclass inherits its parent's row unless it has its own.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse, Response
from starlette.routing import Match

from pixyproxy.app.requests import (
    GUID_MESSAGE,
    IDEMPOTENCY_KEY_MESSAGE,
    ISO_TIME_MESSAGE,
    PROMPT_MESSAGE,
)
from pixyproxy.domain import exceptions as errors
from pixyproxy.domain.models import JobError
from pixyproxy.entrypoints.http.openai_errors import (
    is_openai_path,
    openai_error_for,
    openai_validation_error,
)
from pixyproxy.entrypoints.logging_setup import current_request_id

log = logging.getLogger(__name__)

PROBLEM_MEDIA_TYPE = "application/problem+json"
MAX_INSTANCE_CHARS = 512
TYPE_BASE = "https://pixyproxy.dev/problems/"


@dataclass(frozen=True)
class ProblemKind:
    """How one exception class is answered."""

    status: int
    slug: str
    title: str
    # Unavailability reasons can name hosts, files or driver messages: clients get a fixed line.
    public_detail: str | None = None


PROBLEMS: dict[type[BaseException], ProblemKind] = {
    errors.InvalidRequestError: ProblemKind(422, "invalid-request", "Invalid request"),
    errors.RequestTooLargeError: ProblemKind(413, "request-too-large", "Request body too large"),
    errors.AuthenticationRequiredError: ProblemKind(401, "unauthorized", "Authentication required"),
    errors.ImageNotFoundError: ProblemKind(404, "image-not-found", "Image not found"),
    errors.ImageDeletedError: ProblemKind(410, "image-deleted", "Image deleted"),
    errors.BlobNotFoundError: ProblemKind(
        404,
        "content-not-found",
        "Image content not found",
        "the image's bytes are missing from the blob store",
    ),
    errors.PromptRejectedError: ProblemKind(422, "prompt-rejected", "Prompt rejected by the generator"),
    errors.GeneratorUnavailableError: ProblemKind(
        503, "generator-unavailable", "Image generator unavailable"
    ),
    errors.GeneratorBusyError: ProblemKind(503, "generator-busy", "Too many generations in flight"),
    errors.GeneratorBadResponseError: ProblemKind(
        502, "generator-bad-response", "Bad answer from the image generator"
    ),
    errors.GeneratorAuthenticationError: ProblemKind(
        502,
        "generator-credentials-refused",
        "The image generator refused PixyProxy's credentials",
        "the upstream image generator refused PixyProxy's credentials; an operator must fix its API key",
    ),
    errors.RepositoryUnavailableError: ProblemKind(
        503,
        "repository-unavailable",
        "Image repository unavailable",
        "the image database is unavailable; retry shortly",
    ),
    errors.BlobStoreUnavailableError: ProblemKind(
        503,
        "blob-store-unavailable",
        "Blob store unavailable",
        "image storage is unavailable; retry shortly",
    ),
    errors.ConflictError: ProblemKind(409, "conflict", "Conflict"),
    errors.IdempotencyConflictError: ProblemKind(409, "idempotency-conflict", "Idempotency key reused"),
    errors.JobNotFoundError: ProblemKind(404, "job-not-found", "Job not found"),
    errors.JobQueueUnavailableError: ProblemKind(
        503, "job-queue-unavailable", "Job queue unavailable", "the job queue is unavailable; retry shortly"
    ),
    errors.JobCanceledError: ProblemKind(409, "job-canceled", "Job canceled"),
    errors.JobTimeoutError: ProblemKind(503, "job-still-running", "The job has not finished yet"),
    errors.QuotaExceededError: ProblemKind(429, "rate-limited", "Quota exceeded"),
    errors.QuotaUnavailableError: ProblemKind(
        503, "quota-unavailable", "Quota storage unavailable", "the quota cannot be counted; retry shortly"
    ),
    errors.ConfigurationError: ProblemKind(
        500, "configuration-error", "Server misconfigured", "the server is misconfigured"
    ),
    errors.ImageGenerationException: ProblemKind(
        500, "internal-error", "Internal error", "an unexpected error occurred"
    ),
}
INTERNAL = ProblemKind(500, "internal-error", "Internal server error", "an unexpected error occurred")
_HTTP_TITLES = {
    400: ("bad-request", "Bad request"),
    404: ("not-found", "Not found"),
    405: ("method-not-allowed", "Method not allowed"),
    406: ("not-acceptable", "Not acceptable"),
    413: ("request-too-large", "Request body too large"),
    415: ("unsupported-media-type", "Unsupported media type"),
}


class Problem(BaseModel):
    """An RFC 9457 problem document."""

    type: str = Field(examples=[TYPE_BASE + "image-not-found"])
    title: str = Field(examples=["Image not found"])
    status: int = Field(examples=[404])
    detail: str = Field(examples=["no image with guid 3f2b1c9e-8c1d-4e5f-9a7b-1c2d3e4f5a6b"])
    instance: str = Field(examples=["/image/3f2b1c9e-8c1d-4e5f-9a7b-1c2d3e4f5a6b"])
    request_id: str = Field(examples=["myhost-20261126071405123456-140245"])
    errors: list[dict[str, Any]] | None = Field(
        default=None, description="Each invalid field, for validation problems."
    )


def kind_of(exc: BaseException) -> ProblemKind:
    """The table row of the nearest class in the exception's MRO; a failed job's, of its error."""
    if isinstance(exc, errors.JobFailedError):
        return kind_of_class(errors.exception_class_named(exc.kind))
    return kind_of_class(type(exc))


def kind_of_class(exc_type: type[BaseException]) -> ProblemKind:
    """The table row of the nearest class in this exception class's MRO."""
    for cls in exc_type.__mro__:
        if cls in PROBLEMS:
            return PROBLEMS[cls]
    return INTERNAL


def problem_response(
    status: int,
    slug: str,
    title: str,
    detail: str,
    *,
    instance: str,
    headers: Mapping[str, str] | None = None,
    extra: dict[str, Any] | None = None,
) -> Response:
    """A problem+json response with the current request id."""
    body: dict[str, Any] = {
        "type": TYPE_BASE + slug,
        "title": title,
        "status": status,
        "detail": detail,
        # The path is the client's input: a 10,000-character "GUID" is not echoed back whole.
        "instance": instance[:MAX_INSTANCE_CHARS],
        "request_id": current_request_id.get(),
    }
    body.update(extra or {})
    return JSONResponse(body, status_code=status, headers=headers, media_type=PROBLEM_MEDIA_TYPE)


# A pattern mismatch would otherwise answer with the regular expression itself.
PATTERN_MESSAGES = {
    "prompt": PROMPT_MESSAGE,
    "guid": GUID_MESSAGE,
    "Idempotency-Key": IDEMPOTENCY_KEY_MESSAGE,
    "created_after": ISO_TIME_MESSAGE,
    "created_before": ISO_TIME_MESSAGE,
}
_LOCATIONS = {"body", "path", "query", "header", "cookie"}


def _validation_errors(exc: RequestValidationError) -> list[dict[str, Any]]:
    # Only location, message and type: echoing the input back could reflect a megabyte or a secret.
    found = []
    for error in exc.errors():
        loc = [str(p) for p in error.get("loc", ())]
        kind = str(error.get("type", ""))
        message = str(error.get("msg", ""))
        if kind == "string_pattern_mismatch" and loc and loc[-1] in PATTERN_MESSAGES:
            message = PATTERN_MESSAGES[loc[-1]]
        found.append({"loc": loc, "msg": message, "type": kind})
    return found


def job_problem(error: JobError, *, instance: str) -> dict[str, Any]:
    """The problem document of a failed job's error, as the request that waited for it was answered."""
    kind = kind_of_class(errors.exception_class_named(error.kind))
    problem: dict[str, Any] = {
        "type": TYPE_BASE + kind.slug,
        "title": kind.title,
        "status": kind.status,
        "detail": kind.public_detail or error.detail,
        "instance": instance,
    }
    return problem


def exception_to_response(exc: BaseException, *, instance: str) -> Response:
    """Turn any exception into its problem response, or OpenAI's error shape under /v1/ (the route
    family `instance` names); unknown ones are logged with their trace."""
    openai = is_openai_path(instance)
    if isinstance(exc, RequestValidationError):
        details = _validation_errors(exc)
        first = details[0] if details else {"loc": [], "msg": "invalid request"}
        loc = first["loc"][1:] if first["loc"][:1] and first["loc"][0] in _LOCATIONS else first["loc"]
        where = ".".join(loc) or "request body"
        if openai:
            # OpenAI's `param` names the top-level field; the rest of a location is pydantic's detail.
            message, error_type = str(first["msg"]), str(first.get("type", ""))
            return openai_validation_error(str(loc[0]) if loc else None, message, error_type)
        return problem_response(
            422,
            "invalid-request",
            "Invalid request",
            f"{where}: {first['msg']}",
            instance=instance,
            extra={"errors": details},
        )
    if isinstance(exc, StarletteHTTPException) and isinstance(exc.__cause__, errors.ImageGenerationException):
        # FastAPI wraps errors raised while reading the body (our body cap) in a 400.
        exc = exc.__cause__
    elif isinstance(exc, StarletteHTTPException) and exc.status_code == 400 and exc.__cause__ is not None:
        # The body could not be decoded (not UTF-8, or nested past the parser's recursion limit):
        # the same 422 as any other malformed JSON.
        reason = (
            "the JSON is nested too deeply"
            if isinstance(exc.__cause__, RecursionError)
            else "the body is not valid UTF-8 JSON"
        )
        exc = errors.InvalidRequestError(reason, field="body")
    if isinstance(exc, StarletteHTTPException):
        slug, title = _HTTP_TITLES.get(exc.status_code, ("http-error", "HTTP error"))
        if openai:
            return openai_error_for(
                None, status=exc.status_code, slug=slug, message=str(exc.detail), headers=exc.headers
            )
        return problem_response(
            exc.status_code, slug, title, str(exc.detail), instance=instance, headers=exc.headers
        )
    kind = kind_of(exc)
    headers: dict[str, str] = {}
    if kind.status >= 500 and not isinstance(exc, errors.ImageGenerationException):
        log.error("unhandled %s", type(exc).__name__, exc_info=exc)
    elif kind.status >= 500:
        log.warning("%s: %s", type(exc).__name__, exc)
    retry_after = getattr(exc, "retry_after_s", None)
    if isinstance(retry_after, int | float) and retry_after > 0:
        headers["Retry-After"] = str(math.ceil(retry_after))
    if isinstance(exc, errors.AuthenticationRequiredError):
        headers["WWW-Authenticate"] = 'Bearer realm="pixyproxy"'
    detail = kind.public_detail or (exc.detail if isinstance(exc, errors.JobFailedError) else str(exc))
    if openai:
        cause: type[BaseException] = type(exc)
        if isinstance(exc, errors.JobFailedError):
            cause = errors.exception_class_named(exc.kind)
        field = getattr(exc, "field", None)
        param = field if isinstance(field, str) else None
        return openai_error_for(
            cause, status=kind.status, slug=kind.slug, message=detail, param=param, headers=headers
        )
    return problem_response(kind.status, kind.slug, kind.title, detail, instance=instance, headers=headers)


async def handle_exception(request: Request, exc: Exception) -> Response:
    """The one exception handler registered on the app, for every exception type."""
    if isinstance(exc, StarletteHTTPException) and exc.status_code == 405:
        # Starlette names only the first route that matched the path; Allow must name them all.
        exc = StarletteHTTPException(405, exc.detail, headers={"Allow": _allowed_methods(request)})
    return exception_to_response(exc, instance=request.url.path)


def _allowed_methods(request: Request) -> str:
    methods: set[str] = set()
    for route in leaf_routes(request.app.routes):
        match, _ = route.matches({**request.scope, "method": "GET"})
        if match != Match.NONE:
            methods |= getattr(route, "methods", None) or set()
    return ", ".join(sorted(methods))


def leaf_routes(routes: Any) -> Any:
    """Every route, looking inside the wrappers newer FastAPI versions put around included routers."""
    for route in routes:
        inner = getattr(route, "original_router", None)
        if inner is not None:
            yield from leaf_routes(inner.routes)
        else:
            yield route


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The `responses=` entry declaring these problem statuses for a route's OpenAPI."""
    return {
        status: {
            "model": Problem,
            "content": {PROBLEM_MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}},
            "description": PROBLEM_DESCRIPTIONS.get(status, "Problem"),
        }
        for status in statuses
    }


PROBLEM_DESCRIPTIONS = {
    401: "Missing or wrong API key",
    404: "No such image or job",
    409: "Idempotency key reused with another body, or the job was canceled",
    410: "The image this idempotent request made was deleted since",
    413: "Request body too large",
    415: "Body is not JSON",
    422: "Invalid request, or prompt refused by the generator's content policy",
    429: "The caller's request or generation quota is spent; see Retry-After",
    500: "Unexpected error",
    502: "The generator answered badly or refused PixyProxy's credentials",
    503: "The generator, database, blob store or quota storage is unavailable; see Retry-After",
}
