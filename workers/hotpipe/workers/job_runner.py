"""Run one job from claim to a terminal state; the Celery task body is a call to this.

claim (queued -> running, fenced by attempt) -> pipeline from the hot cache -> run with
progress -> encode -> upload images and sidecar -> succeeded.  Any exception ends the job
``failed`` with a code and a message; a cancel ends it ``canceled``; an attempt that lost
the job stands down without writing anything — no record field, and no object either.

From claim to the terminal write a heartbeat keeps the job's lease.  Object keys are
deterministic, so a superseded attempt must not put (or delete) them: each put is
preceded by an ownership check that also renews the lease, and the terminal write is
fenced.  What remains is a put already past its check when the attempt loses the job;
ARCHITECTURE.md states how small that window is.  When the worker is asked to shut down
(``drain``), the job may go on for the grace period, then is given back to the queue.
"""

from __future__ import annotations

import functools
import logging
import platform
import socket
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from enum import StrEnum
from importlib import metadata
from typing import Any, TypeVar

import redis
import torch
from botocore.exceptions import BotoCoreError, ClientError

from hotpipe import __version__
from hotpipe.shared.batching import Batcher
from hotpipe.shared.checkpoints import Resolved
from hotpipe.shared.job import ImageResult, JobError, JobResult, SchedulerChoice
from hotpipe.shared.logs import job_context
from hotpipe.shared.reaper import Publish, hand_over
from hotpipe.shared.safety import CheckpointNotAllowed
from hotpipe.shared.spec import JobSpec
from hotpipe.shared.status import TransitionError
from hotpipe.shared.storage import Storage, json_bytes
from hotpipe.shared.store import CANCEL_REQUESTED, JobStore, StoredJob
from hotpipe.workers import loading, memory, runner
from hotpipe.workers.adapters import Adapters
from hotpipe.workers.cache import CacheKey, PipelineCache, ResolutionMismatch
from hotpipe.workers.encode import Encoded, encode
from hotpipe.workers.heartbeat import Heartbeat
from hotpipe.workers.metrics import WorkerMetrics
from hotpipe.workers.runner import Verdict
from hotpipe.workers.safe_loading import UnsafeWeights, check_allowed

log = logging.getLogger(__name__)
T = TypeVar("T")

#: error code of a job that ran past its ``timeout_s``
TIMEOUT = "timeout"
#: pauses between tries of a job's terminal write while Redis is unreachable (~30 s in all)
FINAL_WRITE_BACKOFF_S = (0.1, 0.3, 1.0, 3.0, 8.0, 16.0)

#: exception type -> error code recorded on the job; first match wins
ERROR_CODES: tuple[tuple[type[BaseException], str], ...] = (
    (ResolutionMismatch, "resolution_mismatch"),
    (CheckpointNotAllowed, "checkpoint_not_allowed"),
    (UnsafeWeights, "unsafe_weights"),
    (torch.OutOfMemoryError, "out_of_memory"),
    (MemoryError, "out_of_memory"),
    (ClientError, "storage_error"),
    (BotoCoreError, "storage_error"),
    (OSError, "load_error"),
    (runner.PipelineRefused, "pipeline_error"),
    (ValueError, "pipeline_error"),
    (TypeError, "pipeline_error"),
)


class Outcome(StrEnum):
    """How one run of a job ended: what the Celery task returns and the job metrics' ``status`` label."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELED = "canceled"
    RELEASED = "released"  # given back to the queue: the worker is shutting down
    LOST = "lost"  # a newer attempt, a reaper or the time limit owns the job now: nothing written
    SKIPPED = "skipped"  # not claimable (claimed by another, finished, unknown): stood down
    ERROR = "error"  # an exception escaped: the lease lapses and a reaper takes the job back


def error_code(exc: BaseException) -> str:
    return next((code for kind, code in ERROR_CODES if isinstance(exc, kind)), "internal_error")


def scheduler_provenance(pipe: Any, choice: SchedulerChoice | None) -> dict[str, Any]:
    """The scheduler the run uses, for the sidecar: the job's choice, or the checkpoint's own class."""
    if choice is None:
        return {"name": type(pipe.scheduler).__name__, "config": {}, "sampler": None}
    return choice.model_dump()


class Stopwatch:
    """Named laps in seconds, for the per-job stage timings in the result."""

    def __init__(self) -> None:
        self.laps: dict[str, float] = {}
        self._last = time.perf_counter()

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.laps[name] = round(now - self._last, 6)
        self._last = now


def retry_redis(call: Callable[[], T], what: str) -> T:
    """``call()``, retried with ``FINAL_WRITE_BACKOFF_S`` pauses while Redis is unreachable."""
    for delay in (*FINAL_WRITE_BACKOFF_S, None):
        try:
            return call()
        except (redis.ConnectionError, redis.TimeoutError):
            if delay is None:
                raise
            log.warning("%s: Redis unreachable; retrying in %.1fs", what, delay)
            time.sleep(delay)
    raise AssertionError("unreachable")


@functools.cache
def library_versions() -> dict[str, str]:
    """Versions for provenance; cached because each metadata lookup scans sys.path (~1 ms)."""
    names = ("diffusers", "transformers", "torch", "safetensors")
    versions = {"hotpipe": __version__, "python": platform.python_version()}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


@dataclass
class JobRunner:
    """Everything a worker process needs to run jobs; one per process."""

    store: JobStore
    storage: Storage
    cache: PipelineCache
    progress_interval_s: float
    #: publishes a given-back job's message; None leaves it to the reaper's outbox pass
    publish: Publish | None = None
    metrics: WorkerMetrics = field(default_factory=lambda: WorkerMetrics(None))
    #: checkpoint patterns this worker may load (empty: any), checked again before loading
    allowlist: tuple[str, ...] = ()
    #: hard limit on one attempt (0: none), enforced by the heartbeat thread, which then calls
    #: ``on_time_limit`` (a worker's pool child kills itself there, as it may be hung)
    time_limit_s: float = 0.0
    on_time_limit: Callable[[], None] | None = None
    #: dtype per family (the worker's configuration); others use the cache's dtype
    dtypes: dict[str, torch.dtype] = field(default_factory=dict)
    #: told which job runs now (the worker registry shows it); None: nobody listens
    on_job: Callable[[str | None], None] | None = None
    #: LoRA adapters resident on the hot pipelines, activated per job
    adapters: Adapters = field(default_factory=Adapters)
    #: takes compatible queued jobs to run with a claimed one (``max_batch`` > 1); None: one job per call
    batcher: Batcher | None = None
    #: told which jobs run now in one batch ([] when it ends); None: nobody listens
    on_batch: Callable[[list[str]], None] | None = None
    _drain_deadline: float | None = field(default=None, init=False)

    def drain(self, grace_s: float) -> None:
        """The worker is shutting down: a running job may go on ``grace_s`` more, then is given back.

        Safe to call from a signal handler (it only sets a deadline the step callback reads).
        """
        if self._drain_deadline is None:
            self._drain_deadline = time.monotonic() + grace_s

    def run(self, job_id: str, worker: str = "") -> Outcome:
        """Run ``job_id``; returns the final status this attempt wrote (or why it did nothing)."""
        with job_context(job_id):
            return self._run(job_id, worker)

    def _run(self, job_id: str, worker: str) -> Outcome:
        job = self.store.claim_job(job_id, worker)
        if job is None:
            found = self.store.get(job_id)
            log.info("job %s not claimable (%s); standing down", job_id,
                     found.record.status.value if found else "missing")
            self.metrics.job_finished(found.record.family if found else "", Outcome.SKIPPED, None)
            return Outcome.SKIPPED
        batch = self._form_batch(job, worker)
        if batch:
            # imported here: the batch runner is built from this module's JobRunner
            from hotpipe.workers.batch_runner import BatchRun
            return BatchRun(self, [job, *batch]).run()[job_id]
        attempt, claimed = job.record.attempts, time.monotonic()
        status = Outcome.ERROR
        self.metrics.job_started()
        self._announce(job_id)
        try:
            with Heartbeat(self.store, job_id, attempt, self.store.lease_ms / 3000, self.time_limit_s,
                           functools.partial(self._timed_out, job_id)):
                status = self._attempt(job, attempt)
        finally:
            self._announce(None)
            self.metrics.job_finished(job.record.family, status, time.monotonic() - claimed)
        return status

    def _form_batch(self, job: StoredJob, worker: str) -> list[StoredJob]:
        """Compatible queued jobs taken (claimed) to run with ``job``; [] without a batcher, or when Redis
        fails meanwhile (a job taken before the failure is this child's: its lease brings it back)."""
        if self.batcher is None:
            return []
        try:
            return self.batcher.form(job, worker)
        except redis.RedisError:
            log.warning("job %s: could not look for jobs to batch with; running it alone", job.record.id,
                        exc_info=True)
            return []

    def announce_batch(self, job_ids: list[str]) -> None:
        """Tell the registry which jobs run now in one call ([]: none); best effort, as ``_announce``."""
        if self.on_batch is not None:
            try:
                self.on_batch(job_ids)
            except Exception:
                log.warning("could not publish the current batch", exc_info=True)

    def _timed_out(self, job_id: str) -> None:
        """The heartbeat failed the job for its time limit (so no attempt will write it again):
        remove the sidecar this attempt may have put, then let the worker replace the process."""
        try:
            self.storage.delete(self.storage.sidecar_key(job_id))
        except Exception:
            log.warning("job %s: could not remove the sidecar", job_id, exc_info=True)
        if self.on_time_limit is not None:
            self.on_time_limit()

    def _announce(self, job_id: str | None) -> None:
        if self.on_job is not None:
            try:
                self.on_job(job_id)
            except Exception:  # the registry is a view; a job never fails for it
                log.warning("could not publish the current job", exc_info=True)

    def cache_key(self, resolved: Resolved) -> CacheKey:
        """The cache key of a job's resolved checkpoint, in its family's dtype."""
        return self.cache.key_of(resolved, self.dtypes.get(resolved.base_family))

    def _attempt(self, job: StoredJob, attempt: int) -> Outcome:
        job_id = job.record.id
        timeout_s = job.spec.timeout_s
        deadline = time.monotonic() + timeout_s if timeout_s else None
        try:
            result = self._generate(job, attempt, deadline)
        except runner.Stopped as stop:
            return self._stopped(job_id, attempt, stop.verdict)
        except Exception as exc:
            log.exception("job %s attempt %s failed", job_id, attempt)
            error = JobError(code=error_code(exc), message=f"{type(exc).__name__}: {exc}"[:2000])
            self.metrics.job_failed(job.record.family, error.code)
            del exc  # its traceback holds the failed run's tensors
            if error.code == "out_of_memory":
                memory.release(self.cache.device)
            return self._finish(lambda: self.store.fail(job_id, attempt, error), Outcome.FAILED)
        self.metrics.job_succeeded(job.record, result.timings)
        self.metrics.images_made(len(result.images))
        return self._finish(lambda: self.store.succeed(job_id, attempt, result), Outcome.SUCCEEDED)

    def _generate(self, job: StoredJob, attempt: int, deadline: float | None = None) -> JobResult:
        spec, rec = job.spec, job.record
        clock = Stopwatch()
        check_allowed(rec.checkpoint, self.allowlist)
        key = self.cache_key(spec.resolved)
        pipe = self.cache.get_key(key, spec.task, rec.pipeline, loading.ExtraRef.from_spec(spec.resolved))
        self.cache.add_bytes(key, self.adapters.activate(pipe, spec.loras))  # LoRA loads count as loading
        clock.lap("load")
        inputs = {name: runner.decode_input(name, self.storage.get(key)) for name, key in spec.inputs.items()}
        clock.lap("inputs")
        if deadline is not None and time.monotonic() >= deadline:
            raise runner.Stopped(Verdict.TIMED_OUT)
        provenance = self._provenance(job, attempt, pipe)
        self._enter(rec.id, attempt, "running")  # an ownership check: loading may have outlasted the lease
        # The sidecar depends only on the request, so it uploads while the pipeline runs.
        sidecar = self._put_sidecar(job, provenance)
        try:
            final: list[tuple[int, int]] = []  # the last step's progress, written with the uploading stage
            on_step = self._progress_hook(rec.id, attempt, deadline, final)
            images = self._call_pipeline(key, pipe, spec, inputs, on_step)
            self.metrics.call_made(len(images))
            clock.lap("run")
            encoded = [encode(im, spec.output_format, {**spec.params, "index": i, **provenance})
                       for i, im in enumerate(images)]
            clock.lap("encode")
            self._enter(rec.id, attempt, "uploading", final[-1] if final else None)  # ownership check before puts
            result = self._upload(rec.id, encoded)
        except BaseException as exc:
            # A lost attempt must not touch the objects: the sidecar key is now the new attempt's.
            if not (isinstance(exc, runner.Stopped) and exc.verdict is Verdict.LOST):
                self._discard_sidecar(rec.id, attempt, sidecar)
            raise
        sidecar.result()  # succeeded only once the sidecar exists too
        clock.lap("upload")
        result.timings = clock.laps
        return result

    def _call_pipeline(self, key: CacheKey, pipe: Any, spec: JobSpec, inputs: dict[str, Any],
                       on_step: runner.StepHook) -> list[Any]:
        """One pipeline call; out of memory, every other pipeline is evicted and it runs once more."""
        try:
            return runner.run(pipe, spec.params, inputs, on_step, spec.scheduler)
        except memory.OOM_ERRORS as exc:
            log.warning("out of memory running %s (%s); evicting the others and retrying once", key.label, exc)
        # outside the handler, so the failed call's tensors are garbage by now
        self.cache.evict_others(keep=key)
        return runner.run(pipe, spec.params, inputs, on_step, spec.scheduler)

    def _enter(self, job_id: str, attempt: int, stage: str, progress: tuple[int, int] | None = None) -> None:
        """Right before a put, or entering a stage: still the job's attempt?  Records the new stage
        (and the final step's ``progress``, which the step callback left to this write) and renews
        the lease (so a put has a whole lease to land in), in one round trip; raises ``Stopped(LOST)``
        when it no longer owns the job, ``Stopped(CANCELED)`` when it carried progress and a cancel
        was requested (as the progress write would have); waits out a Redis restart."""
        reply = retry_redis(lambda: self.store.set_stage(job_id, attempt, stage, progress),
                            f"job {job_id}: ownership check")
        if not reply:
            raise runner.Stopped(Verdict.LOST)
        if reply == CANCEL_REQUESTED:
            raise runner.Stopped(Verdict.CANCELED)

    def _put_sidecar(self, job: StoredJob, provenance: dict[str, Any]) -> Future[None]:
        spec, job_id = job.spec, job.record.id
        n, ext = spec.num_images, spec.output_format
        doc = {"job_id": job_id, "task": spec.task.value, "params": spec.params, "inputs": spec.inputs,
               "output_format": ext, "provenance": provenance,
               "images": [self.storage.image_key(job_id, i, ext) for i in range(n)]}
        return self.storage.put_async(self.storage.sidecar_key(job_id), json_bytes(doc), "application/json")

    def _discard_sidecar(self, job_id: str, attempt: int, sidecar: Future[None]) -> None:
        """A job that did not succeed leaves no sidecar behind (best effort, owner only)."""
        try:
            sidecar.result()
            if self.store.renew(job_id, attempt):
                self.storage.delete(self.storage.sidecar_key(job_id))
        except Exception:
            log.warning("job %s: could not remove the sidecar", job_id, exc_info=True)

    def _upload(self, job_id: str, encoded: list[Encoded]) -> JobResult:
        """Put every image concurrently; returns only once all of them exist."""
        keys = [self.storage.image_key(job_id, i, enc.ext) for i, enc in enumerate(encoded)]
        self.storage.put_many([(key, enc.data, enc.content_type) for key, enc in zip(keys, encoded, strict=True)])
        results = [ImageResult(key=key, width=enc.width, height=enc.height, content_type=enc.content_type,
                               sha256=enc.sha256) for key, enc in zip(keys, encoded, strict=True)]
        return JobResult(images=results, sidecar_key=self.storage.sidecar_key(job_id))

    def _provenance(self, job: StoredJob, attempt: int, pipe: Any) -> dict[str, Any]:
        """What made the job's images: checkpoint, pipeline, scheduler, LoRAs, dtype, device, versions."""
        spec, resolved = job.spec, job.spec.resolved
        extras = resolved.to_json()  # the ControlNet and the prior as plain JSON objects (or None)
        return {
            "checkpoint": resolved.checkpoint, "source": resolved.source,
            "revision": resolved.revision, "class_name": resolved.class_name,
            "family": resolved.family, "pipeline": type(pipe).__name__, "seed": job.spec.params["seed"],
            "controlnet": extras["controlnet"], "prior": extras["prior"],
            "dtype": str(self.cache_key(resolved).dtype).removeprefix("torch."), "device": self.cache.device,
            "worker": socket.gethostname(), "attempt": attempt, "versions": library_versions(),
            "scheduler": scheduler_provenance(pipe, spec.scheduler),
            "loras": [{"name": lo.name, "scale": lo.scale, "weight_name": lo.weight_name, "source": lo.source,
                       "revision": lo.revision} for lo in spec.loras],
        }

    def _progress_hook(self, job_id: str, attempt: int, deadline: float | None = None,
                       final: list[tuple[int, int]] | None = None) -> runner.StepHook:
        """The step callback: progress written at most once per ``progress_interval_s``; the last
        step's is not written here but kept in ``final`` (when given) for the ``uploading`` stage
        write, which comes next anyway: one round trip instead of two."""
        last = time.monotonic()  # the running transition already said "started"

        def on_step(step: int, total: int) -> Verdict:
            nonlocal last
            now = time.monotonic()
            if self._drain_deadline is not None and now >= self._drain_deadline and step < total:
                return Verdict.RELEASE
            if deadline is not None and now >= deadline and step < total:
                return Verdict.TIMED_OUT
            if step < total and now - last < self.progress_interval_s:
                return Verdict.GO_ON
            if step >= total and final is not None:
                final.append((step, total))
                return Verdict.GO_ON
            last = now
            try:
                return Verdict(self.store.progress(job_id, attempt, step, total))
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                # Progress is advisory: a Redis restart must not fail the job.  Ownership and
                # the terminal write are checked again (and waited for) before anything is put.
                log.warning("job %s: progress not written (%s); going on", job_id, exc)
                return Verdict.GO_ON
        return on_step

    def _stopped(self, job_id: str, attempt: int, verdict: Verdict) -> Outcome:
        if verdict is Verdict.CANCELED:
            log.info("job %s canceled during attempt %s; output discarded", job_id, attempt)
            return self._finish(lambda: self.store.mark_canceled(job_id, attempt), Outcome.CANCELED)
        if verdict is Verdict.RELEASE:
            return self._release(job_id, attempt)
        if verdict is Verdict.TIMED_OUT:
            error = JobError(code=TIMEOUT, message="the job ran past its timeout_s and was stopped; its output "
                             "was discarded")
            return self._finish(lambda: self.store.fail(job_id, attempt, error), Outcome.FAILED)
        log.warning("job %s: attempt %s no longer owns the job; standing down", job_id, attempt)
        return Outcome.LOST

    def _release(self, job_id: str, attempt: int) -> Outcome:
        """Shutting down past the grace period: give the job back to the queue."""
        given_back = self.store.release(job_id, attempt)
        if given_back is None:
            return Outcome.LOST
        log.warning("job %s: worker shutting down; attempt %s gave the job back (%s)", job_id, attempt,
                    given_back.outcome)
        if given_back.outcome != "queued":  # a cancel was pending, or it was the last attempt
            return Outcome(given_back.outcome)
        if self.publish is not None:
            try:
                hand_over(self.store, self.publish, given_back)
            except Exception:  # the outbox keeps it; a reaper publishes it after its silence
                log.warning("job %s: could not publish the requeue; left to the reaper", job_id, exc_info=True)
        return Outcome.RELEASED

    @staticmethod
    def _finish(write: Callable[[], None], status: Outcome) -> Outcome:
        """The terminal write, retried with backoff while Redis is unreachable."""
        for delay in (*FINAL_WRITE_BACKOFF_S, None):
            try:
                write()
            except TransitionError as exc:  # a newer attempt or a cancel got there first
                log.warning("final write refused: %s", exc)
                return Outcome.LOST
            except (redis.ConnectionError, redis.TimeoutError):
                if delay is None:
                    raise
                log.warning("Redis unreachable for the final write (%s); retrying in %.1fs", status, delay)
                time.sleep(delay)
            else:
                return status
        raise AssertionError("unreachable")
