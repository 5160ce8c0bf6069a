"""The in-process cache of hot pipelines: load once, switch tasks for free, stay under budget.

Entries are keyed by (checkpoint location, resolved revision, dtype, variant, ControlNet).
A checkpoint is loaded once by the cache's loader (one pluggable function); every other
task on it is built with ``AutoPipelineFor<Task>.from_pipe``, which reuses the same module
objects (and is given the dtype, or Diffusers would cast the shared weights to float32 in
place).  A task AutoPipeline can't reach but hotpipe's own table names
(``shared/hotpipe/shared/beyond_auto.py``) is built the same way with that class's ``from_pipe``.  A
ControlNet model, or a decoder's connected prior (``workers/hotpipe/workers/loading.py``), is loaded once per
entry and built into a sibling of its own on the entry's modules; its memory counts towards the
entry and is freed with it.

The cache holds at most ``max_pipelines`` entries and ``budget_bytes`` of measured memory
(``memory.py``: unique tensor storages, or the CUDA allocator's count around each load).
When a load would go over, entries are evicted first — by the eviction policy: least
recently used, fewest uses here, or (``popular``) fewest requests fleet-wide — and an
evicted entry is really freed: hooks removed, every sibling dropped, garbage collected,
CUDA's cached blocks released.  A load that runs out of memory evicts every other entry and
is tried once more.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import diffusers
import torch

from hotpipe.shared.checkpoints import Resolved
from hotpipe.shared.families import BEYOND_TASK_TABLES, family_of
from hotpipe.shared.job import Task
from hotpipe.shared.registry import checkpoint_id
from hotpipe.workers import loading, memory, pinned_device

log = logging.getLogger(__name__)


class ResolutionMismatch(RuntimeError):
    """The worker's Diffusers resolved a different class than the producer recorded."""


@dataclass(frozen=True)
class CacheKey:
    """What makes two loaded pipelines different; ``name`` only labels it (routing, stats)."""

    location: str
    revision: str | None
    dtype: torch.dtype
    variant: str | None = None
    controlnet: str | None = None
    name: str = field(default="", compare=False)
    family: str = field(default="", compare=False)  # the base family, whose popularity counts it

    @property
    def label(self) -> str:
        return self.name or self.location


#: loads the base pipeline of a key onto a device (tests plug in others)
Loader = Callable[[CacheKey, str], Any]


def load_pipeline(key: CacheKey, device: str, allow_pickle: bool = False) -> Any:
    """The default loader: the checkpoint in the key's dtype on ``device``, safetensors only unless
    ``allow_pickle`` (``loading.load_checkpoint``)."""
    if key.controlnet is not None:
        raise ValueError(f"this worker's loader can't attach ControlNet {key.controlnet!r}")
    return loading.load_checkpoint(key.location, key.revision, key.dtype, device, allow_pickle, variant=key.variant)


@dataclass
class CacheStats:
    """Counters and what is resident now; read by ``GET /v1/workers`` and the metrics."""

    hits: int = 0
    misses: int = 0
    evictions: int = 0
    load_seconds: float = 0.0
    resident_pipelines: int = 0
    resident_bytes: int = 0
    checkpoints: list[str] = field(default_factory=list)


@dataclass(eq=False)
class _Entry:
    key: CacheKey
    base: Any
    nbytes: int
    by_class: dict[str, Any] = field(default_factory=dict)
    #: ControlNet models / connected priors built into this entry's siblings, loaded once each
    extras: dict[loading.ExtraRef, Any] = field(default_factory=dict)
    uses: int = 0  # jobs this worker ran on the key, counted across evictions (see ``_uses``)
    last_used: int = 0

    def pipes(self) -> list[Any]:
        return list({id(p): p for p in (self.base, *self.by_class.values())}.values())


#: global request counts of (family, checkpoint label) pairs (``shared/hotpipe/shared/popularity.py``); may raise
Counts = Callable[[list[tuple[str, str]]], list[float]]
#: eviction policy: the entry to evict among those given (with the global counts, if any)
Policy = Callable[[list[_Entry], Counts | None], _Entry]


def least_recently_used(entries: list[_Entry], counts: Counts | None = None) -> _Entry:
    return min(entries, key=lambda e: e.last_used)


def least_used(entries: list[_Entry], counts: Counts | None = None) -> _Entry:
    """Fewest uses (ever, on this worker), then least recent: a one-off checkpoint goes before a
    popular one, even one that was just reloaded."""
    return min(entries, key=lambda e: (e.uses, e.last_used))


def least_popular(entries: list[_Entry], counts: Counts | None = None) -> _Entry:
    """Fewest requests fleet-wide lately (the global counts), then fewest uses here, then least
    recent: what the whole fleet asks for stays, not what this worker happened to run.  Without
    counts, or when they can't be read, ``least_used`` — eviction never fails for want of Redis."""
    if counts is not None:
        try:
            scores = counts([(e.key.family, e.key.label) for e in entries])
            return min(zip(scores, entries, strict=True), key=lambda p: (p[0], p[1].uses, p[1].last_used))[1]
        except Exception as exc:  # any failure to read advice: local counts
            log.warning("popularity unreadable (%s); evicting by this worker's own uses", exc)
    return least_used(entries)


POLICIES: dict[str, Policy] = {"lru": least_recently_used, "lfu": least_used, "popular": least_popular}
#: keys whose use counts the cache remembers after eviction (the least used are forgotten first)
USES_KEPT = 1024


class PipelineCache:
    """Hot pipelines by ``CacheKey``; each entry holds its task siblings by class name."""

    def __init__(self, device: str, dtype: torch.dtype, *, budget_bytes: int = 0, max_pipelines: int = 0,
                 loader: Loader | None = None, policy: str = "lru", counts: Counts | None = None,
                 on_change: Callable[[], None] | None = None, allow_pickle: bool = False):
        self.device = device
        self.dtype = dtype
        self.budget_bytes = budget_bytes  # 0: no memory bound
        self.max_pipelines = max_pipelines  # 0: no count bound
        self.allow_pickle = allow_pickle
        self.loader = loader or functools.partial(load_pipeline, allow_pickle=allow_pickle)
        self.policy_name = policy
        self.policy = POLICIES[policy]
        self.counts = counts  # global popularity, for the ``popular`` policy
        self.on_change = on_change
        self.loading: str | None = None  # label of the checkpoint being loaded right now
        self._stats = CacheStats()
        self._entries: dict[CacheKey, _Entry] = {}
        self._sizes: dict[CacheKey, int] = {}  # measured bytes of keys loaded before
        self._uses: dict[CacheKey, int] = {}  # uses per key, kept across evictions (bounded: USES_KEPT)
        self._clock = 0
        self._lock = threading.RLock()

    def key(self, location: str, revision: str | None, *, dtype: torch.dtype | None = None,
            variant: str | None = None, controlnet: str | None = None, name: str = "",
            family: str = "") -> CacheKey:
        return CacheKey(location, revision, dtype or self.dtype, variant, controlnet, name, family)

    def key_of(self, resolved: Resolved, dtype: torch.dtype | None = None) -> CacheKey:
        """The key of a job's resolved checkpoint, in ``dtype`` (None: the cache's).  A ControlNet or a
        decoder's prior is not part of it: it is built into a sibling on the same hot modules."""
        return self.key(resolved.location, resolved.revision, dtype=dtype,
                        name=checkpoint_id(resolved.checkpoint, resolved.revision), family=resolved.base_family)

    def get_key(self, key: CacheKey, task: Task, pipeline: str, extra: loading.ExtraRef | None = None) -> Any:
        """The pipeline of class ``pipeline`` for ``task`` on ``key``'s checkpoint (built with ``extra`` — a
        ControlNet model, or a decoder's connected prior — when given), loaded first if it is not hot."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                self._stats.misses += 1
                entry = self._load(key)
            else:
                self._stats.hits += 1
            self._clock += 1
            entry.uses, entry.last_used = entry.uses + 1, self._clock
            self._remember_use(key, entry.uses)
            sibling = pipeline if extra is None else f"{pipeline}+{extra}"
            if sibling not in entry.by_class:
                before = memory.cuda_allocated(self.device)
                entry.by_class[sibling] = self._switch(entry, task, pipeline, key.dtype, extra)
                entry.nbytes = self._remeasure(entry, before)
            return entry.by_class[sibling]

    def load(self, key: CacheKey) -> None:
        """Make ``key`` resident without using it (preload)."""
        with self._lock:
            if key not in self._entries:
                self._load(key)

    # Readers take no lock (a load holds it for seconds, and the registry heartbeat must not
    # wait): they copy the entries first, which the GIL makes atomic.

    def holds(self) -> list[tuple[CacheKey, int, int]]:
        """(key, uses, bytes) of every resident entry, least recently used first."""
        entries = sorted(list(self._entries.values()), key=lambda e: e.last_used)
        return [(e.key, e.uses, e.nbytes) for e in entries]

    def add_bytes(self, key: CacheKey, delta: int) -> None:
        """Bytes a resident entry gained or freed after its load (LoRA adapters loaded or deleted): they count
        in the budget, and over it other entries are evicted (never this one)."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is None or not delta:
                return
            entry.nbytes = max(0, entry.nbytes + delta)
            self._shrink(keep=entry)
            self._changed()

    def bases(self) -> list[tuple[CacheKey, Any]]:
        """(key, base pipeline) of every resident entry (their task siblings share its modules)."""
        return [(e.key, e.base) for e in list(self._entries.values())]

    def stats(self) -> CacheStats:
        """A snapshot of the counters and of what is resident."""
        s, entries = self._stats, list(self._entries.values())
        return CacheStats(hits=s.hits, misses=s.misses, evictions=s.evictions,
                          load_seconds=round(s.load_seconds, 6), resident_pipelines=len(entries),
                          resident_bytes=sum(e.nbytes for e in entries),
                          checkpoints=[e.key.label for e in entries])

    def evict(self, key: CacheKey) -> bool:
        """Drop ``key``'s pipelines and free their memory; False when it was not resident."""
        with self._lock:
            entry = self._entries.pop(key, None)
            if entry is None:
                return False
            self._free(entry)
            memory.release(self.device)
            self._changed()
            return True

    def evict_others(self, keep: CacheKey | None = None) -> int:
        """Evict every entry but ``keep`` (out of memory: make all the room there is)."""
        with self._lock:
            victims = [k for k in self._entries if k != keep]
            for k in victims:
                self._free(self._entries.pop(k))
            memory.release(self.device)
            if victims:
                self._changed()
            return len(victims)

    def next_victim(self) -> CacheKey | None:
        """The key the eviction policy would evict next (what loading one more would cost)."""
        entries = list(self._entries.values())
        return self.policy(entries, self.counts).key if entries else None

    def full(self) -> bool:
        """Whether loading one more checkpoint would evict one: by count, or by memory when one more
        entry of the mean resident size would not fit."""
        entries = list(self._entries.values())
        if self.max_pipelines and len(entries) + (self.loading is not None) >= self.max_pipelines:
            return True
        if self.budget_bytes and entries:
            resident = sum(e.nbytes for e in entries)
            return resident + resident / len(entries) > self.budget_bytes
        return False

    def _remember_use(self, key: CacheKey, uses: int) -> None:
        if key not in self._uses and len(self._uses) >= USES_KEPT:
            del self._uses[min(self._uses, key=self._uses.__getitem__)]
        self._uses[key] = uses

    def _resident_bytes(self) -> int:
        return sum(e.nbytes for e in self._entries.values())

    def _remeasure(self, entry: _Entry, cuda_before: int) -> int:
        """An entry's bytes after a task switch: a sibling may bring modules of its own."""
        if memory.is_cuda(self.device):
            return entry.nbytes + max(0, memory.cuda_allocated(self.device) - cuda_before)
        if memory.same_modules(entry.pipes()):  # the usual case: nothing new to count
            return entry.nbytes
        return memory.storage_bytes(entry.pipes())

    def _load(self, key: CacheKey) -> _Entry:
        self._make_room(self._sizes.get(key, 0))
        self.loading = key.label
        self._changed()
        try:
            try:
                pipe, nbytes, took = self._timed_load(key)
            except memory.OOM_ERRORS as exc:
                log.warning("out of memory loading %s (%s); evicting the others and retrying", key.label, exc)
                oom = True
            else:
                oom = False
            if oom:  # outside the handler: its traceback would keep the half-loaded modules alive
                self.evict_others()
                pipe, nbytes, took = self._timed_load(key)
        finally:
            self.loading = None
        self._stats.load_seconds += took
        self._sizes[key] = nbytes
        entry = self._entries[key] = _Entry(key, pipe, nbytes, uses=self._uses.get(key, 0))
        log.info("loaded %s (%s, %d bytes) in %.2fs", key.label, type(pipe).__name__, nbytes, took)
        self._shrink(keep=entry)
        self._changed()
        return entry

    def _timed_load(self, key: CacheKey) -> tuple[Any, int, float]:
        before = memory.cuda_allocated(self.device)
        start = time.perf_counter()
        pipe = self.loader(key, self.device)
        pipe.set_progress_bar_config(disable=True)
        took = time.perf_counter() - start
        delta = memory.cuda_allocated(self.device) - before
        return pipe, delta if delta > 0 else memory.storage_bytes([pipe]), took

    def _make_room(self, expected: int) -> None:
        """Before a load: evict until one more entry (of ``expected`` bytes, if known) fits."""
        while self._entries and (
                (self.max_pipelines and len(self._entries) >= self.max_pipelines)
                or (self.budget_bytes and expected and self._resident_bytes() + expected > self.budget_bytes)):
            self._evict_one(list(self._entries.values()))

    def _shrink(self, keep: _Entry) -> None:
        """After a load: evict others while over budget (never ``keep``, even if it alone is over)."""
        while self.budget_bytes and self._resident_bytes() > self.budget_bytes:
            others = [e for e in self._entries.values() if e is not keep]
            if not others:
                log.warning("%s alone (%d bytes) is over the cache budget of %d bytes", keep.key.label,
                            keep.nbytes, self.budget_bytes)
                return
            self._evict_one(others)

    def _evict_one(self, candidates: list[_Entry]) -> None:
        victim = self.policy(candidates, self.counts)
        del self._entries[victim.key]
        self._free(victim)
        memory.release(self.device)

    def _free(self, entry: _Entry) -> None:
        for pipe in entry.pipes():
            memory.drop_hooks(pipe)
        entry.by_class.clear()
        entry.extras.clear()
        entry.base = None
        self._stats.evictions += 1
        log.info("evicted %s", entry.key.label)

    def _changed(self) -> None:
        if self.on_change is not None:
            try:
                self.on_change()
            except Exception:  # publishing what we hold is best effort; the heartbeat repeats it
                log.warning("cache change hook failed", exc_info=True)

    def _switch(self, entry: _Entry, task: Task, pipeline: str, dtype: torch.dtype,
                extra: loading.ExtraRef | None = None) -> Any:
        base = entry.base
        if type(base).__name__ == pipeline and extra is None:
            return base
        if extra is None:
            pipe = self._from_pipe(base, task, pipeline, dtype)
        else:
            if extra not in entry.extras:
                entry.extras[extra] = loading.load_extra(extra, dtype, self.device, self.allow_pickle)
            pipe = loading.build(base, task, pipeline, dtype, **{extra.role: entry.extras[extra]})
        if type(pipe).__name__ != pipeline:
            raise ResolutionMismatch(f"Diffusers resolved {type(pipe).__name__} for {task.value}, "
                                     f"but the job was routed for {pipeline}")
        pipe.set_progress_bar_config(disable=True)
        return pinned_device.pin(pipe)

    @staticmethod
    def _from_pipe(base: Any, task: Task, pipeline: str, dtype: torch.dtype) -> Any:
        """``pipeline`` on ``base``'s modules: by hotpipe's table when it names ``pipeline`` for
        ``base``'s family and ``task``, else by AutoPipeline (which the guard above then checks)."""
        family = family_of(type(base).__name__)
        if family is not None and BEYOND_TASK_TABLES[task].get(family) == pipeline:
            return getattr(diffusers, pipeline).from_pipe(base, dtype=dtype)
        return loading.build(base, task, pipeline, dtype)  # AutoPipeline's, or a variant (PAG)
