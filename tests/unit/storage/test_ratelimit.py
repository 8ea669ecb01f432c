"""storage.ratelimit on both storages: process memory and a real Redis server (shared by every node)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import AsyncIterator

import pytest
import redis.asyncio

from storage.ratelimit import Budget, LimiterUnavailable, RateLimiter
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
