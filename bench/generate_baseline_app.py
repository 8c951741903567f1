"""The generation baseline: a bare FastAPI app that makes PixyProxy's upstream call with httpx and no more.

It stands for "the least a proxy must do per generation": one POST to the OpenAI-compatible upstream,
parse its JSON, decode the base64 image, write the bytes to a file, answer a small JSON. Figure
3-cpu divides PixyProxy's CPU seconds per `POST /image` by this app's.

BENCH_UPSTREAM_URL is the upstream's images endpoint (`.../v1/images/generations`), BENCH_UPSTREAM_BODY
the JSON body PixyProxy's OpenAI adapter sent it (the request's prompt replaces its `prompt`),
BENCH_UPSTREAM_KEY the bearer key, BENCH_OUT_DIR the folder the images are written to.
"""

from __future__ import annotations

import base64
import json
import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI, HTTPException
from pydantic import BaseModel


class Prompt(BaseModel):
    """The request body: a prompt."""

    prompt: str


def create_app() -> FastAPI:
    """The baseline app, with one shared httpx client to the upstream."""
    url = os.environ["BENCH_UPSTREAM_URL"]
    template: dict[str, Any] = json.loads(os.environ["BENCH_UPSTREAM_BODY"])
    headers = {"authorization": f"Bearer {os.environ['BENCH_UPSTREAM_KEY']}"}
    out_dir = Path(os.environ["BENCH_OUT_DIR"])
    out_dir.mkdir(parents=True, exist_ok=True)
    clients: list[httpx.AsyncClient] = []

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with httpx.AsyncClient(timeout=120) as client:
            clients.append(client)
            yield

    app = FastAPI(title="PixyProxy bench generation baseline", lifespan=lifespan)

    @app.post("/image", status_code=201, response_model=None)
    async def generate(body: Prompt) -> dict[str, Any]:
        """One upstream call; its image decoded and written to disk."""
        answer = await clients[0].post(url, json={**template, "prompt": body.prompt}, headers=headers)
        if answer.status_code != 200:
            raise HTTPException(status_code=502, detail=f"the upstream answered {answer.status_code}")
        entry = answer.json()["data"][0]
        data = base64.b64decode(entry["b64_json"])
        guid = uuid.uuid4()
        path = out_dir / f"{guid}.png"
        path.write_bytes(data)
        return {
            "guid": str(guid),
            "prompt": body.prompt,
            "filename": path.name,
            "content_type": "image/png",
            "size_bytes": len(data),
            "revised_prompt": entry.get("revised_prompt"),
            "created_at": datetime.now(UTC).isoformat(),
        }

    return app
