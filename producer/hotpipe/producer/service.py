"""Submitting a job: check everything, then record it and enqueue it — or change nothing.

Order matters: every check that can fail because of the caller runs before anything is
written, so a refused request leaves no record, no object and no message behind.  The
record and its run message are then written by one Lua script (``JobStore.create``): a
worker never sees a job id it cannot find, and no record is ever left ``queued`` without
a message — if Redis fails, neither was written and the caller gets a 503.
"""

from __future__ import annotations

import contextlib
import hashlib
import secrets
from collections.abc import Iterable
from dataclasses import dataclass

from hotpipe.producer.admission import Admission
from hotpipe.producer.durable import record_job
from hotpipe.producer.routing import Router
from hotpipe.shared import call_args, schedulers
from hotpipe.shared.checkpoints import HubFetch, Resolved, fetch_hub_file, resolve
from hotpipe.shared.errors import Conflict, InvalidRequest
from hotpipe.shared.hub_loras import HubLoras
from hotpipe.shared.images import InputImage, check_image, decode_data_uri
from hotpipe.shared.job import TASK_INPUTS, JobRecord, JobRequest, Params, SchedulerChoice, Task, new_job_id
from hotpipe.shared.keys import DEFAULT_TENANT
from hotpipe.shared.loras import resolve_loras
from hotpipe.shared.messages import run_message
from hotpipe.shared.registry import checkpoint_id
from hotpipe.shared.safety import CheckpointNotAllowed, checkpoint_allowed, fetch_input, parse_patterns
from hotpipe.shared.settings import Settings
from hotpipe.shared.spec import JobSpec, LoraSpec
from hotpipe.shared.storage import Storage
from hotpipe.shared.store import JobExists, JobOptions, JobStore, KeyTaken
from hotpipe.shared.variants import split
from hotpipe.shared.webhooks import check_webhook_url


@dataclass(frozen=True)
class Submitted:
    """The job a submit names, and whether this call created it (False: a replay)."""

    record: JobRecord
    created: bool = True


@dataclass
class Submitter:
    """Validates, resolves, records and enqueues jobs."""

    settings: Settings
    store: JobStore
    storage: Storage
    #: fetches Hub config files at submit (default: straight from the Hub cache, uncached)
    hub: HubFetch | None = None
    #: rate limits and queue bounds, checked before anything is written (None: no limits)
    admission: Admission | None = None
    #: picks a warm worker's queue (affinity routing); None: always the family queue
    router: Router | None = None
    #: reads Hub LoRAs' safetensors headers, kept ``hub_cache_ttl_s`` in this process (None: built so)
    hub_loras: HubLoras | None = None

    def __post_init__(self) -> None:
        if self.hub_loras is None:
            self.hub_loras = HubLoras(ttl_s=self.settings.hub_cache_ttl_s)

    @property
    def allowlist(self) -> tuple[str, ...]:
        return parse_patterns(self.settings.checkpoint_allowlist)

    def submit(self, req: JobRequest, *, tenant: str = DEFAULT_TENANT, idempotency_key: str | None = None,
               job_id: str | None = None) -> Submitted:
        """Submit ``req`` for ``tenant``.

        With an ``idempotency_key`` (or a client-chosen ``job_id``), a request that comes
        back with the same body gets the job the first one created (``created=False``);
        with a different body it is a 409.  Nothing is checked twice: a replay is
        answered before validation.
        """
        if self.admission is not None:
            self.admission.take_token(tenant)
        fingerprint = request_fingerprint(req)
        digest = key_digest(idempotency_key) if idempotency_key is not None else None
        prior = self._prior(tenant, digest, job_id, fingerprint)
        if prior is not None:
            return Submitted(prior, created=False)
        resolved = self._check(req)
        scheduler = schedulers.choose(resolved.pipeline, req.scheduler, req.scheduler_config)
        adapters = resolve_loras(req.loras, resolved, self.settings.model_root, self.allowlist, self.hub or
                                 fetch_hub_file, self.settings.max_loras, self.hub_loras) if req.loras else []
        images = self._check_inputs(req)
        if self.admission is not None:
            self.admission.check_queue(resolved.base_family)
        job_id = job_id or new_job_id()
        spec = self._spec(req, resolved, self._store_inputs(job_id, images), scheduler, adapters)
        options = JobOptions(tenant=tenant, fingerprint=fingerprint, idempotency_key=digest,
                             idempotency_ttl_s=self.settings.idempotency_ttl_s, queue_timeout_s=req.queue_timeout_s,
                             timeout_s=req.timeout_s, webhook_url=req.webhook_url,
                             webhook_events=tuple(req.webhook_events),
                             webhook_progress_s=self.settings.webhook_progress_interval_s)
        message = run_message(job_id, resolved.base_family, req.priority,
                              queue=self._queue_for(resolved, req, tuple(lo.name for lo in adapters)))
        try:
            record = record_job(self.store, self.settings, job_id, keyed=digest is not None,
                                family=resolved.base_family, pipeline=resolved.pipeline,
                                checkpoint=req.checkpoint, revision=resolved.revision, task=req.task,
                                spec=spec, options=options, message=message)
        except (JobExists, KeyTaken) as lost:  # a concurrent request with the same id or key got there first
            if isinstance(lost, KeyTaken):  # (a taken id's input keys are the winner's own: keep them)
                self._discard_inputs(spec.inputs)
            prior = self._prior(tenant, digest, job_id, fingerprint)
            if prior is None:
                raise Conflict(f"job {job_id} is being created by another request; retry", field="id") from None
            return Submitted(prior, created=False)
        return Submitted(record)

    def _queue_for(self, resolved: Resolved, req: JobRequest, loras: tuple[str, ...] = ()) -> str | None:
        """A warm worker's own queue for this checkpoint (and its LoRAs, if any), or None: the family queue."""
        if self.router is None:
            return None
        return self.router.queue_for(resolved.base_family, checkpoint_id(req.checkpoint, resolved.revision), loras)

    def _check(self, req: JobRequest) -> Resolved:
        """Every check of the request itself (limits, inputs, allowlist, webhook), then its resolution."""
        check_limits(req.params, self.settings)
        check_task_inputs(req)
        for field, checkpoint in (("checkpoint", req.checkpoint), ("controlnet", req.controlnet)):
            if checkpoint is not None and not checkpoint_allowed(checkpoint, self.allowlist):
                raise CheckpointNotAllowed(f"{field} {checkpoint!r} is not on this server's checkpoint allowlist; "
                                           "ask the operator", field=field)
        self._check_webhook(req)
        resolved = resolve(req.checkpoint, req.task, self.settings.model_root, req.revision,
                           controlnet=req.controlnet, enable_pag=req.enable_pag, hub=self.hub)
        check_call_args(req.params, resolved.pipeline, req.inputs.given(), req.task,
                        split(resolved.family).controlnet is not None)
        return resolved

    def _prior(self, tenant: str, digest: str | None, job_id: str | None, fingerprint: str) -> JobRecord | None:
        """The job an earlier request with this key or id created, if the body matches; 409 if not."""
        if digest is not None and (named := self.store.idempotent_job(tenant, digest)) is not None:
            prior_id, prior_fingerprint = named
            if prior_fingerprint != fingerprint:
                raise Conflict(f"Idempotency-Key was already used with a different request (job {prior_id}); "
                               "use a new key for a new request", field="Idempotency-Key",
                               code="idempotency_conflict")
            job = self.store.get(prior_id)
            if job is not None:
                return job.record
            self.store.forget_idempotency(tenant, digest, prior_id)  # its record expired: start afresh
        if job_id is not None and (existing := self.store.get(job_id)) is not None:
            if (existing.fingerprint, existing.tenant) != (fingerprint, tenant):
                raise Conflict(f"job {job_id} already exists with a different request; choose another id",
                               field="id", code="id_conflict")
            return existing.record
        return None

    def _discard_inputs(self, stored: dict[str, str]) -> None:
        """Inputs stored for a job that was never created (best effort: they are only orphans)."""
        for key in stored.values():
            with contextlib.suppress(Exception):
                self.storage.delete(key)

    def _check_webhook(self, req: JobRequest) -> None:
        if req.webhook_url is None:
            return
        if not self.settings.webhook_secret:
            raise InvalidRequest("this server has no webhook secret (HOTPIPE_WEBHOOK_SECRET), so it sends no "
                                 "webhooks; remove webhook_url", field="webhook_url")
        check_webhook_url(req.webhook_url, self.settings.webhook_allow_private)

    def _check_inputs(self, req: JobRequest) -> dict[str, InputImage]:
        s = self.settings
        images: dict[str, InputImage] = {}
        for name, ref in req.inputs.given().items():
            field = f"inputs.{name}"
            if ref.startswith("s3://"):
                data = self.storage.get_bounded(self.storage.key_from_uri(ref, field), field, s.max_input_bytes)
            elif ref.startswith(("http://", "https://")):
                data = fetch_input(ref, field, s.max_input_bytes, enabled=s.allow_http_inputs)
            else:
                data = decode_data_uri(ref, field, s.max_input_bytes)
            images[name] = check_image(data, field, s.max_input_bytes, s.max_input_pixels)
        image, mask = images.get("image"), images.get("mask_image")
        if image and mask and (image.width, image.height) != (mask.width, mask.height):
            raise InvalidRequest(f"inputs.mask_image is {mask.width}x{mask.height} but inputs.image is "
                                 f"{image.width}x{image.height}; they must be the same size", field="inputs.mask_image")
        return images

    def _store_inputs(self, job_id: str, images: dict[str, InputImage]) -> dict[str, str]:
        keys: dict[str, str] = {}
        for name, image in images.items():
            keys[name] = self.storage.input_key(job_id, name, image.ext)
            self.storage.put(keys[name], image.data, image.content_type)
        return keys

    @staticmethod
    def _spec(req: JobRequest, resolved: Resolved, inputs: dict[str, str],
              scheduler: SchedulerChoice | None = None, loras: list[LoraSpec] | None = None) -> JobSpec:
        params = req.params.model_dump(exclude_none=True)
        params.setdefault("seed", secrets.randbelow(2**32))
        return JobSpec(resolved=resolved, task=req.task, params=params, inputs=inputs,
                       output_format=req.output_format, priority=req.priority, timeout_s=req.timeout_s,
                       scheduler=scheduler, loras=loras or [])


def request_fingerprint(req: JobRequest) -> str:
    """Digest of the request as parsed: equal for bodies that mean the same, whatever their key order."""
    return hashlib.sha256(req.model_dump_json().encode()).hexdigest()


def key_digest(idempotency_key: str) -> str:
    """The Redis-safe name of a caller's Idempotency-Key."""
    return hashlib.sha256(idempotency_key.encode()).hexdigest()


def check_limits(params: Params, s: Settings) -> None:
    """Bounds that depend on the deployment's settings."""
    limits = {"num_inference_steps": s.max_steps, "height": s.max_side, "width": s.max_side,
              "num_images": s.max_images}
    for name, limit in limits.items():
        value = getattr(params, name)
        if value is not None and value > limit:
            raise InvalidRequest(f"params.{name} is {value}; this server allows at most {limit}",
                                 field=f"params.{name}")
    for name in ("prompt", "negative_prompt"):
        text = getattr(params, name)
        if text is not None and len(text) > s.max_prompt_chars:
            raise InvalidRequest(f"params.{name} has {len(text)} characters; at most {s.max_prompt_chars} allowed",
                                 field=f"params.{name}")


def check_task_inputs(req: JobRequest) -> None:
    required, allowed = TASK_INPUTS[req.task]
    given = set(req.inputs.given())
    if req.controlnet is not None and "control_image" not in given:
        raise InvalidRequest("inputs.control_image is required when controlnet is set: the ControlNet conditions "
                             "on it", field="inputs.control_image")
    for name in sorted(required - given):
        raise InvalidRequest(f"inputs.{name} is required for task {req.task.value}", field=f"inputs.{name}")
    for name in sorted(given - allowed):
        raise InvalidRequest(f"inputs.{name} is not used by task {req.task.value}; remove it",
                             field=f"inputs.{name}")


def check_call_args(params: Params, pipeline: str, inputs: Iterable[str] = (), task: Task = Task.TEXT2IMAGE,
                    has_controlnet: bool = False) -> None:
    """Refuse parameters and inputs the resolved pipeline's ``__call__`` does not take, and a
    steps x strength that leaves it no denoising step."""
    call_args.check_inputs(inputs, pipeline, task, has_controlnet)
    call_args.check_params(params, pipeline)
    call_args.check_denoising_steps(params, pipeline)
