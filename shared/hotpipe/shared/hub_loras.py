"""LoRA files on the Hugging Face Hub, read at submit from their safetensors header alone.

A Hub LoRA is checked like a local one, without downloading its weights: one ``HEAD`` pins the
commit the repo's revision points to (the worker downloads that very commit), and a range read
of the file's first bytes (``parse_safetensors_file_metadata``: 8 bytes of length, then the JSON
header) gives the tensor names and shapes the family check needs.  What the Hub says is kept in
a bounded, per-process LRU for ``ttl_s``, so repeated submits of a popular LoRA don't go to the
Hub; a failed read is never kept.  ``HF_HUB_OFFLINE`` means the local Hub cache only, and when
the Hub can't be reached a file already in that cache still serves; otherwise that is our outage,
a 503 the caller retries, never a 4xx.  ``HF_ENDPOINT`` (a mirror, or the tests' loopback Hub) is
honoured as ``huggingface_hub`` honours it.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hotpipe.shared.checkpoints import COMMIT_RE
from hotpipe.shared.errors import InvalidRequest, Unavailable
from hotpipe.shared.safetensors_header import read_header

#: the file ``save_lora_weights`` writes and ``load_lora_weights`` looks for first
LORA_FILE = "pytorch_lora_weights.safetensors"
#: Hub LoRAs an API process remembers (each entry is a commit and a few header facts: bytes, not MB)
MAX_ENTRIES = 1024
#: what a Hub file read returns: (the commit it was read at, its safetensors header as a dict)
HubHeader = tuple[str | None, dict[str, Any]]


def read_hub_header(repo_id: str, filename: str, field: str) -> HubHeader:
    """Pin the file's commit and range-read its header from the Hub; offline (or the Hub down), the Hub cache."""
    from huggingface_hub import constants

    if constants.is_offline_mode():
        cached = cached_header(repo_id, filename, field)
        if cached is None:
            raise InvalidRequest(f"{field}.name: {filename} of Hub repo '{repo_id}' is not in this server's Hub "
                                 "cache and the server is offline (HF_HUB_OFFLINE); download it there first "
                                 "(hf download) or name a folder under the model root", field=f"{field}.name")
        return cached
    try:
        return remote_header(repo_id, filename, field)
    except Unavailable:
        cached = cached_header(repo_id, filename, field)
        if cached is None:
            raise
        return cached


def cached_header(repo_id: str, filename: str, field: str) -> HubHeader | None:
    """The header of the file in the local Hub cache (the commit its snapshot folder names), if it is there."""
    from huggingface_hub import try_to_load_from_cache

    path = try_to_load_from_cache(repo_id, filename)
    if not isinstance(path, str):
        return None
    snapshot = Path(path).parent.name
    return (snapshot if COMMIT_RE.match(snapshot) else None), read_header(Path(path), repo_id, field)


def remote_header(repo_id: str, filename: str, field: str) -> HubHeader:
    """One ``HEAD`` for the commit ``main`` points to, one range read of the header at that commit; a caller's
    mistake is a 422 naming the field, the Hub failing (network, 5xx) ``Unavailable``."""
    import httpx2
    from huggingface_hub import HfApi, get_hf_file_metadata, hf_hub_url
    from huggingface_hub import errors as hub_errors

    try:
        commit = get_hf_file_metadata(hf_hub_url(repo_id, filename)).commit_hash
        meta = HfApi().parse_safetensors_file_metadata(repo_id, filename, revision=commit)
    except hub_errors.GatedRepoError as exc:
        raise InvalidRequest(f"{field}.name: Hub repo '{repo_id}' is gated and this server's token has no access to "
                             "it; ask the operator, or name another LoRA", field=f"{field}.name") from exc
    except hub_errors.RepositoryNotFoundError as exc:
        raise InvalidRequest(f"{field}.name: Hub repo '{repo_id}' not found (or it is private); check the repo id",
                             field=f"{field}.name") from exc
    except (hub_errors.EntryNotFoundError, hub_errors.RemoteEntryNotFoundError) as exc:
        raise missing_file(repo_id, filename, field) from exc
    except hub_errors.SafetensorsParsingError as exc:
        raise InvalidRequest(f"{field}.name '{repo_id}': {filename} is not a readable safetensors file ({exc})",
                             field=f"{field}.name") from exc
    except (hub_errors.HfHubHTTPError, httpx2.HTTPError, OSError) as exc:
        raise Unavailable(f"the Hugging Face Hub could not be reached to check {field} ('{repo_id}'); retry "
                          f"shortly ({type(exc).__name__})") from exc
    tensors = {name: {"dtype": info.dtype, "shape": list(info.shape)} for name, info in meta.tensors.items()}
    return commit, tensors


def missing_file(repo_id: str, filename: str, field: str) -> InvalidRequest:
    """The 422 for a file the repo lacks, saying what it holds instead (pickle weights are never loaded)."""
    from huggingface_hub import HfApi
    from huggingface_hub import errors as hub_errors

    try:
        names = [entry.path for entry in HfApi().list_repo_tree(repo_id)]
    except (hub_errors.HfHubHTTPError, OSError, ValueError):
        names = []
    tensors = sorted(n for n in names if n.endswith(".safetensors"))
    pickled = sorted(n for n in names if n.endswith((".bin", ".pt", ".ckpt", ".pth")))
    if tensors:
        hint = f"; set weight_name to one of its safetensors files: {', '.join(tensors[:10])}"
    elif pickled:
        hint = (f"; it holds only pickle weights ({', '.join(pickled[:10])}), which are never loaded: "
                "use a LoRA published as safetensors")
    else:
        hint = "; it has no safetensors file (only safetensors LoRAs are loaded)"
    where = f"{field}.weight_name" if filename != LORA_FILE else f"{field}.name"
    return InvalidRequest(f"{field}.name: Hub repo '{repo_id}' has no {filename}{hint}", field=where)


@dataclass
class HubLoras:
    """Reads the header of a LoRA file on the Hub; a bounded LRU keeps each answer ``ttl_s`` (0: no cache)."""

    ttl_s: float = 300.0
    max_entries: int = MAX_ENTRIES
    #: reads one file's header from the Hub (or its cache): (repo id, file, field to blame) -> HubHeader
    read: Callable[[str, str, str], HubHeader] = read_hub_header
    clock: Callable[[], float] = time.monotonic
    hits: int = field(default=0, init=False)
    misses: int = field(default=0, init=False)
    _entries: OrderedDict[tuple[str, str], tuple[float, HubHeader]] = field(default_factory=OrderedDict, init=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False)

    def header(self, repo_id: str, filename: str, field: str) -> HubHeader:
        """The commit and header of ``filename`` in ``repo_id`` (its default branch), cached."""
        key = (repo_id, filename)
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None and self.clock() < entry[0]:
                self._entries.move_to_end(key)
                self.hits += 1
                return entry[1]
        self.misses += 1
        found = self.read(repo_id, filename, field)
        if self.ttl_s > 0:
            with self._lock:
                self._entries[key] = (self.clock() + self.ttl_s, found)
                self._entries.move_to_end(key)
                while len(self._entries) > self.max_entries:
                    self._entries.popitem(last=False)
        return found
