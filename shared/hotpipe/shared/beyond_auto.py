"""Pipelines Diffusers ships that its AutoPipeline can't reach: hotpipe's own table.

Hand-written, unlike the generated ``family_table.py``, and consulted only after it:
family key -> pipeline class name, per task.  Two kinds of entries:

* a task missing from a family AutoPipeline knows (Chroma has text2image in AutoPipeline's
  tables, but ``ChromaImg2ImgPipeline`` and ``ChromaInpaintPipeline`` in none of them);
* a family AutoPipeline doesn't know at all (a FLUX.1 Fill checkpoint's ``_class_name`` is
  ``FluxFillPipeline``, in no AutoPipeline table), under a key named in Diffusers' style.

Each class is built from a loaded checkpoint of the family with ``<Class>.from_pipe``,
sharing its modules, so every class here takes the same components as the family's own.
``tests/workers/test_family_parity.py`` checks every entry against the installed
Diffusers: the class exists, its components fit the family's, and AutoPipeline still
can't reach it (when a new Diffusers adds it to AutoPipeline, the entry must go).
"""

from __future__ import annotations

TEXT2IMAGE: dict[str, str] = {
    "sana-sprint": "SanaSprintPipeline",
}

IMAGE2IMAGE: dict[str, str] = {
    "chroma": "ChromaImg2ImgPipeline",
    "sana-sprint": "SanaSprintImg2ImgPipeline",
}

INPAINTING: dict[str, str] = {
    "chroma": "ChromaInpaintPipeline",
    "flux-kontext": "FluxKontextInpaintPipeline",
    "flux2-klein": "Flux2KleinInpaintPipeline",
    "flux-fill": "FluxFillPipeline",
}
