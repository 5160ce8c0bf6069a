"""Regenerate ``shared/hotpipe/shared/family_table.py`` from the installed Diffusers' AutoPipeline tables.

Run ``python -m hotpipe.workers.tables_gen > shared/hotpipe/shared/family_table.py``.  The producer never
imports Diffusers: it reads the class *names* from the generated, committed table.
``tests/workers/test_family_parity.py`` fails when the committed file differs from what
this renders, so a new Diffusers can't leave the table silently stale.
"""

from __future__ import annotations

import enum
import importlib
import inspect
import sys
import typing
from collections.abc import Mapping
from typing import Any

import diffusers
from diffusers.pipelines import auto_pipeline as ap

from hotpipe.shared import beyond_auto

#: table name in family_table.py -> AutoPipeline mapping it mirrors, in lookup order
MAPPINGS: dict[str, str] = {
    "TEXT2IMAGE": "AUTO_TEXT2IMAGE_PIPELINES_MAPPING",
    "IMAGE2IMAGE": "AUTO_IMAGE2IMAGE_PIPELINES_MAPPING",
    "INPAINTING": "AUTO_INPAINT_PIPELINES_MAPPING",
    "TEXT2VIDEO": "AUTO_TEXT2VIDEO_PIPELINES_MAPPING",
    "CONDITION2VIDEO": "AUTO_CONDITION2VIDEO_PIPELINES_MAPPING",
    "IMAGE2VIDEO": "AUTO_IMAGE2VIDEO_PIPELINES_MAPPING",
    "VIDEO2VIDEO": "AUTO_VIDEO2VIDEO_PIPELINES_MAPPING",
    "TEXT2AUDIO": "AUTO_TEXT2AUDIO_PIPELINES_MAPPING",
    "TEXT2IMAGE_DECODER": "_AUTO_TEXT2IMAGE_DECODER_PIPELINES_MAPPING",
    "IMAGE2IMAGE_DECODER": "_AUTO_IMAGE2IMAGE_DECODER_PIPELINES_MAPPING",
    "INPAINTING_DECODER": "_AUTO_INPAINT_DECODER_PIPELINES_MAPPING",
}

#: entries Diffusers adds only when sentencepiece is installed; the table must not depend
#: on what happens to be installed, so they are always present here.
SENTENCEPIECE_ONLY: dict[str, dict[str, str]] = {
    "TEXT2IMAGE": {"kolors": "KolorsPipeline", "kolors-pag": "KolorsPAGPipeline"},
    "IMAGE2IMAGE": {"kolors": "KolorsImg2ImgPipeline"},
}

#: where those classes live: without sentencepiece ``diffusers.KolorsPipeline`` is a
#: placeholder whose ``__call__`` takes ``*args``, but the module itself imports fine
SENTENCEPIECE_MODULES: dict[str, str] = {
    "KolorsPipeline": "diffusers.pipelines.kolors.pipeline_kolors",
    "KolorsImg2ImgPipeline": "diffusers.pipelines.kolors.pipeline_kolors_img2img",
    "KolorsPAGPipeline": "diffusers.pipelines.pag.pipeline_pag_kolors",
}


def tables() -> dict[str, dict[str, str]]:
    """Every mapping as family key -> pipeline class name, in Diffusers' order."""
    out: dict[str, dict[str, str]] = {}
    for name, attr in MAPPINGS.items():
        mapping: Mapping[str, type] = getattr(ap, attr)
        out[name] = {family: cls.__name__ for family, cls in mapping.items()}
        out[name].update({k: v for k, v in SENTENCEPIECE_ONLY.get(name, {}).items() if k not in out[name]})
    return out


#: the task tables whose classes the producer checks call arguments against
CALL_ARG_TABLES = ("TEXT2IMAGE", "IMAGE2IMAGE", "INPAINTING", "TEXT2IMAGE_DECODER",
                   "IMAGE2IMAGE_DECODER", "INPAINTING_DECODER")


def pipeline_class(name: str) -> Any:
    """The real Diffusers class called ``name`` (never a missing-dependency placeholder)."""
    module = SENTENCEPIECE_MODULES.get(name)
    cls: Any = getattr(importlib.import_module(module) if module else diffusers, name)
    if cls.__module__.startswith("diffusers.utils.dummy_"):
        raise RuntimeError(f"diffusers.{name} is a placeholder (a dependency is missing); install it to "
                           "regenerate the table")
    return cls


def accepted_args(cls: type) -> list[str]:
    """The named arguments ``cls.__call__`` accepts (not ``self``, ``*args`` or ``**kwargs``)."""
    params = inspect.signature(cls.__call__).parameters.values()
    return sorted(p.name for p in params if p.name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD))


def call_arg_classes() -> set[str]:
    """Every class a job can run: AutoPipeline's task and decoder tables, and hotpipe's own."""
    all_tables = tables()
    names = {cls for name in CALL_ARG_TABLES for cls in all_tables[name].values()}
    for table in (beyond_auto.TEXT2IMAGE, beyond_auto.IMAGE2IMAGE, beyond_auto.INPAINTING):
        names.update(table.values())
    return names


def call_args() -> dict[str, list[str]]:
    """Pipeline class name -> the argument names its ``__call__`` accepts."""
    return {name: accepted_args(pipeline_class(name)) for name in sorted(call_arg_classes())}


#: how img2img-style pipelines that cut the schedule this way lose every step when steps x strength < 1
TRUNCATING_SOURCE = "int(num_inference_steps * strength)"


def truncating_strength() -> dict[str, tuple[int, float]]:
    """Classes whose ``get_timesteps`` keeps ``int(num_inference_steps * strength)`` steps (so a product
    below 1 leaves none) -> their ``__call__`` defaults for (num_inference_steps, strength)."""
    out: dict[str, tuple[int, float]] = {}
    for name in sorted(call_arg_classes()):
        get_timesteps = getattr(pipeline_class(name), "get_timesteps", None)
        if get_timesteps is not None and TRUNCATING_SOURCE in inspect.getsource(get_timesteps):
            out[name] = call_defaults(name)
    # Combined pipelines (Kandinsky prior + decoder) pass steps and strength on to a decoder that
    # truncates, with their own defaults: Kandinsky 2.2 img2img with 2 steps keeps int(2 x 0.3) = 0.
    for name in sorted(call_arg_classes() - set(out)):
        init = inspect.getsource(pipeline_class(name).__init__)
        if any(f"{decoder}(" in init for decoder in list(out)):
            out[name] = call_defaults(name)
    return dict(sorted(out.items()))


def call_defaults(name: str) -> tuple[int, float]:
    """``name.__call__``'s defaults for (num_inference_steps, strength)."""
    params = inspect.signature(pipeline_class(name).__call__).parameters
    return params["num_inference_steps"].default, params["strength"].default


def render() -> str:
    lines = [
        '"""Generated by ``python -m hotpipe.workers.tables_gen``; do not edit by hand.',
        "",
        "Diffusers' AutoPipeline tables as class names: family key -> pipeline class name;",
        "CALL_ARGS also covers hotpipe's own table (shared/hotpipe/shared/beyond_auto.py).",
        '"""',
        "",
        f'DIFFUSERS_VERSION = "{diffusers.__version__}"',
        "",
    ]
    for name, mapping in tables().items():
        lines.append(f"{name}: dict[str, str] = {{")
        lines += [f'    "{family}": "{cls}",' for family, cls in mapping.items()]
        lines += ["}", ""]
    lines.append("#: pipeline class name -> the arguments its __call__ accepts")
    lines.append("CALL_ARGS: dict[str, frozenset[str]] = {")
    for cls_name, args in call_args().items():
        lines.append(f'    "{cls_name}": frozenset({args!r}),')
    lines += ["}", ""]
    lines.append("#: classes that keep int(num_inference_steps * strength) denoising steps -> their defaults for")
    lines.append("#: (num_inference_steps, strength): a product below 1 leaves no step at all")
    lines.append("TRUNCATING_STRENGTH: dict[str, tuple[int, float]] = {")
    lines += [f'    "{name}": {defaults!r},' for name, defaults in truncating_strength().items()]
    lines += ["}", ""]
    return "\n".join(lines)


def scheduler_names(annotation: Any) -> set[str]:
    """Scheduler class names a pipeline's ``scheduler`` annotation admits: the members of
    ``KarrasDiffusionSchedulers``, or each annotated class with its own ``compatibles``."""
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return {member.name for member in annotation}
    if isinstance(annotation, type):
        return {annotation.__name__, *getattr(annotation, "_compatibles", ())}
    return set().union(*(scheduler_names(a) for a in typing.get_args(annotation)))


def pipeline_schedulers() -> dict[str, list[str]]:
    """Pipeline class -> the scheduler classes a job may choose (empty: the class takes no per-job
    scheduler, like the combined prior + decoder pipelines, whose decoder keeps its own)."""
    out: dict[str, list[str]] = {}
    for name in sorted(call_arg_classes()):
        param = inspect.signature(pipeline_class(name).__init__).parameters.get("scheduler")
        if param is None or "Combined" in name:
            out[name] = []
            continue
        out[name] = sorted(n for n in scheduler_names(param.annotation) if is_scheduler(n))
    return out


def is_scheduler(name: str) -> bool:
    """A scheduler class Diffusers exports; its dependencies must be installed (the worker extra has scipy and
    torchsde), so the table never depends on what happens to be installed."""
    cls = getattr(diffusers, name, None)
    if cls is not None and cls.__module__.startswith("diffusers.utils.dummy_"):
        raise RuntimeError(f"diffusers.{name} is a placeholder (a dependency is missing); install the worker "
                           "extra to regenerate the table")
    return cls is not None


def option_kind(annotation: Any) -> str | tuple[str, ...] | None:
    """What a JSON value for a scheduler ``__init__`` argument must be: ``bool``, ``int``, ``float``,
    ``str``, or one of a Literal's values; None for arrays and anything else a request can't carry."""
    if annotation in (bool, int, float, str):
        return str(annotation.__name__)
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) is typing.Literal:
        return tuple(str(a) for a in args)
    if len(args) == 1:
        return option_kind(args[0])
    return None


def scheduler_options(names: set[str]) -> dict[str, dict[str, str | tuple[str, ...]]]:
    """Scheduler class -> its ``__init__`` arguments a job may override -> their kind (``option_kind``)."""
    out: dict[str, dict[str, str | tuple[str, ...]]] = {}
    for name in sorted(names):
        params = inspect.signature(getattr(diffusers, name).__init__).parameters.values()
        kinds = {p.name: option_kind(p.annotation) for p in params if p.name != "self"}
        out[name] = {arg: kind for arg, kind in kinds.items() if kind is not None}
    return out


def render_schedulers() -> str:
    """``shared/hotpipe/shared/scheduler_table.py``: the schedulers a job may choose, torch-free."""
    compatibles = pipeline_schedulers()
    lines = ['"""Generated by ``python -m hotpipe.workers.tables_gen schedulers``; do not edit by hand.', "",
             "Which Diffusers schedulers each pipeline class takes, and the config arguments a job may override.",
             '"""', "", f'DIFFUSERS_VERSION = "{diffusers.__version__}"', "",
             "#: pipeline class -> scheduler classes a job may choose (empty: none; the class keeps its own)",
             "SCHEDULERS: dict[str, tuple[str, ...]] = {"]
    lines += [f'    "{name}": {tuple(names)!r},' for name, names in compatibles.items()]
    lines += ["}", "", "#: scheduler class -> argument -> bool | int | float | str, or the values it takes",
              "OPTIONS: dict[str, dict[str, str | tuple[str, ...]]] = {"]
    options = scheduler_options({n for names in compatibles.values() for n in names})
    lines += [f'    "{name}": {kinds!r},' for name, kinds in options.items()]
    lines += ["}", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.stdout.write(render_schedulers() if sys.argv[1:] == ["schedulers"] else render())
