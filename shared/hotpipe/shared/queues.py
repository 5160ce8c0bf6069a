"""hotpipe's Celery queues on Redis: their names, their priority lists, workers' own queues, the backlog.

A family's jobs wait in two kinds of queue: the family queue (named by the family key, consumed
by every worker of the family) and the own queue of a warm worker the producer routed them to
(``worker_queue``, consumed by that worker alone).  Kombu's Redis transport keeps one list per
priority step for each queue (``keys.priority_list``): API priority p goes to step 9 − p, and
one BRPOP reads the steps in order.  The list names are built in ``keys.py``; which lists make
up a queue, and which queues hold a family's jobs, is decided here and nowhere else.

**The backlog** of a family is one count: the messages in every priority list of its family
queue and of the own queues of its live workers (a worker serving several families counts its
own queue for each: an over-count of at most ``route_backlog_max`` per such worker).  The
running jobs are counted apart, from the lease set: they are in no list (Kombu holds their
messages in its unacked hash).  Everything that asks "how many messages wait" reads this count:
``GET /v1/queues/{family}`` (``queued``), the API's ``hotpipe_queue_depth``, the reaper's sweep
("nothing waits for the family") and, through the API, the chart's autoscaling.  The admission
bound (``max_queued_per_family``) runs on every submit, so it reads a count of the family's
``queued`` jobs the store's scripts keep instead (``keys.queued_count``: one GET).

**Autoscaling reads the API.**  The chart's KEDA ScaledObjects take ``queued`` and ``running``
from ``GET /v1/queues/{family}`` with KEDA's ``metrics-api`` scaler (one trigger each).  KEDA's
``redis`` scaler needs fixed list names, and own queues are named after workers that come and
go, so Redis triggers could count the family lists only and would miss the jobs routed to warm
workers; a Prometheus trigger would add a Prometheus server the chart doesn't otherwise need,
and a scrape interval of lag.  The API already served ``running`` to KEDA, so one endpoint now
answers both, from this module's count (``tests/deploy`` evaluates the chart's triggers
against it).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import redis
from redis.client import Pipeline

from hotpipe.shared import keys
from hotpipe.shared.registry import Registry

#: Kombu's priority steps hotpipe uses: every one of 0-9 (Kombu's default is 0, 3, 6, 9).  API
#: priorities use the same range, 0 least urgent .. 9 most urgent (``priority_step``).
PRIORITIES = range(10)

#: reads queued on a pipeline: given ``pipe.execute()``'s results, the counts by name
Reader = Callable[[list[Any]], dict[str, int]]


def family_queue(family: str) -> str:
    """The Celery queue of a model family, which every worker of the family consumes."""
    return keys.family_queue(family)


def worker_queue(name: str) -> str:
    """The queue only worker ``name`` consumes (jobs routed to it because it holds their checkpoint)."""
    return keys.worker_queue(name)


def priority_step(priority: int) -> int:
    """Kombu's priority step (0 read first) for an API priority (9 most urgent)."""
    return max(PRIORITIES) - priority


def priority_lists(queue: str) -> list[str]:
    """Every Redis list holding ``queue``'s messages, one per priority step, in the order Kombu reads them."""
    return [keys.priority_list(queue, step) for step in PRIORITIES]


def family_lists(family: str) -> list[str]:
    """Every Redis list of ``family``'s family queue (``priority_lists``)."""
    return priority_lists(family_queue(family))


def count_lists(pipe: Pipeline, lists: Mapping[str, list[str]]) -> Reader:
    """Queue an LLEN of every list on ``pipe``; call what this returns with ``pipe.execute()``'s results
    to get the sum per name of ``lists``."""
    start = len(pipe)
    for names in lists.values():
        for name in names:
            pipe.llen(name)

    def read(results: list[Any]) -> dict[str, int]:
        lengths = iter(results[start:])
        return {key: sum(int(next(lengths)) for _ in names) for key, names in lists.items()}

    return read


def count_queues(pipe: Pipeline, queues: Iterable[str]) -> Reader:
    """``count_lists`` over every priority list of each of ``queues``: messages waiting per queue."""
    return count_lists(pipe, {queue: priority_lists(queue) for queue in queues})


def count_routed(pipe: Pipeline, queues: Iterable[str]) -> Reader:
    """Queue one MGET of the routed counts of ``queues`` (``keys.routed_count``: the ``queued`` jobs
    routed to each, kept by the store's scripts) on ``pipe``; call what this returns with
    ``pipe.execute()``'s results.  What routing reads as a warm worker's backlog: one command for
    all, where ``count_queues`` reads every priority list of each."""
    queues = list(queues)
    at = len(pipe)
    if queues:
        pipe.mget([keys.routed_count(q) for q in queues])

    def read(results: list[Any]) -> dict[str, int]:
        return {q: max(0, int(v or 0)) for q, v in zip(queues, results[at] if queues else [], strict=True)}

    return read


def routed(client: redis.Redis, queues: Iterable[str]) -> dict[str, int]:
    """``count_routed`` in a round trip of its own."""
    pipe = client.pipeline(transaction=False)
    read = count_routed(pipe, queues)
    return read(pipe.execute())


def queue_depths(client: redis.Redis, queues: Iterable[str]) -> dict[str, int]:
    """Messages waiting in each of ``queues`` (all its priority lists), in one pipelined round trip."""
    pipe = client.pipeline(transaction=False)
    read = count_queues(pipe, queues)
    return read(pipe.execute())


def waiting_lists(client: redis.Redis, families: Iterable[str]) -> dict[str, list[str]]:
    """Every Redis list whose messages wait for each of ``families``: its family queue's priority lists
    and those of the own queues of the live workers serving it."""
    lists = {family: family_lists(family) for family in families}
    for worker in Registry(client).live():
        for family in lists.keys() & set(worker.families):
            lists[family] += priority_lists(worker.queue)
    return lists


def queued(client: redis.Redis, families: Iterable[str]) -> dict[str, int]:
    """The backlog of each of ``families`` (module docstring): two round trips, the live workers and
    every list's length."""
    lists = waiting_lists(client, families)
    pipe = client.pipeline(transaction=False)
    read = count_lists(pipe, lists)
    return read(pipe.execute())


def waiting(client: redis.Redis, family: str) -> int:
    """The backlog of one family: what ``queued`` counts for it."""
    return queued(client, [family])[family]


def running(client: redis.Redis) -> Counter[str]:
    """Jobs running, by family: the lease set holds exactly the running jobs, their records their family."""
    pipe = client.pipeline(transaction=False)
    for job_id in client.zrange(keys.leases(), 0, -1):
        pipe.hget(keys.job(str(job_id)), "family")
    return Counter(str(family) for family in pipe.execute() if family)


@dataclass(frozen=True)
class Backlog:
    """Jobs queued per family (those asked about) and running per family (every family seen)."""

    queued: dict[str, int]
    running: Counter[str]


def backlog(client: redis.Redis, families: Iterable[str]) -> Backlog:
    """``queued`` for ``families`` and ``running`` for all, in pipelined round trips."""
    return Backlog(queued(client, families), running(client))
