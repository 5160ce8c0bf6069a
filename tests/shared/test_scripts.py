"""The Redis scripts (``shared/hotpipe/shared/lua/``): they load, and the prelude's transition table is
``status.ALLOWED_FROM``, enforced by ``move``, the only Lua that writes a job's status."""

from __future__ import annotations

import re
from importlib import resources

import pytest
import redis

from hotpipe.shared import keys, scripts
from hotpipe.shared.job import Task, new_job_id
from hotpipe.shared.status import ALLOWED_FROM, Status
from hotpipe.shared.store import JobStore
from tests.jobs import job_spec

#: the scripts that change a job's status, each through the prelude's ``move``
STATUS_SCRIPTS = {"cancel", "expire_queued", "requeue", "take", "transition"}
#: a write of the record's status: straight (HSET) or through the prelude's buffered ``put``
STATUS_WRITE = re.compile(r"redis\.call\('HSET', KEYS\[1\],[^)]*'status'|\bput\('status'")


def lua_file(name: str) -> str:
    return resources.files("hotpipe.shared").joinpath("lua", f"{name}.lua").read_text(encoding="utf-8")


def test_every_script_compiles_on_redis(redis_client: redis.Redis) -> None:
    names = scripts.names()
    assert {"transition", "requeue", "rate_take", "popularity_bump", "worker_publish", "webhook_claim"} <= set(names)
    for name in names:
        sha = redis_client.script_load(scripts.source(name))
        assert redis_client.script_exists(sha) == [True], name


def test_only_the_preludes_move_writes_a_status() -> None:
    assert len(STATUS_WRITE.findall(lua_file(scripts.PRELUDE))) == 1
    assert "put('status', to)" in lua_file(scripts.PRELUDE)
    for name in scripts.names():
        assert not STATUS_WRITE.findall(lua_file(name)), f"{name}.lua writes a status itself; use move()"
    assert {name for name in scripts.names() if re.search(r"\bmove\(", lua_file(name))} == STATUS_SCRIPTS


def test_the_generated_table_is_allowed_from() -> None:
    table = scripts.transition_table()
    for source in Status:
        targets = {t.value for t, sources in ALLOWED_FROM.items() if source in sources}
        row = re.search(rf"\['{source.value}'\] = \{{([^}}]*)\}}", table)
        assert row is not None
        assert set(re.findall(r"\['(\w+)'\] = true", row.group(1))) == targets


@pytest.mark.parametrize("source", list(Status))
@pytest.mark.parametrize("target", list(Status))
def test_move_refuses_every_pair_outside_the_table(redis_client: redis.Redis, source: Status,
                                                   target: Status) -> None:
    store = JobStore(redis_client, record_ttl_s=600)
    job_id = new_job_id()
    store.create(job_id, family="stable-diffusion", pipeline="StableDiffusionPipeline", checkpoint="tiny-sd",
                 revision=None, task=Task.TEXT2IMAGE, spec=job_spec())
    redis_client.hset(keys.job(job_id), "status", source.value)
    text = scripts.transition_table() + lua_file(scripts.PRELUDE) + "move(ARGV[1], ARGV[2])\nflush()\nreturn 1\n"
    allowed = source in ALLOWED_FROM[target]
    if allowed:
        redis_client.eval(text, 6, *scripts.job_keys(job_id), source.value, target.value)
    else:
        with pytest.raises(redis.ResponseError, match=re.escape("is not in status.ALLOWED_FROM")):
            redis_client.eval(text, 6, *scripts.job_keys(job_id), source.value, target.value)
    assert redis_client.hget(keys.job(job_id), "status") == (target if allowed else source).value
