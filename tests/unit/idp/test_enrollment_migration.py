"""Migration 0009: outstanding old-format activation codes (with a public id) are revoked; used and expired rows
stay for support; the attempt counter is gone and the new lookup column is empty for them."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import asyncpg
from sqlalchemy import Date, column, inspect, table, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from api import migrate
from storage.base import UTCDateTime

TEST_DB = os.environ.get("ACAR_TEST_DB", "sqlite")
DEFAULT_PG = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"


@contextlib.contextmanager
def empty_database(tmp_path: Path) -> Iterator[str]:
    """An empty database on the configured server (ACAR_TEST_DB), dropped afterwards."""
    if TEST_DB == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'migration.sqlite3'}"
        return
    base = make_url(os.environ.get("ACAR_TEST_POSTGRES_URL", DEFAULT_PG))
    admin = base.set(drivername="postgresql").render_as_string(hide_password=False)
    name = f"acar_test_{secrets.token_hex(6)}"

    async def run(statement: str) -> None:
        conn = await asyncpg.connect(admin, timeout=5)
        try:
            await conn.execute(statement)
        finally:
            await conn.close()

    asyncio.run(run(f'CREATE DATABASE "{name}"'))
    try:
        yield base.set(database=name).render_as_string(hide_password=False)
    finally:
        asyncio.run(run(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


PERSONS = table("persons", column("id"), column("fin"), column("category"), column("given_name"),
                column("family_name"), column("birthdate", Date()), column("created_at", UTCDateTime()))
OLD_CODES = table("activation_codes", column("id"), column("person_id"), column("secret_hash"), column("issued_by"),
                  column("created_at", UTCDateTime()), column("expires_at", UTCDateTime()), column("attempts"),
                  column("max_attempts"), column("used_at", UTCDateTime()))
"""The tables as revision 0006 left them."""


async def _seed(url: str) -> None:
    """A person with one outstanding, one used and one expired old-format code, at revision 0006."""
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    engine = create_async_engine(url)
    try:
        async with engine.begin() as conn:
            await conn.execute(PERSONS.insert().values(
                id="p1", fin="5ABCD12", category="citizen", given_name="Aysel", family_name="Məmmədova",
                birthdate=dt.date(1990, 5, 17), created_at=now))
            for code_id, used, expires in (("ABCD", None, now + dt.timedelta(hours=72)),
                                           ("EFGH", now, now + dt.timedelta(hours=72)),
                                           ("JKMN", None, now - dt.timedelta(hours=1))):
                await conn.execute(OLD_CODES.insert().values(
                    id=code_id, person_id="p1", secret_hash="scrypt$x$y", issued_by="cli", created_at=now,
                    expires_at=expires, attempts=2, max_attempts=5, used_at=used))
    finally:
        await engine.dispose()


async def _read(url: str) -> tuple[dict[str, tuple[bool, bool, object]], set[str]]:
    engine = create_async_engine(url)
    try:
        async with engine.connect() as conn:
            result = await conn.execute(text("SELECT id, used_at, revoked_at, lookup FROM activation_codes"))
            states = {r.id: (r.used_at is not None, r.revoked_at is not None, r.lookup) for r in result}
            columns = await conn.run_sync(lambda c: {col["name"] for col in inspect(c).get_columns("activation_codes")})
        return states, columns
    finally:
        await engine.dispose()


def test_0009_revokes_outstanding_old_codes(tmp_path: Path) -> None:
    with empty_database(tmp_path) as url:
        migrate.upgrade(url, "0006")
        asyncio.run(_seed(url))
        migrate.upgrade(url, "0009")
        states, columns = asyncio.run(_read(url))
    assert states == {"ABCD": (False, True, None),  # outstanding: revoked, it had a public id
                      "EFGH": (True, False, None),  # used: kept as it was
                      "JKMN": (False, True, None)}  # expired and unused: revoked too, harmless
    assert "lookup" in columns and not {"attempts", "max_attempts", "locked_at"} & columns
