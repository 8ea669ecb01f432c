"""Person registry: validation of national identifiers and registration of persons."""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from idp.core.errors import InvalidIdentifier, PersonExists, PersonNotFound
from idp.sql.models import Person
from keys.identifiers import InvalidIdentifierFormat
from keys.identifiers import normalize_fin as _normalize_fin
from storage.audit import record_event

_COUNTRY_RE = re.compile(r"^[A-Z]{3}$")  # ISO 3166-1 alpha-3, as in machine-readable travel documents
_DOCNUM_RE = re.compile(r"^[0-9A-Z]{4,20}$")
_MAX_NAME = 200
CATEGORIES = ("citizen", "foreigner", "stateless")


def normalize_fin(value: str) -> str:
    """Return the FIN in canonical upper case (format rules in keys.identifiers), or raise InvalidIdentifier."""
    try:
        return _normalize_fin(value)
    except InvalidIdentifierFormat as exc:
        raise InvalidIdentifier(str(exc)) from None


def _name(value: str, field: str) -> str:
    name = value.strip()
    if not name:
        raise InvalidIdentifier(f"{field} must not be empty")
    if len(name) > _MAX_NAME or any(ord(c) < 32 for c in name):
        raise InvalidIdentifier(f"{field} must be at most {_MAX_NAME} printable characters")
    return name


@dataclass(frozen=True, slots=True)
class PersonRecord:
    """A registered person as the rest of the system sees it."""

    id: str
    fin: str | None
    category: str
    given_name: str
    family_name: str
    birthdate: dt.date | None
    document_type: str | None
    document_country: str | None
    document_number: str | None

    @classmethod
    def of(cls, person: Person) -> PersonRecord:
        return cls(
            id=person.id,
            fin=person.fin,
            category=person.category,
            given_name=person.given_name,
            family_name=person.family_name,
            birthdate=person.birthdate,
            document_type=person.document_type,
            document_country=person.document_country,
            document_number=person.document_number,
        )

    def as_json(self) -> dict[str, str | None]:
        return {
            "id": self.id,
            "fin": self.fin,
            "category": self.category,
            "given_name": self.given_name,
            "family_name": self.family_name,
            "birthdate": self.birthdate.isoformat() if self.birthdate else None,
            "document_type": self.document_type,
            "document_country": self.document_country,
            "document_number": self.document_number,
        }


class PersonService:
    """Registers and finds persons; flushes into the caller's unit of work, never commits."""

    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def add(
        self,
        *,
        given_name: str,
        family_name: str,
        fin: str | None = None,
        birthdate: dt.date | None = None,
        category: str = "citizen",
        document_type: str | None = None,
        document_country: str | None = None,
        document_number: str | None = None,
        actor: str = "system",
    ) -> PersonRecord:
        """Validate and register a person; raise InvalidIdentifier or PersonExists and write nothing."""
        if category not in CATEGORIES:
            raise InvalidIdentifier(f"category must be one of {', '.join(CATEGORIES)}")
        norm_fin = normalize_fin(fin) if fin is not None else None
        country = number = None
        if document_number is not None or document_country is not None:
            country = (document_country or "").strip().upper()
            number = (document_number or "").strip().upper()
            if not _COUNTRY_RE.fullmatch(country):
                raise InvalidIdentifier("document country must be an ISO 3166-1 alpha-3 code such as AZE")
            if not _DOCNUM_RE.fullmatch(number):
                raise InvalidIdentifier("document number must be 4 to 20 Latin letters or digits")
        if norm_fin is None and number is None:
            raise InvalidIdentifier("a person needs a FIN or an identity document (country and number)")
        if category == "citizen" and norm_fin is None:
            raise InvalidIdentifier("a citizen is registered with a FIN")
        if birthdate is not None and birthdate > dt.datetime.now(dt.UTC).date():
            raise InvalidIdentifier("birthdate is in the future")
        person = Person(
            fin=norm_fin,
            category=category,
            given_name=_name(given_name, "given name"),
            family_name=_name(family_name, "family name"),
            birthdate=birthdate,
            document_type=(document_type or ("passport" if number else None)),
            document_country=country,
            document_number=number,
        )
        if norm_fin is not None and await self._find_fin(norm_fin) is not None:
            raise PersonExists(f"a person with FIN {norm_fin} is already registered")
        self._session.add(person)
        try:
            await self._session.flush()
        except IntegrityError as exc:  # a concurrent registration won the race; the caller rolls back
            raise PersonExists("a person with the same FIN or identity document is already registered") from exc
        record_event(
            self._session, "person.registered", actor=actor, subject=person.id,
            detail={"category": category, "has_fin": norm_fin is not None},
        )
        return PersonRecord.of(person)

    async def _find_fin(self, fin: str) -> Person | None:
        result = await self._session.execute(select(Person).where(Person.fin == fin))
        return result.scalar_one_or_none()

    async def get_by_fin(self, fin: str) -> PersonRecord:
        """Find a person by FIN; raise PersonNotFound when there is none."""
        person = await self._find_fin(normalize_fin(fin))
        if person is None:
            raise PersonNotFound(f"no person with FIN {normalize_fin(fin)}")
        return PersonRecord.of(person)
