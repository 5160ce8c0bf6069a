"""Routing to warm workers: send a job where its checkpoint is already loaded.

At submit, the router reads the worker registry (``shared/registry.py``) and picks a
worker's own queue, or says "the family queue" (``None``):

1. a live worker of the family that holds the checkpoint (hot or loading) and whose own
   queue holds fewer than ``backlog_max`` messages — the least busy of them;
2. if workers hold it but all are over the bound: the family queue (any free worker);
3. if nobody holds it: the worker that claimed its first load a moment ago (a short
   marker, so concurrent first requests don't make every worker load it), else the open
   worker holding the fewest pipelines — among those, the one whose next eviction victim
   has been used least (the cheapest to lose) — which then claims it.

Routing is advice: a wrong or stale choice costs a load, never a job.  If the registry
can't be read, jobs go to the family queue.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import redis

from hotpipe.shared.registry import Registry, WorkerInfo

log = logging.getLogger(__name__)


@dataclass
class Router:
    """Chooses a warm worker's queue for a job, or ``None`` for the family queue."""

    registry: Registry
    backlog_max: int = 3
    claim_s: float = 30.0

    def queue_for(self, family: str, checkpoint: str) -> str | None:
        try:
            return self._queue_for(family, checkpoint)
        except (redis.RedisError, ValueError, TypeError, KeyError) as exc:  # a record we can't read, too
            log.warning("routing: registry unreadable (%s); using the family queue", exc)
            return None

    def _queue_for(self, family: str, checkpoint: str) -> str | None:
        workers = [w for w in self.registry.live() if w.ready and family in w.families]
        if not workers:
            return None
        backlog = self.registry.backlogs([w.queue for w in workers])
        open_ = [w for w in workers if backlog[w.queue] < self.backlog_max]
        holders = [w for w in workers if w.holds(checkpoint)]
        if holders:
            warm = [w for w in holders if w in open_]
            return min(warm, key=lambda w: (backlog[w.queue], w.name)).queue if warm else None
        by_name = {w.name: w for w in open_}
        claimed = self.registry.loader(family, checkpoint)
        if claimed in by_name:
            return by_name[claimed].queue
        if not open_:
            return None
        pick = min(open_, key=lambda w: (w.held(), cheapest_eviction(w), backlog[w.queue], w.name))
        winner = self.registry.claim_loader(family, checkpoint, pick.name, self.claim_s)
        return by_name[winner].queue if winner in by_name else None


def cheapest_eviction(worker: WorkerInfo) -> int:
    """Uses of the pipeline the worker would evict to load one more (its policy's choice, as it
    published it; else its least used): loading there costs the fewest future hits."""
    uses = {h.checkpoint: h.uses for h in worker.hot}
    if worker.evicts_next in uses:
        return uses[worker.evicts_next]
    return min(uses.values(), default=0)
