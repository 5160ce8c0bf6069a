"""Job records for tests of the store and its users: a run spec as a submit writes it, a worker's claim."""

from __future__ import annotations

from typing import Any

from hotpipe.shared.celery_app import DEFAULT_PRIORITY
from hotpipe.shared.checkpoints import Resolved
from hotpipe.shared.job import Task
from hotpipe.shared.spec import JobSpec
from hotpipe.shared.store import JobStore

#: what the producer resolves for the tiny Stable Diffusion checkpoint, text2image
TINY_SD = Resolved(checkpoint="tiny-sd", source="local", location="tiny-sd", revision=None,
                   class_name="StableDiffusionPipeline", family="stable-diffusion",
                   pipeline="StableDiffusionPipeline", base_family="stable-diffusion")


def job_spec(priority: int = DEFAULT_PRIORITY, **params: Any) -> JobSpec:
    """A text2image run spec on ``TINY_SD`` (``params`` added to a prompt and a seed)."""
    return JobSpec(resolved=TINY_SD, task=Task.TEXT2IMAGE, params={"prompt": "a cat", "seed": 1, **params},
                   priority=priority)


def claim(store: JobStore, job_id: str, worker: str = "") -> int | None:
    """Claim ``job_id`` the way a worker does (``claim_job``): its new attempt number, None if not claimable."""
    job = store.claim_job(job_id, worker)
    return job.record.attempts if job is not None else None
