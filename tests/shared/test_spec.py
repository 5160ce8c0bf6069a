"""The run spec: records written before it was a model still parse, and it is stored under the same names."""

from __future__ import annotations

import json

from hotpipe.shared import keys
from hotpipe.shared.celery_app import DEFAULT_PRIORITY
from hotpipe.shared.checkpoints import Resolved, ResolvedControlNet, ResolvedPrior
from hotpipe.shared.job import Task, new_job_id
from hotpipe.shared.spec import JobSpec
from hotpipe.shared.store import JobStore
from tests.jobs import job_spec

#: a record's ``spec`` field exactly as the untyped producer wrote it (``json.dumps`` of its dict)
OLD_SPEC = (
    '{"resolved": {"checkpoint": "tiny-sd", "source": "local", "location": "/models/tiny-sd", "revision": null, '
    '"class_name": "StableDiffusionPipeline", "family": "stable-diffusion-controlnet", '
    '"pipeline": "StableDiffusionControlNetImg2ImgPipeline", "base_family": "stable-diffusion", '
    '"controlnet": {"checkpoint": "tiny-controlnet-sd", "source": "local", "location": "/models/tiny-controlnet-sd", '
    '"revision": null, "class_name": "ControlNetModel", "kind": "controlnet"}, "prior": null}, '
    '"task": "image2image", "params": {"prompt": "a cat", "strength": 0.5, "num_images": 2, '
    '"controlnet_conditioning_scale": 0.7, "seed": 1234}, '
    '"inputs": {"image": "jobs/in/j1/image.png", "control_image": "jobs/in/j1/control_image.png"}, '
    '"output_format": "webp", "priority": 8, "timeout_s": 30.0}'
)


def test_a_spec_written_by_the_untyped_producer_parses() -> None:
    spec = JobSpec.model_validate_json(OLD_SPEC)
    assert spec.resolved == Resolved(
        "tiny-sd", "local", "/models/tiny-sd", None, "StableDiffusionPipeline", "stable-diffusion-controlnet",
        "StableDiffusionControlNetImg2ImgPipeline", "stable-diffusion",
        ResolvedControlNet("tiny-controlnet-sd", "local", "/models/tiny-controlnet-sd", None, "ControlNetModel",
                           "controlnet"))
    assert (spec.task, spec.output_format, spec.priority, spec.timeout_s) == (Task.IMAGE2IMAGE, "webp", 8, 30.0)
    assert spec.inputs == {"image": "jobs/in/j1/image.png", "control_image": "jobs/in/j1/control_image.png"}
    # the caller's order is kept: the params go as they are into the sidecar and the images' metadata
    assert list(spec.params.items()) == [("prompt", "a cat"), ("strength", 0.5), ("num_images", 2),
                                         ("controlnet_conditioning_scale", 0.7), ("seed", 1234)]
    assert (spec.seed, spec.num_images) == (1234, 2)


def test_it_is_written_back_under_the_same_names_and_values() -> None:
    assert json.loads(JobSpec.model_validate_json(OLD_SPEC).model_dump_json()) == json.loads(OLD_SPEC)


def test_a_connected_prior_round_trips() -> None:
    prior = ResolvedPrior("kandinsky-community/kandinsky-2-2-prior", "hub", "kandinsky-community/kandinsky-2-2-prior",
                          "0" * 40, "KandinskyV22PriorPipeline")
    resolved = Resolved("tiny-kandinsky22-decoder", "local", "/models/k", None, "KandinskyV22Pipeline",
                        "kandinsky22", "KandinskyV22CombinedPipeline", "kandinsky22", prior=prior)
    spec = JobSpec(resolved=resolved, task=Task.TEXT2IMAGE, params={"prompt": "a cat", "seed": 1})
    assert JobSpec.model_validate_json(spec.model_dump_json()) == spec
    assert json.loads(spec.model_dump_json())["resolved"] == resolved.to_json()


def test_a_spec_without_a_priority_queues_at_the_default() -> None:
    doc = json.loads(OLD_SPEC)
    del doc["priority"]
    assert JobSpec.model_validate(doc).priority == DEFAULT_PRIORITY


def test_the_store_keeps_the_spec_in_the_records_spec_field(store: JobStore) -> None:
    job_id, spec = new_job_id(), job_spec(priority=9, num_images=3)
    store.create(job_id, family="stable-diffusion", pipeline="StableDiffusionPipeline", checkpoint="tiny-sd",
                 revision=None, task=Task.TEXT2IMAGE, spec=spec)
    raw = str(store.redis.hget(keys.job(job_id), "spec"))
    assert json.loads(raw) == spec.model_dump(mode="json")
    job = store.get(job_id)
    assert job is not None and job.spec == spec and job.spec.priority == 9
