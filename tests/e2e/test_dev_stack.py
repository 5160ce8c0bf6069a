"""``hotpipe dev stack`` as a user runs it: every address printed, and an env file ``source`` loads.

The command runs as a real process on the tests' tiny checkpoints with its own redis-server; the
test reads the banner, loads the env file in bash, and reaches each address it names: the API,
Redis, the S3 bucket, the worker's metrics.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import boto3
import httpx
import pytest
import redis

from hotpipe.devstack import spawn, wait_until

pytestmark = pytest.mark.e2e


def sourced(env_file: Path) -> dict[str, str]:
    """The variables a bash that ``source``s ``env_file`` exports, starting from an empty environment."""
    out = subprocess.run(["bash", "-c", f"source {env_file} && env -0"], capture_output=True, check=True,
                         env={"PATH": os.environ["PATH"]})
    return dict(line.split("=", 1) for line in out.stdout.decode().split("\0") if "=" in line)


def test_dev_stack_prints_every_address_and_writes_an_env_file(model_root: Path, tmp_path: Path) -> None:
    workdir = tmp_path / "stack"
    proc = spawn("dev-stack", [sys.executable, "-m", "hotpipe", "dev", "stack", "--models", str(model_root),
                               "--workdir", str(workdir), "--redis", "system"], tmp_path)
    try:
        wait_until(lambda: "Ctrl-C to stop" in proc.log_path.read_text(errors="replace"), proc, 240)
        banner = proc.log_path.read_text(errors="replace")
        env = sourced(workdir / "stack.env")
        for name in ("HOTPIPE_API_URL", "HOTPIPE_REDIS_URL", "HOTPIPE_S3_ENDPOINT_URL", "HOTPIPE_S3_BUCKET",
                     "HOTPIPE_STACK_WORKER0_METRICS_URL"):
            assert env[name] and env[name] in banner, (name, banner)
        assert f"source {workdir / 'stack.env'}" in banner
        assert httpx.get(env["HOTPIPE_API_URL"] + "/readyz", timeout=10).status_code == 200
        assert redis.Redis.from_url(env["HOTPIPE_REDIS_URL"]).ping()
        s3 = boto3.client("s3", endpoint_url=env["HOTPIPE_S3_ENDPOINT_URL"], region_name=env["AWS_DEFAULT_REGION"],
                          aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
                          aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"])
        s3.head_bucket(Bucket=env["HOTPIPE_S3_BUCKET"])
        metrics = httpx.get(env["HOTPIPE_STACK_WORKER0_METRICS_URL"], timeout=10)
        assert metrics.status_code == 200 and re.search(r"^hotpipe_", metrics.text, re.M), metrics.text[:500]
    finally:
        proc.send(signal.SIGTERM)
        proc.stop(60)
    assert proc.popen.returncode == 0, proc.log_tail()
