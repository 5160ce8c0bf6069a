"""The run message, written by hotpipe itself: field for field what Celery's ``send_task`` puts on Redis.

Workers are plain Celery workers reading Kombu's Redis lists.  Producers don't go through
Kombu to fill those lists: a submit writes the job record *and* its run message in one Lua
script (``JobStore.create``), so a job is never recorded without a message or published
without a record, and writing both is one Redis round trip.  Kombu's publish path
(producer pool, channel, exchange lookup, queue declaration) costs about a millisecond of
Python per message and a second round trip; the message itself is a small JSON document.

The format is Celery's task protocol 2 inside Kombu's virtual-transport envelope (the
Redis transport ``LPUSH``es it onto the queue's list for its priority step).  It is fixed by
``tests/shared/test_messages.py``, which compares it field by field with what this
project's pinned Celery/Kombu publish for the same job, so an upgrade that changes the
format fails CI instead of stranding messages.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import uuid
from dataclasses import dataclass

import redis

from hotpipe.shared import keys
from hotpipe.shared.celery_app import DEFAULT_PRIORITY, TASK_NAME
from hotpipe.shared.queues import family_queue, priority_step

#: the body's "embed" part: no callbacks, errbacks, chain or chord
_EMBED = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}


@dataclass(frozen=True)
class RunMessage:
    """A job's run message and the Redis list it goes on."""

    list_key: str  # the queue's list for the message's priority step
    payload: str  # Kombu's JSON envelope
    queue: str = ""  # the queue it goes to (the family's, or a worker's own)


def origin() -> str:
    """What Celery writes as a message's origin: ``gen{pid}@{host}``."""
    return f"gen{os.getpid()}@{socket.gethostname()}"


def run_message(job_id: str, family: str, priority: int = DEFAULT_PRIORITY, queue: str | None = None) -> RunMessage:
    """The message that runs ``job_id`` at API ``priority`` (0-9, 9 first) on its family's queue,
    or on ``queue`` (a worker's own queue, when routed to a warm worker)."""
    target = queue or family_queue(family)
    step = priority_step(priority)
    task_id = str(uuid.uuid4())
    body = json.dumps([[job_id], {}, _EMBED])
    envelope = {
        "body": base64.b64encode(body.encode()).decode(),
        "content-encoding": "utf-8",
        "content-type": "application/json",
        "headers": {
            "lang": "py", "task": TASK_NAME, "id": task_id, "shadow": None, "eta": None, "expires": None,
            "group": None, "group_index": None, "retries": 0, "timelimit": [None, None], "root_id": task_id,
            "parent_id": None, "argsrepr": repr([job_id]), "kwargsrepr": "{}", "origin": origin(),
            "ignore_result": True, "replaced_task_nesting": 0, "stamped_headers": None, "stamps": {},
        },
        "properties": {
            "correlation_id": task_id, "reply_to": str(uuid.uuid4()), "delivery_mode": 2,
            "delivery_info": {"exchange": "", "routing_key": target}, "priority": step,
            "body_encoding": "base64", "delivery_tag": str(uuid.uuid4()),
        },
    }
    return RunMessage(keys.priority_list(target, step), json.dumps(envelope), target)


def enqueue(client: redis.Redis, job_id: str, family: str, priority: int = DEFAULT_PRIORITY,
            queue: str | None = None) -> None:
    """Publish the run message of a job whose record already says ``queued`` (a requeue, a give-back,
    a drained worker queue); new jobs get theirs from ``JobStore.create``, in the same script."""
    message = run_message(job_id, family, priority, queue)
    client.lpush(message.list_key, message.payload)
