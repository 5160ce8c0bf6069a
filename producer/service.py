"""Submitting a job: check everything, then record it and enqueue it — or change nothing.

Order matters: every check that can fail because of the caller runs before anything is
written, so a refused request leaves no record, no object and no message behind.  The
record is written before the message is published, so a worker never sees a job id it
cannot find; if publishing fails, the record is failed at once (never left queued).
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from celery import Celery

from hotpipe.producer.routing import Router
from hotpipe.shared import family_table
from hotpipe.shared.celery_app import enqueue
from hotpipe.shared.checkpoints import Resolved, resolve
from hotpipe.shared.errors import InvalidRequest, Unavailable
from hotpipe.shared.images import InputImage, check_image, decode_data_uri
from hotpipe.shared.job import TASK_INPUTS, JobError, JobRecord, JobRequest, Params, new_job_id
from hotpipe.shared.registry import checkpoint_id
from hotpipe.shared.settings import Settings
from hotpipe.shared.storage import Storage
from hotpipe.shared.store import JobStore

#: request parameter -> the pipeline ``__call__`` argument it becomes
CALL_ARG_OF: dict[str, str] = {"num_images": "num_images_per_prompt", "seed": "generator"}


@dataclass
class Submitter:
    """Validates, resolves, records and enqueues jobs."""

    settings: Settings
    store: JobStore
    storage: Storage
    celery: Celery
    #: picks a warm worker's queue (affinity routing); None: always the family queue
    router: Router | None = None

    def submit(self, req: JobRequest) -> JobRecord:
        check_limits(req.params, self.settings)
        check_task_inputs(req)
        if req.controlnet is not None:
            raise InvalidRequest("controlnet checkpoints are not supported by this server yet; remove controlnet",
                                 field="controlnet")
        resolved = resolve(req.checkpoint, req.task, self.settings.model_root, req.revision)
        check_call_args(req.params, resolved.pipeline, req.inputs.given())
        images = self._check_inputs(req)
        job_id = new_job_id()
        spec = self._spec(req, resolved, self._store_inputs(job_id, images))
        record = self.store.create(job_id, family=resolved.base_family, pipeline=resolved.pipeline,
                          checkpoint=req.checkpoint, revision=resolved.revision, task=req.task, spec=spec)
        queue = None
        if self.router is not None:
            queue = self.router.queue_for(resolved.base_family, checkpoint_id(req.checkpoint, resolved.revision))
        try:
            enqueue(self.celery, job_id, resolved.base_family, req.priority, queue=queue)
        except Exception as exc:
            self.store.fail(job_id, None, JobError(code="enqueue_failed", message=f"could not enqueue: {exc}"))
            raise Unavailable("the job queue is unavailable; retry shortly") from exc
        return record

    def _check_inputs(self, req: JobRequest) -> dict[str, InputImage]:
        s = self.settings
        images: dict[str, InputImage] = {}
        for name, ref in req.inputs.given().items():
            field = f"inputs.{name}"
            if ref.startswith("s3://"):
                data = self.storage.get_bounded(self.storage.key_from_uri(ref, field), field, s.max_input_bytes)
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
    def _spec(req: JobRequest, resolved: Resolved, inputs: dict[str, str]) -> dict[str, Any]:
        params = req.params.model_dump(exclude_none=True)
        params.setdefault("seed", secrets.randbelow(2**32))
        return {"resolved": resolved.to_json(), "task": req.task.value, "params": params,
                "inputs": inputs, "output_format": req.output_format, "priority": req.priority}


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
    for name in sorted(required - given):
        raise InvalidRequest(f"inputs.{name} is required for task {req.task.value}", field=f"inputs.{name}")
    for name in sorted(given - allowed):
        raise InvalidRequest(f"inputs.{name} is not used by task {req.task.value}; remove it",
                             field=f"inputs.{name}")


def check_call_args(params: Params, pipeline: str, inputs: Iterable[str] = ()) -> None:
    """Refuse parameters and inputs the resolved pipeline's ``__call__`` does not take."""
    accepted = family_table.CALL_ARGS.get(pipeline)
    if accepted is None:
        return
    for name in sorted(inputs):
        if name not in accepted:
            raise InvalidRequest(f"inputs.{name} is not accepted by {pipeline}; remove it", field=f"inputs.{name}")
    for name, value in params.model_dump(exclude_none=True).items():
        if name == "num_images" and value == 1:
            continue
        if CALL_ARG_OF.get(name, name) not in accepted:
            raise InvalidRequest(f"params.{name} is not accepted by {pipeline}; remove it", field=f"params.{name}")
