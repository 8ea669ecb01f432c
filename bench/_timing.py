"""What the throughput benchmarks share: calls per second of a function or a coroutine function, on the running
thread (the scripts pin themselves to one core), in batches so the clock is read rarely.

Imported as `_timing` by the scripts (bench/ is first on sys.path when they run)."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

BATCH = 100
"""Calls between two reads of the clock."""


def rate(fn: Callable[[], object], seconds: float) -> float:
    """Calls of `fn` per second, calling it for at least `seconds`."""
    n = 0
    start = time.perf_counter()
    deadline = start + seconds
    while True:
        for _ in range(BATCH):
            fn()
        n += BATCH
        now = time.perf_counter()
        if now >= deadline:
            return n / (now - start)


async def async_rate(fn: Callable[[], Awaitable[object]], seconds: float) -> float:
    """`rate` for a coroutine function, awaited in the running loop one call after the other."""
    n = 0
    start = time.perf_counter()
    deadline = start + seconds
    while True:
        for _ in range(BATCH):
            await fn()
        n += BATCH
        now = time.perf_counter()
        if now >= deadline:
            return n / (now - start)
