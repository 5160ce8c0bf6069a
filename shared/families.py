"""Task-first pipeline resolution over Diffusers' AutoPipeline tables, without torch.

Mirrors ``diffusers.pipelines.auto_pipeline``: a checkpoint's ``_class_name`` is looked
up across every table to find its family key, and the task's table gives the class to
run.  Errors use AutoPipeline's own wording.
"""

from __future__ import annotations

from hotpipe.shared import family_table as t
from hotpipe.shared.errors import InvalidRequest
from hotpipe.shared.job import Task

#: the table consulted for each task
TASK_TABLES: dict[Task, dict[str, str]] = {
    Task.TEXT2IMAGE: t.TEXT2IMAGE,
    Task.IMAGE2IMAGE: t.IMAGE2IMAGE,
    Task.INPAINTING: t.INPAINTING,
}

#: every table in the order AutoPipeline searches them for a class's family
LOOKUP_ORDER: tuple[dict[str, str], ...] = (
    t.TEXT2IMAGE, t.IMAGE2IMAGE, t.INPAINTING, t.TEXT2VIDEO, t.CONDITION2VIDEO,
    t.IMAGE2VIDEO, t.VIDEO2VIDEO, t.TEXT2AUDIO,
    t.TEXT2IMAGE_DECODER, t.IMAGE2IMAGE_DECODER, t.INPAINTING_DECODER,
)


class UnsupportedPipeline(InvalidRequest):
    code = "unsupported_pipeline"


def family_of(class_name: str) -> str | None:
    """The family key of a pipeline class name, as AutoPipeline's ``_get_model``."""
    for table in LOOKUP_ORDER:
        for family, cls in table.items():
            if cls == class_name:
                return family
    return None


def task_class(class_name: str, task: Task) -> tuple[str, str]:
    """(family, pipeline class name) that runs ``task`` for a checkpoint of ``class_name``."""
    family = family_of(class_name)
    if family is not None and family in TASK_TABLES[task]:
        return family, TASK_TABLES[task][family]
    raise UnsupportedPipeline(
        f"AutoPipeline can't find a pipeline linked to {class_name} for {family}"
        + (f" (task {task.value} is not available for family {family})" if family else ""),
        field="checkpoint",
    )
