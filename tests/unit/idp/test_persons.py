from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from idp.core.errors import InvalidIdentifier, PersonExists, PersonNotFound
from idp.sql.models import Person
from idp.sql.persons import PersonService, normalize_fin
from storage.audit import AuditEvent

Sessions = async_sessionmaker[AsyncSession]
"""`rolled_back`: this module's tests use one session at a time and no other connection (no wipe)."""


@pytest.mark.parametrize("value", ["5ABC12D", "5abc12d", " 1234567 ", "AAAAAAA"])
def test_fin_accepts_seven_letters_or_digits(value: str) -> None:
    assert normalize_fin(value) == value.strip().upper()


@pytest.mark.parametrize("value", ["", "123456", "12345678", "5AB-12D", "5ABÇ12D", "5AB 12D", "５ABC12D", "12345ß"])
def test_fin_rejects_malformed(value: str) -> None:
    with pytest.raises(InvalidIdentifier, match="7 Latin letters or digits"):
        normalize_fin(value)


async def _count(sessions: Sessions) -> int:
    async with sessions() as session:
        return (await session.execute(select(func.count()).select_from(Person))).scalar_one()


async def test_add_and_find_citizen(rolled_back: Sessions) -> None:
    async with rolled_back() as session, session.begin():
        rec = await PersonService(session).add(fin="5abc12d", given_name="Aysel", family_name="Məmmədova",
                                               birthdate=dt.date(1990, 2, 3))
    assert rec.fin == "5ABC12D"
    async with rolled_back() as session:
        found = await PersonService(session).get_by_fin("5ABC12D")
        events = (await session.execute(select(AuditEvent.event_type))).scalars().all()
    assert found == rec
    assert "person.registered" in events


async def test_duplicate_fin_is_refused_and_writes_nothing(rolled_back: Sessions) -> None:
    async with rolled_back() as session, session.begin():
        await PersonService(session).add(fin="1234567", given_name="A", family_name="B")
    with pytest.raises(PersonExists):
        async with rolled_back() as session, session.begin():
            await PersonService(session).add(fin="1234567", given_name="C", family_name="D")
    assert await _count(rolled_back) == 1


async def test_foreigner_by_document(rolled_back: Sessions) -> None:
    async with rolled_back() as session, session.begin():
        rec = await PersonService(session).add(category="foreigner", given_name="Anna", family_name="Ivanova",
                                               document_country="rus", document_number="75 1234567".replace(" ", ""))
    assert rec.fin is None and rec.document_country == "RUS" and rec.document_type == "passport"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"category": "citizen"}, "FIN or an identity document"),
        ({"category": "foreigner", "document_country": "RU", "document_number": "1234567"}, "alpha-3"),
        ({"category": "stateless", "document_country": "AZE", "document_number": "12"}, "4 to 20"),
        ({"fin": "1234567", "birthdate": dt.date(2999, 1, 1)}, "future"),
        ({"fin": "1234567", "category": "martian"}, "category"),
    ],
)
async def test_invalid_persons_write_nothing(rolled_back: Sessions, kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidIdentifier, match=message):
        async with rolled_back() as session, session.begin():
            await PersonService(session).add(given_name="A", family_name="B", **kwargs)  # type: ignore[arg-type]
    assert await _count(rolled_back) == 0


async def test_unknown_person(rolled_back: Sessions) -> None:
    async with rolled_back() as session:
        with pytest.raises(PersonNotFound):
            await PersonService(session).get_by_fin("7654321")
