"""Job hashes as Python: the public record, the worker's view, published events, listing cursors.

The store's scripts return and publish a job's hash as HGETALL's flat list; everything here turns
those fields into ``JobRecord`` / ``StoredJob`` and never touches Redis.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from hotpipe.shared import keys
from hotpipe.shared.job import JobError, JobRecord, JobResult, LoraChoice, Progress, SchedulerChoice, Stage, Task
from hotpipe.shared.spec import JobSpec
from hotpipe.shared.status import Status


@dataclass(frozen=True)
class Cursor:
    """Where a listing page ended: the last entry's score (creation time, µs) and job id."""

    score: int
    job_id: str

    def encode(self) -> str:
        """The cursor as the API hands it out."""
        return f"{self.score}:{self.job_id}"


@dataclass(frozen=True)
class StoredJob:
    """A job as the worker needs it: the public record plus the private run spec."""

    record: JobRecord
    spec: JobSpec
    cancel_requested: bool
    worker: str | None = None  # who runs the current attempt (set at claim)
    tenant: str = keys.DEFAULT_TENANT
    fingerprint: str = ""  # of the request that created it (idempotent replays compare it)


def parse_event(data: str) -> tuple[str, JobRecord]:
    """(event name, record) from a message published on a job's channel."""
    doc = json.loads(data)
    return doc["event"], record_from_fields(pairs(doc["record"]))


def pairs(flat: list[str]) -> dict[str, str]:
    """A hash's fields from HGETALL's flat list, as a script returns it."""
    return dict(zip(flat[::2], flat[1::2], strict=True))


def stored_job(raw: dict[str, str]) -> StoredJob:
    """The worker's view of a job from its hash's fields."""
    return StoredJob(record=record_from_fields(raw), spec=JobSpec.model_validate_json(raw["spec"]),
                     cancel_requested=raw.get("cancel_requested") == "1", worker=raw.get("worker") or None,
                     tenant=raw.get("tenant") or keys.DEFAULT_TENANT, fingerprint=raw.get("fingerprint", ""))


def record_from_fields(raw: dict[str, str]) -> JobRecord:
    """The public record from a job hash's fields (as HGETALL returns them)."""
    progress = json_field(raw.get("progress"))
    result = json_field(raw.get("result"))
    error = json_field(raw.get("error"))
    return JobRecord(
        id=raw["id"], tenant=raw.get("tenant") or keys.DEFAULT_TENANT,
        status=Status(raw["status"]), family=raw["family"], pipeline=raw["pipeline"],
        checkpoint=raw["checkpoint"], revision=raw.get("revision") or None, task=Task(raw["task"]),
        progress=Progress(**progress) if progress else None, attempts=int(raw.get("attempt", 0)),
        created_at=datetime.fromtimestamp(float(raw["created_at"]), UTC), started_at=_ts(raw.get("started_at")),
        finished_at=_ts(raw.get("finished_at")),
        result=JobResult(**result) if result else None, error=JobError(**error) if error else None,
        cancel_requested=raw.get("cancel_requested") == "1", stage=Stage(raw["stage"]) if raw.get("stage") else None,
        queued_at=_ts(raw.get("queued_at")), loading_at=_ts(raw.get("loading_at")),
        running_at=_ts(raw.get("running_at")), uploading_at=_ts(raw.get("uploading_at")),
        timeout_s=_float(raw.get("timeout_s")), queue_timeout_s=_float(raw.get("queue_timeout_s")),
        queue_deadline=_ts_ms(raw.get("queue_deadline")),
        scheduler=SchedulerChoice.model_validate_json(raw["scheduler"]) if raw.get("scheduler") else None,
        loras=[LoraChoice(**lora) for lora in json.loads(raw["loras"])] if raw.get("loras") else None,
    )


def json_field(value: str | None) -> Any:
    """A field holding JSON, decoded (None when absent or empty)."""
    return json.loads(value) if value else None


def _ts(value: str | None) -> datetime | None:
    return datetime.fromtimestamp(float(value), UTC) if value else None


def _ts_ms(value: str | None) -> datetime | None:
    return datetime.fromtimestamp(int(value) / 1000, UTC) if value else None


def _float(value: str | None) -> float | None:
    return float(value) if value else None
