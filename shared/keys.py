"""Every Redis key and channel hotpipe uses, built in exactly one place."""

from __future__ import annotations

NAMESPACE = "hotpipe"


def job(job_id: str) -> str:
    """The hash holding one job's record."""
    return f"{NAMESPACE}:job:{job_id}"


def job_events(job_id: str) -> str:
    """The pub/sub channel on which every change of one job is announced."""
    return f"{NAMESPACE}:job-events:{job_id}"


def leases() -> str:
    """Sorted set of running job ids, scored by lease deadline (Redis server time, ms).

    A running job is in this set and nothing else is; the reaper requeues members whose
    deadline has passed.
    """
    return f"{NAMESPACE}:leases"


def requeues() -> str:
    """Sorted set of requeued job ids whose run message may not be published yet (an outbox).

    Scored by when a reaper took on the publish (server time, ms); the entry is removed
    once the message is out, so an entry that grows old means that reaper died in between.
    """
    return f"{NAMESPACE}:requeues"


def workers() -> str:
    """Sorted set of worker names, scored by when their registry record expires (server time, ms).

    A member whose score has passed is dead; a reaper drains its own queue back to the family
    queues, then removes it.
    """
    return f"{NAMESPACE}:workers"


def worker(name: str) -> str:
    """One worker's registry record (JSON), with a TTL its heartbeat keeps renewing."""
    return f"{NAMESPACE}:worker:{name}"


def loader_claim(family: str, checkpoint: str) -> str:
    """Which worker was sent the first job of a checkpoint nobody holds (short TTL), so
    concurrent first requests go to that one worker instead of making every worker load it."""
    return f"{NAMESPACE}:loader:{family}:{checkpoint}"
