from __future__ import annotations

import pytest
import torch

from hotpipe.workers.cache import PipelineCache


@pytest.fixture
def cache() -> PipelineCache:
    return PipelineCache("cpu", torch.float32)
