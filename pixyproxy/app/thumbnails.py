"""Thumbnails: small WebP renderings of an image, derived from its bytes and stored beside them."""

from __future__ import annotations

import io
from uuid import UUID

from PIL import Image

from pixyproxy.domain.exceptions import InvalidRequestError

THUMBNAIL_WIDTHS = (128, 256, 512)
DEFAULT_THUMBNAIL_WIDTH = 256
# Enough for a sharp grid card; the encoder is deterministic, so one image and width give one ETag.
WEBP_QUALITY = 80


def thumbnail_key(guid: UUID, width: int) -> str:
    """The blob key of an image's thumbnail of this width, beside the image's own key."""
    return f"{guid}.thumb-{width}.webp"


def check_width(width: int) -> int:
    """The width if it is one of THUMBNAIL_WIDTHS. Raises InvalidRequestError."""
    if width not in THUMBNAIL_WIDTHS:
        allowed = ", ".join(str(w) for w in THUMBNAIL_WIDTHS)
        raise InvalidRequestError(f"w must be one of {allowed}", field="w")
    return width


def render_webp(data: bytes, width: int) -> bytes:
    """A WebP of the image at most `width` pixels wide, aspect kept, never enlarged (CPU-bound)."""
    with Image.open(io.BytesIO(data)) as original:
        image = original.convert("RGBA" if "A" in original.getbands() else "RGB")
    if image.width > width:
        height = max(1, round(image.height * width / image.width))
        image = image.resize((width, height), Image.Resampling.LANCZOS)
    out = io.BytesIO()
    image.save(out, format="WEBP", quality=WEBP_QUALITY, method=4)
    return out.getvalue()
