"""A worker's metrics: what a job run records, the cache's stats, and multiprocess collection by the parent."""

from __future__ import annotations

import socket
import subprocess
import sys
import textwrap

import pytest
import redis
import torch
from prometheus_client import CollectorRegistry

from hotpipe.shared.settings import Settings
from hotpipe.shared.storage import Storage
from hotpipe.shared.store import JobStore
from hotpipe.workers.cache import CacheStats, PipelineCache
from hotpipe.workers.job_runner import JobRunner
from hotpipe.workers.metrics import CacheStatsView, WorkerMetrics
from tests.workers.test_job_runner import submit


@pytest.fixture
def store(redis_client: redis.Redis) -> JobStore:
    return JobStore(redis_client, record_ttl_s=60)


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


def test_cache_stats_are_published_as_counters_and_gauges() -> None:
    registry = CollectorRegistry()
    metrics = WorkerMetrics(registry)
    stats: CacheStatsView = CacheStats(hits=3, misses=2, evictions=1, load_seconds=4.5, resident_pipelines=1,
                                       resident_bytes=2_000_000, checkpoints=["tiny-sd"])
    metrics.publish_cache(stats)
    metrics.publish_cache(CacheStats(hits=5, misses=2, evictions=1, load_seconds=4.5, resident_pipelines=2,
                                     resident_bytes=3_000_000))
    assert sample(registry, "hotpipe_cache_hits_total") == 5
    assert sample(registry, "hotpipe_cache_misses_total") == 2
    assert sample(registry, "hotpipe_cache_evictions_total") == 1
    assert sample(registry, "hotpipe_cache_load_seconds_total") == 4.5
    assert sample(registry, "hotpipe_cache_resident_pipelines") == 2
    assert sample(registry, "hotpipe_cache_resident_bytes") == 3_000_000
    # a new cache (counts start over) adds what it counted; counters never go down
    metrics.publish_cache(CacheStats(hits=1))
    assert sample(registry, "hotpipe_cache_hits_total") == 6


def test_a_job_run_records_its_outcome_stages_and_the_cache(store: JobStore, storage: Storage,
                                                            settings: Settings) -> None:
    registry = CollectorRegistry()
    cache = PipelineCache("cpu", torch.float32)
    metrics = WorkerMetrics(registry, "cpu", cache_stats=cache.stats)
    runner = JobRunner(store, storage, cache, progress_interval_s=0, metrics=metrics)
    family = "stable-diffusion"
    assert runner.run(submit(store, settings)) == "succeeded"
    assert runner.run(submit(store, settings)) == "succeeded"
    failing = submit(store, settings, height=8, width=8, guidance_scale=-1.0, num_inference_steps=0)
    assert runner.run(failing) == "failed"
    assert runner.run(failing) == "skipped"
    code = store.get(failing).record.error.code  # type: ignore[union-attr]
    assert sample(registry, "hotpipe_worker_jobs_finished_total", family=family, status="succeeded") == 2
    assert sample(registry, "hotpipe_worker_jobs_finished_total", family=family, status="failed") == 1
    assert sample(registry, "hotpipe_worker_jobs_finished_total", family=family, status="skipped") == 1
    assert sample(registry, "hotpipe_worker_job_failures_total", family=family, code=code) == 1
    for stage in ("queue_wait", "load", "inputs", "run", "encode", "upload"):
        assert sample(registry, "hotpipe_job_stage_seconds_count", family=family, stage=stage) == 2, stage
    assert sample(registry, "hotpipe_job_duration_seconds_count", family=family, status="succeeded") == 2
    assert sample(registry, "hotpipe_job_duration_seconds_count", family=family, status="failed") == 1
    assert sample(registry, "hotpipe_worker_busy") == 0
    assert sample(registry, "hotpipe_cache_misses_total") == 1 and sample(registry, "hotpipe_cache_hits_total") == 2
    assert sample(registry, "hotpipe_cache_resident_pipelines") == 1
    assert sample(registry, "hotpipe_cache_resident_bytes") == cache.stats().resident_bytes > 0
    assert sample(registry, "hotpipe_gpu_memory_bytes", device="cpu", kind="allocated") is None  # no GPU here


def test_a_metric_that_cannot_be_recorded_never_fails_the_job(store: JobStore, storage: Storage, settings: Settings,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    registry = CollectorRegistry()

    def broken() -> CacheStatsView:
        raise AttributeError("'function' object has no attribute 'hits'")

    runner = JobRunner(store, storage, PipelineCache("cpu", torch.float32), progress_interval_s=0,
                       metrics=WorkerMetrics(registry, cache_stats=broken))
    assert runner.run(submit(store, settings)) == "succeeded"
    assert sample(registry, "hotpipe_worker_jobs_finished_total", family="stable-diffusion", status="succeeded") == 1
    assert "could not record job_finished" in caplog.text


def test_busy_is_set_while_a_job_runs(store: JobStore, storage: Storage, settings: Settings) -> None:
    registry = CollectorRegistry()
    seen: list[float | None] = []
    runner = JobRunner(store, storage, PipelineCache("cpu", torch.float32), progress_interval_s=0,
                       metrics=WorkerMetrics(registry))
    progress = store.progress

    def watch(job_id: str, attempt: int, step: int, total: int) -> int:
        seen.append(sample(registry, "hotpipe_worker_busy"))
        return progress(job_id, attempt, step, total)

    store.progress = watch  # type: ignore[method-assign]
    assert runner.run(submit(store, settings)) == "succeeded"
    assert seen and set(seen) == {1.0}
    assert sample(registry, "hotpipe_worker_busy") == 0


# The parent collects what its forked children wrote; run in a fresh interpreter, because
# multiprocess mode switches prometheus_client's value class for the whole process.
MULTIPROCESS = textwrap.dedent("""
    import os, sys
    from prometheus_client import generate_latest
    from prometheus_client.parser import text_string_to_metric_families
    from hotpipe.workers.exporter import MetricsExporter
    from hotpipe.workers.metrics import WorkerMetrics

    def scrape():
        text = generate_latest(exporter.registry).decode()
        return {(s.name, tuple(sorted(s.labels.items()))): s.value
                for f in text_string_to_metric_families(text) for s in f.samples}

    exporter = MetricsExporter(0, ["stable-diffusion"], "cpu", host="127.0.0.1")
    go, wait = os.pipe()
    done_r, done_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # a pool child: runs a job, stays busy until told to exit
        m = WorkerMetrics(None)
        m.job_started()
        m.finished.labels("stable-diffusion", "succeeded").inc()
        m.stages.labels("stable-diffusion", "run").observe(0.5)
        os.write(done_w, b"x")
        os.read(go, 1)
        os._exit(0)
    os.read(done_r, 1)
    alive = scrape()
    os.write(wait, b"x")
    os.waitpid(pid, 0)
    gone = scrape()
    key = ("hotpipe_worker_jobs_finished_total", (("family", "stable-diffusion"), ("status", "succeeded")))
    print(alive.get(("hotpipe_worker_busy", ())), gone.get(("hotpipe_worker_busy", ())))
    print(alive.get(key), gone.get(key))
    print(gone.get(("hotpipe_job_stage_seconds_count", (("family", "stable-diffusion"), ("stage", "run")))))
    print(gone.get(("hotpipe_worker_info", (("device", "cpu"), ("family", "stable-diffusion"), ("version", "0.1.0")))))
    path = exporter.path
    exporter.close()
    print(path.exists())
""")


def test_the_parent_serves_its_childrens_metrics_and_drops_a_dead_childs_gauges() -> None:
    out = subprocess.run([sys.executable, "-c", MULTIPROCESS], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    busy, finished, stage_count, info, dir_left = out.stdout.split("\n")[:5]
    assert busy == "1.0 None", "a live child's gauge counts; a dead child's is dropped"
    assert finished == "1.0 1.0", "a dead child's counters keep counting"
    assert stage_count == "1.0" and info == "1.0"
    assert dir_left == "False", "the multiprocess directory is removed with the worker"


def test_worker_metrics_port_in_use_is_a_clear_error() -> None:
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        code = ("from hotpipe.workers.exporter import MetricsExporter; "
                f"MetricsExporter({port}, ['stable-diffusion'], 'cpu', host='127.0.0.1')")
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 1
    assert f"can't serve worker metrics on port {port}" in out.stderr
    assert "HOTPIPE_WORKER_METRICS_PORT" in out.stderr
