"""Parity of the ControlNet / ControlNet-Union / PAG switch with Diffusers' own ``from_pretrained``.

Diffusers' ``AutoPipelineFor<Task>.from_pretrained(ckpt, controlnet=..., enable_pag=...)``
picks the class by editing the checkpoint's ``_class_name``.  Here it is run for real —
every pipeline class name Diffusers knows, every task, every variant request — with the
checkpoint's config faked and the final class load intercepted, and compared with
``shared/hotpipe/shared/variants.py``.  They agree, or differ in one of three documented ways:

* **by family**: Diffusers' name editing only works on a checkpoint saved under its
  family's text2image class (``StableDiffusionPAGPipeline`` + ``controlnet`` becomes the
  nonexistent ``StableDiffusionPAGControlNetPipeline``); hotpipe resolves by family key, and
  then picks exactly what Diffusers picks for that family's text2image class with the
  same variant.  ``enable_pag: false`` likewise turns PAG off (Diffusers' ``from_pipe`` does,
  its ``from_pretrained`` ignores it);
* **refused, not ignored**: where the edit finds nothing to replace, Diffusers silently runs
  the checkpoint without the variant (IF inpainting with a ControlNet); hotpipe refuses;
* ``EXCEPTIONS``: listed one by one with the reason.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from diffusers.models.controlnets import ControlNetUnionModel
from diffusers.pipelines import auto_pipeline as ap

from hotpipe.shared.errors import InvalidRequest
from hotpipe.shared.families import TASK_TABLES, family_of
from hotpipe.shared.job import Task
from hotpipe.shared.variants import SUFFIXES, split, variant_class

AUTO_CLASSES = {Task.TEXT2IMAGE: ap.AutoPipelineForText2Image, Task.IMAGE2IMAGE: ap.AutoPipelineForImage2Image,
                Task.INPAINTING: ap.AutoPipelineForInpainting}
#: request name -> (controlnet kind, enable_pag) as hotpipe takes them
REQUESTS: dict[str, tuple[str | None, bool | None]] = {
    "controlnet": ("controlnet", None), "controlnet-union": ("controlnet-union", None),
    "pag": (None, True), "controlnet+pag": ("controlnet", True), "no-pag": (None, False),
}
#: (checkpoint class, task, request) where hotpipe refuses and Diffusers runs something else, and why
EXCEPTIONS: dict[tuple[str, Task, str], str] = {
    ("FluxControlPipeline", Task.TEXT2IMAGE, "controlnet"):
        "Diffusers drops the Control (channel-concat) conditioning and loads FluxControlNetPipeline, whose "
        "transformer input doesn't match a Control checkpoint's; there is no Control + ControlNet pipeline",
    ("FluxControlPipeline", Task.TEXT2IMAGE, "controlnet+pag"): "as above; Flux has no PAG pipeline either",
}


class _Picked(Exception):
    pass


def diffusers_pick(class_name: str, task: Task, controlnet: str | None, enable_pag: bool | None) -> str | None:
    """The class Diffusers' ``from_pretrained`` loads for a checkpoint saved as ``class_name``; None where it raises."""
    auto: Any = AUTO_CLASSES[task]
    kwargs: dict[str, Any] = {}
    if controlnet is not None:
        kwargs["controlnet"] = (ControlNetUnionModel.__new__(ControlNetUnionModel)
                                if controlnet == "controlnet-union" else object())
    if enable_pag is not None:
        kwargs["enable_pag"] = enable_pag
    picked: list[str] = []
    real = ap._get_task_class

    def intercept(mapping: Any, name: str, throw_error_if_not_exist: bool = True) -> Any:
        picked.append(real(mapping, name, throw_error_if_not_exist).__name__)
        raise _Picked

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(auto, "load_config", classmethod(lambda cls, *a, **k: {"_class_name": class_name}))
        mp.setattr(ap, "_resolve_revision", lambda *a, **k: None)
        mp.setattr(ap, "_get_task_class", intercept)
        try:
            auto.from_pretrained("checkpoint", **kwargs)
        except _Picked:
            return picked[0]
        except ValueError:
            return None
    raise AssertionError("from_pretrained neither loaded nor raised")


def hotpipe_pick(class_name: str, task: Task, controlnet: str | None, enable_pag: bool | None) -> str | None:
    try:
        return variant_class(class_name, task, controlnet, enable_pag)[1]
    except InvalidRequest:
        return None


def by_family(class_name: str, task: Task, controlnet: str | None, enable_pag: bool | None) -> str | None:
    """What Diffusers picks for the family's own text2image class with the variant the request ends up with."""
    family = family_of(class_name)
    if family is None:
        return None
    have = split(family)
    canonical = TASK_TABLES[Task.TEXT2IMAGE].get(have.base)
    if canonical is None:
        return None
    kind = controlnet or have.controlnet
    pag = have.pag if enable_pag is None else enable_pag
    return diffusers_pick(canonical, task, kind, pag or None)


def cases() -> Iterator[tuple[str, Task, str]]:
    mappings: list[Any] = ap.SUPPORTED_TASKS_MAPPINGS
    names = sorted({cls.__name__ for mapping in mappings for cls in mapping.values()})
    for name in names:
        for task in Task:
            for request in REQUESTS:
                yield name, task, request


def test_variant_switch_matches_diffusers() -> None:
    checked, mismatches = 0, []
    for name, task, request in cases():
        controlnet, pag = REQUESTS[request]
        ours, theirs = hotpipe_pick(name, task, controlnet, pag), diffusers_pick(name, task, controlnet, pag)
        checked += 1
        if ours == theirs:
            continue
        if ours is not None:
            ok = ours == by_family(name, task, controlnet, pag)
        else:
            ignored = theirs == diffusers_pick(name, task, None, None)
            ok = ignored or (name, task, request) in EXCEPTIONS
        if not ok:
            mismatches.append((name, task.value, request, ours, theirs))
    assert mismatches == []
    assert checked == len(list(cases())) > 1000


def test_every_variant_suffix_exists_in_the_tables() -> None:
    keys = {key for table in TASK_TABLES.values() for key in table}
    for (controlnet, pag), suffix in SUFFIXES.items():
        if suffix:
            assert any(key.endswith(suffix) for key in keys), (controlnet, pag, suffix)


def test_exceptions_are_still_exceptions() -> None:
    for name, task, request in EXCEPTIONS:
        controlnet, pag = REQUESTS[request]
        assert hotpipe_pick(name, task, controlnet, pag) is None
        assert diffusers_pick(name, task, controlnet, pag) not in (None, diffusers_pick(name, task, None, None))
