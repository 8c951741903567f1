"""The baseline: a bare FastAPI app that answers PixyProxy's read routes from memory and from one file.

It stands for "the stack PixyProxy runs on" (FastAPI, Starlette, uvicorn) doing no work of its own,
so PixyProxy's figures divided by its figures measure PixyProxy's own overhead.

BENCH_DETAIL_JSON names a JSON file holding one image's detail, exactly as PixyProxy answers it;
BENCH_IMAGE_FILE names the image's bytes on disk.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from fastapi import FastAPI, HTTPException
from fastapi.responses import FileResponse


def create_app() -> FastAPI:
    """The baseline app, with the detail held in memory."""
    detail: dict[str, Any] = json.loads(Path(os.environ["BENCH_DETAIL_JSON"]).read_text())
    image_path = Path(os.environ["BENCH_IMAGE_FILE"])
    media_type = str(detail["content_type"])
    app = FastAPI(title="PixyProxy bench baseline")

    @app.get("/image/{guid}", response_model=None)
    async def get_image(guid: str) -> dict[str, Any]:
        """The one detail, from memory."""
        if guid != detail["guid"]:
            raise HTTPException(status_code=404)
        return detail

    @app.get("/image/{guid}/content", response_model=None)
    async def get_content(guid: str) -> FileResponse:
        """The one image file, through Starlette's FileResponse."""
        if guid != detail["guid"]:
            raise HTTPException(status_code=404)
        return FileResponse(image_path, media_type=media_type)

    return app
