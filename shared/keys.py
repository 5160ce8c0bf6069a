"""Every Redis key and channel hotpipe uses, built in exactly one place."""

from __future__ import annotations

NAMESPACE = "hotpipe"


def job(job_id: str) -> str:
    """The hash holding one job's record."""
    return f"{NAMESPACE}:job:{job_id}"


def job_events(job_id: str) -> str:
    """The pub/sub channel on which every change of one job is announced."""
    return f"{NAMESPACE}:job-events:{job_id}"
