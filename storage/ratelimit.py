"""Rate limits that every node shares: named budgets counted per key, on the `limits` library.

Domain-free: a budget is a name and one or more limits ("10/minute;100/hour"), a key is whatever the caller
counts by (a client IP, a client_id, a code's public part). The caller decides what a refusal means on the wire.

Storage: in process memory (`memory://`, the default: one node, counters lost on restart) or a Redis server
(`redis://host:port/db`, `rediss://...`, `redis+unix://...`): every node pointing at the same Redis spends
one budget. The strategy is limits' sliding window counter (two counters per key and window, no per-request
list): cheap on both storages, and a burst at a window's edge cannot double the budget as a fixed window would.

Keys are hashed before they reach the storage: client-supplied text (a client_id, a code's public part) is never
written to Redis as it was sent, and every key has the same short length.

Fail closed: when the storage cannot be reached, `hit` and `test` raise LimiterUnavailable (a limit that can be
switched off by knocking its storage over protects nothing); the caller answers 503.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from limits import RateLimitItem, parse_many
from limits.aio.storage import MemoryStorage, RedisStorage, Storage
from limits.aio.strategies import SlidingWindowCounterRateLimiter
from limits.errors import StorageError
from redis.asyncio import ConnectionPool

REDIS_SCHEMES = ("redis", "rediss", "redis+unix")
"""The storage URL schemes of a Redis server (as redis-py reads them); `memory://` is the process's own."""


class LimiterUnavailable(Exception):
    """The rate-limit storage did not answer: the request is refused rather than counted nowhere."""


@dataclass(frozen=True, slots=True)
class Budget:
    """A named budget: each of `limits` must allow a request for it to pass (e.g. 10/minute and 100/hour)."""

    name: str
    limits: tuple[RateLimitItem, ...]

    @classmethod
    def parse(cls, name: str, spec: str) -> Budget:
        """`spec` in limits' notation ("10/minute;100/hour"); ValueError when it cannot be read or is empty."""
        items = tuple(parse_many(spec))
        if not items:
            raise ValueError(f"no rate limit in {spec!r}")
        return cls(name, items)


@dataclass(frozen=True, slots=True)
class Verdict:
    """What the limiter decided: allowed, or refused for `retry_after` whole seconds (RFC 9110 section 10.2.3)."""

    allowed: bool
    retry_after: int = 0


ALLOWED = Verdict(True)


REDIS_TIMEOUT_SECONDS = 2.0
"""How long a Redis command or connection may take before the limiter counts the storage as unavailable."""


def _storage(url: str, prefix: str) -> tuple[Storage, ConnectionPool | None]:
    scheme = url.split("://", 1)[0].lower()
    if scheme == "memory":
        return MemoryStorage(), None
    if scheme in REDIS_SCHEMES:
        # redis-py's asyncio client (limits' "redispy" implementation) on a pool this class owns and closes;
        # errors wrapped as limits' StorageError
        pool = ConnectionPool.from_url(url, socket_timeout=REDIS_TIMEOUT_SECONDS,
                                       socket_connect_timeout=REDIS_TIMEOUT_SECONDS)
        return RedisStorage("async+" + url, implementation="redispy", key_prefix=prefix, wrap_exceptions=True,
                            connection_pool=pool), pool  # type: ignore[arg-type]  # limits types options as scalars
    raise ValueError(f"unsupported rate-limit storage {scheme}:// (memory:// or redis://host:port/db)")


class RateLimiter:
    """Budgets counted per key in one storage (memory or Redis), shared by every node on the same storage."""

    def __init__(self, url: str = "memory://", *, prefix: str = "acar", clock: Callable[[], float] = time.time) -> None:
        self.url = url
        self.prefix = prefix
        self._storage, self._pool = _storage(url, prefix)
        self._strategy = SlidingWindowCounterRateLimiter(self._storage)
        self._clock = clock

    @property
    def shared(self) -> bool:
        """True when the counters live outside this process (Redis), so other nodes see them."""
        return not isinstance(self._storage, MemoryStorage)

    def _ids(self, budget: Budget, key: str) -> tuple[str, str, str]:
        digest = hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()[:32]
        return self.prefix, budget.name, digest

    async def hit(self, budget: Budget, key: str, *, cost: int = 1) -> Verdict:
        """Spend `cost` of each of `budget`'s limits for `key`, or refuse when one has no room left (the limits
        before it keep what was spent: a refused request still counts against the shorter windows)."""
        ids = self._ids(budget, key)
        try:
            for item in budget.limits:
                if not await self._strategy.hit(item, *ids, cost=cost):
                    return await self._refusal(budget, ids)
        except StorageError as exc:
            raise LimiterUnavailable(f"rate-limit storage unavailable: {type(exc.storage_error).__name__}") from None
        return ALLOWED

    async def test(self, budget: Budget, key: str) -> Verdict:
        """Whether `key` has room left in `budget`, spending nothing (a check before costly work)."""
        ids = self._ids(budget, key)
        try:
            for item in budget.limits:
                if not await self._strategy.test(item, *ids):
                    return await self._refusal(budget, ids)
        except StorageError as exc:
            raise LimiterUnavailable(f"rate-limit storage unavailable: {type(exc.storage_error).__name__}") from None
        return ALLOWED

    async def _refusal(self, budget: Budget, ids: tuple[str, str, str]) -> Verdict:
        """Refused until the latest-resetting exhausted limit has room again (at least one second)."""
        now = self._clock()
        wait = 1.0
        for item in budget.limits:
            stats = await self._strategy.get_window_stats(item, *ids)
            if stats.remaining <= 0:
                wait = max(wait, stats.reset_time - now)
        return Verdict(False, max(1, math.ceil(wait)))

    async def clear(self, budget: Budget, key: str) -> None:
        ids = self._ids(budget, key)
        for item in budget.limits:
            await self._strategy.clear(item, *ids)

    async def reset(self) -> None:
        """Forget every counter of this storage under this prefix (tests; an operator's `reset`)."""
        await self._storage.reset()

    async def check(self) -> bool:
        """True when the storage answers (readiness)."""
        try:
            return await self._storage.check()
        except Exception:  # noqa: BLE001 - any storage failure means "not ready"
            return False

    async def close(self) -> None:
        """Close the Redis connections (a memory storage holds none)."""
        if self._pool is not None:
            await self._pool.aclose()
