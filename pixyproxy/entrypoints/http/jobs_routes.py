"""The job endpoints: follow, list and cancel generation jobs.

No `from __future__ import annotations` here: dependency-injector reads the real annotations.
"""

from typing import Annotated
from urllib.parse import urlencode

from dependency_injector.wiring import inject
from fastapi import APIRouter, Depends, Path, Query, Request, Response

from pixyproxy.app.jobs import JobService, JobView
from pixyproxy.app.requests import DEFAULT_PAGE_LIMIT, GUID_PATTERN, MAX_PAGE_LIMIT
from pixyproxy.domain.models import JobStatus
from pixyproxy.entrypoints.api_keys import KEY_NAME_PATTERN
from pixyproxy.entrypoints.container import Container
from pixyproxy.entrypoints.http.identity import CurrentViewer
from pixyproxy.entrypoints.http.injection import AsyncProvide
from pixyproxy.entrypoints.http.problems import problem_responses
from pixyproxy.entrypoints.job_documents import JobOut

router = APIRouter(tags=["jobs"])

Jobs = Annotated[JobService, Depends(AsyncProvide[Container.job_service])]
JobIdPath = Annotated[str, Path(pattern=GUID_PATTERN, description="The job's id.")]
# How soon a client should look again at a job that has not finished.
POLL_AFTER_S = "1"


def poll_headers(view: JobView) -> dict[str, str]:
    """Retry-After while the job has not finished: when to look again."""
    return {} if view.job.status.finished else {"Retry-After": POLL_AFTER_S}


@router.get(
    "/jobs/{job_id}",
    response_model=JobOut,
    summary="Follow a generation job",
    responses={
        200: {"description": "The job; Retry-After while it has not finished"},
        **problem_responses(401, 404, 422, 500, 503),
    },
)
@inject
async def get_job(job_id: JobIdPath, response: Response, jobs: Jobs, viewer: CurrentViewer) -> JobOut:
    """One job, with its image once it has succeeded."""
    view = await jobs.get(job_id, visible_to=viewer.visible_to)
    response.headers.update(poll_headers(view))
    return JobOut.of(view)


@router.get(
    "/jobs",
    response_model=list[JobOut],
    summary="List jobs, newest first",
    responses={
        200: {
            "description": "A page of jobs; Link rel=next names the next page",
            "headers": {"Link": {"schema": {"type": "string"}}},
        },
        **problem_responses(401, 422, 500, 503),
    },
)
@inject
async def list_jobs(
    request: Request,
    response: Response,
    jobs: Jobs,
    viewer: CurrentViewer,
    status: Annotated[JobStatus | None, Query(description="Only jobs with this status.")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE_LIMIT)] = DEFAULT_PAGE_LIMIT,
    cursor: Annotated[str | None, Query(max_length=200, description="Opaque; from a Link header.")] = None,
    owner: Annotated[
        str | None, Query(pattern=f"^{KEY_NAME_PATTERN}$", description="Only jobs of this key name.")
    ] = None,
) -> list[JobOut]:
    """A page of jobs; the next page is announced in a Link header."""
    page = await jobs.list_jobs(
        status=status, limit=limit, cursor=cursor, owner=owner, visible_to=viewer.visible_to
    )
    if page.next_cursor is not None:
        query = {"limit": limit, "cursor": page.next_cursor, **({"status": status.value} if status else {})}
        query |= {"owner": owner} if owner else {}
        response.headers["Link"] = f'<{request.url.path}?{urlencode(query)}>; rel="next"'
    return [JobOut.of(view) for view in page.items]


@router.post(
    "/jobs/{job_id}/cancel",
    response_model=JobOut,
    summary="Cancel a generation job",
    responses={
        200: {
            "description": (
                "The job: canceled at once if it was queued; a running one answers running and is "
                "canceled within a few seconds; a finished one is unchanged"
            )
        },
        **problem_responses(401, 404, 422, 500, 503),
    },
)
@inject
async def cancel_job(job_id: JobIdPath, response: Response, jobs: Jobs, viewer: CurrentViewer) -> JobOut:
    """Cancel a job; harmless when repeated or when the job has finished."""
    view = await jobs.cancel(job_id, visible_to=viewer.visible_to)
    response.headers.update(poll_headers(view))
    return JobOut.of(view)
