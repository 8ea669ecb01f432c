"""A clock tests move by hand (services take a `clock` callable, STYLE habit 4)."""

from __future__ import annotations

import datetime as dt


class Clock:
    def __init__(self, now: dt.datetime | None = None) -> None:
        self.now = now or dt.datetime.now(dt.UTC)

    def __call__(self) -> dt.datetime:
        return self.now
