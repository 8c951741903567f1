"""OpenAI's images API, so every OpenAI client can use PixyProxy unchanged: POST /v1/images/generations
and GET /v1/models (and /v1/models/{id}). Every image made is an ordinary PixyProxy image; errors
leave through the one exception handler, in OpenAI's shape for this route family.

No `from __future__ import annotations` here: dependency-injector reads the real annotations.
"""

import base64
import ipaddress
import json
import re
import time
from collections.abc import Sequence
from typing import Annotated, Any, Literal, get_args
from uuid import UUID

from dependency_injector.wiring import inject
from fastapi import APIRouter, Depends, FastAPI, Header, Request
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

from pixyproxy.app.jobs import JobService
from pixyproxy.app.requests import (
    IDEMPOTENCY_KEY_PATTERN,
    JSON_WHITESPACE_ALLOWANCE,
    LONGEST_ESCAPED_CHAR_BYTES,
    MAX_PROMPT_CHARS,
    PROMPT_PATTERN,
    GenerateImageRequest,
    ImageSize,
    normalize_text,
)
from pixyproxy.app.service import ImageService
from pixyproxy.domain.exceptions import ModelNotFoundError, UnknownModelError
from pixyproxy.domain.models import ImageDetail
from pixyproxy.entrypoints.container import Container
from pixyproxy.entrypoints.http.identity import CurrentViewer
from pixyproxy.entrypoints.http.injection import AsyncProvide
from pixyproxy.entrypoints.http.openai_errors import OPENAI_PREFIX, openai_error_responses
from pixyproxy.entrypoints.http.routes import require_json_body
from pixyproxy.entrypoints.settings import Settings

router = APIRouter(prefix=OPENAI_PREFIX, tags=["openai"])

Jobs = Annotated[JobService, Depends(AsyncProvide[Container.job_service])]
Images = Annotated[ImageService, Depends(AsyncProvide[Container.image_service])]
ServedModels = Annotated[list[str], Depends(AsyncProvide[Container.served_models])]
AppSettings = Annotated[Settings, Depends(AsyncProvide[Container.settings])]

MAX_IMAGES = 10
MAX_MODEL_CHARS = 64
MAX_QUALITY_CHARS = 32
MAX_USER_CHARS = 256
# When this process started: the `created` of the models it lists (it has no other date for them).
STARTED_AT = int(time.time())
# A Host or X-Forwarded-Host this service will put into an absolute URL: a name or address, and a port.
_HOST = re.compile(
    r"^(?:[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?|\[[0-9A-Fa-f:.]{2,45}\])(?::\d{1,5})?$"
)


class ImageGenerationBody(BaseModel):
    """OpenAI's image generation request. Fields OpenAI has and PixyProxy has no use for (`style`,
    `background`, ...) and fields newer SDKs add are accepted and ignored."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    prompt: Annotated[
        str, StringConstraints(min_length=1, max_length=MAX_PROMPT_CHARS, pattern=PROMPT_PATTERN)
    ] = Field(
        description="What to draw: 1 to 4,000 characters, no control characters except newline and tab.",
        examples=["a red fox in snow"],
    )
    model: Annotated[str, StringConstraints(max_length=MAX_MODEL_CHARS)] | None = Field(
        default=None,
        description="A model GET /v1/models lists; the configured one when absent.",
        examples=["procedural-shapes-v1"],
    )
    n: int | None = Field(
        default=1, ge=1, le=MAX_IMAGES, description="How many images, 1 to 10: each its own PixyProxy image."
    )
    size: ImageSize | Literal["auto"] | None = Field(
        default=None, description="WIDTHxHEIGHT; `auto` or absent: the generator's configured size."
    )
    quality: Annotated[str, StringConstraints(max_length=MAX_QUALITY_CHARS)] | None = Field(
        default=None, description="Accepted for compatibility; the configured quality is used."
    )
    response_format: Literal["url", "b64_json"] | None = Field(
        default=None, description="`url` (the default): a URL of the image's content; `b64_json`: its bytes."
    )
    user: Annotated[str, StringConstraints(max_length=MAX_USER_CHARS)] | None = Field(
        default=None, description="Accepted for compatibility; not stored."
    )

    @field_validator("prompt", mode="before")
    @classmethod
    def _nfc_prompt(cls, value: object) -> object:
        # As POST /image does, before the length and pattern checks, so they count what is stored.
        return normalize_text(value)


def largest_valid_body_bytes() -> int:
    """The size of the largest valid body of POST /v1/images/generations (its known fields), each
    character escaped at its longest: the body cap must let it through."""
    longest = {
        "prompt": "",
        "model": "",
        "n": MAX_IMAGES,
        "size": max(get_args(ImageSize), key=len),
        "quality": "",
        "response_format": "b64_json",
        "user": "",
    }
    chars = MAX_PROMPT_CHARS + MAX_MODEL_CHARS + MAX_QUALITY_CHARS + MAX_USER_CHARS
    return len(json.dumps(longest)) + chars * LONGEST_ESCAPED_CHAR_BYTES + JSON_WHITESPACE_ALLOWANCE


class ImageData(BaseModel):
    """One image, as OpenAI answers it, with its PixyProxy GUID beside (OpenAI's SDKs keep extra fields)."""

    url: str | None = Field(default=None, description="Absolute URL of the image's bytes.")
    b64_json: str | None = Field(default=None, description="The image's bytes, base64.")
    revised_prompt: str | None = Field(default=None, description="The prompt as the generator rewrote it.")
    guid: UUID = Field(description="The PixyProxy image: GET /image/{guid}.")


class ImagesResponse(BaseModel):
    """OpenAI's answer to an image generation request."""

    created: int = Field(description="Unix time the newest of the images was made.")
    data: list[ImageData]
    usage: dict[str, Any] | None = Field(
        default=None, description="Token usage summed over the images, when the generator reported it."
    )


class ModelOut(BaseModel):
    """A model, as OpenAI lists one."""

    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str


class ModelList(BaseModel):
    """OpenAI's list of models."""

    object: Literal["list"] = "list"
    data: list[ModelOut]


@router.post(
    "/images/generations",
    response_model=ImagesResponse,
    response_model_exclude_none=True,
    summary="Generate images (OpenAI's images API)",
    operation_id="openai_create_image",
    responses={
        200: {"description": "The images, in OpenAI's shape"},
        **openai_error_responses(400, 401, 409, 413, 415, 429, 500, 502, 503),
    },
    dependencies=[Depends(require_json_body)],
)
@inject
async def create_images(
    body: ImageGenerationBody,
    request: Request,
    jobs: Jobs,
    images: Images,
    served: ServedModels,
    settings: AppSettings,
    viewer: CurrentViewer,
    idempotency_key: Annotated[
        str | None,
        Header(
            alias="Idempotency-Key",
            pattern=IDEMPOTENCY_KEY_PATTERN,
            description="A retry with the same key and body returns the same images and generates nothing.",
        ),
    ] = None,
) -> ImagesResponse:
    """Generate `n` images as `n` jobs run at once; all of them, or the error and none of them."""
    if body.model is not None and body.model not in served:
        raise ModelNotFoundError(body.model, served=served)
    size = None if body.size == "auto" else body.size
    wanted = GenerateImageRequest(prompt=body.prompt, size=size)
    details = await jobs.generate_many(
        wanted, count=body.n or 1, idempotency_key=idempotency_key, owner=viewer.owner
    )
    if body.response_format == "b64_json":
        data = [await _inline(detail, images) for detail in details]
    else:
        base = public_base_url(
            request, public_url=settings.http.public_url, trusted=settings.http.proxy_networks()
        )
        data = [_image_data(detail, url=f"{base}/image/{detail.guid}/content") for detail in details]
    return ImagesResponse(
        created=int(max(d.created_at for d in details).timestamp()), data=data, usage=_usage(details)
    )


@router.get(
    "/models",
    response_model=ModelList,
    summary="List the image models served (OpenAI's models API)",
    operation_id="openai_list_models",
    responses={200: {"description": "The models"}, **openai_error_responses(401, 500)},
)
@inject
async def list_models(served: ServedModels) -> ModelList:
    """The image model(s) the configured generator serves."""
    return ModelList(data=[ModelOut(id=name, created=STARTED_AT, owned_by="pixyproxy") for name in served])


@router.get(
    "/models/{model}",
    response_model=ModelOut,
    summary="Retrieve one image model served (OpenAI's models API)",
    operation_id="openai_retrieve_model",
    responses={200: {"description": "The model"}, **openai_error_responses(401, 404, 500)},
)
@inject
async def retrieve_model(model: str, served: ServedModels) -> ModelOut:
    """One model GET /v1/models lists; 404 `model_not_found` for any other id."""
    if model not in served:
        raise UnknownModelError(model, served=served)
    return ModelOut(id=model, created=STARTED_AT, owned_by="pixyproxy")


def document_served_models(app: FastAPI, served: list[str]) -> None:
    """Name the served models in the OpenAPI document's `model` field, so it tells clients (and
    schemathesis) which values are accepted; any other is answered 400 `model_not_found`."""
    original = app.openapi

    def openapi() -> dict[str, Any]:
        schema = original()
        body = schema.get("components", {}).get("schemas", {}).get(ImageGenerationBody.__name__)
        if body is not None:
            body["properties"]["model"]["anyOf"] = [{"type": "string", "enum": served}, {"type": "null"}]
        return schema

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's documented way to extend the schema


async def _inline(detail: ImageDetail, images: ImageService) -> ImageData:
    content = await images.open_content(detail)
    return _image_data(detail, b64_json=base64.b64encode(content.data).decode())


def _image_data(detail: ImageDetail, *, url: str | None = None, b64_json: str | None = None) -> ImageData:
    return ImageData(
        url=url, b64_json=b64_json, revised_prompt=detail.generation.revised_prompt, guid=detail.guid
    )


def public_base_url(
    request: Request,
    *,
    public_url: str | None,
    trusted: Sequence[ipaddress.IPv4Network | ipaddress.IPv6Network],
) -> str:
    """Where clients reach this service: PIXYPROXY_PUBLIC_URL when set, else the request's own scheme
    and host; X-Forwarded-Proto and X-Forwarded-Host count only from a trusted proxy."""
    if public_url:
        return public_url
    scheme = request.url.scheme
    host = request.headers.get("host", "")
    if _from_trusted_proxy(request, trusted):
        forwarded_proto = _first(request.headers.get("x-forwarded-proto")).lower()
        if forwarded_proto in {"http", "https"}:
            scheme = forwarded_proto
        forwarded_host = _first(request.headers.get("x-forwarded-host"))
        if _HOST.match(forwarded_host):
            host = forwarded_host
    if not _HOST.match(host):
        # No usable Host (HTTP/1.0, or a hostile one): the address this request arrived on.
        server = request.scope.get("server") or ("localhost", None)
        address, port = server
        host = f"[{address}]" if ":" in str(address) else str(address)
        host = f"{host}:{port}" if port else host
    return f"{scheme}://{host}"


def _from_trusted_proxy(
    request: Request, trusted: Sequence[ipaddress.IPv4Network | ipaddress.IPv6Network]
) -> bool:
    if not trusted or request.client is None:
        return False
    try:
        peer = ipaddress.ip_address(request.client.host)
    except ValueError:
        return False
    return any(peer in network for network in trusted)


def _first(value: str | None) -> str:
    """The first of a comma-separated header's values (the one the outermost proxy set)."""
    return (value or "").split(",")[0].strip()


def _usage(details: list[ImageDetail]) -> dict[str, Any] | None:
    """Token usage summed over the images, nested as OpenAI nests it; None unless every image has it."""
    usages = [d.generation.usage for d in details]
    if not usages or any(u is None for u in usages):
        return None
    totals: dict[str, int] = {}
    for usage in usages:
        for name, count in (usage or {}).items():
            totals[name] = totals.get(name, 0) + count
    nested: dict[str, Any] = {}
    for name, count in sorted(totals.items()):
        *parents, leaf = name.split(".")
        node = nested
        for parent in parents:
            node = node.setdefault(parent, {})
        node[leaf] = count
    return nested
