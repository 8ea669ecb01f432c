"""Setup steps run once and replayed: the rows an expensive, deterministic setup step writes are recorded the first
time it runs, and later tests get copies of those rows instead of running it again.

What `initialized` (tests/conftest.py) does for the token keys, for any step a test module names: the PKI of
`acar init` (keys generated, certificates and CRLs signed: 100-250 ms), a person with an enrolled passkey (two
scrypt hashes of the activation code, the WebAuthn ceremony: about 200 ms). Each test still starts from an empty
database (the `services` fixture's wipe is untouched); a replayed step gives it the same rows the real step gave the
first test: same primary keys (so the session's software key store already holds the unsealed keys), same content.

A recording is kept for one (step name, settings, row counts before the step): a test whose settings differ, or that
wrote other rows first, runs the step for real (and records it for the tests like it). Audit events are moved to the
time of the replay (their order is the test's); every other column is copied as recorded (certificates keep their
validity, which their DER fixes anyway). A step may only add rows: one that changes or deletes a row it found is
refused (it cannot be replayed by adding rows). A step's effects outside the database are the caller's to redo
(`after`), and its result is copied for each test (`copy`, deepcopy by default: a test may change its copy).
"""

from __future__ import annotations

import copy as copying
import datetime as dt
import functools
import json
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy import Table, TextClause, func, select, text
from sqlalchemy.ext.asyncio import AsyncConnection

from api.deps import Services
from storage import Base
from storage.audit import AuditEvent
from storage.base import utcnow

T = TypeVar("T")

@functools.cache
def _tables() -> list[Table]:
    """Every table, parents before children (the order rows are inserted in); read at first use, when every model
    is imported."""
    return list(Base.metadata.sorted_tables)


@functools.cache
def _counting() -> TextClause:
    """The number of rows of every table, in one round trip (text: compiling it as an expression would cost each
    test's new engine 10-20 ms)."""
    return text("SELECT " + ", ".join(f'(SELECT count(*) FROM "{t.name}")' for t in _tables()))  # noqa: S608

Rows = dict[str, dict[tuple[Any, ...], dict[str, Any]]]
"""table name -> primary key -> the row's columns."""


@dataclass(frozen=True)
class _Recording:
    rows: list[tuple[Table, list[dict[str, Any]]]]
    result: Any
    started_at: dt.datetime


async def _counts(conn: AsyncConnection) -> tuple[int, ...]:
    return tuple((await conn.execute(_counting())).one())


async def _rows(conn: AsyncConnection) -> Rows:
    out: Rows = {}
    for table in _tables():
        keys = [c.name for c in table.primary_key]
        out[table.name] = {tuple(row[k] for k in keys): dict(row)
                           for row in (await conn.execute(table.select())).mappings()}
    return out


def _added(before: Rows, after: Rows, name: str) -> list[tuple[Table, list[dict[str, Any]]]]:
    added = []
    for table in _tables():
        old, new = before[table.name], after[table.name]
        changed = [key for key, row in old.items() if new.get(key) != row]
        if changed:
            raise AssertionError(f"setup step {name!r} changed or deleted rows of {table.name} {changed}: it cannot "
                                 "be replayed (only a step that adds rows can)")
        rows = [row for key, row in new.items() if key not in old]
        if rows:
            added.append((table, rows))
    return added


class Replays:
    """Recordings of setup steps, kept for a test session (the `replays` fixture)."""

    def __init__(self) -> None:
        self._recordings: dict[Hashable, _Recording] = {}

    async def run(self, services: Services, name: str, step: Callable[[], Awaitable[T]], *,
                  copy: Callable[[T], T] = copying.deepcopy, after: Callable[[], object] | None = None) -> T:
        """`step()`'s result, and the rows it writes in `services`' database: by running it, or by replaying the
        rows it wrote when it last ran with these settings on a database with as many rows in each table."""
        settings = services.settings
        if settings.key_backend != "software":  # keys in a token are not rows: run it
            return await step()
        async with services.engine.connect() as conn:
            counts = await _counts(conn)
        key = (name, json.dumps(settings.model_dump(mode="json", exclude={"data_dir"}), sort_keys=True), counts)
        recording = self._recordings.get(key)
        if recording is None:
            async with services.engine.connect() as conn:
                before = await _rows(conn)
            started_at = utcnow()
            result = await step()
            async with services.engine.connect() as conn:
                added = _added(before, await _rows(conn), name)
            self._recordings[key] = _Recording(added, copy(result), started_at)
            return result
        await _insert(services, recording)
        if after is not None:
            after()
        return copy(recording.result)


async def _insert(services: Services, recording: _Recording) -> None:
    shift = utcnow() - recording.started_at
    postgresql = services.engine.dialect.name == "postgresql"
    async with services.engine.begin() as conn:
        for table, rows in recording.rows:
            if table.name == AuditEvent.__tablename__:
                await conn.execute(table.insert(), [{**row, "occurred_at": row["occurred_at"] + shift} for row in rows])
            else:
                await conn.execute(table.insert(), rows)
            column = table.autoincrement_column
            if postgresql and column is not None:  # the identity goes on after the copied ids, as after the step
                await conn.execute(select(func.setval(func.pg_get_serial_sequence(table.name, column.name),
                                                      select(func.max(column)).scalar_subquery())))
