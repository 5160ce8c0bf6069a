"""Safe loading: safetensors only unless allowed, no code from a checkpoint, the allowlist again."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import redis
import torch
from diffusers import DiffusionPipeline

from hotpipe.shared.job import Task
from hotpipe.shared.safety import CheckpointNotAllowed
from hotpipe.shared.settings import Settings
from hotpipe.shared.status import Status
from hotpipe.shared.storage import Storage
from hotpipe.shared.store import JobStore
from hotpipe.workers.cache import PipelineCache
from hotpipe.workers.job_runner import JobRunner
from hotpipe.workers.safe_loading import UnsafeWeights, check_allowed
from tests.workers.test_job_runner import submit

T2I = (Task.TEXT2IMAGE, "StableDiffusionPipeline")


@pytest.fixture
def store(redis_client: redis.Redis) -> JobStore:
    return JobStore(redis_client, record_ttl_s=60)


@pytest.fixture(scope="module")
def pickled_sd(model_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tiny-sd saved again with pickle (.bin) UNet and VAE weights (Transformers 5 always writes safetensors)."""
    out = tmp_path_factory.mktemp("pickled") / "tiny-sd-pickle"
    DiffusionPipeline.from_pretrained(str(model_root / "tiny-sd")).save_pretrained(out, safe_serialization=False)
    assert list((out / "unet").glob("*.bin")) and not list((out / "unet").glob("*.safetensors"))
    return out


def hot(cache: PipelineCache, checkpoint: Path) -> Any:
    """The checkpoint's text2image pipeline from ``cache`` (loading it)."""
    return cache.get_key(cache.key(str(checkpoint), None), *T2I)


def test_pickle_weights_are_refused_by_default(pickled_sd: Path) -> None:
    with pytest.raises(UnsafeWeights, match="pickle"):
        hot(PipelineCache("cpu", torch.float32), pickled_sd)


def test_pickle_weights_load_when_the_operator_allows_them(pickled_sd: Path) -> None:
    pipe = hot(PipelineCache("cpu", torch.float32, allow_pickle=True), pickled_sd)
    assert type(pipe).__name__ == "StableDiffusionPipeline"


def test_code_shipped_in_a_checkpoint_is_never_run(model_root: Path, tmp_path: Path) -> None:
    """A component whose module is a file of the checkpoint needs trust_remote_code: refused, not imported."""
    ckpt = tmp_path / "remote-code"
    shutil.copytree(model_root / "tiny-sd", ckpt)
    marker = tmp_path / "ran"
    (ckpt / "unet" / "evil_unet.py").write_text(f"open({str(marker)!r}, 'w').write('pwned')\n"
                                                "from diffusers import UNet2DConditionModel as EvilUNet\n")
    index = json.loads((ckpt / "model_index.json").read_text())
    index["unet"] = ["evil_unet", "EvilUNet"]
    (ckpt / "model_index.json").write_text(json.dumps(index))

    with pytest.raises(Exception):  # noqa: B017 - Diffusers' own error; what matters is the marker
        hot(PipelineCache("cpu", torch.float32), ckpt)
    assert not marker.exists()


def test_allowlist_patterns() -> None:
    check_allowed("anything", ())
    check_allowed("tiny-sd", ("tiny-*",))
    check_allowed("stabilityai/sdxl-turbo", ("runwayml/*", "stabilityai/*"))
    with pytest.raises(CheckpointNotAllowed):
        check_allowed("evil/model", ("stabilityai/*",))
    with pytest.raises(CheckpointNotAllowed):
        check_allowed("TINY-sd", ("tiny-*",))  # case-sensitive, like Hub ids and folders


def test_worker_refuses_a_checkpoint_off_its_allowlist(store: JobStore, storage: Storage,
                                                       settings: Settings) -> None:
    runner = JobRunner(store, storage, PipelineCache("cpu", torch.float32), progress_interval_s=0,
                       allowlist=("stabilityai/*",))
    job_id = submit(store, settings)

    assert runner.run(job_id) == "failed"
    record = store.get(job_id).record  # type: ignore[union-attr]
    assert record.status is Status.FAILED and record.error is not None
    assert record.error.code == "checkpoint_not_allowed"
    assert runner.cache.stats().misses == 0  # refused before anything was loaded
