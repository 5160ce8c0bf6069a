"""hotpipe: run Hugging Face Diffusers checkpoints as a fleet service.

``from hotpipe import Client, AsyncClient`` gives the Python SDK (imported on first use,
so ``import hotpipe`` stays cheap for the API and the workers).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from hotpipe.producer.async_client import AsyncClient
    from hotpipe.producer.client import APIError, Client

__all__ = ["APIError", "AsyncClient", "Client", "__version__"]

_LAZY = {"Client": "hotpipe.producer.client", "APIError": "hotpipe.producer.client",
         "AsyncClient": "hotpipe.producer.async_client"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'hotpipe' has no attribute {name!r}")
