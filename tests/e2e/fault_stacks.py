"""Stacks for tests that kill, stop and restart workers: versioned S3 (so every put is counted) and
named workers started again before each test."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from hotpipe.devstack import LocalStack, Proc, find_redis_server


@contextmanager
def fault_stack(tmp: Path, model_root: Path, env: dict[str, str],
                workers: dict[str, dict[str, str]]) -> Iterator[LocalStack]:
    """A local stack on the system redis-server with ``workers`` (name -> extra env) started, its bucket
    versioned so a test can count the puts of one object key."""
    with LocalStack(tmp, model_root, redis_binary=find_redis_server("system"), workers=0, extra_env=env) as stack:
        storage = stack.storage()
        storage.client.put_bucket_versioning(Bucket=storage.bucket, VersioningConfiguration={"Status": "Enabled"})
        stack.start_workers(workers)
        yield stack


def restart_dead(stack: LocalStack, workers: dict[str, dict[str, str]]) -> dict[str, Proc]:
    """Start again each of ``workers`` whose process has died (a test may have killed one); the processes."""
    dead = {name: env for name, env in workers.items() if stack.procs[name].popen.poll() is not None}
    if dead:
        stack.start_workers(dead)
    return stack.procs
