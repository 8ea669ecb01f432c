"""Clocks tests move by hand (services take a `clock` callable, STYLE habit 4)."""

from __future__ import annotations

import datetime as dt
import time


class Clock:
    def __init__(self, now: dt.datetime | None = None) -> None:
        self.now = now or dt.datetime.now(dt.UTC)

    def __call__(self) -> dt.datetime:
        return self.now


class Tick:
    """Seconds, as time.time() counts them: for the clocks that take a float."""

    def __init__(self, now: float | None = None) -> None:
        self.now = time.time() if now is None else now

    def __call__(self) -> float:
        return self.now
