"""Reading and waiting for job records on the API's event loop (asyncio Redis)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import redis.asyncio as aioredis

from hotpipe.shared import keys
from hotpipe.shared.job import JobRecord
from hotpipe.shared.job_records import parse_event, record_from_fields
from hotpipe.shared.job_watch import RESYNC, JobWatch
from hotpipe.shared.status import TERMINAL


class AsyncJobReader:
    """Reads and waits for job records on an asyncio Redis client (the API's event loop).

    Waiting subscribes to the job's channel (on the process's one subscriber connection,
    ``job_watch.py``), then reads the record, so no change can slip in between; each event
    carries the new record, so waking up costs no extra read.
    """

    def __init__(self, client: aioredis.Redis):
        self.redis = client
        self.watch = JobWatch(client)

    async def aclose(self) -> None:
        """Close the subscriber connection and the client."""
        await self.watch.aclose()
        await self.redis.aclose()

    async def get(self, job_id: str) -> JobRecord | None:
        """The job's record, None if unknown."""
        raw: dict[str, str] = await self.redis.hgetall(keys.job(job_id))  # type: ignore[assignment]
        return record_from_fields(raw) if raw else None

    async def wait(self, job_id: str, timeout_s: float,
                   admit: Callable[[JobRecord | None], object] | None = None) -> JobRecord | None:
        """The record once terminal, or as it stands after ``timeout_s``; None if unknown.

        ``admit`` sees the first read before any waiting (it raises to refuse the caller: an
        unknown job, another tenant's), so a caller needs no read of its own before this one."""
        deadline = time.monotonic() + timeout_s
        async with self.watch.watch(keys.job_events(job_id), timeout_s) as events:
            record = await self.get(job_id)
            if admit is not None:
                admit(record)
            while record is not None and record.status not in TERMINAL:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                try:
                    data = await asyncio.wait_for(events.get(), left)
                except TimeoutError:
                    break
                record = await self.get(job_id) if data is RESYNC else parse_event(data)[1]
            return record
