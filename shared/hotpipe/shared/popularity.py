"""Global popularity: how often each checkpoint of a family has been requested lately, in Redis.

Every submit adds one request (``Popularity.bump``, queued on the router's pipeline, so it
costs no round trip of its own).  The router reads the counts to place a checkpoint nobody
holds where the pipeline it would evict is least popular, and the workers' ``popular``
eviction policy evicts the resident pipeline with the lowest count — the whole fleet's
requests, not one worker's own uses.

Counts decay exponentially with a half-life (``popularity_half_life_s``), so the mix can
change: a request ``t`` seconds old counts ``2 ** (-t / half_life)``.  Stored as one sorted
set per family (``keys.popularity``) whose scores are counted from an epoch
(``keys.popularity_epoch``): a request at time ``t`` adds ``2 ** ((t - epoch) / half_life)``,
so nothing has to be rewritten as time passes, and a count is ``score * 2 ** (-(now - epoch) /
half_life)``.  Once the epoch is ``RESCALE_HALF_LIVES`` old (before the weights lose
precision) the script that bumps rescales the set to a fresh epoch, dropping counts under
``FORGET_BELOW``; a set full at ``MAX_MEMBERS`` checkpoints drops its least requested to
make room for a new one (which must be able to enter, to ever become popular).  Both keys
expire ``EXPIRE_HALF_LIVES`` after a family's last request.  Times are Redis's clock, so
every producer counts alike.

Counts are advice, like routing: a lost bump costs at most a worse eviction, never a job.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import redis
from redis.client import Pipeline
from redis.exceptions import NoScriptError

from hotpipe.shared import keys, scripts

#: rescale the scores once the epoch is this many half-lives old (weights up to 2**32)
RESCALE_HALF_LIVES = 32
#: counts (in requests) below this are dropped at a rescale
FORGET_BELOW = 1e-3
#: the most checkpoints one family's set keeps (the least requested go first)
MAX_MEMBERS = 1024
#: a family's keys expire this many half-lives after its last request (counts are ~1e-6 by then)
EXPIRE_HALF_LIVES = 20

#: (family, checkpoint id) — what a count is kept for
Ref = tuple[str, str]


class Popularity:
    """Bumps and reads the decayed request counts of checkpoints, per family."""

    def __init__(self, client: redis.Redis, half_life_s: float = 1800.0):
        if not half_life_s > 0:
            raise ValueError(f"half_life_s is {half_life_s!r}; it must be above 0")
        self.redis = client
        self.half_life_s = half_life_s
        self._bump = scripts.register(client, "popularity_bump")
        self._loaded = False

    def bump(self, family: str, checkpoint: str, pipe: Pipeline | None = None) -> Callable[[list[Any]], None]:
        """Count one request of ``checkpoint``.  Queued on ``pipe`` when given: its caller executes it
        (with ``raise_on_error=False``) and passes the results to what this returns, which loads the
        script and counts again if Redis had lost it (a restart, ``SCRIPT FLUSH``)."""
        family_keys = [keys.popularity(family), keys.popularity_epoch(family)]
        args: list[str | int] = [checkpoint, repr(self.half_life_s), RESCALE_HALF_LIVES, repr(FORGET_BELOW),
                                 MAX_MEMBERS, max(1, round(EXPIRE_HALF_LIVES * self.half_life_s * 1000))]
        if pipe is None:
            self._bump(keys=family_keys, args=args)
            return lambda results: None
        # EVALSHA on the caller's pipeline: redis-py would check a pipeline's registered scripts with
        # an extra round trip (SCRIPT EXISTS), and EVAL would send the whole text every time.
        if not self._loaded:  # once per process, so the first pipeline's reads see its bump too
            self.redis.script_load(self._bump.script)
            self._loaded = True
        at = len(pipe)
        pipe.evalsha(self._bump.sha, 2, *family_keys, *args)

        def settle(results: list[Any]) -> None:
            if isinstance(results[at], NoScriptError):
                self._bump(keys=family_keys, args=args)

        return settle

    def counts(self, refs: Iterable[Ref]) -> list[float]:
        """Each ref's count now (decayed requests; 0 for one never requested), in one round trip."""
        pipe = self.redis.pipeline(transaction=False)
        read = self.queue_counts(pipe, refs)
        return read(pipe.execute())

    def queue_counts(self, pipe: Pipeline, refs: Iterable[Ref]) -> Callable[[list[Any]], list[float]]:
        """Queue the reads of ``counts`` on ``pipe``; call what this returns with ``pipe.execute()``'s
        results to get them."""
        refs = list(refs)
        families = list(dict.fromkeys(family for family, _ in refs))
        members = {f: list(dict.fromkeys(c for fam, c in refs if fam == f)) for f in families}
        start = len(pipe)
        pipe.time()
        for family in families:
            pipe.get(keys.popularity_epoch(family))
            pipe.zmscore(keys.popularity(family), members[family])

        def read(results: list[Any]) -> list[float]:
            seconds, micros = results[start]
            now = int(seconds) + int(micros) / 1e6
            found: dict[Ref, float] = {}
            for i, family in enumerate(families):
                epoch, scores = results[start + 1 + 2 * i], results[start + 2 + 2 * i]
                decay = 0.0 if epoch is None else 2 ** (-max(0.0, now - float(epoch)) / self.half_life_s)
                for checkpoint, score in zip(members[family], scores, strict=True):
                    found[family, checkpoint] = float(score or 0.0) * decay
            return [found[ref] for ref in refs]

        return read
