"""Hub LoRAs checked at submit from their header alone, against a real Hub on loopback (``HF_ENDPOINT``'s
layout, its own process): the family fit, safetensors only, missing repos and files, the Hub down (503),
offline mode (the cache only) and the LRU that keeps repeated submits off the Hub."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from huggingface_hub import constants

from hotpipe.devstack import free_port
from hotpipe.shared.checkpoints import Resolved, fetch_hub_file, resolve
from hotpipe.shared.errors import HotpipeError, InvalidRequest, Unavailable
from hotpipe.shared.hub_loras import HubLoras
from hotpipe.shared.job import LoraRequest, Task
from hotpipe.shared.loras import LORA_FILE, resolve_loras
from hotpipe.shared.safety import CheckpointNotAllowed
from hotpipe.shared.spec import LoraSpec
from tests.hub_server import commit_of, requests_served


@pytest.fixture
def endpoint(hub: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """huggingface_hub pointed at the loopback Hub, online, with an empty cache: what ``HF_ENDPOINT``,
    ``HF_HUB_OFFLINE`` and ``HF_HUB_CACHE`` set when huggingface_hub is imported (the e2e test sets them so)."""
    point_at(monkeypatch, hub)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub-cache"))
    yield hub


def point_at(monkeypatch: pytest.MonkeyPatch, url: str) -> None:
    monkeypatch.setattr(constants, "ENDPOINT", url)
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", url + "/{repo_id}/resolve/{revision}/{filename}")


def resolve_hub(model_root: Path, *requests: LoraRequest, checkpoint: str = "tiny-sd", hub: HubLoras | None = None,
                allowlist: tuple[str, ...] = ()) -> list[LoraSpec]:
    resolved: Resolved = resolve(checkpoint, Task.TEXT2IMAGE, model_root)
    return resolve_loras(list(requests), resolved, model_root, allowlist, fetch_hub_file, 4, hub)


def refused(model_root: Path, *requests: LoraRequest, checkpoint: str = "tiny-sd") -> HotpipeError:
    with pytest.raises(HotpipeError) as err:
        resolve_hub(model_root, *requests, checkpoint=checkpoint)
    return err.value


def since(url: str, before: int) -> list[tuple[str, str, str]]:
    """The repo requests (files and trees) the Hub served after the first ``before`` requests; huggingface_hub's
    own once-a-day look-ups (its agent registry) aside."""
    return [r for r in requests_served(url)[before:] if "/resolve/" in r[1] or "/tree/" in r[1]]


def test_a_hub_lora_resolves_from_its_header_alone_pinned_to_a_commit(model_root: Path, endpoint: str,
                                                                       tmp_path: Path) -> None:
    before = len(requests_served(endpoint))
    [spec] = resolve_hub(model_root, LoraRequest(name="someone/tiny-style", scale=0.6))
    assert (spec.source, spec.location, spec.weight_name, spec.scale) == ("hub", "someone/tiny-style", LORA_FILE, 0.6)
    assert spec.revision == commit_of("someone/tiny-style")
    served = since(endpoint, before)
    assert served[0][:2] == ("HEAD", f"/someone/tiny-style/resolve/main/{LORA_FILE}")
    gets = [r for r in served if r[0] == "GET"]
    assert gets and all(wanted.startswith("bytes=0-") for _, _, wanted in gets)  # a range read of the header
    assert all(f"/resolve/{spec.revision}/" in path for _, path, _ in gets)  # at the pinned commit
    assert not (tmp_path / "hub-cache").exists() or not any((tmp_path / "hub-cache").rglob("*.safetensors"))
    [local] = resolve_hub(model_root, LoraRequest(name="tiny-lora-sd"))
    assert local.adapter != spec.adapter  # same bytes, another source: another adapter


def test_a_named_file_in_a_hub_repo_resolves(model_root: Path, endpoint: str) -> None:
    [a, local] = resolve_hub(model_root, LoraRequest(name="someone/named-styles", weight_name="style-a.safetensors"),
                             LoraRequest(name="tiny-lora-sd"))
    assert (a.weight_name, a.source, local.source) == ("style-a.safetensors", "hub", "local")


def test_an_sdxl_hub_lora_on_an_sd_checkpoint_names_both_families(model_root: Path, endpoint: str) -> None:
    err = refused(model_root, LoraRequest(name="someone/tiny-style-xl"))
    assert err.field == "loras.0.name" and err.status_code == 422
    assert "stable-diffusion-xl" in str(err) and "is stable-diffusion " in str(err)
    assert resolve_hub(model_root, LoraRequest(name="someone/tiny-style-xl"), checkpoint="tiny-sdxl")


@pytest.mark.parametrize(("name", "weight_name", "field", "says"), [
    ("someone/no-such-repo", None, "loras.0.name", "not found"),
    ("someone/named-styles", None, "loras.0.name", "style-a.safetensors, style-b.safetensors"),
    ("someone/named-styles", "style-c.safetensors", "loras.0.weight_name", "style-a.safetensors"),
    ("someone/pickled-style", None, "loras.0.name", "pickle weights (pytorch_lora_weights.bin)"),
    ("someone/pickled-style", "pytorch_lora_weights.bin", "loras.0.weight_name", "safetensors"),
    ("someone/no-weights", None, "loras.0.name", "no safetensors file"),
    ("someone/garbage-style", None, "loras.0.name", "not a readable safetensors file"),
])
def test_hub_mistakes_are_422_naming_the_field(model_root: Path, endpoint: str, name: str, weight_name: str | None,
                                               field: str, says: str) -> None:
    err = refused(model_root, LoraRequest(name=name, weight_name=weight_name))
    assert isinstance(err, InvalidRequest) and err.status_code == 422
    assert err.field == field and says in err.message, err.message


def test_the_allowlist_applies_before_the_hub_is_asked(model_root: Path, endpoint: str) -> None:
    before = len(requests_served(endpoint))
    with pytest.raises(CheckpointNotAllowed) as err:
        resolve_hub(model_root, LoraRequest(name="someone/tiny-style"), allowlist=("tiny-*", "other/*"))
    assert err.value.field == "loras.0.name"
    assert since(endpoint, before) == []
    assert resolve_hub(model_root, LoraRequest(name="someone/tiny-style"), allowlist=("tiny-*", "someone/*"))


def test_repeated_submits_are_answered_from_the_cache_until_its_ttl(model_root: Path, endpoint: str) -> None:
    now = [0.0]
    cache = HubLoras(ttl_s=60, clock=lambda: now[0])
    before = len(requests_served(endpoint))
    first = resolve_hub(model_root, LoraRequest(name="someone/tiny-style"), hub=cache)
    asked = len(since(endpoint, before))
    again = resolve_hub(model_root, LoraRequest(name="someone/tiny-style", scale=0.2), hub=cache)
    assert asked > 0 and len(since(endpoint, before)) == asked  # the second submit never reached the Hub
    assert again[0].adapter == first[0].adapter and (cache.hits, cache.misses) == (1, 1)
    now[0] = 61.0
    resolve_hub(model_root, LoraRequest(name="someone/tiny-style"), hub=cache)
    assert len(since(endpoint, before)) == 2 * asked  # past the TTL: read again


def test_the_cache_is_bounded_least_recently_used_first(model_root: Path, endpoint: str) -> None:
    cache = HubLoras(ttl_s=60, max_entries=1)
    resolve_hub(model_root, LoraRequest(name="someone/tiny-style"), hub=cache)
    resolve_hub(model_root, LoraRequest(name="someone/named-styles", weight_name="style-a.safetensors"), hub=cache)
    resolve_hub(model_root, LoraRequest(name="someone/tiny-style"), hub=cache)
    assert (cache.hits, cache.misses) == (0, 3)


def test_a_failed_read_is_never_cached(model_root: Path, endpoint: str) -> None:
    cache = HubLoras(ttl_s=60)
    for _ in range(2):
        with pytest.raises(InvalidRequest):
            resolve_hub(model_root, LoraRequest(name="someone/no-such-repo"), hub=cache)
    assert (cache.hits, cache.misses) == (0, 2)


def test_the_hub_down_is_a_503_unless_the_file_is_in_the_hub_cache(model_root: Path, endpoint: str, tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    point_at(monkeypatch, f"http://127.0.0.1:{free_port()}")  # nothing listens there
    err = refused(model_root, LoraRequest(name="someone/tiny-style"))
    assert isinstance(err, Unavailable) and err.status_code == 503 and "retry" in err.message
    cache_file(tmp_path / "hub-cache", "someone/tiny-style", model_root / "tiny-lora-sd" / LORA_FILE)
    [spec] = resolve_hub(model_root, LoraRequest(name="someone/tiny-style"))
    assert spec.revision == commit_of("someone/tiny-style")


def test_offline_mode_reads_the_hub_cache_only(model_root: Path, endpoint: str, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    before = len(requests_served(endpoint))
    err = refused(model_root, LoraRequest(name="someone/tiny-style"))
    assert err.status_code == 422 and err.field == "loras.0.name" and "HF_HUB_OFFLINE" in err.message
    cache_file(tmp_path / "hub-cache", "someone/tiny-style", model_root / "tiny-lora-sd" / LORA_FILE)
    [spec] = resolve_hub(model_root, LoraRequest(name="someone/tiny-style"))
    assert (spec.source, spec.revision) == ("hub", commit_of("someone/tiny-style"))
    assert since(endpoint, before) == []  # offline: the Hub was never asked


def cache_file(cache: Path, repo: str, source: Path) -> None:
    """Put ``source`` into a Hub cache in huggingface_hub's layout, at the commit the loopback Hub serves."""
    folder = cache / f"models--{repo.replace('/', '--')}"
    commit = commit_of(repo)
    (folder / "refs").mkdir(parents=True, exist_ok=True)
    (folder / "refs" / "main").write_text(commit)
    (folder / "snapshots" / commit).mkdir(parents=True, exist_ok=True)
    shutil.copy(source, folder / "snapshots" / commit / LORA_FILE)
