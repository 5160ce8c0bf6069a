"""Routing to warm workers: send a job where its checkpoint is already loaded.

At submit, the router reads the worker registry (``shared/hotpipe/shared/registry.py``) and picks a
worker's own queue, or says "the family queue" (``None``):

1. a live worker of the family that holds the checkpoint (hot or loading) and whose own
   queue holds fewer than ``backlog_max`` jobs (``queued`` jobs routed there: a count the store's
   scripts keep, ``keys.routed_count``, read for every worker with one MGET) — the least busy of them;
2. if workers hold it but all are over the bound: the family queue (any free worker);
3. if nobody holds it: the worker that claimed its first load a moment ago, over the backlog bound
   too (a short marker, so concurrent first requests don't make every worker load it), else the open
   worker where loading it costs least — with room to spare (nothing evicted), or whose
   eviction victim is the least popular fleet-wide (``shared/hotpipe/shared/popularity.py``) — and, among
   equals, the one serving the least popularity already (popular checkpoints spread over the
   workers) — which then claims it.

Every routed submit also counts one request of its checkpoint in the global popularity
counts, on the same pipeline as the registry and backlog reads: one round trip in all while the
family's workers are those seen at the last submit (a placement reads the counts in a second).

Routing is advice: a wrong or stale choice costs a load, never a job.  If the registry
can't be read, jobs go to the family queue.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import redis
from redis.exceptions import NoScriptError

from hotpipe.shared.popularity import Popularity
from hotpipe.shared.queues import count_routed, routed
from hotpipe.shared.registry import HotCheckpoint, Registry, WorkerInfo

log = logging.getLogger(__name__)


@dataclass
class Router:
    """Chooses a warm worker's queue for a job, or ``None`` for the family queue."""

    registry: Registry
    backlog_max: int = 3
    claim_s: float = 30.0
    #: global request counts: bumped once per routed job, read to place a checkpoint nobody holds
    popularity: Popularity | None = None
    #: per family, the own queues of the workers seen last time (their backlog is read with the registry)
    _queues: dict[str, list[str]] = field(default_factory=dict, init=False, repr=False)

    def queue_for(self, family: str, checkpoint: str, loras: tuple[str, ...] = ()) -> str | None:
        """The queue for one submitted job of ``checkpoint`` (called once per job: it counts the request);
        among the workers holding it, one that also holds the job's LoRA adapters is preferred."""
        try:
            return self._queue_for(family, checkpoint, loras)
        except (redis.RedisError, ValueError, TypeError, KeyError) as exc:  # a record we can't read, too
            log.warning("routing: registry unreadable (%s); using the family queue", exc)
            return None

    def _queue_for(self, family: str, checkpoint: str, loras: tuple[str, ...] = ()) -> str | None:
        # One round trip while the family's workers are the ones seen last time: the registry, the
        # popularity bump and the backlog of those workers' queues go on one pipeline.
        pipe = self.registry.redis.pipeline(transaction=False)
        read_live = self.registry.queue_live(pipe)
        settle = self.popularity.bump(family, checkpoint, pipe) if self.popularity is not None else None
        guessed = self._queues.get(family, [])
        read_backlogs = count_routed(pipe, guessed)
        results = pipe.execute(raise_on_error=False)
        if settle is not None:
            settle(results)
        raise_first_error(results, but=NoScriptError)
        workers = [w for w in read_live(results) if w.ready and family in w.families]
        holders = [w for w in workers if w.holds(checkpoint)]
        self._queues[family] = [w.queue for w in workers]
        if not workers:
            return None
        backlog = read_backlogs(results) if self._queues[family] == guessed else \
            routed(self.registry.redis, self._queues[family])
        refs: list[tuple[str, str]] = []
        if not holders and self.popularity is not None:  # a placement: the counts of what they hold
            refs = list(dict.fromkeys((h.family or family, h.checkpoint) for w in workers for h in w.hot))
        open_ = [w for w in workers if backlog[w.queue] < self.backlog_max]
        if holders:
            warm = [w for w in holders if w in open_]
            spare = [w for w in open_ if not w.holds(checkpoint) and not w.full]
            if loras and warm and spare and all(adapters_full(w, checkpoint, loras) for w in warm):
                # every holder would have to evict an adapter: a worker with room takes the checkpoint
                # too, so the adapters of one popular base spread over the workers
                return min(spare, key=lambda w: (w.held(), backlog[w.queue], w.name)).queue
            return min(warm, key=lambda w: (missing_adapters(w, checkpoint, loras), backlog[w.queue],
                                            w.name)).queue if warm else None
        # The claimed loader takes the first requests even over the backlog bound: spilling them to the
        # family queue while it loads would make a second worker load the checkpoint, which the claim
        # is there to prevent (its own queue's jobs count as queued until it starts them).
        claimed = self.registry.loader(family, checkpoint)
        live = {w.name: w for w in workers}
        if claimed in live:
            return live[claimed].queue
        by_name = {w.name: w for w in open_}
        if not open_:
            return None
        counts = dict(zip(refs, self.popularity.counts(refs), strict=True)) if refs and self.popularity else {}

        def count(h: HotCheckpoint) -> float:
            return counts.get((h.family or family, h.checkpoint), 0.0)

        pick = min(open_, key=lambda w: (*placement_cost(w, count), backlog[w.queue], w.name))
        winner = self.registry.claim_loader(family, checkpoint, pick.name, self.claim_s)
        return by_name[winner].queue if winner in by_name else None


def missing_adapters(worker: WorkerInfo, checkpoint: str, loras: tuple[str, ...]) -> int:
    """How many of a job's LoRAs ``worker`` would have to load onto its hot ``checkpoint``."""
    resident = {a for h in worker.hot if h.checkpoint == checkpoint for a in h.adapters}
    return sum(1 for name in loras if name not in resident)


def adapters_full(worker: WorkerInfo, checkpoint: str, loras: tuple[str, ...]) -> bool:
    """Whether running a job with ``loras`` on ``worker`` would load one and evict another resident adapter."""
    missing = missing_adapters(worker, checkpoint, loras)
    resident = max((len(h.adapters) for h in worker.hot if h.checkpoint == checkpoint), default=0)
    return missing > 0 and worker.max_adapters > 0 and resident + missing > worker.max_adapters


def placement_cost(worker: WorkerInfo, count: Callable[[HotCheckpoint], float]) -> tuple[float, float, int, int]:
    """What loading one more checkpoint on ``worker`` costs, least first: the global popularity of
    the pipeline it would evict (0 with room to spare); the popularity it serves already (so
    popular checkpoints spread over the workers); the pipelines it holds; and its own uses of
    the victim (without global counts: the cheapest to lose there)."""
    if not worker.hot:
        return 0.0, 0.0, worker.held(), 0
    load = sum(count(h) for h in worker.hot)
    victim = next((h for h in worker.hot if h.checkpoint == worker.evicts_next), None)
    if victim is None or worker.policy == "popular":  # it evicts the least popular, by the counts read now
        victim = min(worker.hot, key=lambda h: (count(h), h.uses))
    full = worker.full or bool(worker.capacity and worker.held() >= worker.capacity)
    return (count(victim) if full else 0.0), load, worker.held(), victim.uses


def raise_first_error(results: list[object], but: type[Exception]) -> None:
    """What ``pipe.execute()`` would have raised: the first error among ``results`` (``but`` handled)."""
    for result in results:
        if isinstance(result, Exception) and not isinstance(result, but):
            raise result
