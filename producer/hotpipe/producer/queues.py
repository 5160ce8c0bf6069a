"""How much work each family has: jobs queued (every priority list, the family's queue and its
workers' own queues) and jobs running.

Read from Redis on demand, for ``/metrics`` and for ``GET /v1/queues/{family}``, which the
chart's KEDA ScaledObjects poll: a pool needs one worker per running job plus enough for its
queue, and running jobs are in no Redis list (Kombu holds their messages in its unacked hash),
so a scaler that counts lists alone would scale busy workers away.  Jobs that affinity routing
sent to a live worker's own queue wait too, so they count for the worker's families (a worker
serving several families counts its own queue for each: an over-count of at most
``route_backlog_max`` per such worker).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

import redis
from pydantic import BaseModel

from hotpipe.shared import keys
from hotpipe.shared.errors import NotFound
from hotpipe.shared.families import FAMILIES, base_family
from hotpipe.shared.registry import waiting_lists

#: families that have a queue: variants run on their base family's workers
QUEUED_FAMILIES: tuple[str, ...] = tuple(sorted({base_family(f) for f in FAMILIES}))


class QueueState(BaseModel):
    """``GET /v1/queues/{family}``."""

    family: str
    queued: int
    running: int


@dataclass(frozen=True)
class Backlog:
    """Jobs queued per family (those asked about) and running per family (every family seen)."""

    queued: dict[str, int]
    running: Counter[str]


def read_backlog(client: redis.Redis, families: Iterable[str]) -> Backlog:
    """Pipelined round trips: the live workers, LLEN of every list, the family of every running job."""
    lists = waiting_lists(client, families)
    pipe = client.pipeline(transaction=False)
    for names in lists.values():
        for name in names:
            pipe.llen(name)
    lengths = iter(pipe.execute())
    queued = {family: sum(next(lengths) for _ in names) for family, names in lists.items()}
    pipe = client.pipeline(transaction=False)
    for job_id in client.zrange(keys.leases(), 0, -1):  # the lease set holds exactly the running jobs
        pipe.hget(keys.job(str(job_id)), "family")
    running = Counter(str(family) for family in pipe.execute() if family)
    return Backlog(queued, running)


def queued_family(family: str) -> str:
    """``family`` if it has a queue; a 404 saying which queue its jobs go to otherwise."""
    if family in QUEUED_FAMILIES:
        return family
    if family in FAMILIES:
        raise NotFound(f"family {family!r} has no queue of its own; its jobs run on {base_family(family)!r}'s",
                       field="family")
    raise NotFound(f"no family {family!r}; families with a queue: {', '.join(QUEUED_FAMILIES)}", field="family")

