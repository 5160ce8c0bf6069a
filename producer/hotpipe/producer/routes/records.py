"""Job records as the API answers them: rendered with fresh presigned URLs, and only to their tenant."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fastapi.responses import Response

from hotpipe.shared.errors import NotFound
from hotpipe.shared.job import JOB_ID_RE, JobRecord

if TYPE_CHECKING:
    from hotpipe.producer.api import Services


def render(svc: Services, record: JobRecord) -> str:
    """The record as JSON, with presigned URLs made on every read so they never go stale."""
    if record.result:
        for image in record.result.images:
            image.url = svc.storage.presign(image.key)
    return record.model_dump_json(exclude_none=True)


def record_response(svc: Services, record: JobRecord, status_code: int = 200) -> Response:
    """The rendered record as a JSON response."""
    return Response(render(svc, record), status_code=status_code, media_type="application/json")


def found(job_id: str, record: JobRecord | None, tenant: str | None = None) -> JobRecord:
    """``record`` when there is one and ``tenant`` (if given) owns it; ``NotFound`` otherwise."""
    # Another tenant's job is "not found", exactly like a job that never existed: its
    # existence is none of the caller's business.
    if record is None or (tenant is not None and record.tenant != tenant):
        raise NotFound(f"no job {job_id!r}; it never existed or its record expired", field="id")
    return record


def load(svc: Services, job_id: str, tenant: str | None = None) -> JobRecord:
    """The job's record from the store (``found``'s rules: a malformed id is no job either)."""
    job = svc.store.get(job_id) if JOB_ID_RE.match(job_id) else None
    return found(job_id, job.record if job else None, tenant)
