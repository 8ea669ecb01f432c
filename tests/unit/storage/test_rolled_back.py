"""The `rolled_back` fixture isolates tests without a wipe, on SQLite and PostgreSQL.

A row the code under test commits is visible to the test's later sessions, never to another connection, and is
gone after the test; a unit of work that fails inside the test still writes nothing. The first two tests run in
file order: the second looks, from a connection of its own, for what the first committed.
"""

from __future__ import annotations

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from idp.core.errors import PersonExists
from idp.sql.models import Person
from idp.sql.persons import PersonService

FIN = "9ROLLBK"
"""The person the first test commits (no other test uses this FIN)."""


async def _outside(engine: AsyncEngine) -> int:
    """How many rows with FIN another connection of the test database sees."""
    async with engine.connect() as connection:
        return (await connection.execute(select(func.count()).select_from(Person).where(Person.fin == FIN))
                ).scalar_one()


async def test_a_commit_inside_the_code_under_test_stays_inside_the_test(
    rolled_back: async_sessionmaker[AsyncSession], rollback_engine: AsyncEngine
) -> None:
    async with rolled_back() as session, session.begin():  # commits (a savepoint's release)
        await PersonService(session).add(fin=FIN, given_name="Rövşən", family_name="Əliyev")
    async with rolled_back() as session:
        session.add(Person(fin="9ROLLB2", given_name="A", family_name="B", category="citizen"))
        await session.commit()  # an explicit commit() is a savepoint too
    async with rolled_back() as session:  # a later session sees both, as on the real engine
        found = (await session.execute(select(Person.fin).where(Person.fin.in_([FIN, "9ROLLB2"])))).scalars()
        assert sorted(found) == sorted([FIN, "9ROLLB2"])
    assert await _outside(rollback_engine) == 0  # no other connection does: nothing was committed


async def test_the_previous_tests_rows_are_gone(rolled_back: async_sessionmaker[AsyncSession],
                                                 rollback_engine: AsyncEngine) -> None:
    assert await _outside(rollback_engine) == 0
    async with rolled_back() as session:
        assert (await session.execute(select(func.count()).select_from(Person))).scalar_one() == 0


async def _add_one_then_a_duplicate(sessions: async_sessionmaker[AsyncSession]) -> None:
    async with sessions() as session, session.begin():
        session.add(Person(fin="9ROLLB4", given_name="C", family_name="D", category="citizen"))
        await session.flush()
        await PersonService(session).add(fin="9ROLLB3", given_name="C", family_name="D")


async def test_a_failed_unit_writes_nothing_and_keeps_the_earlier_ones(
    rolled_back: async_sessionmaker[AsyncSession]
) -> None:
    async with rolled_back() as session, session.begin():
        await PersonService(session).add(fin="9ROLLB3", given_name="A", family_name="B")
    with pytest.raises(PersonExists):
        await _add_one_then_a_duplicate(rolled_back)
    async with rolled_back() as session:
        fins = (await session.execute(select(Person.fin))).scalars().all()
    assert fins == ["9ROLLB3"]  # the failed unit's first row went with it, the committed one stayed


async def test_a_session_closed_without_commit_leaves_nothing(rolled_back: async_sessionmaker[AsyncSession]) -> None:
    """As on the real engine: what a session flushed but never committed is gone when it closes."""
    async with rolled_back() as session:
        await PersonService(session).add(fin="9ROLLB7", given_name="A", family_name="B")
        await session.flush()
    async with rolled_back() as session:
        assert (await session.execute(select(func.count()).select_from(Person))).scalar_one() == 0


async def test_one_session_for_the_whole_test(db_session: AsyncSession) -> None:
    await PersonService(db_session).add(fin="9ROLLB5", given_name="A", family_name="B")
    await db_session.commit()
    await PersonService(db_session).add(fin="9ROLLB6", given_name="A", family_name="B")
    await db_session.rollback()  # back to the commit, not to the test's start
    fins = (await db_session.execute(select(Person.fin))).scalars().all()
    assert fins == ["9ROLLB5"]
