"""Run a batch: compatible claimed jobs in one pipeline call, each keeping its own everything.

The jobs were claimed one by one (the first by its Celery task, the others taken from their queues
by ``hotpipe.shared.batching``), so each holds its own attempt.  This module composes the per-job
operations of ``JobRunner`` around one call: every job has its own heartbeat (lease and time
limit), its own ``running`` / ``uploading`` ownership checks, sidecar, progress hook (progress
events, cancel, deadline, drain), images, upload and fenced terminal write.  The call gets a
prompt, a negative prompt and a generator seeded with the job's seed per *image* (a job with
``num_images`` n gives n of each, the same generator n times, drawing in turn as it does alone),
so a job's image does not depend on its companions beyond float rounding.

A job whose hook says stop (canceled, past its ``timeout_s``, its attempt lost) leaves the call's
answer: its images are discarded and it ends alone — canceled, failed or standing down — once the
call returns, while the others finish.  When every job has left, the call stops; a drain stops it
for all (each is given back).  A failure of the call itself fails every job still in it, each with
the same code and message as a job run alone would get.
"""

from __future__ import annotations

import functools
import logging
import time
from concurrent.futures import Future
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any

import torch

from hotpipe.shared.job import JobError, JobResult
from hotpipe.shared.logs import job_context
from hotpipe.shared.spec import JobSpec
from hotpipe.shared.store import StoredJob
from hotpipe.workers import loading, memory, runner
from hotpipe.workers.cache import CacheKey
from hotpipe.workers.encode import encode
from hotpipe.workers.heartbeat import Heartbeat
from hotpipe.workers.job_runner import JobRunner, Outcome, Stopwatch, error_code
from hotpipe.workers.runner import Verdict
from hotpipe.workers.safe_loading import check_allowed

log = logging.getLogger(__name__)


@dataclass
class Member:
    """One job of the batch and how far it got."""

    job: StoredJob
    deadline: float | None
    on_step: runner.StepHook | None = None
    provenance: dict[str, Any] = field(default_factory=dict)
    sidecar: Future[None] | None = None
    verdict: Verdict | None = None  # why it left the call; None while it is in it
    images: list[Any] = field(default_factory=list)
    final: list[tuple[int, int]] = field(default_factory=list)  # the last step, for the uploading write
    outcome: Outcome = Outcome.ERROR

    @property
    def job_id(self) -> str:
        return self.job.record.id

    @property
    def attempt(self) -> int:
        return self.job.record.attempts


def per_image_args(specs: list[JobSpec]) -> dict[str, Any]:
    """The call arguments that differ per image: prompts, negative prompts and generators, a job's
    repeated once per image it makes (fresh generators: a retried call must draw the same noise)."""
    prompts: list[str] = []
    negatives: list[str] = []
    generators: list[torch.Generator] = []
    for spec in specs:
        n, generator = spec.num_images, torch.Generator(device="cpu").manual_seed(spec.seed)
        prompts += [spec.params["prompt"]] * n
        negatives += [spec.params.get("negative_prompt") or ""] * n
        generators += [generator] * n
    args: dict[str, Any] = {"prompt": prompts, "generator": generators, "num_images_per_prompt": 1}
    if specs[0].params.get("negative_prompt") is not None:  # equal presence is in the compat key
        args["negative_prompt"] = negatives
    return args


class BatchRun:
    """One batch, from its jobs' claims to their terminal writes."""

    def __init__(self, jobs: JobRunner, members: list[StoredJob]):
        self.jobs = jobs
        self.clock = Stopwatch()
        start = time.monotonic()
        self.members = [Member(job, start + job.spec.timeout_s if job.spec.timeout_s else None) for job in members]

    def run(self) -> dict[str, Outcome]:
        """Run the batch; the outcome of each job by id."""
        jobs, ids = self.jobs, [m.job_id for m in self.members]
        log.info("batch of %d jobs (%d images): %s", len(ids), self._images(self.members), ", ".join(ids))
        claimed = time.monotonic()
        jobs.metrics.job_started()
        jobs.announce_batch(ids)
        try:
            with job_context(ids[0]), ExitStack() as beats:
                for m in self.members:
                    beats.enter_context(Heartbeat(jobs.store, m.job_id, m.attempt, jobs.store.lease_ms / 3000,
                                                  jobs.time_limit_s, functools.partial(jobs._timed_out, m.job_id)))
                self._attempt()
        finally:
            jobs.announce_batch([])
            for m in self.members:
                jobs.metrics.job_finished(m.job.record.family, m.outcome, time.monotonic() - claimed)
        return {m.job_id: m.outcome for m in self.members}

    @staticmethod
    def _images(members: list[Member]) -> int:
        return sum(m.job.spec.num_images for m in members)

    def _attempt(self) -> None:
        try:
            key, pipe = self._load()
        except Exception as exc:
            log.exception("batch %s: loading failed", self.members[0].job_id)
            self._fail(self.members, exc)
            return
        for m in self.members:
            self._prepare(m, pipe)
        active = [m for m in self.members if m.outcome is Outcome.ERROR]
        if not active:
            return
        try:
            images = self._call(key, pipe, active)
        except runner.Stopped as stop:  # every job left the call, or the worker is draining
            for m in active:
                m.verdict = m.verdict if m.verdict is not None else stop.verdict
        except Exception as exc:
            log.exception("batch %s: the pipeline call failed", active[0].job_id)
            self._fail(active, exc)
            return
        else:
            self._share(active, images)
        self.clock.lap("run")
        for m in active:
            self._end(m)

    def _load(self) -> tuple[CacheKey, Any]:
        """The hot pipeline every job of the batch runs on (one checkpoint, class and LoRA set)."""
        spec, rec = self.members[0].job.spec, self.members[0].job.record
        check_allowed(rec.checkpoint, self.jobs.allowlist)
        key = self.jobs.cache_key(spec.resolved)
        pipe = self.jobs.cache.get_key(key, spec.task, rec.pipeline, loading.ExtraRef.from_spec(spec.resolved))
        self.jobs.cache.add_bytes(key, self.jobs.adapters.activate(pipe, spec.loras))
        self.clock.lap("load")
        self.clock.lap("inputs")  # a batch has no inputs (compat_key)
        return key, pipe

    def _prepare(self, m: Member, pipe: Any) -> None:
        """The job enters ``running`` (an ownership check: loading may have outlasted its lease), gets its
        progress hook and puts its sidecar while the call runs."""
        jobs = self.jobs
        m.provenance = jobs._provenance(m.job, m.attempt, pipe)
        m.provenance["batch"] = {"jobs": len(self.members), "images": self._images(self.members)}
        try:
            jobs._enter(m.job_id, m.attempt, "running")
        except runner.Stopped:
            m.outcome = jobs._stopped(m.job_id, m.attempt, Verdict.LOST)
            return
        if m.deadline is not None and time.monotonic() >= m.deadline:
            m.outcome = jobs._stopped(m.job_id, m.attempt, Verdict.TIMED_OUT)
            return
        m.on_step = jobs._progress_hook(m.job_id, m.attempt, m.deadline, m.final)
        m.sidecar = jobs._put_sidecar(m.job, m.provenance)

    def _call(self, key: CacheKey, pipe: Any, active: list[Member]) -> list[Any]:
        """One pipeline call for the jobs still in; out of memory, the others are evicted and it runs once
        more (as ``JobRunner._call_pipeline``)."""
        first = active[0].job.spec
        specs = [m.job.spec for m in active]
        hook = self._hook(active)
        try:
            images = runner.run(pipe, first.params, {}, hook, first.scheduler, per_image_args(specs))
        except memory.OOM_ERRORS as exc:
            log.warning("out of memory running a batch of %d images on %s (%s); evicting the others and retrying "
                        "once", self._images(active), key.label, exc)
            images = None
        if images is None:  # outside the handler, so the failed call's tensors are garbage by now
            self.jobs.cache.evict_others(keep=key)
            images = runner.run(pipe, first.params, {}, hook, first.scheduler, per_image_args(specs))
        self.jobs.metrics.call_made(len(images))
        return images

    @staticmethod
    def _hook(active: list[Member]) -> runner.StepHook:
        """Each job's own hook, every step; a job that says stop leaves the call's answer.  The call stops
        when every job has left, or at once for a drain (every job is given back)."""

        def on_step(step: int, total: int) -> Verdict:
            for m in active:
                if m.verdict is None and m.on_step is not None:
                    verdict = m.on_step(step, total)
                    if verdict is Verdict.RELEASE:
                        return verdict
                    if verdict is not Verdict.GO_ON:
                        log.info("job %s leaves its batch (%s); the others go on", m.job_id, verdict.name)
                        m.verdict = verdict
            stopped = [m.verdict for m in active if m.verdict is not None]
            return stopped[0] if len(stopped) == len(active) else Verdict.GO_ON

        return on_step

    def _share(self, active: list[Member], images: list[Any]) -> None:
        """The call's images, in the order of its prompts: each job's own ``num_images``."""
        at = 0
        for m in active:
            n = m.job.spec.num_images
            m.images, at = images[at:at + n], at + n

    def _end(self, m: Member) -> None:
        jobs = self.jobs
        if m.verdict is not None:
            if m.verdict is not Verdict.LOST and m.sidecar is not None:
                jobs._discard_sidecar(m.job_id, m.attempt, m.sidecar)
            m.outcome = jobs._stopped(m.job_id, m.attempt, m.verdict)
            return
        try:
            result = self._deliver(m)
        except runner.Stopped as stop:  # the ownership check before the puts: a lost attempt writes nothing
            if stop.verdict is not Verdict.LOST and m.sidecar is not None:
                jobs._discard_sidecar(m.job_id, m.attempt, m.sidecar)
            m.outcome = jobs._stopped(m.job_id, m.attempt, stop.verdict)
            return
        except Exception as exc:
            log.exception("job %s: delivering its images failed", m.job_id)
            self._fail([m], exc)
            return
        jobs.metrics.job_succeeded(m.job.record, result.timings)
        jobs.metrics.images_made(len(result.images))
        m.outcome = jobs._finish(lambda: jobs.store.succeed(m.job_id, m.attempt, result), Outcome.SUCCEEDED)

    def _deliver(self, m: Member) -> JobResult:
        """Encode, the ownership check, upload; the sidecar must exist too."""
        spec, start = m.job.spec, time.perf_counter()
        encoded = [encode(im, spec.output_format, {**spec.params, "index": i, **m.provenance})
                   for i, im in enumerate(m.images)]
        encoded_at = time.perf_counter()
        self.jobs._enter(m.job_id, m.attempt, "uploading", m.final[-1] if m.final else None)
        result = self.jobs._upload(m.job_id, encoded)
        if m.sidecar is not None:
            m.sidecar.result()
        result.timings = {**self.clock.laps, "encode": round(encoded_at - start, 6),
                          "upload": round(time.perf_counter() - encoded_at, 6)}
        return result

    def _fail(self, members: list[Member], exc: BaseException) -> None:
        """Every job in ``members`` fails with what a job alone would have failed with."""
        code = error_code(exc)
        message = f"{type(exc).__name__}: {exc}"[:2000]
        if code == "out_of_memory":
            memory.release(self.jobs.cache.device)
        for m in members:
            if m.sidecar is not None:
                self.jobs._discard_sidecar(m.job_id, m.attempt, m.sidecar)
                m.sidecar = None
            error = JobError(code=code, message=message)
            self.jobs.metrics.job_failed(m.job.record.family, code)
            m.outcome = self.jobs._finish(functools.partial(self.jobs.store.fail, m.job_id, m.attempt, error),
                                          Outcome.FAILED)
