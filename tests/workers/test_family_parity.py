"""Parity with the installed Diffusers: hotpipe's torch-free resolution against AutoPipeline's own code.

Every pipeline class name Diffusers exports is resolved for every task both ways —
``diffusers.pipelines.auto_pipeline._get_model`` / ``_get_task_class`` and hotpipe's
``shared/hotpipe/shared/families.py`` — and must agree: the same family, the same class, and an
``UnsupportedPipeline`` (422) exactly where Diffusers raises ``ValueError``, unless
hotpipe's own table (``shared/hotpipe/shared/beyond_auto.py``) names a class for that family and task.
The committed ``shared/hotpipe/shared/family_table.py`` must be what ``workers/hotpipe/workers/tables_gen.py`` renders
from this Diffusers, so a new Diffusers with new entries fails here instead of leaving
the table silently stale.

Kolors: Diffusers adds its three entries only when sentencepiece is installed, and our
table always has them.  Without sentencepiece the ``kolors_entries`` fixture adds exactly
the entries Diffusers' source gates (read from ``auto_pipeline.py``) to Diffusers' tables
for this module, with the real classes, so Diffusers' own lookup checks them too.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import diffusers
import pytest
from diffusers.pipelines import auto_pipeline as ap
from diffusers.utils import is_sentencepiece_available

from hotpipe.shared import family_table
from hotpipe.shared.families import (
    BEYOND_TASK_TABLES,
    TASK_TABLES,
    UnsupportedPipeline,
    auto_family_of,
    auto_task_class,
    family_of,
    task_class,
)
from hotpipe.shared.job import Task
from hotpipe.workers import tables_gen

#: AutoPipeline's mapping for each task
AUTO_MAPPINGS = {
    Task.TEXT2IMAGE: ap.AUTO_TEXT2IMAGE_PIPELINES_MAPPING,
    Task.IMAGE2IMAGE: ap.AUTO_IMAGE2IMAGE_PIPELINES_MAPPING,
    Task.INPAINTING: ap.AUTO_INPAINT_PIPELINES_MAPPING,
}
#: the inputs a class must accept to run each task
TASK_ARGS = {Task.TEXT2IMAGE: {"prompt"}, Task.IMAGE2IMAGE: {"prompt", "image"},
             Task.INPAINTING: {"prompt", "image", "mask_image"}}
GATED_ASSIGNMENT = re.compile(r"^\s+(\w+)\[\"([\w-]+)\"\] = (\w+)$", re.MULTILINE)
GATE = re.compile(r"^if (is_\w+_available)\(\):\n((?:[ \t]+.*\n|\n)+)", re.MULTILINE)


def gated_entries() -> dict[str, dict[str, dict[str, str]]]:
    """Module-level ``if is_x_available():`` blocks of auto_pipeline.py that add mapping entries:
    gate -> table name in family_table.py -> {family: class name}."""
    table_of = {attr: name for name, attr in tables_gen.MAPPINGS.items()}
    gates: dict[str, dict[str, dict[str, str]]] = {}
    for gate, body in GATE.findall(inspect.getsource(ap)):
        for attr, family, cls in GATED_ASSIGNMENT.findall(body):
            gates.setdefault(gate, {}).setdefault(table_of[attr], {})[family] = cls
    return gates


@pytest.fixture(scope="module", autouse=True)
def kolors_entries() -> Iterator[None]:
    """Diffusers' tables as they are with sentencepiece installed, for this module only."""
    with pytest.MonkeyPatch.context() as mp:
        if not is_sentencepiece_available():
            for name, entries in gated_entries()["is_sentencepiece_available"].items():
                mapping = getattr(ap, tables_gen.MAPPINGS[name])
                for family, cls in entries.items():
                    mp.setitem(mapping, family, tables_gen.pipeline_class(cls))
        yield


def exported_pipeline_names() -> list[str]:
    """Every pipeline class name Diffusers exports, and every name in its mappings."""
    names = {n for n in dir(diffusers) if n.endswith("Pipeline")}
    mappings: list[Any] = ap.SUPPORTED_TASKS_MAPPINGS
    names |= {cls.__name__ for mapping in mappings for cls in mapping.values()}
    return sorted(names | {"NotADiffusersPipeline", ""})


def diffusers_task_class(class_name: str, task: Task) -> str | ValueError:
    try:
        return str(ap._get_task_class(AUTO_MAPPINGS[task], class_name).__name__)
    except ValueError as exc:
        return exc


def beyond_entries() -> list[tuple[Task, str, str]]:
    return [(task, family, cls) for task, table in BEYOND_TASK_TABLES.items() for family, cls in table.items()]


def test_committed_table_is_what_the_generator_renders_now() -> None:
    committed = Path(family_table.__file__).read_text(encoding="utf-8")
    assert committed == tables_gen.render(), (
        f"shared/hotpipe/shared/family_table.py was generated from diffusers {family_table.DIFFUSERS_VERSION}, "
        "but this is "
        f"{diffusers.__version__} (or the table was edited): run "
        "`python -m hotpipe.workers.tables_gen > shared/hotpipe/shared/family_table.py` and review the diff")


@pytest.mark.parametrize("name", list(tables_gen.MAPPINGS))
def test_each_table_mirrors_its_diffusers_mapping(name: str) -> None:
    mapping = getattr(ap, tables_gen.MAPPINGS[name])
    assert list(getattr(family_table, name).items()) == [(k, cls.__name__) for k, cls in mapping.items()]


def test_mappings_are_every_mapping_diffusers_searches() -> None:
    searched = [id(m) for m in ap.SUPPORTED_TASKS_MAPPINGS]
    assert searched == [id(getattr(ap, attr)) for attr in tables_gen.MAPPINGS.values()]


def test_only_sentencepiece_gates_entries_and_those_are_ours() -> None:
    assert gated_entries() == {"is_sentencepiece_available": tables_gen.SENTENCEPIECE_ONLY}


def test_family_of_matches_autopipeline() -> None:
    names = exported_pipeline_names()
    mismatches = [(n, auto_family_of(n), ap._get_model(n)) for n in names if auto_family_of(n) != ap._get_model(n)]
    assert mismatches == []
    assert all(family_of(n) == ap._get_model(n) for n in names if ap._get_model(n) is not None)


@pytest.mark.parametrize("task", list(Task))
def test_task_class_matches_autopipeline(task: Task) -> None:
    mismatches = []
    for name in exported_pipeline_names():
        expected = diffusers_task_class(name, task)
        if isinstance(expected, str):
            ok = auto_task_class(name, task) == expected and task_class(name, task) == (ap._get_model(name), expected)
        else:
            ok = auto_task_class(name, task) is None and refused_like(name, task, expected)
        if not ok:
            mismatches.append((name, str(expected)))
    assert mismatches == []


def refused_like(name: str, task: Task, error: ValueError) -> bool:
    """Where AutoPipeline raises: hotpipe's table has the class, or hotpipe refuses in AutoPipeline's words."""
    family = family_of(name)
    beyond = BEYOND_TASK_TABLES[task].get(family or "")
    if beyond is not None or (family is not None and family in TASK_TABLES[task]):
        return task_class(name, task)[1] in (beyond, TASK_TABLES[task].get(family or ""))
    with pytest.raises(UnsupportedPipeline) as exc:
        task_class(name, task)
    return exc.value.status_code == 422 and str(exc.value).startswith(str(error))


@pytest.mark.parametrize(("task", "family", "cls"), beyond_entries())
def test_beyond_entry_is_a_diffusers_class_autopipeline_cannot_reach(task: Task, family: str, cls: str) -> None:
    pipeline = tables_gen.pipeline_class(cls)
    assert issubclass(pipeline, diffusers.DiffusionPipeline)
    assert ap._get_model(cls) is None, f"AutoPipeline now knows {cls}: drop it from hotpipe.shared.beyond_auto"
    assert family not in AUTO_MAPPINGS[task], f"AutoPipeline now has {family} {task.value}: drop it"
    assert TASK_ARGS[task] <= family_table.CALL_ARGS[cls]


@pytest.mark.parametrize(("task", "family", "cls"), beyond_entries())
def test_beyond_class_can_be_built_from_any_checkpoint_of_its_family(task: Task, family: str, cls: str) -> None:
    """``<cls>.from_pipe(base)`` needs every required module of ``cls`` among ``base``'s modules."""
    target = tables_gen.pipeline_class(cls)
    modules, _ = target._get_signature_keys(target)
    required = set(modules) - set(target._optional_components)
    family_classes = {table[family] for table in (*TASK_TABLES.values(), *BEYOND_TASK_TABLES.values())
                      if family in table}
    for base_name in family_classes:
        base = tables_gen.pipeline_class(base_name)
        assert required <= set(base._get_signature_keys(base)[0]), (cls, base_name)


def test_call_args_cover_every_class_a_job_can_run() -> None:
    expected = {cls for table in (*TASK_TABLES.values(), *BEYOND_TASK_TABLES.values()) for cls in table.values()}
    expected |= {cls for name in ("TEXT2IMAGE_DECODER", "IMAGE2IMAGE_DECODER", "INPAINTING_DECODER")
                 for cls in getattr(family_table, name).values()}
    assert set(family_table.CALL_ARGS) == expected


def call_signature(cls: str) -> frozenset[str]:
    params = inspect.signature(tables_gen.pipeline_class(cls).__call__).parameters
    return frozenset(n for n, p in params.items() if n != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD))


def test_call_args_match_the_call_signatures() -> None:
    signatures = {cls: call_signature(cls) for cls in family_table.CALL_ARGS}
    assert {cls: args for cls, args in family_table.CALL_ARGS.items() if args != signatures[cls]} == {}
    # never a missing-dependency placeholder's (*args, **kwargs)
    assert [cls for cls, args in signatures.items() if not {"prompt", "image_embeds"} & args] == []
