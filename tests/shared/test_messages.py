"""The run message hotpipe writes itself is the one Celery's ``send_task`` writes, list and all.

Both are published to the session's real redis-server and read back from Kombu's lists; only
the per-message random ids may differ.  If a Celery or Kombu upgrade changes the format, this
fails before a worker ever sees a message it can't read.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import redis
from kombu import Connection

from hotpipe.shared import keys
from hotpipe.shared.celery_app import TASK_NAME, make_celery
from hotpipe.shared.messages import enqueue, run_message
from hotpipe.shared.queues import PRIORITIES, priority_lists, priority_step
from hotpipe.shared.settings import Settings

FAMILY = "stable-diffusion"
#: fresh per message: a task id (also root_id / correlation_id), a reply-to and a delivery tag
RANDOM = {("headers", "id"), ("headers", "root_id"), ("properties", "correlation_id"),
          ("properties", "reply_to"), ("properties", "delivery_tag")}


def waiting(client: redis.Redis, queue: str) -> dict[str, list[dict[str, Any]]]:
    """Every message on ``queue``'s lists, by list."""
    found = {name: [json.loads(m) for m in client.lrange(name, 0, -1)] for name in priority_lists(queue)}
    return {name: messages for name, messages in found.items() if messages}


def without_random(message: dict[str, Any]) -> dict[str, Any]:
    copy = json.loads(json.dumps(message))
    for part, name in RANDOM:
        copy[part].pop(name)
    return copy


def celery_sends(redis_url: str, client: redis.Redis, job_id: str, priority: int, queue: str) -> dict[str, Any]:
    """What the project's pinned Celery publishes for this job (read back, then removed)."""
    app = make_celery(Settings.from_env({}, redis_url=redis_url))
    try:
        app.send_task(TASK_NAME, args=[job_id], queue=queue, ignore_result=True, priority=priority_step(priority))
    finally:
        app.close()
    [(name, [message])] = waiting(client, queue).items()
    client.delete(name)
    return {"list": name, "message": message}


@pytest.mark.parametrize("priority", list(PRIORITIES))
@pytest.mark.parametrize("queue", [None, "worker.a@host"])
def test_run_message_is_what_celery_sends(redis_server: str, redis_client: redis.Redis, priority: int,
                                          queue: str | None) -> None:
    target = queue or FAMILY
    sent = celery_sends(redis_server, redis_client, "job-1", priority, target)
    ours = run_message("job-1", FAMILY, priority, queue=queue)
    assert ours.list_key == sent["list"] == keys.priority_list(target, priority_step(priority))
    mine = json.loads(ours.payload)
    assert without_random(mine) == without_random(sent["message"])
    assert set(mine["headers"]) == set(sent["message"]["headers"])
    assert set(mine["properties"]) == set(sent["message"]["properties"])


def test_ids_are_fresh_and_consistent_per_message() -> None:
    one, two = (json.loads(run_message("job-1", FAMILY).payload) for _ in range(2))
    assert one["headers"]["id"] == one["headers"]["root_id"] == one["properties"]["correlation_id"]
    assert one["headers"]["id"] != two["headers"]["id"]
    assert one["properties"]["delivery_tag"] != two["properties"]["delivery_tag"]


def test_kombus_redis_transport_reads_it_in_priority_order(redis_server: str, redis_client: redis.Redis) -> None:
    """Kombu's own Redis channel, configured as the workers' is, takes the pushed messages back
    most urgent first and decodes each into the task and its job id."""
    for job_id, priority in (("low", 0), ("urgent", 9), ("normal", 5)):
        enqueue(redis_client, job_id, FAMILY, priority)
    app = make_celery(Settings.from_env({}, redis_url=redis_server))
    with Connection(redis_server, transport_options=app.conf.broker_transport_options) as conn:
        channel = conn.channel()
        received = [channel.basic_get(FAMILY, no_ack=True) for _ in range(3)]
    decoded = [(m.headers["task"], *m.decode()[:2]) for m in received]
    assert decoded == [(TASK_NAME, [job_id], {}) for job_id in ("urgent", "normal", "low")]
    assert waiting(redis_client, FAMILY) == {}
    app.close()
