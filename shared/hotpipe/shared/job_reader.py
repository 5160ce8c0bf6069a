"""Reading and waiting for job records on the API's event loop (asyncio Redis)."""

from __future__ import annotations

import time

import redis.asyncio as aioredis

from hotpipe.shared import keys
from hotpipe.shared.job import JobRecord
from hotpipe.shared.job_records import parse_event, record_from_fields
from hotpipe.shared.status import TERMINAL


class AsyncJobReader:
    """Reads and waits for job records on an asyncio Redis client (the API's event loop).

    Waiting subscribes to the job's channel, then reads the record, so no change can slip
    in between; each event carries the new record, so waking up costs no extra read.
    """

    def __init__(self, client: aioredis.Redis):
        self.redis = client

    async def get(self, job_id: str) -> JobRecord | None:
        """The job's record, None if unknown."""
        raw: dict[str, str] = await self.redis.hgetall(keys.job(job_id))  # type: ignore[assignment]
        return record_from_fields(raw) if raw else None

    async def wait(self, job_id: str, timeout_s: float) -> JobRecord | None:
        """The record once terminal, or as it stands after ``timeout_s``; None if unknown."""
        deadline = time.monotonic() + timeout_s
        async with self.redis.pubsub(ignore_subscribe_messages=True) as sub:
            await sub.subscribe(keys.job_events(job_id))
            record = await self.get(job_id)
            while record is not None and record.status not in TERMINAL:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                message = await sub.get_message(ignore_subscribe_messages=True, timeout=left)
                if message is not None:
                    record = parse_event(message["data"])[1]
            return record
