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


def queued_jobs() -> str:
    """Sorted set of every ``queued`` job id, scored by when it entered ``queued`` or a reaper last
    found its message missing and published it again (server time, ms).

    The store's scripts keep it: create adds, every move out of ``queued`` removes, a requeue
    adds back.  The reaper's sweep reads its oldest members (``shared/hotpipe/shared/sweep.py``).
    """
    return f"{NAMESPACE}:queued"


def queued_count(family: str) -> str:
    """How many of ``family``'s jobs are ``queued`` (an integer), kept by the store's scripts in the
    same step as every status change: create adds one, every move out of ``queued`` takes one off,
    a requeue adds one back.  The admission bound reads it (one GET, where counting the queue's
    messages takes an LLEN per priority list and per worker queue).  The record names it in field
    ``queued_count``, where the scripts find it."""
    return f"{NAMESPACE}:queued-count:{family}"


def routed_count(queue: str) -> str:
    """How many ``queued`` jobs were routed to ``queue`` (a warm worker's own queue), kept as
    ``queued_count`` is (the record names it in field ``routed_count``): what routing reads as that
    worker's backlog, one MGET for all where the messages would take an LLEN per priority list.  A
    requeue sends the job to its family queue, so it stops counting here."""
    return f"{NAMESPACE}:routed-count:{queue}"


def hub_file(repo_id: str, revision: str | None, filename: str) -> str:
    """A cached Hub resolution: one config file of a repo at a revision (``None``: the default branch),
    with the commit hash it resolved to.  Expires after ``hub_cache_ttl_s``."""
    return f"{NAMESPACE}:hub-file:{repo_id}@{revision or ''}:{filename}"


#: the tenant of every request when no API keys are configured (local stacks)
DEFAULT_TENANT = "default"


def jobs_index(tenant: str, status: str | None = None) -> str:
    """Sorted set of one tenant's job ids scored by creation time (µs): all jobs, or one status.

    The store's Lua keeps the per-status sets by appending ``:{status}`` to the base key
    it finds in the record (field ``index``), which is this function's format.
    """
    base = f"{NAMESPACE}:tenant:{tenant}:jobs"
    return f"{base}:{status}" if status else base


def index_expiry() -> str:
    """Sorted set of ``"{job id} {index base}"`` scored by when the finished record expires (ms).

    Pruning removes those jobs from their tenant's indexes, so listings drop a job when its
    record expires.
    """
    return f"{NAMESPACE}:index-expiry"


def idempotency(tenant: str, key_digest: str) -> str:
    """``"{job id} {request fingerprint}"`` of the job an ``Idempotency-Key`` created (expires)."""
    return f"{NAMESPACE}:tenant:{tenant}:idempotency:{key_digest}"


def queue_deadlines() -> str:
    """Sorted set of queued job ids scored by their queue deadline (Redis server time, ms)."""
    return f"{NAMESPACE}:queue-deadlines"


def webhook_due() -> str:
    """Sorted set of webhook event ids scored by when the next delivery try is due (server ms)."""
    return f"{NAMESPACE}:webhooks:due"


def webhook_events() -> str:
    """Hash of webhook event id -> the event (JSON: job id, event, url, tries, record)."""
    return f"{NAMESPACE}:webhooks:events"


def family_queue(family: str) -> str:
    """The Celery queue of a model family, which is also its Redis list for priority step 0: the family
    key itself (the chart's ``hotpipe.pool.queue`` says the same)."""
    return family


def worker_queue(name: str) -> str:
    """The Celery queue only worker ``name`` consumes (and its Redis list for priority step 0)."""
    return f"{NAMESPACE}.worker.{name}"


#: Kombu's separator between a queue's name and its priority step (kombu.transport.redis)
PRIORITY_SEP = "\x06\x16"


def priority_list(queue: str, step: int) -> str:
    """The Redis list Kombu keeps for one priority step of a Celery queue (step 0: the queue itself)."""
    return f"{queue}{PRIORITY_SEP}{step}" if step else queue


def rate_bucket(tenant: str) -> str:
    """Hash holding one tenant's submission token bucket (``tokens``, ``at`` in server ms)."""
    return f"{NAMESPACE}:rate:{tenant}"


def read_rate_bucket(tenant: str) -> str:
    """Hash holding one tenant's read token bucket (GET a job, list, events), like ``rate_bucket``."""
    return f"{NAMESPACE}:rate-read:{tenant}"


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
    concurrent first requests go to that one worker instead of making every worker load it.
    That worker's registry record releases it once the checkpoint is hot there."""
    return f"{NAMESPACE}:loader:{family}:{checkpoint}"


def popularity(family: str) -> str:
    """Sorted set of a family's checkpoint ids scored by their requests, exponentially decayed
    (``shared/hotpipe/shared/popularity.py``): each request adds ``2 ** ((t - epoch) / half_life)``."""
    return f"{NAMESPACE}:popularity:{family}"


def popularity_epoch(family: str) -> str:
    """When (Redis server time, s) the scores in ``popularity(family)`` are counted from."""
    return f"{NAMESPACE}:popularity-epoch:{family}"
