"""hotpipe: run Hugging Face Diffusers checkpoints as a fleet service.

``from hotpipe import Client, AsyncClient`` gives the Python SDK (imported on first use,
so ``import hotpipe`` stays cheap for the API and the workers).
"""

from __future__ import annotations

from pkgutil import extend_path
from typing import TYPE_CHECKING, Any

# The subpackages live in source roots of their own (shared/hotpipe/shared/, producer/hotpipe/producer/,
# workers/hotpipe/workers/; see setup.py): with those roots on sys.path (pytest's config does it),
# this package spans them.  An installed wheel has them all in one folder, where this is a no-op.
__path__ = extend_path(__path__, __name__)

__version__ = "0.1.0"

if TYPE_CHECKING:
    from hotpipe.producer.async_client import AsyncClient
    from hotpipe.producer.client import (
        APIError,
        AuthError,
        Client,
        ConflictError,
        InvalidRequestError,
        NotFoundError,
        RateLimitedError,
        TooLargeError,
        UnavailableError,
    )

__all__ = ["APIError", "AsyncClient", "AuthError", "Client", "ConflictError", "InvalidRequestError",
           "NotFoundError", "RateLimitedError", "TooLargeError", "UnavailableError", "__version__"]

_LAZY = {name: "hotpipe.producer.client" for name in __all__ if name not in ("AsyncClient", "__version__")}
_LAZY["AsyncClient"] = "hotpipe.producer.async_client"


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'hotpipe' has no attribute {name!r}")
