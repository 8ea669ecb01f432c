"""Rate limits that every node shares: named budgets counted per key, on the `limits` library.

Domain-free: a budget is a name and one or more limits ("10/minute;100/hour"), a key is whatever the caller
counts by (a client IP, a client_id, a code's public part). The caller decides what a refusal means on the wire.

Storage: in process memory (`memory://`, the default: one node, counters lost on restart) or a Redis server
(`redis://host:port/db`, `rediss://...`, `redis+unix://...`): every node pointing at the same Redis spends
one budget. The strategy is limits' sliding window counter (two counters per key and window, no per-request
list): cheap on both storages, and a burst at a window's edge cannot double the budget as a fixed window would.

Keys are hashed before they reach the storage: client-supplied text (a client_id, a code's public part) is never
written to Redis as it was sent, and every key has the same short length.

Failures counted with `count` block their key once its budget is spent; `blocked` reads those blocks alone (a
dictionary look-up in memory, one Redis round trip for all keys), so work whose successes must stay cheap (the
token endpoint) pays next to nothing for the check in front of it.

Fail closed: when the storage cannot be reached, every method raises LimiterUnavailable (a limit that can be
switched off by knocking its storage over protects nothing); the caller answers 503.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from limits import RateLimitItem, parse_many
from limits.aio.storage import RedisStorage, SlidingWindowCounterSupport, Storage
from limits.aio.strategies import SlidingWindowCounterRateLimiter
from limits.errors import StorageError
from limits.storage.base import TimestampedSlidingWindow

if TYPE_CHECKING:  # redis-py is imported only where Redis is configured (RateLimiter, _storage)
    from redis.asyncio import ConnectionPool, Redis

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


MAX_LOCAL_BLOCKS = 100_000
"""Blocks a memory storage keeps before it forgets those that have run out."""
LOCAL_SWEEP_START = 10_000
"""Counters a memory storage holds before it first drops those that have run out (then each time their number has
doubled since the last sweep)."""
REDIS_TIMEOUT_SECONDS = 2.0
"""How long a Redis command or connection may take before the limiter counts the storage as unavailable."""


def _storage(url: str, prefix: str, clock: Callable[[], float]) -> tuple[Storage, ConnectionPool | None]:
    scheme = url.split("://", 1)[0].lower()
    if scheme == "memory":
        return LocalStorage(clock=clock), None
    if scheme in REDIS_SCHEMES:
        # redis-py's asyncio client (limits' "redispy" implementation) on a pool this class owns and closes;
        # errors wrapped as limits' StorageError. Imported here: a process without Redis (memory://, every `acar`
        # command, the settings) never loads redis-py (measured: 0.1-0.2 s of a command's start, 6 MB of a serving
        # process; docs/performance.md)
        from redis.asyncio import ConnectionPool

        pool = ConnectionPool.from_url(url, socket_timeout=REDIS_TIMEOUT_SECONDS,
                                       socket_connect_timeout=REDIS_TIMEOUT_SECONDS)
        return RedisStorage("async+" + url, implementation="redispy", key_prefix=prefix, wrap_exceptions=True,
                            connection_pool=pool), pool  # type: ignore[arg-type]  # limits types options as scalars
    raise ValueError(f"unsupported rate-limit storage {scheme}:// (memory:// or redis://host:port/db)")


class LocalStorage(Storage, SlidingWindowCounterSupport, TimestampedSlidingWindow):
    """limits' storage interface in this process's memory (`memory://`), for the sliding window counter strategy
    the limiter uses.

    limits' own MemoryStorage (limits 5.8) takes an asyncio.Lock per key and, on every counted hit, starts a task
    that walks every counter it holds: with 50,000 clients counted on a two-limit budget (100,000 counters, an
    hour's distinct addresses of a national service) each allowed hit cost 38 ms of the event loop, so anyone
    spreading requests over many addresses could stall the process. Here a hit is a few dictionary operations on
    the event loop's thread (21 us for the same hit among the same 100,000 counters): nothing awaits between
    reading a window and counting in it, so two hits never interleave and no lock is needed. The windows are
    limits' own (`sliding_window_keys`, two fixed windows weighted by the time left in the previous one); a counter
    lives twice its window, as in limits' storages. Counters that ran out are dropped when read, and all at once
    when their number doubles (so a sweep costs an amortised constant per new key)."""

    STORAGE_SCHEME = ["async+acar-memory"]  # noqa: RUF012 - the name limits registers the class under

    def __init__(self, uri: str | None = None, wrap_exceptions: bool = False, *,
                 clock: Callable[[], float] = time.time, **options: float | str | bool) -> None:
        super().__init__(uri, wrap_exceptions=wrap_exceptions, **options)
        self._counters: dict[str, tuple[int, float]] = {}  # key -> (count, when it runs out, clock seconds)
        self._sweep_at = LOCAL_SWEEP_START
        self._clock = clock

    @property
    def base_exceptions(self) -> type[Exception]:
        return ValueError

    def _count(self, key: str, now: float) -> int:
        entry = self._counters.get(key)
        if entry is None:
            return 0
        if entry[1] <= now:
            del self._counters[key]
            return 0
        return entry[0]

    def _add(self, key: str, expiry: float, amount: int, now: float) -> int:
        entry = self._counters.get(key)
        if entry is None or entry[1] <= now:
            if len(self._counters) >= self._sweep_at:
                self._counters = {k: e for k, e in self._counters.items() if e[1] > now}
                self._sweep_at = max(LOCAL_SWEEP_START, 2 * len(self._counters))
            entry = (0, now + expiry)
        count = entry[0] + amount
        self._counters[key] = (count, entry[1])
        return count

    def _window(self, keys: tuple[str, str], expiry: int, now: float) -> tuple[int, float, int, float]:
        """(previous count, previous window's time left, current count, current window's time left) of the windows
        `keys` names (sliding_window_keys): what limits' storages answer for the sliding window counter."""
        previous_key, current_key = keys
        previous = self._count(previous_key, now)
        previous_ttl = (1 - (((now - expiry) / expiry) % 1)) * expiry if previous else 0.0
        return previous, previous_ttl, self._count(current_key, now), (1 - ((now / expiry) % 1)) * expiry + expiry

    async def acquire_sliding_window_entry(self, key: str, limit: int, expiry: int, amount: int = 1) -> bool:
        if amount > limit:
            return False
        now = self._clock()
        keys = self.sliding_window_keys(key, expiry, now)
        previous, previous_ttl, current, _ = self._window(keys, expiry, now)
        if math.floor(previous * previous_ttl / expiry + current) + amount > limit:
            return False
        self._add(keys[1], 2 * expiry, amount, now)
        return True

    async def get_sliding_window(self, key: str, expiry: int) -> tuple[int, float, int, float]:
        now = self._clock()
        return self._window(self.sliding_window_keys(key, expiry, now), expiry, now)

    async def clear_sliding_window(self, key: str, expiry: int) -> None:
        for name in self.sliding_window_keys(key, expiry, self._clock()):
            self._counters.pop(name, None)

    async def incr(self, key: str, expiry: int, amount: int = 1) -> int:
        return self._add(key, expiry, amount, self._clock())

    async def get(self, key: str) -> int:
        return self._count(key, self._clock())

    async def get_expiry(self, key: str) -> float:
        now = self._clock()
        entry = self._counters.get(key)
        return entry[1] if entry is not None and entry[1] > now else now

    async def check(self) -> bool:
        return True

    async def reset(self) -> int | None:
        held = len(self._counters)
        self._counters.clear()
        return held

    async def clear(self, key: str) -> None:
        self._counters.pop(key, None)


class RateLimiter:
    """Budgets counted per key in one storage (memory or Redis), shared by every node on the same storage."""

    def __init__(self, url: str = "memory://", *, prefix: str = "acar", clock: Callable[[], float] = time.time) -> None:
        self.url = url
        self.prefix = prefix
        self._storage, self._pool = _storage(url, prefix, clock)
        self._redis: Redis | None = None
        # what an unreachable storage raises: limits' StorageError and, where Redis is configured, redis-py's own
        # errors from the block keys this class reads and writes itself
        self._storage_errors: tuple[type[Exception], ...] = (StorageError,)
        self._redis_errors: tuple[type[Exception], ...] = ()  # read only where Redis is configured (`blocked`)
        if self._pool is not None:
            from redis.asyncio import Redis
            from redis.exceptions import RedisError

            self._redis = Redis(connection_pool=self._pool)
            self._storage_errors, self._redis_errors = (StorageError, RedisError), (RedisError, OSError)
        self._blocks: dict[str, float] = {}  # memory storage: block key -> until (clock seconds)
        self._strategy = SlidingWindowCounterRateLimiter(self._storage)
        self._clock = clock

    @property
    def shared(self) -> bool:
        """True when the counters live outside this process (Redis), so other nodes see them."""
        return not isinstance(self._storage, LocalStorage)

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

    async def count(self, budget: Budget, key: str) -> Verdict:
        """Count one failure of `key` against `budget`; once the budget has no room left, the key is blocked
        (see `blocked`) until the limit that refused has room again, and the verdict says for how long."""
        ids = self._ids(budget, key)
        try:
            verdict = ALLOWED
            for item in budget.limits:
                if not await self._strategy.hit(item, *ids):
                    verdict = await self._refusal(budget, ids)
                    break
            else:
                for item in budget.limits:
                    if not await self._strategy.test(item, *ids):
                        verdict = await self._refusal(budget, ids)
                        break
            if not verdict.allowed:
                await self._block(self._block_key(budget, key), verdict.retry_after)
        except self._storage_errors as exc:
            raise LimiterUnavailable(f"rate-limit storage unavailable: {type(exc).__name__}") from None
        return verdict

    @property
    def may_block(self) -> bool:
        """False when `blocked` would surely answer (0, None) without looking: in-process storage holding no block
        (so a caller need not even work out its keys)."""
        return self._redis is not None or bool(self._blocks)

    async def blocked(self, budget: Budget, keys: Sequence[str]) -> tuple[int, int | None]:
        """(seconds left, index in `keys`) of the first key that `count` has blocked, or (0, None): one dictionary
        look-up per key in memory, one Redis round trip for all keys. The cheap check in front of work whose
        successes must cost nothing (the token endpoint)."""
        if self._redis is None and not self._blocks:
            return 0, None  # nothing blocked in this process: no hashing at all
        names = [self._block_key(budget, key) for key in keys]
        if self._redis is None:
            now = self._clock()
            for index, name in enumerate(names):
                until = self._blocks.get(name)
                if until is not None and until > now:
                    return max(1, math.ceil(until - now)), index
            return 0, None
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for name in names:
                    pipe.pttl(name)
                ttls = await pipe.execute()
        except self._redis_errors as exc:
            raise LimiterUnavailable(f"rate-limit storage unavailable: {type(exc).__name__}") from None
        for index, ttl in enumerate(ttls):
            if isinstance(ttl, int) and ttl > 0:
                return max(1, math.ceil(ttl / 1000)), index
        return 0, None

    def _block_key(self, budget: Budget, key: str) -> str:
        return ":".join((self.prefix, "block", *self._ids(budget, key)[1:]))

    async def _block(self, name: str, seconds: int) -> None:
        if self._redis is not None:
            await self._redis.set(name, b"1", px=seconds * 1000)
            return
        now = self._clock()
        if len(self._blocks) >= MAX_LOCAL_BLOCKS:  # forget the blocks that have run out
            self._blocks = {k: until for k, until in self._blocks.items() if until > now}
        self._blocks[name] = max(self._blocks.get(name, 0.0), now + seconds)

    async def _refusal(self, budget: Budget, ids: tuple[str, str, str]) -> Verdict:
        """Refused until the latest-resetting exhausted limit has room again (at least one second)."""
        now = self._clock()
        wait = 1.0
        for item in budget.limits:
            stats = await self._strategy.get_window_stats(item, *ids)
            if stats.remaining <= 0:
                # limits 5.8's Redis sliding window sometimes reports a reset time of "now" for a full window;
                # then the whole window is the (conservative) wait
                left = stats.reset_time - now
                wait = max(wait, left if left >= 1 else float(item.get_expiry()))
        return Verdict(False, max(1, math.ceil(wait)))

    async def clear(self, budget: Budget, key: str) -> None:
        ids = self._ids(budget, key)
        for item in budget.limits:
            await self._strategy.clear(item, *ids)

    async def reset(self) -> None:
        """Forget every counter of this storage under this prefix (tests; an operator's `reset`)."""
        await self._storage.reset()
        self._blocks.clear()
        if self._redis is not None:
            names = [name async for name in self._redis.scan_iter(match=f"{self.prefix}:block:*", count=1000)]
            if names:
                await self._redis.delete(*names)

    async def check(self) -> bool:
        """True when the storage answers (readiness)."""
        try:
            return await self._storage.check()
        except Exception:  # noqa: BLE001 - any storage failure means "not ready"
            return False

    async def close(self) -> None:
        """Close the Redis connections (a memory storage holds none)."""
        if self._redis is not None:
            await self._redis.aclose()
        if self._pool is not None:
            await self._pool.aclose()
