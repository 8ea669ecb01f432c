"""Async engine and session factories for PostgreSQL (asyncpg, production) and SQLite (aiosqlite, embedded)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import event
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.pool import ConnectionPoolEntry

SQLITE_BUSY_TIMEOUT_SECONDS = 10
"""How long an SQLite writer waits for the write lock: another process's (busy_timeout), or in this process a
writing unit's turn (storage.direct.SessionDirect)."""


def is_sqlite(url: str) -> bool:
    """True when the URL names an SQLite database."""
    return url.startswith("sqlite")


def _sqlite_pragmas(dbapi_connection: DBAPIConnection, _record: ConnectionPoolEntry) -> None:
    cursor = dbapi_connection.cursor()
    # WAL lets readers proceed during a write; busy_timeout makes concurrent writers (two processes,
    # the CLI beside the server) wait instead of failing with "database is locked". synchronous=NORMAL is
    # safe with WAL (an OS crash can lose the last commits, never corrupt the file) and spares each commit an
    # fsync; the same on storage.direct's connection.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_SECONDS * 1000}")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def dialect_insert(session: AsyncSession) -> Any:
    """The INSERT construct of the session's dialect, for ON CONFLICT DO NOTHING (PostgreSQL and SQLite both
    spell it the same way, through their own dialect modules)."""
    return pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert


def create_engine(url: str, *, echo: bool = False, pool_size: int = 5) -> AsyncEngine:
    """Create the async engine; SQLite gets WAL mode, a busy timeout and enforced foreign keys.

    The pool keeps `pool_size` connections and opens up to as many again for a burst (at most 2 x pool_size).
    """
    # hide_parameters: SQL parameters (which can hold personal data) never appear in logged errors
    engine = create_async_engine(url, echo=echo, pool_pre_ping=True, hide_parameters=True, pool_size=pool_size,
                                 max_overflow=pool_size)
    if is_sqlite(url):
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
    return engine


def create_session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """Sessions that keep loaded objects usable after commit (the unit of work commits in api/)."""
    return async_sessionmaker(engine, expire_on_commit=False)
