"""ControlNet, ControlNet-Union and PAG: which pipeline runs a task when a job asks for a variant.

AutoPipeline switches class on ``controlnet=`` and ``enable_pag=`` by editing class
*names* (``"...Pipeline".replace("Pipeline", "ControlNetPipeline")``).  hotpipe resolves
the same thing from the tables' family *keys*, which already spell the variant as data:
``stable-diffusion`` + ControlNet + PAG is the key ``stable-diffusion-controlnet-pag``,
and the task table says which class that key runs.  The checkpoint's own family may
already carry a variant (a checkpoint saved as ``StableDiffusionPAGPipeline``); the
request adds to it (``controlnet``) or switches PAG on or off (``enable_pag``).

``tests/workers/test_family_parity.py`` runs Diffusers' own ``from_pretrained`` switch
over every pipeline class it knows and checks this resolves the same class — or, where
the two differ, that the difference is one listed there (Diffusers ignoring a variant it
can't apply, where hotpipe refuses with a 422 instead).
"""

from __future__ import annotations

from dataclasses import dataclass

from hotpipe.shared.errors import InvalidRequest
from hotpipe.shared.families import FAMILIES, TASK_TABLES, task_class
from hotpipe.shared.job import Task

#: ControlNet model classes (``_class_name`` in a ControlNet checkpoint's ``config.json``) -> the
#: kind of variant it makes (a plain ControlNet, or a ControlNet-Union: several conditions in one
#: model) and the base families whose pipelines take it as their ``controlnet`` module
CONTROLNET_MODELS: dict[str, tuple[str, tuple[str, ...]]] = {
    "ControlNetModel": ("controlnet", ("stable-diffusion", "stable-diffusion-xl")),
    "ControlNetUnionModel": ("controlnet-union", ("stable-diffusion-xl",)),
    "SD3ControlNetModel": ("controlnet", ("stable-diffusion-3",)),
    "FluxControlNetModel": ("controlnet", ("flux",)),
    "QwenImageControlNetModel": ("controlnet", ("qwenimage",)),
    "ZImageControlNetModel": ("controlnet", ("z-image",)),
}

#: (ControlNet kind or None, PAG on) -> the suffix of the family key in Diffusers' tables
SUFFIXES: dict[tuple[str | None, bool], str] = {
    (None, False): "",
    ("controlnet", False): "-controlnet",
    ("controlnet-union", False): "-controlnet-union",
    (None, True): "-pag",
    ("controlnet", True): "-controlnet-pag",
}


@dataclass(frozen=True)
class Variant:
    """A family key taken apart: the base family, its ControlNet kind and whether PAG is on."""

    base: str
    controlnet: str | None = None
    pag: bool = False

    @property
    def key(self) -> str | None:
        """The family key that spells this variant, or None where no such combination exists."""
        suffix = SUFFIXES.get((self.controlnet, self.pag))
        return None if suffix is None else self.base + suffix


class UnsupportedVariant(InvalidRequest):
    code = "unsupported_variant"


def split(family: str) -> Variant:
    """``stable-diffusion-xl-controlnet-pag`` -> Variant("stable-diffusion-xl", "controlnet", True)."""
    for (controlnet, pag), suffix in sorted(SUFFIXES.items(), key=lambda item: -len(item[1])):
        base = family.removesuffix(suffix)
        if suffix and base != family and base in FAMILIES:
            return Variant(base, controlnet, pag)
    return Variant(family)


def variant_class(class_name: str, task: Task, controlnet: str | None = None,
                  enable_pag: bool | None = None) -> tuple[str, str]:
    """(family key, pipeline class) running ``task`` on a checkpoint of ``class_name`` with a ControlNet of
    kind ``controlnet`` (None: as the checkpoint is) and PAG on/off (None: as the checkpoint is)."""
    family, pipeline = task_class(class_name, task)
    if controlnet is None and enable_pag is None:
        return family, pipeline
    have = split(family)
    want = Variant(have.base, controlnet or have.controlnet, have.pag if enable_pag is None else enable_pag)
    key = want.key
    found = TASK_TABLES[task].get(key) if key is not None else None
    if found is None or key is None:
        # blame PAG when the ControlNet alone (or the checkpoint as it is) would run the task
        without_pag = Variant(have.base, want.controlnet, have.pag).key
        blame_pag = enable_pag is not None and (controlnet is None or without_pag in TASK_TABLES[task])
        raise UnsupportedVariant(refusal(have.base, task, want), field="enable_pag" if blame_pag else "controlnet")
    return key, found


def refusal(base: str, task: Task, want: Variant) -> str:
    """What was asked for, and what the family does have."""
    asked = " + ".join(part for part in (want.controlnet and _NAMES[want.controlnet], want.pag and "PAG") if part)
    available = [f"{_describe(v)} for {', '.join(t.value for t in tasks)}"
                 for v, tasks in variants_of(base).items() if v.controlnet or v.pag]
    has = "; it has " + "; ".join(available) if available else "; it has no ControlNet or PAG pipelines"
    return f"family {base} has no {asked} pipeline for {task.value}{has}"


_NAMES = {"controlnet": "ControlNet", "controlnet-union": "ControlNet-Union"}


def _describe(v: Variant) -> str:
    return " + ".join(part for part in (v.controlnet and _NAMES[v.controlnet], v.pag and "PAG") if part)


def variants_of(base: str) -> dict[Variant, list[Task]]:
    """Every variant of ``base`` in the tables, with the tasks it runs."""
    out: dict[Variant, list[Task]] = {}
    for (controlnet, pag) in SUFFIXES:
        v = Variant(base, controlnet, pag)
        tasks = [task for task, table in TASK_TABLES.items() if v.key in table]
        if tasks:
            out[v] = tasks
    return out


def pag_families() -> list[str]:
    """Base families with at least one PAG pipeline."""
    return sorted({split(key).base for table in TASK_TABLES.values() for key in table if split(key).pag})
