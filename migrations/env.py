"""Alembic environment: runs migrations over the async engine (asyncpg or aiosqlite)."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from alembic import context
from sqlalchemy.engine import Connection

import idp.sql.models  # noqa: F401  - registers the tables
import keys.models  # noqa: F401
import signing.sql.models  # noqa: F401
import storage.audit  # noqa: F401
from storage import Base, create_engine

config = context.config
target_metadata = Base.metadata


def _url() -> str:
    url = config.get_main_option("sqlalchemy.url")
    if url:
        return url
    env = os.environ.get("ACAR_DATABASE_URL")
    if env:
        return env
    secret = os.environ.get("ACAR_DATABASE_URL_FILE")  # a Docker or Kubernetes secret (api.settings)
    if secret:
        return Path(secret).read_text().strip().splitlines()[0].strip()
    data_dir = Path(os.environ.get("ACAR_DATA_DIR", "var"))
    return f"sqlite+aiosqlite:///{(data_dir / 'acar.sqlite3').resolve()}"


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


async def _run_async() -> None:
    engine = create_engine(_url())
    async with engine.connect() as connection:
        await connection.run_sync(_run)
        await connection.commit()
    await engine.dispose()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
    else:
        asyncio.run(_run_async())


if context.is_offline_mode():
    raise SystemExit("offline migrations are not supported: run against a database")
run_migrations_online()
