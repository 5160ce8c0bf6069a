"""Choosing a scheduler at submit, torch-free: class names, familiar sampler names, config overrides."""

from __future__ import annotations

from typing import Any

import pytest

from hotpipe.shared import scheduler_table, schedulers
from hotpipe.shared.errors import InvalidRequest
from hotpipe.shared.job import SchedulerChoice

SD = "StableDiffusionPipeline"


def refused(pipeline: str, name: str | None, overrides: dict[str, Any] | None = None) -> InvalidRequest:
    with pytest.raises(InvalidRequest) as err:
        schedulers.choose(pipeline, name, overrides)
    return err.value


def test_no_scheduler_is_the_checkpoints_own() -> None:
    assert schedulers.choose(SD, None, None) is None


def test_a_class_name_with_overrides() -> None:
    got = schedulers.choose(SD, "DPMSolverMultistepScheduler", {"use_karras_sigmas": True, "solver_order": 3})
    assert got == SchedulerChoice(name="DPMSolverMultistepScheduler",
                                  config={"use_karras_sigmas": True, "solver_order": 3})


@pytest.mark.parametrize(("sampler", "cls", "config"), [
    ("DPM++ 2M Karras", "DPMSolverMultistepScheduler", {"use_karras_sigmas": True}),
    ("DPM++ 2M SDE Karras", "DPMSolverMultistepScheduler",
     {"use_karras_sigmas": True, "algorithm_type": "sde-dpmsolver++"}),
    ("Euler a", "EulerAncestralDiscreteScheduler", {}),
    ("LMS Karras", "LMSDiscreteScheduler", {"use_karras_sigmas": True}),
])
def test_familiar_sampler_names_map_to_a_class_and_config(sampler: str, cls: str, config: dict[str, Any]) -> None:
    assert schedulers.choose(SD, sampler, None) == SchedulerChoice(name=cls, config=config, sampler=sampler)


def test_overrides_win_over_the_samplers_preset() -> None:
    got = schedulers.choose(SD, "DPM++ 2M Karras", {"use_karras_sigmas": False, "timestep_spacing": "trailing"})
    assert got is not None and got.config == {"use_karras_sigmas": False, "timestep_spacing": "trailing"}


def test_every_sampler_maps_to_a_class_stable_diffusion_takes() -> None:
    for name, (cls, preset) in schedulers.SAMPLERS.items():
        assert cls in schedulers.compatible(SD), name
        assert set(preset) <= set(scheduler_table.OPTIONS[cls]), name


def test_an_incompatible_scheduler_lists_the_compatible_ones() -> None:
    err = refused(SD, "FlowMatchEulerDiscreteScheduler")
    assert err.field == "scheduler"
    assert "EulerAncestralDiscreteScheduler" in str(err) and "DPM++ 2M Karras" in str(err)


def test_a_sampler_a_flow_model_cant_use_names_its_class() -> None:
    err = refused("FluxPipeline", "Euler a")
    assert "EulerAncestralDiscreteScheduler" in str(err) and "FlowMatchEulerDiscreteScheduler" in str(err)


def test_unknown_name_is_refused() -> None:
    assert refused(SD, "Karras-of-doom").field == "scheduler"


def test_combined_pipelines_keep_their_own() -> None:
    err = refused("KandinskyV22CombinedPipeline", "Euler a")
    assert err.field == "scheduler" and "remove scheduler" in str(err)


def test_config_without_a_scheduler_is_refused() -> None:
    assert refused(SD, None, {"use_karras_sigmas": True}).field == "scheduler_config"


@pytest.mark.parametrize(("overrides", "field", "says"), [
    ({"karras": True}, "scheduler_config.karras", "use_karras_sigmas"),
    ({"use_karras_sigmas": "yes"}, "scheduler_config.use_karras_sigmas", "boolean"),
    ({"use_karras_sigmas": 1}, "scheduler_config.use_karras_sigmas", "boolean"),
    ({"solver_order": 2.5}, "scheduler_config.solver_order", "whole number"),
    ({"solver_order": 10**9}, "scheduler_config.solver_order", "whole number"),
    ({"solver_order": True}, "scheduler_config.solver_order", "whole number"),
    ({"algorithm_type": "deis"}, "scheduler_config.algorithm_type", "sde-dpmsolver++"),
    ({"num_train_timesteps": 10**9}, "scheduler_config.num_train_timesteps", "trained"),
    ({"prediction_type": "sample"}, "scheduler_config.prediction_type", "trained"),
])
def test_bad_overrides_name_the_field_and_the_fix(overrides: dict[str, Any], field: str, says: str) -> None:
    err = refused(SD, "DPMSolverMultistepScheduler", overrides)
    assert err.field == field
    assert says in str(err)
