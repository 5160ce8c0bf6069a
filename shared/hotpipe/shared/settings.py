"""Typed settings read from ``HOTPIPE_*`` environment variables.

Settings are built once by an entry point (``Settings.from_env()``) and passed down
explicitly; nothing in hotpipe reads the environment at import time.  Every field
carries its own help text so the configuration reference can be generated from
this class and can never drift from it.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ENV_PREFIX = "HOTPIPE_"
#: values of HOTPIPE_LOG_FORMAT
LOG_FORMATS = ("text", "json")
API_LOG_LEVELS = ("critical", "error", "warning", "info", "debug")
DTYPE_NAMES = ("float32", "float16", "bfloat16")
#: eviction policies of the workers' pipeline cache (``workers/hotpipe/workers/cache.py`` POLICIES)
CACHE_POLICIES = ("popular", "lfu", "lru")
#: ``max_batch`` refused above this: a call's activations grow with the batch, and past it the GPUs this
#: project measured gain nothing for one image size (BENCHMARKS.md)
MAX_BATCH_CEILING = 64
#: ``max_batch=auto`` per device type: CPU runs one job per call (a batch only queues jobs behind each
#: other there); on CUDA 8 SD-1.5-sized 512² images fit a 24 GB card in fp16 (BENCHMARKS.md)
AUTO_MAX_BATCH = {"cpu": 1, "cuda": 8}


def _setting(default: Any, help: str) -> Any:
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True)
class Settings:
    """Every tunable of hotpipe; field ``x`` is read from ``HOTPIPE_X``."""

    redis_url: str = _setting("redis://127.0.0.1:6379/0", "Redis for job records and the Celery broker. With "
                                                         "HOTPIPE_REDIS_SENTINELS set, only its database number, "
                                                         "user and password are used: the sentinels name the "
                                                         "primary.")
    redis_sentinels: str = _setting("", "Redis Sentinels as host:port,host:port (high availability): the API and "
                                        "workers find the primary of HOTPIPE_REDIS_MASTER_NAME through them, at "
                                        "start and again after every failover, for job records, events, webhooks "
                                        "and the Celery broker. Empty: HOTPIPE_REDIS_URL is the one Redis.")
    redis_master_name: str = _setting("mymaster", "The primary's name in the sentinels' `sentinel monitor` line "
                                                  "(the Bitnami Redis chart's sentinel.masterSet).")
    redis_sentinel_username: str | None = _setting(None, "ACL user the sentinels themselves require, if any.")
    redis_sentinel_password: str | None = _setting(None, "Password the sentinels themselves require "
                                                         "(Sentinel's requirepass), if any; the primary's own "
                                                         "password goes in HOTPIPE_REDIS_URL.")
    redis_submit_replicas: int = _setting(0, "Replicas that must hold a new job (Redis WAIT) before a submit "
                                             "answers 202. 0: answered once the primary has it, and replication "
                                             "is asynchronous, so a failover just then can lose an accepted job. "
                                             "Not confirmed within REDIS_SUBMIT_WAIT_MS: 503 naming the job "
                                             "(README, High availability).")
    redis_submit_wait_ms: int = _setting(1000, "How long a submit waits for REDIS_SUBMIT_REPLICAS replicas.")
    s3_endpoint_url: str | None = _setting(None, "S3-compatible endpoint; unset means AWS S3.")
    s3_bucket: str = _setting("hotpipe", "Bucket for inputs, images and sidecars.")
    s3_prefix: str = _setting("jobs", "Key prefix inside the bucket: {prefix}/{job_id}/{index}.{ext}.")
    s3_region: str = _setting("us-east-1", "Region used to sign S3 requests.")
    s3_max_attempts: int = _setting(8, "Tries of one S3 request (botocore standard retries: exponential backoff "
                                       "with jitter, at most 20 s apart) before a put fails the job.")
    model_root: Path = _setting(Path("models"), "Folder holding local checkpoints (one folder each).")
    record_ttl_s: int = _setting(7 * 24 * 3600, "Seconds a finished job record is kept in Redis.")
    presign_expiry_s: int = _setting(3600, "Lifetime of presigned image URLs, regenerated on each read.")
    visibility_timeout_s: int = _setting(3600, "Kombu visibility timeout: unacked messages are redelivered after it.")
    max_steps: int = _setting(150, "Upper bound on num_inference_steps.")
    max_side: int = _setting(2048, "Upper bound on height and width (pixels).")
    max_images: int = _setting(4, "Upper bound on num_images per job.")
    max_input_pixels: int = _setting(4096 * 4096, "Upper bound on width*height of an input image.")
    max_input_bytes: int = _setting(16 * 1024 * 1024, "Upper bound on the encoded size of one input image.")
    max_body_bytes: int = _setting(48 * 1024 * 1024, "Upper bound on a request body.")
    max_prompt_chars: int = _setting(4000, "Upper bound on prompt and negative_prompt length.")
    max_loras: int = _setting(4, "Most LoRA adapters one job may apply (loras); the contract's ceiling is 16.")
    hub_cache_ttl_s: int = _setting(300, "Seconds a Hub resolution (a repo's model_index.json or config.json and "
                                         "the commit its revision pointed to) is cached in Redis, and a Hub LoRA's "
                                         "safetensors header and commit in each API process; 0 turns both off.")
    wait_max_s: float = _setting(60.0, "Upper bound on GET /v1/jobs/{id}?wait=S.")
    device: str = _setting("cpu", "Worker device: cpu or cuda:N.")
    dtype: str = _setting("auto", "Worker dtype: auto (fp16 on CUDA, fp32 on CPU), float32, float16, bfloat16.")
    torch_threads: int = _setting(0, "Torch intra-op threads in a worker; 0 keeps torch's default.")
    progress_interval_s: float = _setting(0.25, "Minimum seconds between two progress writes of one job.")
    worker_ready_file: Path | None = _setting(None, "File a worker touches once it consumes (readiness probe).")
    lease_s: float = _setting(30.0, "Lease of a running job: its worker renews it every lease_s/3 (heartbeat); "
                                    "once it lapses a reaper requeues the job.")
    reaper_interval_s: float = _setting(2.0, "Seconds between two passes of the reaper every worker's parent runs "
                                             "(a dead worker's job is back in its queue within worker_ttl_s + this).")
    job_time_limit_s: float = _setting(1800.0, "Hard limit on one attempt of a job (loading included): past it the "
                                               "job ends failed with code time_limit and the worker's pool child is "
                                               "replaced (even one hung in native code). 0 turns it off.")
    max_attempts: int = _setting(3, "Most times a job is started; a job whose worker is lost on its last attempt "
                                    "ends failed with code worker_lost.")
    shutdown_grace_s: float = _setting(25.0, "On SIGTERM, how long a worker lets its running job go on before it "
                                             "gives the job back to the queue; keep the pod's "
                                             "terminationGracePeriodSeconds above it.")
    idempotency_ttl_s: int = _setting(24 * 3600, "How long an Idempotency-Key keeps naming the job it created.")
    max_list_limit: int = _setting(100, "Upper bound on GET /v1/jobs?limit=N.")
    webhook_secret: str | None = _setting(None, "Key of the HMAC-SHA256 signature on webhook deliveries; unset, "
                                                "jobs with a webhook_url are refused.")
    webhook_allow_private: bool = _setting(False, "Allow webhook URLs on loopback, link-local and private "
                                                  "addresses (local stacks and tests).")
    webhook_timeout_s: float = _setting(10.0, "Timeout of one webhook delivery try.")
    webhook_max_tries: int = _setting(8, "Tries of a start or completed event before it is dropped; "
                                         "progress events are tried once.")
    webhook_backoff_s: float = _setting(1.0, "Pause before the second try of a webhook event; doubles after "
                                             "each failed try, up to 300 s.")
    webhook_progress_interval_s: float = _setting(1.0, "Minimum seconds between two progress webhooks of a job.")
    webhook_dispatcher: bool = _setting(True, "Run the webhook dispatcher thread in the API process.")
    api_workers: int = _setting(1, "Processes serving the API in one `hotpipe api` (uvicorn workers on one port): "
                                   "each has its own connections and webhook dispatcher, and /metrics merges "
                                   "their counters. `hotpipe api --workers` sets it.")
    api_log_level: str = _setting("info", "Log level of the API processes (debug, info, warning, error); "
                                          "`hotpipe api --log-level` sets it.")
    log_format: str = _setting("text", "Log lines as text or json (one JSON object a line, with job_id where "
                                       "there is one); API and workers.")
    worker_metrics_port: int = _setting(9464, "Port of a worker's Prometheus /metrics (served by the worker's "
                                              "parent process for it and its pool child); 0 turns it off.")
    api_keys: str | None = _setting(None, "API keys as comma-separated `sha256-hex:tenant` pairs (the SHA-256 of "
                                          "each key, never the key; `hotpipe keys new` makes one). Unset with no "
                                          "API_KEYS_FILE: no authentication (local stacks only).")
    api_keys_file: Path | None = _setting(None, "File of API key hashes, one `sha256-hex tenant` per "
                                                "line (# comments); read at start-up, adds to API_KEYS.")
    rate_limit_per_s: float = _setting(0.0, "Job submissions per second each tenant may sustain (a token bucket in "
                                            "Redis); 0 turns the limit off.")
    rate_limit_burst: int = _setting(50, "Submissions a tenant may make at once before RATE_LIMIT_PER_S applies.")
    read_rate_limit_per_s: float = _setting(0.0, "Reads per second each tenant may sustain (GET a job, the job list, "
                                                 "an event stream; a token bucket apart from submissions'); 0 turns "
                                                 "the limit off. Size it above your clients' polling.")
    read_rate_limit_burst: int = _setting(200, "Reads a tenant may make at once before READ_RATE_LIMIT_PER_S applies.")
    allow_pickle_weights: bool = _setting(False, "Let workers load pickle (.bin) weights when a checkpoint has no "
                                                 "safetensors; pickles can run code, so leave it off.")
    checkpoint_allowlist: str | None = _setting(None, "Comma-separated glob patterns (org/*, tiny-*) a checkpoint must "
                                                      "match; checked at submit (403) and in the worker. Unset: any.")
    allow_http_inputs: bool = _setting(False, "Accept http(s) URLs as input images (fetched at submit, public hosts "
                                              "only: never loopback, link-local or private addresses).")
    max_queued_per_family: int = _setting(0, "Most jobs queued (waiting to start) for one family; past it "
                                             "submissions are refused with 429. 0: unbounded.")
    cache_budget_mb: int = _setting(0, "Memory a worker's pipeline cache may hold, in MiB, measured (GPU memory on "
                                       "CUDA, tensor bytes on CPU); pipelines are evicted beyond it "
                                       "(HOTPIPE_CACHE_POLICY). 0: no memory bound.")
    cache_max_pipelines: int = _setting(0, "Most checkpoints a worker keeps loaded at once; 0: no count bound.")
    cache_max_adapters: int = _setting(8, "Most LoRA adapters a worker keeps loaded per checkpoint; the least "
                                          "recently used is deleted to make room (never one the job needs).")
    cache_policy: str = _setting("popular", "Which pipeline the cache evicts: popular (fewest requests fleet-wide "
                                            "lately, from the counts affinity routing keeps in Redis; this worker's "
                                            "own uses when those are missing or unreadable), lfu (fewest uses on "
                                            "this worker, then least recent) or lru (least recently used).")
    family_dtypes: str = _setting("", "Per-family dtype on CUDA, e.g. 'flux=bfloat16,stable-diffusion=float16'; "
                                      "other families use HOTPIPE_DTYPE. CPU workers always use HOTPIPE_DTYPE.")
    preload: str = _setting("", "Checkpoints (comma-separated) a worker loads before it consumes and reports "
                                "ready; `hotpipe worker --preload` sets it.")
    worker_ttl_s: float = _setting(6.0, "The silence window: a worker's registry record lives this long unless "
                                        "renewed (every worker_heartbeat_s); then the worker is dead: routing stops, "
                                        "a reaper requeues the jobs it held (fenced by attempt) and drains its own "
                                        "queue. Must be longer than worker_heartbeat_s.")
    worker_heartbeat_s: float = _setting(1.0, "How often a worker renews its registry record (its liveness). "
                                              "Must be shorter than worker_ttl_s.")
    routing: str = _setting("affinity", "Producer routing: affinity (send a job to a live worker holding its "
                                        "checkpoint) or family (always the family queue).")
    route_backlog_max: int = _setting(3, "Affinity routing sends a job to a warm worker's own queue only while "
                                         "fewer than this many jobs wait there.")
    stale_queued_s: float = _setting(300.0, "A job queued this long while nothing waits in its family's queues has "
                                            "lost its message (a worker froze holding it): a reaper publishes it "
                                            "again. 0: off.")
    route_claim_s: float = _setting(30.0, "How long the first worker sent a checkpoint nobody holds stays its "
                                          "loader, so concurrent first requests don't load it everywhere.")
    popularity_half_life_s: float = _setting(1800.0, "Half-life of the per-checkpoint request counts affinity "
                                                     "routing keeps in Redis (global popularity, read by routing "
                                                     "and the popular eviction policy): a request this old "
                                                     "counts half.")
    openai_wait_s: float = _setting(300.0, "Longest POST /v1/images/generations and /v1/images/edits (the OpenAI "
                                           "Images API) wait for their job; past it they answer 504 naming the "
                                           "job, which goes on (GET /v1/jobs/{id}).")
    models_cache_s: float = _setting(30.0, "Seconds an API process reuses its scan of the model root for "
                                           "GET /v1/models (the catalog); 0 scans on every request.")
    max_batch: str = _setting("auto", "Dynamic batching: the most images one pipeline call makes from compatible "
                                      "jobs already queued for the worker (same checkpoint, class, scheduler, "
                                      "LoRAs, size, steps, guidance, ...); each job keeps its own record, "
                                      "progress, cancel and result. A whole number from 1 (off: no queue scan "
                                      f"at all) to {MAX_BATCH_CEILING}, or auto: "
                                      + ", ".join(f"{k} on {d}" for d, k in AUTO_MAX_BATCH.items()) + ".")
    batch_wait_ms: float = _setting(0.0, "How long a worker that found room in its batch waits for more compatible "
                                         "jobs before it runs (milliseconds); 0 batches only what is already "
                                         "queued, so an idle fleet's latency is unchanged. At most a third of "
                                         "LEASE_S.")
    worker_events: bool = _setting(True, "Workers send Celery heartbeats (every 2 s) and task events, so Flower "
                                         "and `celery events` see them: 3 Redis PUBLISHes per job (about 2% of "
                                         "a job's commands) and one every 2 s per worker (BENCHMARKS.md). "
                                         "false: neither is sent.")

    def __post_init__(self) -> None:
        positive = {"lease_s": self.lease_s, "reaper_interval_s": self.reaper_interval_s,
                    "max_attempts": self.max_attempts, "worker_ttl_s": self.worker_ttl_s,
                    "worker_heartbeat_s": self.worker_heartbeat_s,
                    "route_backlog_max": self.route_backlog_max, "api_workers": self.api_workers,
                    "popularity_half_life_s": self.popularity_half_life_s, "openai_wait_s": self.openai_wait_s}
        for name, value in positive.items():
            if not (value > 0 and math.isfinite(value)):
                raise ValueError(f"{ENV_PREFIX}{name.upper()} is {value!r}; it must be a finite number above 0")
        if not 0 <= self.worker_metrics_port <= 65535:
            raise ValueError(f"{ENV_PREFIX}WORKER_METRICS_PORT is {self.worker_metrics_port}; use a TCP port "
                             "(1-65535), or 0 to turn worker metrics off")
        self._check_rate_limits()
        self._check_silence_window()
        self._check_redis()
        self.batch_limit()
        zero_or_more = {"job_time_limit_s": self.job_time_limit_s, "shutdown_grace_s": self.shutdown_grace_s,
                        "stale_queued_s": self.stale_queued_s, "models_cache_s": self.models_cache_s}
        for name, value in zero_or_more.items():
            if not (value >= 0 and math.isfinite(value)):
                raise ValueError(f"{ENV_PREFIX}{name.upper()} is {value!r}; it must be a finite number of seconds, "
                                 "0 (off) or more")

        for name, choice, allowed in (("cache_policy", self.cache_policy, CACHE_POLICIES),
                                      ("routing", self.routing, ("affinity", "family")),
                                      ("log_format", self.log_format, LOG_FORMATS),
                                      ("api_log_level", self.api_log_level.lower(), API_LOG_LEVELS)):
            if choice not in allowed:
                raise ValueError(f"{ENV_PREFIX}{name.upper()} is {choice!r}; use one of {', '.join(allowed)}")
        self.family_dtype_map()

    def _check_silence_window(self) -> None:
        if self.worker_ttl_s <= self.worker_heartbeat_s:
            raise ValueError(f"{ENV_PREFIX}WORKER_TTL_S ({self.worker_ttl_s:g} s, the silence window after which a "
                             f"worker is declared dead) must be longer than {ENV_PREFIX}WORKER_HEARTBEAT_S "
                             f"({self.worker_heartbeat_s:g} s, how often a worker says it is alive), or healthy "
                             f"workers are declared dead and their jobs requeued: raise {ENV_PREFIX}WORKER_TTL_S "
                             f"(several heartbeats, e.g. {6 * self.worker_heartbeat_s:g}) or lower "
                             f"{ENV_PREFIX}WORKER_HEARTBEAT_S")

    def _check_redis(self) -> None:
        self.sentinel_addresses()
        if self.redis_sentinels and not self.redis_master_name.strip():
            raise ValueError(f"{ENV_PREFIX}REDIS_MASTER_NAME is empty; with {ENV_PREFIX}REDIS_SENTINELS set, name "
                             "the primary as the sentinels know it (`sentinel monitor <name> ...`, e.g. mymaster)")
        if self.redis_submit_replicas < 0:
            raise ValueError(f"{ENV_PREFIX}REDIS_SUBMIT_REPLICAS is {self.redis_submit_replicas}; use 0 (answer "
                             "once the primary has the job) or the number of replicas to wait for")
        if self.redis_submit_wait_ms < 1:
            raise ValueError(f"{ENV_PREFIX}REDIS_SUBMIT_WAIT_MS is {self.redis_submit_wait_ms}; use 1 ms or more "
                             "(WAIT with 0 would wait for ever)")

    def sentinel_addresses(self) -> list[tuple[str, int]]:
        """``redis_sentinels`` as (host, port) pairs; empty without Sentinel."""
        out: list[tuple[str, int]] = []
        for item in (part.strip() for part in self.redis_sentinels.split(",")):
            if not item:
                continue
            host, sep, port = item.rpartition(":")
            if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError(f"{ENV_PREFIX}REDIS_SENTINELS has {item!r}; write each sentinel as host:port "
                                 "(comma-separated, e.g. redis-0.redis-headless:26379,redis-1.redis-headless:26379)")
            out.append((host.strip("[]"), int(port)))
        return out

    def _check_rate_limits(self) -> None:
        for limit, rate, burst in (("RATE_LIMIT", self.rate_limit_per_s, self.rate_limit_burst),
                                   ("READ_RATE_LIMIT", self.read_rate_limit_per_s, self.read_rate_limit_burst)):
            if not (rate >= 0 and math.isfinite(rate)) or burst < 1:
                raise ValueError(f"{ENV_PREFIX}{limit}_PER_S must be 0 (off) or more and {ENV_PREFIX}{limit}_BURST "
                                 "at least 1")

    def batch_limit(self) -> int:
        """``max_batch`` as a number of images (``auto``: this device type's default); a value that is not
        a whole number from 1 to ``MAX_BATCH_CEILING`` is refused, naming the setting and the fix."""
        name = f"{ENV_PREFIX}MAX_BATCH"
        if not (self.batch_wait_ms >= 0 and math.isfinite(self.batch_wait_ms)):
            raise ValueError(f"{ENV_PREFIX}BATCH_WAIT_MS is {self.batch_wait_ms!r}; use 0 (batch only what is "
                             "queued) or a finite number of milliseconds")
        if self.batch_wait_ms * 3 > self.lease_s * 1000:  # the claimed job waits before its heartbeat starts
            raise ValueError(f"{ENV_PREFIX}BATCH_WAIT_MS is {self.batch_wait_ms:g}; a worker waits that long holding "
                             f"a claimed job whose lease is not renewed yet, so keep it under a third of "
                             f"{ENV_PREFIX}LEASE_S ({self.lease_s * 1000 / 3:g} ms)")
        if self.max_batch.strip().lower() == "auto":
            return AUTO_MAX_BATCH["cuda" if self.device.startswith("cuda") else "cpu"]
        try:
            value = int(self.max_batch.strip())
        except ValueError:
            raise ValueError(f"{name} is {self.max_batch!r}; use a whole number of images from 1 (no batching) "
                             f"to {MAX_BATCH_CEILING}, or auto") from None
        if not 1 <= value <= MAX_BATCH_CEILING:
            raise ValueError(f"{name} is {value}; use a whole number of images from 1 (no batching) to "
                             f"{MAX_BATCH_CEILING}, or auto")
        return value

    def family_dtype_map(self) -> dict[str, str]:
        """``family_dtypes`` as family -> dtype name."""
        pairs = [p.strip() for p in self.family_dtypes.split(",") if p.strip()]
        out: dict[str, str] = {}
        for pair in pairs:
            family, sep, dtype = pair.partition("=")
            if not sep or not family.strip() or dtype.strip() not in DTYPE_NAMES:
                raise ValueError(f"{ENV_PREFIX}FAMILY_DTYPES has {pair!r}; write family=dtype with dtype one of "
                                 f"{', '.join(DTYPE_NAMES)}")
            out[family.strip()] = dtype.strip()
        return out

    def preload_list(self) -> list[str]:
        return [name.strip() for name in self.preload.split(",") if name.strip()]

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Build settings from ``HOTPIPE_*`` variables (``environ`` defaults to os.environ)."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            raw = env.get(ENV_PREFIX + f.name.upper())
            if raw is not None:
                values[f.name] = _parse(f, raw)
        values.update(overrides)
        return cls(**values)

    def to_env(self) -> dict[str, str]:
        """The ``HOTPIPE_*`` variables that rebuild these settings in a child process."""
        out: dict[str, str] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value is not None:
                out[ENV_PREFIX + f.name.upper()] = str(value)
        return out


def _parse(f: dataclasses.Field[Any], raw: str) -> Any:
    kind = str(f.type)
    if not raw:
        if "None" in kind:
            return None
        if kind == "str":
            return raw
        raise ValueError(f"{ENV_PREFIX}{f.name.upper()} is empty; unset it to use the default {f.default!r}")
    try:
        if kind.startswith("bool"):
            return _bool(f, raw)
        if kind.startswith("int"):
            return int(raw)
        if kind.startswith("float"):
            return float(raw)
        if kind.startswith("Path"):
            return Path(raw)
    except ValueError as exc:
        raise ValueError(f"{ENV_PREFIX}{f.name.upper()}={raw!r} is not a valid {kind}") from exc
    return raw


def _bool(f: dataclasses.Field[Any], raw: str) -> bool:
    value = {"1": True, "true": True, "yes": True, "on": True, "0": False, "false": False, "no": False,
             "off": False}.get(raw.strip().lower())
    if value is None:
        raise ValueError(f"{ENV_PREFIX}{f.name.upper()}={raw!r}; use true or false")
    return value


def reference_table() -> list[tuple[str, str, str]]:
    """(variable, default, meaning) for every setting, for the configuration reference."""
    rows = []
    for f in dataclasses.fields(Settings):
        rows.append((ENV_PREFIX + f.name.upper(), repr(f.default), f.metadata["help"]))
    return rows
