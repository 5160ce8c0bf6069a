"""Listing a tenant's jobs from its index sets, and pruning the entries of expired records.

Each tenant has a sorted set of its job ids scored by creation time, and one per status
(``keys.jobs_index``); the store's scripts keep them in step with every transition.  A finished
record expires, and its entries are pruned when it does (``lua/prune.lua``), so listings never
read the keyspace.
"""

from __future__ import annotations

import redis

from hotpipe.shared import keys
from hotpipe.shared.job import JobRecord
from hotpipe.shared.job_records import Cursor, record_from_fields
from hotpipe.shared.scripts import JobScripts
from hotpipe.shared.status import Status


class JobListing:
    """The listing side of ``JobStore``."""

    redis: redis.Redis
    _lua: JobScripts

    def prune_index(self, limit: int = 1000) -> int:
        """Drop the index entries of records that have expired; returns how many were due."""
        statuses = ",".join(s.value for s in Status)
        return int(self._lua.prune(keys=[keys.index_expiry()], args=[limit, statuses, keys.job("")]))

    def list_jobs(self, tenant: str = keys.DEFAULT_TENANT, status: Status | None = None, limit: int = 20,
                  cursor: Cursor | None = None) -> tuple[list[JobRecord], Cursor | None]:
        """A tenant's jobs newest first (optionally one status), and the cursor of the next page.

        Reads the tenant's sorted sets only, never the keyspace.  ``cursor`` is the last
        (score, id) of the previous page; entries whose record is gone or has moved on to
        another status since are skipped.
        """
        self.prune_index()
        key = keys.jobs_index(tenant, status.value if status else None)
        top: float | str = "+inf" if cursor is None else cursor.score
        ties = 0 if cursor is None else int(self.redis.zcount(key, cursor.score, cursor.score))
        rows: list[tuple[str, float]] = self.redis.zrange(  # type: ignore[assignment]
            key, top, "-inf", desc=True, byscore=True, offset=0, num=limit + ties, withscores=True)
        if cursor is not None:
            rows = [(m, sc) for m, sc in rows if not (int(sc) == cursor.score and m >= cursor.job_id)]
        rows = rows[:limit]
        pipe = self.redis.pipeline(transaction=False)
        for job_id, _ in rows:
            pipe.hgetall(keys.job(job_id))
        records = [record_from_fields(raw) for raw in pipe.execute() if raw and raw.get("tenant") == tenant
                   and (status is None or raw["status"] == status.value)]
        more = Cursor(int(rows[-1][1]), rows[-1][0]) if len(rows) == limit else None
        return records, more
