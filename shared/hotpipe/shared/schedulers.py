"""Which scheduler a job runs with: a Diffusers class name or a familiar sampler name, checked torch-free.

The schedulers each pipeline class takes, and the config arguments of each, come from the generated
``scheduler_table.py``.  The familiar names are the table Diffusers' scheduler docs give for users of
A1111 / k-diffusion (``api/schedulers/overview``): a class plus config (``use_karras_sigmas=True``, ...).
"""

from __future__ import annotations

from typing import Any

from hotpipe.shared import scheduler_table
from hotpipe.shared.errors import InvalidRequest
from hotpipe.shared.job import SchedulerChoice

KARRAS = {"use_karras_sigmas": True}
SDE = {"algorithm_type": "sde-dpmsolver++"}
#: A1111 / k-diffusion sampler name -> (Diffusers scheduler class, config), from Diffusers' docs
SAMPLERS: dict[str, tuple[str, dict[str, Any]]] = {
    "DPM++ 2M": ("DPMSolverMultistepScheduler", {}),
    "DPM++ 2M Karras": ("DPMSolverMultistepScheduler", KARRAS),
    "DPM++ 2M SDE": ("DPMSolverMultistepScheduler", SDE),
    "DPM++ 2M SDE Karras": ("DPMSolverMultistepScheduler", {**KARRAS, **SDE}),
    "DPM++ SDE": ("DPMSolverSinglestepScheduler", {}),
    "DPM++ SDE Karras": ("DPMSolverSinglestepScheduler", KARRAS),
    "DPM2": ("KDPM2DiscreteScheduler", {}),
    "DPM2 Karras": ("KDPM2DiscreteScheduler", KARRAS),
    "DPM2 a": ("KDPM2AncestralDiscreteScheduler", {}),
    "DPM2 a Karras": ("KDPM2AncestralDiscreteScheduler", KARRAS),
    "Euler": ("EulerDiscreteScheduler", {}),
    "Euler a": ("EulerAncestralDiscreteScheduler", {}),
    "Heun": ("HeunDiscreteScheduler", {}),
    "LMS": ("LMSDiscreteScheduler", {}),
    "LMS Karras": ("LMSDiscreteScheduler", KARRAS),
}
#: config arguments that say how the checkpoint was trained: they come from its own scheduler config
#: (and ``num_train_timesteps`` sizes the schedule's arrays: a caller must not choose it)
TRAINING_ARGS = frozenset({"num_train_timesteps", "beta_start", "beta_end", "beta_schedule", "trained_betas",
                           "prediction_type", "variance_type", "steps_offset", "timestep_type"})
#: bound on integer overrides (solver orders and the like are single digits)
MAX_INT = 1000


def compatible(pipeline: str) -> tuple[str, ...]:
    """The scheduler classes a job on ``pipeline`` may choose (empty: it keeps its own)."""
    return scheduler_table.SCHEDULERS.get(pipeline, ())


def sampler_names(classes: tuple[str, ...]) -> list[str]:
    """The familiar sampler names that map to one of ``classes``."""
    return [name for name, (cls, _) in SAMPLERS.items() if cls in classes]


def choose(pipeline: str, name: str | None, overrides: dict[str, Any] | None) -> SchedulerChoice | None:
    """The request's ``scheduler`` + ``scheduler_config`` for ``pipeline``, checked; None: the checkpoint's own."""
    if name is None:
        if overrides:
            raise InvalidRequest("scheduler_config needs scheduler: name the scheduler class or sampler the "
                                 "overrides are for", field="scheduler_config")
        return None
    classes = compatible(pipeline)
    if not classes:
        raise InvalidRequest(f"scheduler can't be chosen for {pipeline}: its prior and decoder each keep their "
                             "own scheduler; remove scheduler", field="scheduler")
    cls, preset = SAMPLERS.get(name, (name, {}))
    if cls not in classes:
        what = f"{name!r} ({cls})" if name in SAMPLERS else repr(name)
        raise InvalidRequest(f"scheduler {what} is not a scheduler {pipeline} takes; use one of: "
                             f"{', '.join(classes)}, or a sampler name: {', '.join(sampler_names(classes))}",
                             field="scheduler")
    config = {**preset, **(overrides or {})}
    for key, value in config.items():
        check_option(cls, key, value)
    return SchedulerChoice(name=cls, config=config, sampler=name if name in SAMPLERS else None)


def check_option(cls: str, key: str, value: Any) -> None:
    """One ``scheduler_config`` entry: an argument ``cls`` takes, with a value of its kind."""
    field = f"scheduler_config.{key}"
    options = {k: v for k, v in scheduler_table.OPTIONS.get(cls, {}).items() if k not in TRAINING_ARGS}
    if key in TRAINING_ARGS:
        raise InvalidRequest(f"{field} describes how the checkpoint was trained and comes from its own scheduler "
                             "config; remove it", field=field)
    if key not in options:
        raise InvalidRequest(f"{field} is not an option of {cls}; it takes: {', '.join(sorted(options))}",
                             field=field)
    kind = options[key]
    if isinstance(kind, tuple):
        if value not in kind:
            raise InvalidRequest(f"{field} must be one of {', '.join(map(repr, kind))}", field=field)
    elif not fits(kind, value):
        raise InvalidRequest(f"{field} must be a {kind_words(kind)}", field=field)


def fits(kind: str, value: Any) -> bool:
    """Whether a JSON ``value`` is of ``kind`` (``bool``, ``int``, ``float``, ``str``)."""
    if kind == "bool" or isinstance(value, bool):
        return kind == "bool" and isinstance(value, bool)
    if kind == "int":
        return isinstance(value, int) and abs(value) <= MAX_INT
    if kind == "float":
        return isinstance(value, int | float)
    return isinstance(value, str)


def kind_words(kind: str) -> str:
    return {"bool": "boolean (true or false)", "int": f"whole number of at most {MAX_INT}",
            "float": "number", "str": "string"}[kind]
