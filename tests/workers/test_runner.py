"""One pipeline call: fresh scheduler, seeded, progress reported, stoppable from the callback."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hotpipe.shared.job import Task
from hotpipe.workers import runner
from hotpipe.workers.cache import PipelineCache

PARAMS = {"prompt": "x", "num_inference_steps": 3, "height": 32, "width": 32, "seed": 1}


def test_run_reports_every_step_and_uses_a_fresh_scheduler(cache: PipelineCache, model_root: Path) -> None:
    pipe = cache.get_key(cache.key(str(model_root / "tiny-sd"), None), Task.TEXT2IMAGE, "StableDiffusionPipeline")
    before = pipe.scheduler
    steps: list[tuple[int, int]] = []

    def record(step: int, total: int) -> runner.Verdict:
        steps.append((step, total))
        return runner.Verdict.GO_ON

    images = runner.run(pipe, PARAMS, {}, record)
    assert steps == [(1, 3), (2, 3), (3, 3)]
    assert pipe.scheduler is not before
    assert images[0].size == (32, 32)
    again = runner.run(pipe, PARAMS, {}, lambda s, t: runner.Verdict.GO_ON)
    assert np.array_equal(np.asarray(images[0]), np.asarray(again[0]))


def test_stop_verdict_raises_before_decoding(cache: PipelineCache, model_root: Path) -> None:
    pipe = cache.get_key(cache.key(str(model_root / "tiny-sd"), None), Task.TEXT2IMAGE, "StableDiffusionPipeline")
    with pytest.raises(runner.Stopped) as stopped:
        runner.run(pipe, {**PARAMS, "num_inference_steps": 10}, {},
                   lambda s, t: runner.Verdict.CANCELED if s == 2 else runner.Verdict.GO_ON)
    assert stopped.value.verdict is runner.Verdict.CANCELED


def test_inputs_set_the_default_size(cache: PipelineCache, model_root: Path) -> None:
    pipe = cache.get_key(cache.key(str(model_root / "tiny-sd"), None), Task.INPAINTING,
                         "StableDiffusionInpaintPipeline")
    image = Image.new("RGB", (48, 40), (10, 200, 10))
    mask = Image.new("L", (48, 40), 255)
    params = {k: v for k, v in PARAMS.items() if k not in ("height", "width")}
    out = runner.run(pipe, params, {"image": image, "mask_image": mask}, lambda s, t: runner.Verdict.GO_ON)
    assert out[0].size == (48, 40)


def test_a_pipeline_failing_on_the_jobs_parameters_is_the_callers_error(cache: PipelineCache,
                                                                         model_root: Path) -> None:
    """Kandinsky 2.2 img2img with 2 steps at its default strength 0.3 keeps no step and fails reshaping an empty
    tensor (the producer refuses it at submit; this is the worker's side): ``pipeline_error``, not internal."""
    from hotpipe.shared.checkpoints import resolve
    from hotpipe.workers import loading
    from hotpipe.workers.job_runner import error_code

    resolved = resolve("tiny-kandinsky22-decoder", Task.IMAGE2IMAGE, model_root)
    pipe = cache.get_key(cache.key_of(resolved), Task.IMAGE2IMAGE, resolved.pipeline,
                         loading.ExtraRef.from_spec(resolved))
    params = {"prompt": "x", "num_inference_steps": 2, "prior_num_inference_steps": 2, "height": 32, "width": 32,
              "seed": 1}
    with pytest.raises(runner.PipelineRefused) as refused:
        runner.run(pipe, params, {"image": Image.new("RGB", (32, 32), "red")}, lambda s, t: runner.Verdict.GO_ON)
    assert isinstance(refused.value.__cause__, RuntimeError)
    assert "KandinskyV22Img2ImgCombinedPipeline" in str(refused.value)
    assert error_code(refused.value) == "pipeline_error"


def test_a_chosen_scheduler_is_lent_and_the_hot_pipeline_gets_its_own_back(cache: PipelineCache,
                                                                          model_root: Path) -> None:
    from hotpipe.shared.job import SchedulerChoice

    pipe = cache.get_key(cache.key(str(model_root / "tiny-sd"), None), Task.TEXT2IMAGE, "StableDiffusionPipeline")

    def go_on(step: int, total: int) -> runner.Verdict:
        return runner.Verdict.GO_ON

    own, own_config = type(pipe.scheduler), dict(pipe.scheduler.config)
    before = runner.run(pipe, PARAMS, {}, go_on)[0]
    euler_a = SchedulerChoice(name="EulerAncestralDiscreteScheduler", config={"timestep_spacing": "trailing"})
    chosen = runner.run(pipe, PARAMS, {}, go_on, euler_a)[0]
    assert type(pipe.scheduler) is own and dict(pipe.scheduler.config) == own_config
    assert pipe.config["scheduler"][1] == own.__name__
    after = runner.run(pipe, PARAMS, {}, go_on)[0]
    again = runner.run(pipe, PARAMS, {}, go_on, euler_a)[0]

    assert not np.array_equal(np.asarray(before), np.asarray(chosen))
    assert np.array_equal(np.asarray(before), np.asarray(after))
    assert np.array_equal(np.asarray(chosen), np.asarray(again))


def test_a_scheduler_config_diffusers_refuses_is_the_callers_error(cache: PipelineCache, model_root: Path) -> None:
    from hotpipe.shared.job import SchedulerChoice
    from hotpipe.workers.job_runner import error_code

    pipe = cache.get_key(cache.key(str(model_root / "tiny-sd"), None), Task.TEXT2IMAGE, "StableDiffusionPipeline")
    own = pipe.scheduler
    bad = SchedulerChoice(name="DPMSolverMultistepScheduler", config={"use_karras_sigmas": True,
                                                                       "use_beta_sigmas": True})
    with pytest.raises(runner.PipelineRefused) as refused:
        runner.run(pipe, PARAMS, {}, lambda s, t: runner.Verdict.GO_ON, bad)
    assert error_code(refused.value) == "pipeline_error"
    assert pipe.scheduler is own
