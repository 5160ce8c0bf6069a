"""Dynamic batching, the torch-free half: which jobs may share a pipeline call, and taking them.

A worker that claimed a job (its Celery task) looks at the run messages already waiting in its own
queue and its families' queues, in the order Kombu would deliver them (priority step first, then
own queue before family queues, oldest first), reads those jobs' specs and *takes* the ones whose
``compat_key`` equals the claimed job's, until the batch holds ``max_batch`` images.  Taking is one
Lua script per job (``lua/take.lua``): it removes that exact message from its list and claims the
job — fenced, ``queued -> running``, attempt + 1, lease, ``worker`` = this pool child — together,
so a crash between the two can't lose a job, and a message another worker popped first is simply
skipped.  A taken job is then exactly like a claimed one: its lease lapses, or the parent hands it
back when the child dies (``recovery.py`` takes back every attempt the dead child held), and the
queue depth stays a count of jobs, since a taken message left its list.

The scan is bounded (``SCAN_DEPTH`` oldest messages per list), and reads nothing when no job can
join (``compat_key`` None).  With ``max_batch`` 1 the worker builds no batcher at all.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import redis

from hotpipe.shared import family_table, keys, scripts
from hotpipe.shared.job_records import StoredJob, pairs, stored_job
from hotpipe.shared.queues import PRIORITIES, family_queue, worker_queue
from hotpipe.shared.registry import message_job_id
from hotpipe.shared.spec import JobSpec

#: messages read per Redis list, from the oldest: a batch needs only a few, and the scan's cost
#: must not grow with a long backlog
SCAN_DEPTH = 64
#: request parameters that differ per image in one call (a list entry per image, a generator per
#: image); every other parameter must be equal for two jobs to share a call
#: specs read per round trip while forming (candidates in delivery order, until the batch is full)
READ_CHUNK = 16
PER_IMAGE = frozenset({"prompt", "negative_prompt", "seed", "num_images"})


def compat_key(spec: JobSpec, pipeline: str) -> str | None:
    """Jobs with equal keys can run in one pipeline call; None: this job runs alone.

    The key covers everything that changes the call's shapes or its numbers for every image: the
    checkpoint and revision (with its ControlNet or prior), the pipeline class, the task, the
    scheduler and its config, the LoRAs and their scales, and every parameter but ``PER_IMAGE``
    (size, steps, guidance, strength, pass-through arguments).  A job runs alone when its pipeline
    has no ``callback_on_step_end`` (per-job cancel and progress ride on it) or no text ``prompt``,
    or when it has input images (their sizes set the call's shape and are known only once fetched).
    """
    accepted = family_table.CALL_ARGS.get(pipeline, frozenset())
    if spec.inputs or not {"prompt", "callback_on_step_end", "generator"} <= accepted:
        return None
    if not isinstance(spec.params.get("prompt"), str):
        return None
    if spec.num_images > 1 and any(int(spec.params.get(side) or 0) % 16 for side in ("height", "width")):
        # A job's images draw their noise from its one generator in turn; that equals the single
        # draw of the job run alone only when one image's latents hold a multiple of 16 values
        # (torch's CPU normal fills in blocks of 16): 4 channels x (h/8) x (w/8) needs h, w % 16 == 0.
        return None
    shared = {name: value for name, value in spec.params.items() if name not in PER_IMAGE}
    doc = {
        "resolved": spec.resolved.to_json(), "pipeline": pipeline, "task": spec.task.value,
        "scheduler": spec.scheduler.model_dump() if spec.scheduler else None,
        "loras": [[lo.adapter, lo.scale] for lo in spec.loras], "params": shared,
        # SDXL zeroes the negative embeddings when there is no negative prompt, unlike "" (Diffusers'
        # force_zeros_for_empty_prompt): a job with one and a job without never share a call
        "negative": spec.params.get("negative_prompt") is not None,
    }
    text = json.dumps(doc, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def waiting_lists(own_queue: str | None, families: Iterable[str]) -> list[str]:
    """The Redis lists a worker's jobs wait in, in the order Kombu's BRPOP reads them: priority step
    by step, the worker's own queue before its families' queues."""
    queues = ([own_queue] if own_queue else []) + [family_queue(f) for f in families]
    return [keys.priority_list(queue, step) for step in PRIORITIES for queue in queues]


@dataclass(frozen=True)
class Candidate:
    """A waiting run message: the list it is in, its exact text, and the job it runs."""

    list_key: str
    payload: str
    job_id: str


def scan(client: redis.Redis, lists: list[str], depth: int = SCAN_DEPTH) -> list[Candidate]:
    """The oldest ``depth`` messages of each list, in delivery order (one round trip)."""
    pipe = client.pipeline(transaction=False)
    for name in lists:
        pipe.lrange(name, -depth, -1)
    found: list[Candidate] = []
    for name, messages in zip(lists, pipe.execute(), strict=True):
        for payload in reversed(messages):  # LPUSH in, BRPOP out: the right end is the oldest
            job_id = message_job_id(payload)
            if job_id is not None:
                found.append(Candidate(name, payload, job_id))
    return found


@dataclass
class Batcher:
    """Takes up to ``max_images`` images' worth of jobs compatible with a claimed one."""

    client: redis.Redis
    lists: list[str]
    max_images: int
    lease_ms: int
    wait_ms: float = 0.0
    depth: int = SCAN_DEPTH

    def __post_init__(self) -> None:
        self._take = scripts.register(self.client, "take")

    @classmethod
    def for_worker(cls, client: redis.Redis, name: str, families: list[str], max_images: int, lease_ms: int,
                   wait_ms: float = 0.0) -> Batcher:
        """The batcher of worker ``name`` serving ``families``."""
        return cls(client, waiting_lists(worker_queue(name) if name else None, families), max_images, lease_ms,
                   wait_ms)

    def form(self, first: StoredJob, worker: str) -> list[StoredJob]:
        """Jobs taken to run with ``first`` (already claimed by ``worker``); [] when none can join."""
        key = compat_key(first.spec, first.record.pipeline)
        room = self.max_images - first.spec.num_images
        if key is None or room <= 0:
            return []
        taken = self.take_compatible(key, room, worker, exclude={first.record.id})
        room -= sum(job.spec.num_images for job in taken)
        if self.wait_ms > 0 and room > 0:
            time.sleep(self.wait_ms / 1000)  # more may arrive; only what is queued by then joins
            taken += self.take_compatible(key, room, worker, exclude={first.record.id} | {j.record.id for j in taken})
        return taken

    def take_compatible(self, key: str, room: int, worker: str, exclude: set[str]) -> list[StoredJob]:
        """Take queued jobs with compat ``key`` worth at most ``room`` images, in delivery order."""
        exclude = set(exclude)  # grows with every job read, so a duplicate message is read once
        candidates = [c for c in scan(self.client, self.lists, self.depth) if c.job_id not in exclude]
        chosen: list[Candidate] = []
        # Specs are read a chunk at a time, so a long backlog of other jobs costs only what it takes to
        # fill the batch, not a read of every message scanned.
        for at in range(0, len(candidates), READ_CHUNK):
            for candidate, spec, pipeline in self._queued_specs(candidates[at:at + READ_CHUNK], exclude):
                if spec.num_images <= room and compat_key(spec, pipeline) == key:
                    chosen.append(candidate)
                    room -= spec.num_images
            if room <= 0:
                break
        return self._take_all(chosen, worker)

    def _queued_specs(self, candidates: list[Candidate], seen: set[str]) -> list[tuple[Candidate, JobSpec, str]]:
        """The queued ones among ``candidates`` with their specs; a job in ``seen`` (the first job, one
        already read: a duplicate message) is left out, and each one read joins ``seen``."""
        pipe = self.client.pipeline(transaction=False)
        for c in candidates:
            pipe.hmget(keys.job(c.job_id), ["status", "spec", "pipeline"])
        out = []
        for c, (status, spec, pipeline) in zip(candidates, pipe.execute(), strict=True):
            if status == "queued" and spec and c.job_id not in seen:
                seen.add(c.job_id)
                out.append((c, JobSpec.model_validate_json(spec), str(pipeline)))
        return out

    def _take_all(self, chosen: list[Candidate], worker: str) -> list[StoredJob]:
        if not chosen:
            return []
        pipe = self.client.pipeline(transaction=False)
        now = repr(time.time())
        for c in chosen:
            self._take(keys=scripts.job_keys(c.job_id, keys.leases(), c.list_key),
                       args=[c.payload, worker, now, self.lease_ms], client=pipe)
        replies: list[Any] = pipe.execute()
        return [stored_job(pairs(reply[3])) for reply in replies if reply[0] == 1]
