"""Server-Sent Events for one job: the current state first, then every change, until terminal.

Each event's ``data`` is the job record as ``GET /v1/jobs/{id}`` returns it.  Event names:
``status`` (the first event, and every status change or cancel request), ``stage`` (the
running job moved on: loading -> running -> uploading) and ``progress``.
The stream ends after the event that carries a terminal status.  A comment line is sent
every ``keepalive_s`` so proxies keep the connection open while a job waits in a queue.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import redis.asyncio as aioredis

from hotpipe.shared import keys
from hotpipe.shared.job import JobRecord
from hotpipe.shared.status import TERMINAL
from hotpipe.shared.store import parse_event

#: published event name -> SSE event name
SSE_NAMES = {"progress": "progress", "stage": "stage"}
DEFAULT_NAME = "status"


def format_event(name: str, record_json: str, event_id: int) -> str:
    return f"id: {event_id}\nevent: {name}\ndata: {record_json}\n\n"


async def job_events(client: aioredis.Redis, job_id: str, read: Callable[[], Awaitable[JobRecord | None]],
                     render: Callable[[JobRecord], str], keepalive_s: float = 15.0) -> AsyncIterator[str]:
    """SSE lines for ``job_id``: the record as it stands, then each change until terminal.

    The record is read after subscribing, so no change can fall between the two.
    """
    async with client.pubsub(ignore_subscribe_messages=True) as sub:
        await sub.subscribe(keys.job_events(job_id))
        record, event_id = await read(), 0
        if record is None:  # expired between the caller's check and now
            return
        yield format_event(DEFAULT_NAME, render(record), event_id)
        while record.status not in TERMINAL:
            message = await sub.get_message(ignore_subscribe_messages=True, timeout=keepalive_s)
            if message is None:
                yield ": keep-alive\n\n"
                continue
            name, record = parse_event(message["data"])
            event_id += 1
            yield format_event(SSE_NAMES.get(name, DEFAULT_NAME), render(record), event_id)
