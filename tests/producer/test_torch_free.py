"""The producer side (API, client, CLI, shared modules) never imports the worker's heavy stack."""

from __future__ import annotations

import json
import pkgutil
import subprocess
import sys
from pathlib import Path

import hotpipe.shared

HEAVY = ("torch", "diffusers", "transformers", "accelerate")
SHARED = sorted(f"hotpipe.shared.{m.name}" for m in pkgutil.iter_modules(hotpipe.shared.__path__))
PRODUCER = ["hotpipe.producer.api", "hotpipe.producer.service", "hotpipe.producer.client",
            "hotpipe.producer.cli_submit", "hotpipe.cli"]

PROBE = """
import importlib, json, sys
for name in {modules!r}:
    importlib.import_module(name)
from hotpipe.producer.api import create_app
from hotpipe.shared.settings import Settings
app = create_app(Settings.from_env({{}}))
schema = app.openapi()
loaded = sorted(m for m in sys.modules if m.split(".")[0] in {heavy!r})
print(json.dumps({{"loaded": loaded, "paths": sorted(schema["paths"])}}))
"""


def test_shared_modules_are_all_probed() -> None:
    assert {"hotpipe.shared.job", "hotpipe.shared.store", "hotpipe.shared.storage", "hotpipe.shared.images",
            "hotpipe.shared.checkpoints", "hotpipe.shared.celery_app"} <= set(SHARED)


def test_api_and_shared_import_and_build_without_torch(tmp_path: Path) -> None:
    code = PROBE.format(modules=PRODUCER + SHARED, heavy=HEAVY)

    # Nothing listens on the default redis URL: building the app must not need a connection.
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, check=False)

    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["loaded"] == []
    assert "/v1/jobs" in report["paths"]
