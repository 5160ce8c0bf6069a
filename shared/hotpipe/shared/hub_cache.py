"""Hub resolutions cached in Redis: a repo's config file and the commit its revision pointed to.

Resolving a Hub checkpoint at submit costs a request to the Hub (or, offline, a walk of
the Hub cache) for every job.  The answer — the JSON of ``model_index.json`` /
``config.json`` and the commit hash — is kept in Redis for ``hub_cache_ttl_s``, shared by
every API process, so a branch that moves is seen again within the TTL.  A failed
lookup is never cached, and a Redis that can't answer only costs the cache: the
resolution then goes to the Hub as if uncached.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Any

import redis

from hotpipe.shared import keys
from hotpipe.shared.checkpoints import HubFetch, fetch_hub_file

log = logging.getLogger(__name__)


@dataclass
class CachedHub:
    """A ``HubFetch`` that asks Redis first."""

    client: redis.Redis
    ttl_s: int
    fetch: HubFetch = fetch_hub_file
    hits: int = field(default=0, init=False)
    misses: int = field(default=0, init=False)

    def __call__(self, repo_id: str, filename: str, revision: str | None,
                 field: str) -> tuple[dict[str, Any], str | None]:
        key = keys.hub_file(repo_id, revision, filename)
        cached = self._get(key)
        if cached is not None:
            self.hits += 1
            return cached["data"], cached["commit"]
        self.misses += 1
        data, commit = self.fetch(repo_id, filename, revision, field)
        self._set(key, {"data": data, "commit": commit})
        return data, commit

    def _get(self, key: str) -> dict[str, Any] | None:
        try:
            raw = self.client.get(key)
        except redis.RedisError:
            log.warning("Hub cache unreadable; resolving from the Hub", exc_info=True)
            return None
        return None if raw is None else dict(json.loads(raw))

    def _set(self, key: str, value: dict[str, Any]) -> None:
        try:
            self.client.set(key, json.dumps(value), ex=self.ttl_s)
        except redis.RedisError:
            log.warning("Hub cache unwritable; the next submit resolves from the Hub again", exc_info=True)


def hub_fetch(client: redis.Redis, ttl_s: int) -> HubFetch:
    """The Hub fetch the API uses: cached in Redis when ``ttl_s`` > 0."""
    return CachedHub(client, ttl_s) if ttl_s > 0 else fetch_hub_file
