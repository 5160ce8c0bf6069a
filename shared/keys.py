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


def rate_bucket(tenant: str) -> str:
    """Hash holding one tenant's submission token bucket (``tokens``, ``at`` in server ms)."""
    return f"{NAMESPACE}:rate:{tenant}"


#: kombu's separator between a queue's name and its priority in the Redis list name
KOMBU_PRIORITY_SEP = "\x06\x16"


def broker_queue_lists(queue: str) -> list[str]:
    """Kombu's Redis lists holding the messages waiting on ``queue``, one per priority.

    Kombu names them, not hotpipe: ``{queue}`` for priority 0 and ``{queue}\\x06\\x16{p}`` for 1-9.
    """
    return [queue] + [f"{queue}{KOMBU_PRIORITY_SEP}{p}" for p in range(1, 10)]
