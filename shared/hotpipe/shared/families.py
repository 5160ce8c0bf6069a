"""Task-first pipeline resolution over Diffusers' AutoPipeline tables, without torch.

Mirrors ``diffusers.pipelines.auto_pipeline``: a checkpoint's ``_class_name`` is looked
up across every table to find its family key, and the task's table gives the class to
run.  Errors use AutoPipeline's own wording.  Where AutoPipeline has no class for a
task, hotpipe's own table (``beyond_auto.py``) is consulted next.

Routing: a variant family (ControlNet, Control, PAG, ControlNet-Union) runs on the
workers of its base family, so ``base_family`` names the queue a job goes to.
"""

from __future__ import annotations

from hotpipe.shared import beyond_auto as b
from hotpipe.shared import family_table as t
from hotpipe.shared.errors import InvalidRequest
from hotpipe.shared.job import Task

#: AutoPipeline's table for each task
TASK_TABLES: dict[Task, dict[str, str]] = {
    Task.TEXT2IMAGE: t.TEXT2IMAGE,
    Task.IMAGE2IMAGE: t.IMAGE2IMAGE,
    Task.INPAINTING: t.INPAINTING,
}

#: hotpipe's table for each task, consulted when AutoPipeline's has no class
BEYOND_TASK_TABLES: dict[Task, dict[str, str]] = {
    Task.TEXT2IMAGE: b.TEXT2IMAGE,
    Task.IMAGE2IMAGE: b.IMAGE2IMAGE,
    Task.INPAINTING: b.INPAINTING,
}

#: every AutoPipeline table in the order AutoPipeline searches them for a class's family
LOOKUP_ORDER: tuple[dict[str, str], ...] = (
    t.TEXT2IMAGE, t.IMAGE2IMAGE, t.INPAINTING, t.TEXT2VIDEO, t.CONDITION2VIDEO,
    t.IMAGE2VIDEO, t.VIDEO2VIDEO, t.TEXT2AUDIO,
    t.TEXT2IMAGE_DECODER, t.IMAGE2IMAGE_DECODER, t.INPAINTING_DECODER,
)

#: a family key ending in one of these (longest first) is a variant of the family it names
#: without it, when that family exists: ``stable-diffusion-xl-controlnet-union`` -> ``stable-diffusion-xl``
VARIANT_SUFFIXES: tuple[str, ...] = (
    "-controlnet-union", "-controlnet-inpaint", "-controlnet-pag", "-controlnet", "-control", "-pag",
)

#: every family key hotpipe knows, AutoPipeline's and its own
FAMILIES: frozenset[str] = frozenset(
    key for table in (*LOOKUP_ORDER, *BEYOND_TASK_TABLES.values()) for key in table)


class UnsupportedPipeline(InvalidRequest):
    code = "unsupported_pipeline"


def _find_family(class_name: str, tables: tuple[dict[str, str], ...]) -> str | None:
    for table in tables:
        for family, cls in table.items():
            if cls == class_name:
                return family
    return None


def auto_family_of(class_name: str) -> str | None:
    """The family key of a pipeline class name exactly as AutoPipeline's ``_get_model`` finds it."""
    return _find_family(class_name, LOOKUP_ORDER)


def family_of(class_name: str) -> str | None:
    """The family key of a pipeline class name: AutoPipeline's tables first, then hotpipe's."""
    return auto_family_of(class_name) or _find_family(class_name, tuple(BEYOND_TASK_TABLES.values()))


def auto_task_class(class_name: str, task: Task) -> str | None:
    """The class AutoPipeline's ``_get_task_class`` resolves for ``task``; None where it raises."""
    family = auto_family_of(class_name)
    return TASK_TABLES[task].get(family) if family is not None else None


def tasks_of(family: str) -> list[Task]:
    """The tasks a family has a pipeline for, in either table."""
    return [task for task in Task if family in TASK_TABLES[task] or family in BEYOND_TASK_TABLES[task]]


def task_class(class_name: str, task: Task) -> tuple[str, str]:
    """(family, pipeline class name) that runs ``task`` for a checkpoint of ``class_name``."""
    family = family_of(class_name)
    if family is not None:
        pipeline = TASK_TABLES[task].get(family) or BEYOND_TASK_TABLES[task].get(family)
        if pipeline is not None:
            return family, pipeline
    raise UnsupportedPipeline(unsupported_message(class_name, task, family), field="checkpoint")


def unsupported_message(class_name: str, task: Task, family: str | None) -> str:
    """AutoPipeline's words, then what the family does have."""
    message = f"AutoPipeline can't find a pipeline linked to {class_name} for {auto_family_of(class_name)}"
    if family is None:
        return message
    has = [t.value for t in tasks_of(family)]
    if not has:
        return f"{message} (family {family} has no text2image, image2image or inpainting pipeline)"
    return f"{message} (task {task.value} is not available for family {family}; it has: {', '.join(has)})"


def base_family(family: str) -> str:
    """The family whose workers run ``family``: itself, or the base of a ControlNet/Control/PAG variant."""
    for suffix in VARIANT_SUFFIXES:
        base = family.removesuffix(suffix)
        if base != family and base in FAMILIES:
            return base
    return family


#: families whose class for a decoder checkpoint is a combined pipeline that also loads the prior
#: the decoder's model card names (AutoPipeline's "connected pipelines") -> that prior's class
CONNECTED_PRIORS: dict[str, str] = {
    "kandinsky": "KandinskyPriorPipeline",
    "kandinsky22": "KandinskyV22PriorPipeline",
    "wuerstchen": "WuerstchenPriorPipeline",
    "cascade": "StableCascadePriorPipeline",
}

#: the decoder tables: a checkpoint saved as one of these classes is a decoder with a connected prior
DECODER_TABLES: tuple[dict[str, str], ...] = (t.TEXT2IMAGE_DECODER, t.IMAGE2IMAGE_DECODER, t.INPAINTING_DECODER)


def needs_prior(class_name: str) -> bool:
    """Whether a checkpoint of ``class_name`` is a decoder whose task pipelines load a connected prior
    (AutoPipeline's ``_get_connected_pipeline``)."""
    return any(class_name in table.values() for table in DECODER_TABLES)
