"""LoRAs resolved and checked at submit, torch-free: the file, safetensors only, the family fit."""

from __future__ import annotations

import json
import shutil
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest

from hotpipe.shared.checkpoints import Resolved, fetch_hub_file, resolve
from hotpipe.shared.errors import HotpipeError, InvalidRequest
from hotpipe.shared.job import LoraRequest, Task
from hotpipe.shared.loras import LORA_FILE, header_shape, resolve_loras
from hotpipe.shared.safety import CheckpointNotAllowed


def loras(model_root: Path, checkpoint: str, *requests: LoraRequest, allowlist: tuple[str, ...] = (),
          max_loras: int = 4, task: Task = Task.TEXT2IMAGE) -> list:
    resolved: Resolved = resolve(checkpoint, task, model_root)
    return resolve_loras(list(requests), resolved, model_root, allowlist, fetch_hub_file, max_loras)


def refused(model_root: Path, checkpoint: str, *requests: LoraRequest, allowlist: tuple[str, ...] = ()) -> HotpipeError:
    with pytest.raises(HotpipeError) as err:
        loras(model_root, checkpoint, *requests, allowlist=allowlist)
    return err.value


@pytest.fixture
def odd_loras(model_root: Path) -> Iterator[None]:
    """A folder with only pickle weights, and one whose safetensors holds no LoRA."""
    pickled = model_root / "pickle-lora"
    pickled.mkdir(exist_ok=True)
    (pickled / "pytorch_lora_weights.bin").write_bytes(b"\x80\x04not really a pickle")
    plain = model_root / "not-a-lora"
    plain.mkdir(exist_ok=True)
    header = json.dumps({"weight": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}).encode()
    (plain / LORA_FILE).write_bytes(struct.pack("<Q", len(header)) + header + b"\0" * 4)
    yield
    shutil.rmtree(pickled)
    shutil.rmtree(plain)


def test_a_local_lora_resolves_with_its_adapter_name(model_root: Path) -> None:
    [a, b] = loras(model_root, "tiny-sd", LoraRequest(name="tiny-lora-sd", scale=0.7),
                   LoraRequest(name="tiny-lora-sd-b"))
    assert (a.name, a.scale, a.weight_name, a.source) == ("tiny-lora-sd", 0.7, LORA_FILE, "local")
    assert a.location == str((model_root / "tiny-lora-sd").resolve())
    assert a.adapter.startswith("lora_") and a.adapter != b.adapter
    # the adapter name depends on the file, not the job: the same LoRA is the same adapter at any scale
    [again] = loras(model_root, "tiny-sd", LoraRequest(name="tiny-lora-sd", scale=0.1))
    assert again.adapter == a.adapter


def test_the_header_tells_sd_from_sdxl(model_root: Path) -> None:
    sd = header_shape(model_root / "tiny-lora-sd" / LORA_FILE, "tiny-lora-sd", "loras.0")
    sdxl = header_shape(model_root / "tiny-lora-sdxl" / LORA_FILE, "tiny-lora-sdxl", "loras.0")
    assert (sd.family, sd.cross_attention_dim) == ("stable-diffusion", 32)
    assert (sdxl.family, sdxl.cross_attention_dim) == ("stable-diffusion-xl", 64)


def test_an_sdxl_lora_on_an_sd_checkpoint_names_both_families(model_root: Path) -> None:
    err = refused(model_root, "tiny-sd", LoraRequest(name="tiny-lora-sdxl"))
    assert err.field == "loras.0.name"
    assert "stable-diffusion-xl" in str(err) and "is stable-diffusion " in str(err)
    err = refused(model_root, "tiny-sdxl", LoraRequest(name="tiny-lora-sd"))
    assert "is stable-diffusion-xl " in str(err)


def test_sdxl_loras_fit_sdxl_and_its_variants(model_root: Path) -> None:
    assert loras(model_root, "tiny-sdxl", LoraRequest(name="tiny-lora-sdxl"), task=Task.IMAGE2IMAGE)


def test_pickle_weights_are_refused(model_root: Path, odd_loras: None) -> None:
    err = refused(model_root, "tiny-sd", LoraRequest(name="pickle-lora"))
    assert err.field == "loras.0.name" and "pickle" in str(err) and "pytorch_lora_weights.bin" in str(err)
    err = refused(model_root, "tiny-sd", LoraRequest(name="pickle-lora", weight_name="pytorch_lora_weights.bin"))
    assert err.field == "loras.0.weight_name" and "safetensors" in str(err)


def test_a_safetensors_file_without_lora_layers_is_refused(model_root: Path, odd_loras: None) -> None:
    assert "no LoRA layers" in str(refused(model_root, "tiny-sd", LoraRequest(name="not-a-lora")))


@pytest.mark.parametrize(("name", "weight_name", "field"), [
    ("no-such-lora", None, "loras.0.name"),
    ("../tiny-lora-sd", None, "loras.0.name"),
    ("tiny-lora-sd", "../tiny-sd/unet/diffusion_pytorch_model.safetensors", "loras.0.weight_name"),
    ("tiny-lora-sd", "other.safetensors", "loras.0.name"),
])
def test_missing_or_escaping_names_are_refused(model_root: Path, name: str, weight_name: str | None,
                                               field: str) -> None:
    assert refused(model_root, "tiny-sd", LoraRequest(name=name, weight_name=weight_name)).field == field


def test_limits_duplicates_allowlist_and_families(model_root: Path) -> None:
    five = [LoraRequest(name="tiny-lora-sd", scale=i / 10) for i in range(5)]
    assert refused(model_root, "tiny-sd", *five).field == "loras"
    twice = refused(model_root, "tiny-sd", LoraRequest(name="tiny-lora-sd"), LoraRequest(name="tiny-lora-sd"))
    assert twice.field == "loras.1.name"
    blocked = refused(model_root, "tiny-sd", LoraRequest(name="tiny-lora-sd"), allowlist=("tiny-sd", "other-*"))
    assert isinstance(blocked, CheckpointNotAllowed) and blocked.field == "loras.0.name"
    other = refused(model_root, "tiny-pixart-sigma", LoraRequest(name="tiny-lora-sd"))
    assert isinstance(other, InvalidRequest) and other.field == "loras" and "pixart" in str(other)
