"""Operations endpoints: liveness and readiness probes, and Prometheus metrics."""

from typing import Annotated

from dependency_injector.wiring import inject
from fastapi import APIRouter, Depends, Response
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import BaseModel

from pixyproxy.app.health import CheckResult, ReadinessChecker
from pixyproxy.entrypoints.container import Container
from pixyproxy.entrypoints.http.injection import AsyncProvide
from pixyproxy.entrypoints.metrics import Metrics

router = APIRouter(tags=["operations"])


class Readiness(BaseModel):
    """Whether this worker can serve, and why not. `degraded`: it serves, but a dependency it can
    do without is down (the quota storage, failing open)."""

    ready: bool
    degraded: bool = False
    checks: list[CheckResult]


@router.get("/healthz", summary="Liveness: the process answers (no I/O)")
async def healthz() -> dict[str, str]:
    """Always ok while the event loop runs."""
    return {"status": "ok"}


@router.get(
    "/readyz",
    response_model=Readiness,
    summary="Readiness: the repository, blob store, broker and quota storage answer",
    responses={503: {"model": Readiness, "description": "A dependency is down"}},
)
@inject
async def readyz(
    response: Response,
    checker: Annotated[ReadinessChecker, Depends(AsyncProvide[Container.readiness_checker])],
) -> Readiness:
    """One entry per check; 503 when any it cannot serve without is down."""
    results = await checker.check()
    ready = all(r.ok or r.degraded for r in results)
    if not ready:
        response.status_code = 503
    return Readiness(ready=ready, degraded=any(r.degraded for r in results), checks=results)


@router.get(
    "/metrics",
    summary="Prometheus metrics of every worker",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "Prometheus text format"}},
)
@inject
async def metrics(metrics: Annotated[Metrics, Depends(AsyncProvide[Container.metrics])]) -> Response:
    """Every metric in Prometheus text format."""
    return Response(metrics.exposition(), media_type=CONTENT_TYPE_LATEST)
