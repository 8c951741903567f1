"""OpenAI's error shape, which the one exception handler answers with on the /v1/ routes.

OpenAI's clients pick their exception class from the status (400 BadRequestError, 401
AuthenticationError, 429 RateLimitError, ...) and read `code` and `param` from
`{"error": {"message", "type", "param", "code"}}`. Where OpenAI's status differs from the
problem table's (an invalid request is 400, not 422; an upstream rate limit is 429, not 503),
a row here says so; every other error keeps the problem table's status and its slug as `code`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, Field
from starlette.responses import JSONResponse

from pixyproxy.domain import exceptions as errors

OPENAI_PREFIX = "/v1"


def is_openai_path(path: str) -> bool:
    """Whether a request path belongs to the OpenAI-compatible family, /v1/..."""
    return path == OPENAI_PREFIX or path.startswith(OPENAI_PREFIX + "/")


@dataclass(frozen=True)
class OpenAIErrorKind:
    """How one exception class is answered under /v1/."""

    status: int
    type: str
    code: str | None


OPENAI_ERRORS: dict[type[BaseException], OpenAIErrorKind] = {
    errors.InvalidRequestError: OpenAIErrorKind(400, "invalid_request_error", "invalid_value"),
    errors.ModelNotFoundError: OpenAIErrorKind(400, "invalid_request_error", "model_not_found"),
    errors.UnknownModelError: OpenAIErrorKind(404, "invalid_request_error", "model_not_found"),
    errors.RequestTooLargeError: OpenAIErrorKind(413, "invalid_request_error", "request_too_large"),
    errors.AuthenticationRequiredError: OpenAIErrorKind(401, "invalid_request_error", "invalid_api_key"),
    errors.PromptRejectedError: OpenAIErrorKind(400, "invalid_request_error", "content_policy_violation"),
    # OpenAI's clients back off on a 429 by themselves; /image answers 503 for the same upstream state.
    errors.GeneratorRateLimitedError: OpenAIErrorKind(429, "requests", "rate_limit_exceeded"),
    errors.QuotaExceededError: OpenAIErrorKind(429, "requests", "rate_limit_exceeded"),
}
_VALIDATION_CODES = {"missing": "missing_required_parameter", "extra_forbidden": "unknown_parameter"}


class OpenAIErrorDetail(BaseModel):
    """What went wrong, as OpenAI describes it."""

    message: str = Field(examples=["n: Input should be less than or equal to 10"])
    type: str = Field(examples=["invalid_request_error"])
    param: str | None = Field(default=None, examples=["n"])
    code: str | None = Field(default=None, examples=["invalid_value"])


class OpenAIError(BaseModel):
    """An error in OpenAI's shape, as every /v1/ route answers one."""

    error: OpenAIErrorDetail


def openai_error(
    status: int,
    message: str,
    *,
    type_: str,
    code: str | None,
    param: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    """An error response in OpenAI's shape."""
    body = OpenAIError(error=OpenAIErrorDetail(message=message, type=type_, param=param, code=code))
    return JSONResponse(body.model_dump(), status_code=status, headers=headers)


def openai_error_for(
    exc_type: type[BaseException] | None,
    *,
    status: int,
    slug: str,
    message: str,
    param: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    """The /v1/ answer for an error the problem table answers with `status` and `slug`."""
    kind = _kind_of(exc_type) if exc_type is not None else None
    if kind is None:
        openai_status = 400 if status == 422 else status
        kind = OpenAIErrorKind(openai_status, _type_for(openai_status), slug.replace("-", "_"))
    return openai_error(kind.status, message, type_=kind.type, code=kind.code, param=param, headers=headers)


def openai_validation_error(param: str | None, message: str, error_type: str) -> JSONResponse:
    """The /v1/ answer for a request FastAPI found invalid: 400, naming the parameter."""
    where = param or "request body"
    code = _VALIDATION_CODES.get(error_type, "invalid_value")
    return openai_error(400, f"{where}: {message}", type_="invalid_request_error", code=code, param=param)


def _kind_of(exc_type: type[BaseException]) -> OpenAIErrorKind | None:
    for cls in exc_type.__mro__:
        if cls in OPENAI_ERRORS:
            return OPENAI_ERRORS[cls]
    return None


def _type_for(status: int) -> str:
    if status == 429:
        return "requests"
    return "invalid_request_error" if status < 500 else "server_error"


OPENAI_ERROR_DESCRIPTIONS = {
    400: "Invalid request (`param` names the field), unknown model, or refused prompt",
    401: "Missing or wrong API key (`invalid_api_key`)",
    409: "Idempotency key reused with another body",
    413: "Request body too large",
    415: "Body is not JSON",
    429: "The caller's quota is spent, or the upstream generator is rate limiting; see Retry-After",
    500: "Unexpected error",
    502: "The generator answered badly or refused PixyProxy's credentials",
    503: "The generator, database, blob store or quota storage is unavailable; see Retry-After",
}


def openai_error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The `responses=` entry declaring these OpenAI-shaped error statuses for a /v1/ route, and that
    any other client error (404, 405, ...) has the same shape; it is never FastAPI's 422."""
    declared: dict[int | str, dict[str, Any]] = {
        status: {"model": OpenAIError, "description": OPENAI_ERROR_DESCRIPTIONS.get(status, "Error")}
        for status in statuses
    }
    declared["4XX"] = {"model": OpenAIError, "description": "Any other client error"}
    return declared
