"""storage.ratelimit on both storages: process memory and a real Redis server (shared by every node)."""

from __future__ import annotations

import asyncio
import random
import subprocess
import sys
from collections.abc import AsyncIterator

import pytest
import redis.asyncio
from limits.aio.storage import MemoryStorage
from limits.aio.strategies import SlidingWindowCounterRateLimiter

from storage.ratelimit import LOCAL_SWEEP_START, Budget, LimiterUnavailable, LocalStorage, RateLimiter
from tests.conftest import REDIS_URL

THREE = Budget.parse("three", "3/minute")


@pytest.fixture(params=["memory", "redis"])
async def limiter(request: pytest.FixtureRequest) -> AsyncIterator[RateLimiter]:
    if request.param == "memory":
        built = RateLimiter("memory://", prefix="test")
    else:
        prefix = request.getfixturevalue("redis_prefix")
        built = RateLimiter(REDIS_URL, prefix=prefix)
    try:
        yield built
    finally:
        await built.close()


async def test_budget_is_spent_per_key_and_refusals_say_when_to_retry(limiter: RateLimiter) -> None:
    assert (await limiter.test(THREE, "ip:192.0.2.1")).allowed  # test spends nothing
    for _ in range(3):
        assert (await limiter.hit(THREE, "ip:192.0.2.1")).allowed
    refused = await limiter.hit(THREE, "ip:192.0.2.1")
    assert not refused.allowed
    assert 1 <= refused.retry_after <= 60
    assert not (await limiter.test(THREE, "ip:192.0.2.1")).allowed
    assert (await limiter.hit(THREE, "ip:192.0.2.2")).allowed  # another key, its own budget
    await limiter.clear(THREE, "ip:192.0.2.1")
    assert (await limiter.hit(THREE, "ip:192.0.2.1")).allowed


async def test_every_limit_of_a_budget_applies(limiter: RateLimiter) -> None:
    budget = Budget.parse("two", "5/minute;2/hour")
    assert (await limiter.hit(budget, "k")).allowed
    assert (await limiter.hit(budget, "k")).allowed
    refused = await limiter.hit(budget, "k")
    # the third hit is within 5/minute: the hourly limit is the one that refuses. Its retry_after is not asserted
    # above 60 s: the sliding window counter's estimate falls below that in the last minute of a clock hour
    assert not refused.allowed and refused.retry_after >= 1


async def test_concurrent_hits_never_exceed_the_budget(limiter: RateLimiter) -> None:
    verdicts = await asyncio.gather(*(limiter.hit(Budget.parse("ten", "10/minute"), "k") for _ in range(50)))
    assert sum(v.allowed for v in verdicts) == 10


async def test_nodes_on_one_redis_share_one_budget(redis_prefix: str) -> None:
    """Two limiters (two nodes: each its own connection pool) on the same Redis spend one budget."""
    first, second = RateLimiter(REDIS_URL, prefix=redis_prefix), RateLimiter(REDIS_URL, prefix=redis_prefix)
    try:
        assert first.shared and second.shared
        assert (await first.hit(THREE, "client:portal")).allowed
        assert (await second.hit(THREE, "client:portal")).allowed
        assert (await first.hit(THREE, "client:portal")).allowed
        assert not (await second.hit(THREE, "client:portal")).allowed
        assert not (await first.test(THREE, "client:portal")).allowed
    finally:
        await first.close()
        await second.close()


async def test_keys_reach_redis_hashed_under_the_prefix(redis_prefix: str) -> None:
    limiter = RateLimiter(REDIS_URL, prefix=redis_prefix)
    client = redis.asyncio.Redis.from_url(REDIS_URL)
    try:
        await limiter.hit(THREE, "code:SECRETPART")
        keys = [k.decode() async for k in client.scan_iter(match=redis_prefix + "*")]
        assert keys
        assert all("SECRETPART" not in k for k in keys)
    finally:
        await client.aclose()
        await limiter.close()


async def test_an_unreachable_redis_fails_closed() -> None:
    limiter = RateLimiter("redis://127.0.0.1:1/0", prefix="unreachable")
    try:
        with pytest.raises(LimiterUnavailable):
            await limiter.hit(THREE, "k")
        with pytest.raises(LimiterUnavailable):
            await limiter.test(THREE, "k")
        with pytest.raises(LimiterUnavailable):
            await limiter.count(THREE, "k")
        with pytest.raises(LimiterUnavailable):  # the block keys, read by redis-py itself
            await limiter.blocked(THREE, ["k"])
        assert not await limiter.check()
    finally:
        await limiter.close()


@pytest.mark.nodb
def test_a_process_without_redis_never_loads_redis_py() -> None:
    """The settings (every `acar` command) and an in-memory limiter import no redis-py: it costs start-up time and
    memory only where ACAR_RATE_LIMIT_STORAGE names a Redis server."""
    probe = ("import sys, api.settings; from storage.ratelimit import RateLimiter; RateLimiter('memory://'); "
             "print('redis' in sys.modules); RateLimiter('redis://127.0.0.1:6379/0'); print('redis' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True).stdout
    assert out.split() == ["False", "True"]


def test_budgets_and_storages_that_cannot_be_read_are_refused() -> None:
    for spec in ("", "many", "3/fortnight"):
        with pytest.raises(ValueError):  # noqa: PT011 - limits' own message
            Budget.parse("x", spec)
    with pytest.raises(ValueError, match="unsupported rate-limit storage"):
        RateLimiter("memcached://127.0.0.1:11211")


async def test_failures_block_a_key_once_its_budget_is_spent(limiter: RateLimiter) -> None:
    """count/blocked: the cheap check in front of the token endpoint (successes only read the blocks)."""
    assert await limiter.blocked(THREE, ["client:a", "ip:192.0.2.1"]) == (0, None)
    assert (await limiter.count(THREE, "client:a")).allowed
    assert (await limiter.count(THREE, "client:a")).allowed
    third = await limiter.count(THREE, "client:a")  # the budget is spent: the key is blocked from now on
    assert not third.allowed and 1 <= third.retry_after <= 60
    seconds, index = await limiter.blocked(THREE, ["ip:192.0.2.1", "client:a"])
    assert index == 1 and 1 <= seconds <= 60
    assert await limiter.blocked(THREE, ["client:b"]) == (0, None)
    await limiter.reset()
    assert await limiter.blocked(THREE, ["client:a"]) == (0, None)


class _Clock:
    """A clock the test moves; stands in for `time` in limits' memory storage module too."""

    def __init__(self, now: float) -> None:
        self.now = now

    def time(self) -> float:
        return self.now

    def __call__(self) -> float:
        return self.now


async def test_the_memory_storage_decides_as_limits_own(monkeypatch: pytest.MonkeyPatch) -> None:
    """LocalStorage (memory://) against limits' MemoryStorage under limits' sliding window counter, driven by one
    clock through a seeded random sequence of hits, tests and clears on a few keys and budgets, across window
    edges and expiries: the same verdict and the same window every time."""
    clock = _Clock(1_800_000_000.0)
    monkeypatch.setattr("limits.aio.storage.memory.time", clock)
    ours = SlidingWindowCounterRateLimiter(LocalStorage(clock=clock))
    reference = SlidingWindowCounterRateLimiter(MemoryStorage())
    items = [*Budget.parse("b", "3/second;5/10 seconds;20/minute").limits]
    generator = random.Random(7)  # noqa: S311 - a repeatable sequence, not a secret
    for _ in range(3000):
        clock.now += generator.choice((0.0, 0.01, 0.3, 0.9, 2.5, 7.0, 61.0))
        item, key, action = generator.choice(items), generator.choice("abc"), generator.random()
        if action < 0.7:
            cost = generator.choice((1, 1, 1, 2, 9))
            assert await ours.hit(item, "p", key, cost=cost) == await reference.hit(item, "p", key, cost=cost)
        elif action < 0.95:
            assert await ours.test(item, "p", key) == await reference.test(item, "p", key)
        else:
            await ours.clear(item, "p", key)
            await reference.clear(item, "p", key)
        stats, expected = await ours.get_window_stats(item, "p", key), await reference.get_window_stats(item, "p", key)
        # the strategy adds the window's time left to the real clock's now, read once for each storage
        assert stats.remaining == expected.remaining
        assert stats.reset_time == pytest.approx(expected.reset_time, abs=0.05)


async def test_the_memory_storage_drops_counters_that_ran_out() -> None:
    """A counter lives twice its window; the ones that ran out go when read, and all at once when their number
    reaches the sweep mark (which then follows the number still live), so spraying keys costs no growing sweeps."""
    clock = _Clock(1_800_000_000.0)
    limiter = RateLimiter("memory://", clock=clock)
    storage = limiter._storage
    assert isinstance(storage, LocalStorage)
    one = Budget.parse("one", "1/second")
    for n in range(LOCAL_SWEEP_START):
        assert (await limiter.hit(one, f"ip:{n}")).allowed
    assert len(storage._counters) == LOCAL_SWEEP_START
    assert not (await limiter.hit(one, "ip:0")).allowed
    clock.now += 2.0  # every counter has run out (1 s window, kept 2 s)
    assert (await limiter.hit(one, "ip:new")).allowed  # the sweep mark was reached: the old counters are gone
    assert len(storage._counters) == 1
    assert (await limiter.hit(one, "ip:0")).allowed
    assert not limiter.shared


async def test_a_hit_in_memory_starts_no_task() -> None:
    """limits' MemoryStorage started a task per counted hit that walked every counter (38 ms per hit among 100,000
    counters); a hit of the memory storage is work on the caller's turn of the event loop and nothing else."""
    limiter = RateLimiter("memory://")
    two = Budget.parse("two", "1000/minute;10000/hour")
    for n in range(200):
        await limiter.hit(two, f"ip:{n}")
    before = asyncio.all_tasks()
    assert (await limiter.hit(two, "ip:0")).allowed and (await limiter.test(two, "ip:1")).allowed
    assert asyncio.all_tasks() == before
