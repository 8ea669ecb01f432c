"""Alembic from inside the application: upgrade to head, read the current and head revisions."""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import AsyncIterator
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

import migrations
from storage import create_engine

MIGRATIONS_DIR = Path(migrations.__file__).parent
MIGRATION_LOCK = 0x61636172_6D696772  # "acarmigr": the PostgreSQL advisory lock one upgrade holds at a time
START_LOCK = 0x61636172_73746172  # "acarstar": held by `acar start` while it prepares (api.cli.cmd_start)


def alembic_config(database_url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("path_separator", "os")
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return config


def upgrade(database_url: str, revision: str = "head") -> None:
    """Apply the migrations up to `revision` (runs its own event loop: call it outside one).

    On PostgreSQL the whole upgrade is one transaction (transactional DDL) that first takes an advisory lock
    (pg_advisory_xact_lock): processes that start at once on one database run it one after the other, and the
    later ones find the schema at head and do nothing.
    """
    asyncio.run(_upgrade(database_url, revision))


async def _upgrade(database_url: str, revision: str) -> None:
    config = alembic_config(database_url)
    engine = create_engine(database_url, pool_size=1)
    try:
        async with engine.connect() as connection:
            if connection.dialect.name == "postgresql":
                await connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})

            def run(sync_connection: Connection) -> None:
                config.attributes["connection"] = sync_connection  # migrations/env.py runs on it
                command.upgrade(config, revision)

            await connection.run_sync(run)
            await connection.commit()  # the lock goes with the transaction
    finally:
        await engine.dispose()


@contextlib.asynccontextmanager
async def exclusive(database_url: str, key: int) -> AsyncIterator[AsyncConnection | None]:
    """Hold the PostgreSQL session-level advisory lock `key` for the block (waiting for it), on a connection of
    its own that stays idle outside any transaction; on SQLite nothing is held (one machine, one file). A
    database that does not answer raises here (OSError or SQLAlchemyError)."""
    engine = create_engine(database_url, pool_size=1)
    try:
        if engine.dialect.name != "postgresql":
            yield None
            return
        async with engine.connect() as connection:
            await connection.execution_options(isolation_level="AUTOCOMMIT")
            await connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": key})
            try:
                yield connection
            finally:
                await connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": key})
    finally:
        await engine.dispose()


@functools.cache
def head_revision() -> str | None:
    """The newest revision of the migrations shipped with this code. Read once per process: reading the script
    directory imports every migration file (about 90 ms, on the event loop), and `schema_behind` asks at every
    readiness probe and housekeeping pass, while the shipped migrations do not change under a running process."""
    return ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()


async def current_revision(engine: AsyncEngine) -> str | None:
    def _read(connection: Connection) -> str | None:
        return MigrationContext.configure(connection).get_current_revision()

    async with engine.connect() as connection:
        return await connection.run_sync(_read)


async def schema_behind(engine: AsyncEngine) -> str | None:
    """Why the schema is not at the migrations head ("database schema at X, migrations head is Y"), or None."""
    current, head = await current_revision(engine), head_revision()
    return None if current == head else f"database schema at {current or 'nothing'}, migrations head is {head}"
