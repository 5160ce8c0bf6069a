"""Hub resolutions cached in Redis, offline (HF_HUB_OFFLINE=1) over a Hub cache in huggingface_hub's layout.

Runs in a child process: huggingface_hub reads ``HF_HUB_OFFLINE`` and its cache folder
when imported.  Between the two rounds the repo is removed from the Hub cache, so the
second round can only succeed from Redis.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import redis

from hotpipe.shared import keys
from tests.shared.test_checkpoints import COMMIT, write_hub_repo

SCRIPT = """
import json, shutil, sys
from pathlib import Path
import redis
from hotpipe.shared.checkpoints import resolve
from hotpipe.shared.errors import HotpipeError
from hotpipe.shared.hub_cache import CachedHub
from hotpipe.shared.job import Task

url, models, repo_dir = sys.argv[1:4]
hub = CachedHub(redis.Redis.from_url(url), ttl_s=300)

def attempt(checkpoint):
    try:
        return resolve(checkpoint, Task.IMAGE2IMAGE, Path(models), hub=hub).to_json()
    except HotpipeError as exc:
        return {"error": exc.code, "field": exc.field}

rounds = []
for _ in range(2):
    rounds.append([attempt("org/tiny-sd"), attempt("org/not-cached"), hub.hits, hub.misses])
    shutil.rmtree(repo_dir)  # gone from the Hub cache: the next round can only come from Redis
    Path(repo_dir).mkdir()
print(json.dumps(rounds))
"""


def test_second_resolution_comes_from_redis_with_a_ttl(redis_client: redis.Redis, redis_server: str,
                                                       tmp_path: Path) -> None:
    write_hub_repo(tmp_path / "cache", "org/tiny-sd", COMMIT, "model_index.json",
                   {"_class_name": "StableDiffusionPipeline"})
    (tmp_path / "models").mkdir()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "cache"),
           "HF_HOME": str(tmp_path / "home")}
    done = subprocess.run([sys.executable, "-c", SCRIPT, redis_server, str(tmp_path / "models"),
                           str(tmp_path / "cache" / "models--org--tiny-sd")],
                          env=env, capture_output=True, text=True, timeout=120, check=True)
    first, second = json.loads(done.stdout.splitlines()[-1])

    assert first[0]["revision"] == second[0]["revision"] == COMMIT
    assert first[0]["pipeline"] == second[0]["pipeline"] == "StableDiffusionImg2ImgPipeline"
    assert first[1] == second[1] == {"error": "checkpoint_not_found", "field": "checkpoint"}  # never cached
    assert (first[2:], second[2:]) == ([0, 2], [1, 3])
    key = keys.hub_file("org/tiny-sd", None, "model_index.json")
    assert json.loads(redis_client.get(key) or "{}") == {"data": {"_class_name": "StableDiffusionPipeline"},
                                                          "commit": COMMIT}
    assert 0 < int(redis_client.ttl(key)) <= 300
    assert redis_client.exists(keys.hub_file("org/not-cached", None, "model_index.json")) == 0
