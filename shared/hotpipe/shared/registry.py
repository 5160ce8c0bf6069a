"""The worker registry: which workers are alive, what they hold hot, what they are loading.

Each worker process publishes one JSON record (``keys.worker(name)``) with a TTL its
heartbeat renews, and its name in a sorted set (``keys.workers()``) scored by when that
record expires, on Redis's clock.  A record that exists is a live worker; a member whose
score has passed is a dead one, whose own queue a reaper drains back to the family queues.
The producer reads the records to send each job to a worker that already holds its checkpoint.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import redis
from redis.client import Pipeline

from hotpipe.shared import keys, scripts


def checkpoint_id(checkpoint: str, revision: str | None) -> str:
    """How the registry and the router name a checkpoint: its name, and the commit if pinned."""
    return f"{checkpoint}@{revision}" if revision else checkpoint


@dataclass
class HotCheckpoint:
    checkpoint: str
    uses: int = 0
    bytes: int = 0
    family: str = ""  # the base family it was requested for (whose popularity counts it)
    adapters: list[str] = field(default_factory=list)  # LoRAs resident on it, least recently used first


@dataclass
class WorkerInfo:
    """One worker's registry record."""

    name: str
    queue: str
    families: list[str]
    device: str
    ready: bool = False
    hot: list[HotCheckpoint] = field(default_factory=list)
    loading: list[str] = field(default_factory=list)
    current_job: str | None = None
    batch: list[str] = field(default_factory=list)  # the jobs sharing its current pipeline call (dynamic batching)
    capacity: int = 0  # most pipelines its cache holds; 0: bounded by memory only
    evicts_next: str | None = None  # the checkpoint its cache would evict to load another
    full: bool = False  # loading another would evict one (by count, or by memory at the mean entry size)
    policy: str = ""  # its cache's eviction policy (HOTPIPE_CACHE_POLICY)
    max_adapters: int = 0  # most LoRA adapters it keeps per checkpoint (HOTPIPE_CACHE_MAX_ADAPTERS); 0: unknown
    stats: dict[str, Any] = field(default_factory=dict)
    host: str = ""
    pid: int = 0
    updated_ms: int = 0

    def holds(self, checkpoint: str) -> bool:
        """Hot or being loaded."""
        return checkpoint in self.loading or any(h.checkpoint == checkpoint for h in self.hot)

    def held(self) -> int:
        return len(self.hot) + len(self.loading)

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> WorkerInfo:
        """The record; fields a newer worker added are ignored (rolling upgrades)."""
        data = json.loads(text)
        data["hot"] = [HotCheckpoint(**known(HotCheckpoint, h)) for h in data.get("hot", [])]
        return cls(**known(cls, data))


def known(cls: type, data: dict[str, Any]) -> dict[str, Any]:
    names = {f.name for f in fields(cls)}
    return {k: v for k, v in data.items() if k in names}


class Registry:
    """Reads and writes of worker records; the only code that touches registry keys."""

    def __init__(self, client: redis.Redis, ttl_s: float = 15.0):
        self.redis = client
        self.ttl_ms = max(1, round(ttl_s * 1000))
        self._publish = scripts.register(client, "worker_publish")
        self._dead = scripts.register(client, "due")  # members of keys.workers() expired ARGV[1] ms ago
        self._names: list[str] = []  # the names live() read last

    def publish(self, info: WorkerInfo) -> None:
        """Write (or renew) ``info``; it stays live for one TTL unless published again.

        Loader claims this worker holds for checkpoints now hot in ``info`` are released in the same
        step: the record says where the checkpoint is from now on, and once it is evicted, the next
        request for it goes wherever loading it costs least, not back here by an old claim."""
        claims = [keys.loader_claim(h.family, h.checkpoint) for h in info.hot if h.family]
        info.updated_ms = int(self._publish(keys=[keys.worker(info.name), keys.workers(), *claims],
                                            args=[info.to_json(), self.ttl_ms, info.name]))

    def retire(self, name: str) -> None:
        """A worker leaving: gone from routing now; a reaper drains what its queue still holds."""
        pipe = self.redis.pipeline()
        pipe.delete(keys.worker(name))
        pipe.zadd(keys.workers(), {name: 0})
        pipe.execute()

    def live(self) -> list[WorkerInfo]:
        """Every live worker's record, by name.  One round trip while the workers are those this
        registry saw last time (their names and those names' records read together), two when
        the set changed (the records of the new names then)."""
        pipe = self.redis.pipeline(transaction=False)
        read = self.queue_live(pipe)
        return read(pipe.execute())

    def queue_live(self, pipe: Pipeline) -> Callable[[list[Any]], list[WorkerInfo]]:
        """Queue ``live``'s reads on ``pipe``; call what this returns with ``pipe.execute()``'s results
        (it reads the records again itself if the set of names changed since)."""
        start = len(pipe)
        pipe.zrange(keys.workers(), 0, -1)
        known = list(self._names)
        if known:
            pipe.mget([keys.worker(n) for n in known])

        def read(results: list[Any]) -> list[WorkerInfo]:
            names = sorted(str(n) for n in results[start])
            if names == known:
                texts = results[start + 1] if known else []
            else:
                self._names = names
                texts = self.redis.mget([keys.worker(n) for n in names]) if names else []
            return [WorkerInfo.from_json(str(t)) for t in texts if t]

        return read

    def dead(self, grace_s: float, limit: int = 100) -> list[str]:
        """Workers whose record expired at least ``grace_s`` ago (Redis's clock)."""
        return list(self._dead(keys=[keys.workers()], args=[round(grace_s * 1000), limit]))

    def forget(self, name: str) -> None:
        """Drop a dead worker whose queue is empty (unless it came back meanwhile)."""
        if not self.redis.exists(keys.worker(name)):
            self.redis.zrem(keys.workers(), name)

    def claim_loader(self, family: str, checkpoint: str, worker: str, ttl_s: float) -> str:
        """The worker that loads ``checkpoint`` first: ``worker`` unless another claimed it already."""
        key = keys.loader_claim(family, checkpoint)
        if self.redis.set(key, worker, nx=True, px=max(1, round(ttl_s * 1000))):
            return worker
        return str(self.redis.get(key) or worker)

    def loader(self, family: str, checkpoint: str) -> str | None:
        value = self.redis.get(keys.loader_claim(family, checkpoint))
        return None if value is None else str(value)


def message_job_id(raw: str) -> str | None:
    """The job id inside a raw Kombu message on Redis (JSON, body base64 JSON ``[[job_id], {}, {}]``)."""
    try:
        message = json.loads(raw)
        body = message["body"]
        if message.get("properties", {}).get("body_encoding") == "base64":
            body = base64.b64decode(body)
        args = json.loads(body)[0]
        return str(args[0]) if args else None
    except (ValueError, KeyError, IndexError, TypeError):
        return None
