"""Creating jobs: a ``queued`` record and its run message in one script, idempotency keys, options."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

import redis

from hotpipe.shared import keys
from hotpipe.shared.job import JobRecord, Task
from hotpipe.shared.job_records import record_from_fields
from hotpipe.shared.messages import RunMessage
from hotpipe.shared.scripts import JobScripts
from hotpipe.shared.spec import JobSpec
from hotpipe.shared.status import Status, TransitionError


@dataclass(frozen=True)
class JobOptions:
    """What a submit asks of the store beyond the record: tenant, idempotency, deadline, webhook."""

    tenant: str = keys.DEFAULT_TENANT
    #: digest of the request, compared when a key or client-chosen id comes back
    fingerprint: str = ""
    #: digest of the caller's ``Idempotency-Key``, and how long it names the job
    idempotency_key: str | None = None
    idempotency_ttl_s: int = 24 * 3600
    queue_timeout_s: float | None = None
    timeout_s: float | None = None
    webhook_url: str | None = None
    webhook_events: tuple[str, ...] = ()
    webhook_progress_s: float = 1.0

    def record_fields(self) -> dict[str, str]:
        """The record's fields these options set (timeouts, the webhook)."""
        fields: dict[str, str] = {}
        if self.queue_timeout_s is not None:
            fields["queue_timeout_s"] = repr(self.queue_timeout_s)
        if self.timeout_s is not None:
            fields["timeout_s"] = repr(self.timeout_s)
        if self.webhook_url:
            fields.update(webhook_url=self.webhook_url, webhook_events="," + ",".join(self.webhook_events) + ",",
                          webhook_progress_ms=str(round(self.webhook_progress_s * 1000)))
        return fields


class JobExists(TransitionError):
    """The job id is taken; ``fingerprint`` and ``tenant`` say by what request and whom."""

    def __init__(self, job_id: str, fingerprint: str, tenant: str):
        super().__init__(job_id, None, Status.QUEUED, frozenset(), detail=f"job {job_id} already exists")
        self.fingerprint, self.tenant = fingerprint, tenant


class KeyTaken(TransitionError):
    """The idempotency key already names job ``job_id``, created from a request with ``fingerprint``."""

    def __init__(self, job_id: str, fingerprint: str):
        super().__init__(job_id, None, Status.QUEUED, frozenset(),
                         detail=f"the idempotency key already names job {job_id}")
        self.fingerprint = fingerprint


class JobCreation:
    """The producer's side of ``JobStore``: creates and idempotency keys."""

    redis: redis.Redis
    _lua: JobScripts

    def create(self, job_id: str, *, family: str, pipeline: str, checkpoint: str, revision: str | None,
               task: Task, spec: JobSpec, options: JobOptions | None = None,
               message: RunMessage | None = None) -> JobRecord:
        """Write a new ``queued`` record, indexed for its tenant, and push its run ``message``
        (``shared/hotpipe/shared/messages.py``) in the same script; return the record.

        Refuses to overwrite an existing job (``JobExists``) and, with an idempotency key,
        to create a second job for it (``KeyTaken``); either way nothing is written or pushed.
        """
        opts = options or JobOptions()
        now = time.time()
        fields = {
            "id": job_id, "status": Status.QUEUED.value, "attempt": "0", "family": family,
            "pipeline": pipeline, "checkpoint": checkpoint, "revision": revision or "",
            "task": task.value, "created_at": repr(now), "spec": spec.model_dump_json(),
            "tenant": opts.tenant, "index": keys.jobs_index(opts.tenant), "fingerprint": opts.fingerprint,
            "stage": "queued", "queued_at": repr(now), "index_score": str(round(now * 1e6)),
            "queued_count": keys.queued_count(family), **opts.record_fields(),
        }
        if message is not None and message.queue and message.queue != keys.family_queue(family):
            fields["routed_count"] = keys.routed_count(message.queue)  # a warm worker's backlog, as routing reads it
        if spec.scheduler is not None:  # the record names the scheduler and the LoRAs the job chose
            fields["scheduler"] = spec.scheduler.model_dump_json()
        if spec.loras:
            fields["loras"] = json.dumps([{"name": lo.name, "scale": lo.scale, "weight_name": lo.weight_name}
                                          for lo in spec.loras])
        idem_key = keys.idempotency(opts.tenant, opts.idempotency_key) if opts.idempotency_key else keys.job(job_id)
        queue_ms = "" if opts.queue_timeout_s is None else str(round(opts.queue_timeout_s * 1000))
        argv: list[str | int] = [f"{job_id} {opts.fingerprint}" if opts.idempotency_key else "", opts.idempotency_ttl_s,
                fields["index_score"], queue_ms, message.payload if message else "",
                *(x for pair in fields.items() for x in pair)]
        reply = self._lua.create(keys=[keys.job(job_id), idem_key, keys.queue_deadlines(),
                                       message.list_key if message else keys.job(job_id), keys.queued_jobs(),
                                       keys.jobs_index(opts.tenant), keys.jobs_index(opts.tenant, Status.QUEUED.value),
                                       keys.queued_count(family), fields.get("routed_count", keys.job(job_id))],
                                 args=argv)
        if reply[0] == "exists":
            raise JobExists(job_id, reply[1], reply[2])
        if reply[0] == "taken":
            prior, _, fingerprint = reply[1].partition(" ")
            raise KeyTaken(prior, fingerprint)
        return record_from_fields(fields)

    def idempotent_job(self, tenant: str, key_digest: str) -> tuple[str, str] | None:
        """(job id, request fingerprint) an idempotency key already names, if any."""
        value: str | None = self.redis.get(keys.idempotency(tenant, key_digest))  # type: ignore[assignment]
        if not value:
            return None
        job_id, _, fingerprint = value.partition(" ")
        return job_id, fingerprint

    def forget_idempotency(self, tenant: str, key_digest: str, job_id: str) -> None:
        """Drop an idempotency key if it still names ``job_id`` (its job failed to enqueue or expired)."""
        self._lua.forget(keys=[keys.idempotency(tenant, key_digest)], args=[job_id + " "])
