"""Global popularity counts on a real redis-server: bumps, decay, rescaling, bounds."""

from __future__ import annotations

import pytest
import redis

from hotpipe.shared import keys, popularity
from hotpipe.shared.popularity import Popularity

FAMILY = "stable-diffusion"
HALF_LIFE_S = 3600.0  # long against the test, so only the epoch moves made below decay anything


@pytest.fixture
def counts(redis_client: redis.Redis) -> Popularity:
    return Popularity(redis_client, HALF_LIFE_S)


def age(client: redis.Redis, family: str, half_lives: float) -> None:
    """Make every count of ``family`` so far ``half_lives`` older (move its epoch back)."""
    epoch = float(client.get(keys.popularity_epoch(family)) or 0)
    client.set(keys.popularity_epoch(family), repr(epoch - half_lives * HALF_LIFE_S))


def test_each_bump_counts_one_request_per_family(counts: Popularity) -> None:
    for checkpoint in ("a", "a", "a", "b"):
        counts.bump(FAMILY, checkpoint)
    counts.bump("kandinsky22", "a")
    got = counts.counts([(FAMILY, "a"), (FAMILY, "b"), (FAMILY, "never"), ("kandinsky22", "a"), ("flux", "a")])
    assert got == pytest.approx([3, 1, 0, 1, 0], abs=0.01)


def test_bumps_queued_on_a_pipeline_count_when_it_runs(counts: Popularity, redis_client: redis.Redis) -> None:
    pipe = redis_client.pipeline(transaction=False)
    counts.bump(FAMILY, "a", pipe)
    counts.bump(FAMILY, "a", pipe)
    pipe.get("unrelated")
    read = counts.queue_counts(pipe, [(FAMILY, "a")])
    assert counts.counts([(FAMILY, "a")]) == [0]  # nothing sent yet
    results = pipe.execute()
    assert read(results) == pytest.approx([2], abs=0.01)  # the reads queued after the bumps see them


def test_a_pipelined_bump_runs_by_sha_and_survives_redis_losing_its_scripts(
        counts: Popularity, redis_client: redis.Redis) -> None:
    pipe = redis_client.pipeline(transaction=False)
    counts.bump(FAMILY, "a", pipe)
    assert [args[0][0] for args in pipe.command_stack] == ["EVALSHA"]  # not the script's text each time
    pipe.execute()
    redis_client.script_flush()  # as after a restart without persistence
    pipe = redis_client.pipeline(transaction=False)
    settle = counts.bump(FAMILY, "a", pipe)
    results = pipe.execute(raise_on_error=False)
    assert isinstance(results[0], redis.exceptions.NoScriptError)
    settle(results)
    assert counts.counts([(FAMILY, "a")]) == pytest.approx([2], abs=0.01)
    pipe = redis_client.pipeline(transaction=False)
    counts.bump(FAMILY, "a", pipe)
    assert pipe.execute() == [1]  # settle loaded it again: the next pipeline runs by SHA
    assert counts.counts([(FAMILY, "a")]) == pytest.approx([3], abs=0.01)


def test_older_requests_count_less(counts: Popularity, redis_client: redis.Redis) -> None:
    for _ in range(4):
        counts.bump(FAMILY, "old")
    age(redis_client, FAMILY, 2)  # those four are two half-lives old: they count one
    counts.bump(FAMILY, "new")
    counts.bump(FAMILY, "new")
    assert counts.counts([(FAMILY, "old"), (FAMILY, "new")]) == pytest.approx([1, 2], abs=0.01)


def test_an_old_epoch_is_rescaled_without_changing_the_counts(counts: Popularity, redis_client: redis.Redis) -> None:
    for _ in range(8):
        counts.bump(FAMILY, "steady")
    counts.bump(FAMILY, "faded")
    age(redis_client, FAMILY, popularity.RESCALE_HALF_LIVES - 2)  # steady: 8 / 2**30; faded below forgetting
    for _ in range(3):
        counts.bump(FAMILY, "steady")
    steady_before = counts.counts([(FAMILY, "steady")])[0]
    age(redis_client, FAMILY, 3)  # now past the rescale point: the next bump rescales
    before = float(redis_client.time()[0])  # Redis's clock, whole seconds, just before the rescaling bump
    counts.bump(FAMILY, "fresh")

    epoch = float(redis_client.get(keys.popularity_epoch(FAMILY)) or 0)
    assert epoch >= before  # a fresh epoch: the bump's own time, not the aged one
    assert redis_client.zscore(keys.popularity(FAMILY), "faded") is None  # forgotten
    got = counts.counts([(FAMILY, "steady"), (FAMILY, "fresh")])
    assert got == pytest.approx([steady_before / 8, 1], rel=0.01)  # three half-lives later; the new one counts 1


def test_a_family_keeps_its_most_requested_checkpoints(counts: Popularity, redis_client: redis.Redis,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(popularity, "MAX_MEMBERS", 3)
    for checkpoint in ("a", "a", "a", "b", "b", "c", "d"):
        counts.bump(FAMILY, checkpoint)
    kept = redis_client.zrange(keys.popularity(FAMILY), 0, -1)
    assert sorted(kept) == ["a", "b", "d"]  # the least requested made room; the new one got in


def test_counts_expire_with_the_family(counts: Popularity, redis_client: redis.Redis) -> None:
    counts.bump(FAMILY, "a")
    expected_ms = popularity.EXPIRE_HALF_LIVES * HALF_LIFE_S * 1000
    for key in (keys.popularity(FAMILY), keys.popularity_epoch(FAMILY)):
        assert 0.9 * expected_ms < redis_client.pttl(key) <= expected_ms


def test_a_set_without_its_epoch_starts_over(counts: Popularity, redis_client: redis.Redis) -> None:
    counts.bump(FAMILY, "a")
    counts.bump(FAMILY, "a")
    redis_client.delete(keys.popularity_epoch(FAMILY))  # e.g. lost in a failover: the scores mean nothing now
    assert counts.counts([(FAMILY, "a")]) == [0]
    counts.bump(FAMILY, "b")
    assert counts.counts([(FAMILY, "a"), (FAMILY, "b")]) == pytest.approx([0, 1], abs=0.01)


def test_unreadable_redis_raises(redis_server: str) -> None:
    dead = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=1)
    with pytest.raises(redis.RedisError):
        Popularity(dead).counts([(FAMILY, "a")])


def test_half_life_must_be_positive(redis_client: redis.Redis) -> None:
    with pytest.raises(ValueError, match="half_life_s"):
        Popularity(redis_client, 0)
