"""Who a request acts for: the owner of what it makes, and whose things it may see."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from pixyproxy.entrypoints.http.auth import caller_of


@dataclass(frozen=True)
class Viewer:
    """The request's owner name (never the key) and the owner it is confined to, if any.

    `visible_to` is set under tenant isolation for a non-admin key: another owner's image or job
    then answers 404, as an unknown one does.
    """

    owner: str
    visible_to: str | None


async def current_viewer(request: Request) -> Viewer:
    """A FastAPI dependency: the viewer of this request, under the configured tenant isolation.

    Async although it awaits nothing: FastAPI runs a plain `def` dependency in its thread pool, a
    thread hop on every request that used it (a tenth of the server's time on a cached read).
    """
    return viewer_of(request)


def viewer_of(request: Request) -> Viewer:
    """The viewer of this request, for a hot route that reads it without a dependency."""
    caller = caller_of(request.scope)
    isolation = bool(request.app.state.container.settings().http.tenant_isolation)
    return Viewer(owner=caller.name, visible_to=caller.visible_scope(isolation=isolation))


CurrentViewer = Annotated[Viewer, Depends(current_viewer)]
