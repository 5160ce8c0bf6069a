"""What a worker lets ``from_pretrained`` do: weights from safetensors only, no remote code.

Pickle (``.bin``/``.pt``) weights can run arbitrary code when unpickled, so they are
refused unless the operator allows them (``HOTPIPE_ALLOW_PICKLE_WEIGHTS``).  Code that
ships inside a checkpoint (``custom_pipeline``, components whose module is a file of the
repository) is never run: ``trust_remote_code`` is always False and ``custom_pipeline``
is never passed.  The checkpoint allowlist is checked again here, right before loading,
so a job recorded before the allowlist changed (or written to Redis by someone else)
can't load a checkpoint the worker's operator did not allow.
"""

from __future__ import annotations

from typing import Any

from hotpipe.shared.safety import CheckpointNotAllowed, checkpoint_allowed


class UnsafeWeights(OSError):
    """The checkpoint has no safetensors weights and pickle weights are not allowed."""


def load_kwargs(allow_pickle: bool) -> dict[str, Any]:
    """Keyword arguments of every ``from_pretrained`` a worker makes."""
    # use_safetensors=True: Diffusers (and Transformers, for the sub-models) refuse to fall
    # back to pickle; None: prefer safetensors, accept pickle.
    return {"use_safetensors": True if not allow_pickle else None, "trust_remote_code": False}


def refuse_unsafe(exc: Exception, location: str) -> Exception:
    """Diffusers' "no safetensors weights" error, as the error a job should record."""
    text = str(exc).lower()
    if "safetensors" in text:
        return UnsafeWeights(f"{location}: no safetensors weights; pickle weights (.bin) are refused on this server "
                             f"(an operator may allow them with HOTPIPE_ALLOW_PICKLE_WEIGHTS=true)")
    return exc


def check_allowed(checkpoint: str, patterns: tuple[str, ...]) -> None:
    """Raises ``CheckpointNotAllowed`` unless ``checkpoint`` matches the allowlist (empty: all)."""
    if not checkpoint_allowed(checkpoint, patterns):
        raise CheckpointNotAllowed(f"checkpoint {checkpoint!r} is not on this server's allowlist",
                                   field="checkpoint")
