"""The committed scheduler table against the installed Diffusers, and every familiar sampler built for real."""

from __future__ import annotations

from pathlib import Path

import diffusers
import pytest

from hotpipe.shared import scheduler_table, schedulers
from hotpipe.shared.job import Task
from hotpipe.workers import runner, tables_gen
from hotpipe.workers.cache import PipelineCache


def test_committed_scheduler_table_is_what_the_generator_renders_now() -> None:
    committed = Path(scheduler_table.__file__).read_text(encoding="utf-8")
    assert committed == tables_gen.render_schedulers(), (
        f"shared/hotpipe/shared/scheduler_table.py was generated from diffusers {scheduler_table.DIFFUSERS_VERSION}, "
        f"but this is {diffusers.__version__} (or the table was edited): run `python -m hotpipe.workers.tables_gen "
        "schedulers > shared/hotpipe/shared/scheduler_table.py` and review the diff")


def test_the_table_agrees_with_the_loaded_schedulers_own_compatibles(cache: PipelineCache, model_root: Path) -> None:
    """Diffusers' answer for a loaded tiny SD (``pipe.scheduler.compatibles``) is the table's for its class."""
    pipe = cache.get_key(cache.key(str(model_root / "tiny-sd"), None), Task.TEXT2IMAGE, "StableDiffusionPipeline")
    assert {cls.__name__ for cls in pipe.scheduler.compatibles} == set(schedulers.compatible(type(pipe).__name__))


@pytest.mark.parametrize("sampler", list(schedulers.SAMPLERS))
def test_every_sampler_builds_from_the_checkpoints_config(sampler: str, cache: PipelineCache,
                                                          model_root: Path) -> None:
    pipe = cache.get_key(cache.key(str(model_root / "tiny-sd"), None), Task.TEXT2IMAGE, "StableDiffusionPipeline")
    choice = schedulers.choose(type(pipe).__name__, sampler, None)
    assert choice is not None
    built = runner.fresh_scheduler(pipe.scheduler, choice)
    assert type(built).__name__ == choice.name
    for key, value in choice.config.items():
        assert built.config[key] == value
    # the checkpoint's own training config carries over
    assert built.config["beta_end"] == pipe.scheduler.config["beta_end"]
