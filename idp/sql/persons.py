"""Person registry: validation of national identifiers and registration of persons.

One rule set (`check_person`) serves `PersonService.add` (the first problem raised) and the CSV import
(idp.sql.registry_import: every problem of every row reported, by column).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from idp.core.errors import InvalidIdentifier, PersonExists, PersonNotFound
from idp.core.logout import end_session
from idp.sql.models import ActivationCode, Person
from idp.sql.store import SqlOidcStore
from keys.identifiers import InvalidIdentifierFormat
from keys.identifiers import normalize_fin as _normalize_fin
from storage.audit import record_event
from storage.base import utcnow
from storage.direct import SessionTransaction

_COUNTRY_RE = re.compile(r"^[A-Z]{3}$")  # ISO 3166-1 alpha-3, as in machine-readable travel documents
_DOCNUM_RE = re.compile(r"^[0-9A-Z]{4,20}$")
_MAX_NAME = 200
CATEGORIES = ("citizen", "foreigner", "stateless")
STATUSES = ("active", "suspended", "deceased")
"""A person's status: only an active person can log in (passkey, ID card, development login)."""
DOCUMENT_TYPES = ("passport", "residence_permit", "stateless_travel_document")
_CYRILLIC_RE = re.compile(r"^[\u0400-\u04FF][\u0400-\u04FF '\u2019.-]*$")
"""A name in Cyrillic script (Unicode block U+0400-U+04FF: Russian and Azerbaijani Cyrillic letters) with the
spaces, hyphens, apostrophes and dots of compound names."""


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


def _cyrillic(value: str | None, field: str) -> str | None:
    name = (value or "").strip()
    if not name:
        return None
    if len(name) > _MAX_NAME or not _CYRILLIC_RE.fullmatch(name):
        raise InvalidIdentifier(f"{field} must be at most {_MAX_NAME} letters of the Cyrillic script")
    return name


def check_status(value: str) -> str:
    if value not in STATUSES:
        raise InvalidIdentifier(f"status must be one of {', '.join(STATUSES)} (got {value!r})")
    return value


Problems = list[tuple[str, str]]
"""(column, reason) pairs: what is wrong with a person's fields."""


def _field(problems: Problems, column: str, check: Callable[[], Any]) -> Any:
    try:
        return check()
    except InvalidIdentifier as exc:
        problems.append((column, exc.detail))
        return None


def check_person(*, given_name: str, family_name: str, fin: str | None, birthdate: dt.date | None,
                 category: str, document_type: str | None, document_country: str | None,
                 document_number: str | None, status: str = "active", given_name_cyrillic: str | None = None,
                 family_name_cyrillic: str | None = None, today: dt.date | None = None,
                 ) -> tuple[dict[str, Any], Problems]:
    """The persons row's values and every problem found, by column (empty when the person may be registered)."""
    problems: Problems = []

    def category_ok() -> str:
        if category not in CATEGORIES:
            raise InvalidIdentifier(f"category must be one of {', '.join(CATEGORIES)}")
        return category

    def country_ok() -> str:
        country = (document_country or "").strip().upper()
        if not _COUNTRY_RE.fullmatch(country):
            raise InvalidIdentifier("document country must be an ISO 3166-1 alpha-3 code such as AZE")
        return country

    def number_ok() -> str:
        number = (document_number or "").strip().upper()
        if not _DOCNUM_RE.fullmatch(number):
            raise InvalidIdentifier("document number must be 4 to 20 Latin letters or digits")
        return number

    def document_type_ok() -> str | None:
        if document_type is not None and document_type not in DOCUMENT_TYPES:
            raise InvalidIdentifier(f"document type must be one of {', '.join(DOCUMENT_TYPES)}")
        return document_type

    def born() -> dt.date | None:
        if birthdate is not None and birthdate > (today or dt.datetime.now(dt.UTC).date()):
            raise InvalidIdentifier("birthdate is in the future")
        return birthdate

    checked_category = _field(problems, "category", category_ok)
    norm_fin = _field(problems, "fin", lambda: normalize_fin(fin)) if fin is not None else None
    country = number = None
    if document_number is not None or document_country is not None:
        country = _field(problems, "document_country", country_ok)
        number = _field(problems, "document_number", number_ok)
    if not problems:
        if norm_fin is None and number is None:
            problems.append(("fin", "a person needs a FIN or an identity document (country and number)"))
        elif checked_category == "citizen" and norm_fin is None:
            problems.append(("fin", "a citizen is registered with a FIN"))
    values = {
        "fin": norm_fin,
        "category": checked_category,
        "birthdate": _field(problems, "birthdate", born),
        "given_name": _field(problems, "given_name", lambda: _name(given_name, "given name")),
        "family_name": _field(problems, "family_name", lambda: _name(family_name, "family name")),
        "given_name_cyrillic": _field(problems, "given_name_cyrillic",
                                      lambda: _cyrillic(given_name_cyrillic, "given name in Cyrillic")),
        "family_name_cyrillic": _field(problems, "family_name_cyrillic",
                                       lambda: _cyrillic(family_name_cyrillic, "family name in Cyrillic")),
        "document_type": _field(problems, "document_type", document_type_ok) or ("passport" if number else None),
        "document_country": country,
        "document_number": number,
        "status": _field(problems, "status", lambda: check_status(status)),
    }
    return values, problems


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
    status: str = "active"
    given_name_cyrillic: str | None = None
    family_name_cyrillic: str | None = None

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
            status=person.status,
            given_name_cyrillic=person.given_name_cyrillic,
            family_name_cyrillic=person.family_name_cyrillic,
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
            "status": self.status,
            "given_name_cyrillic": self.given_name_cyrillic,
            "family_name_cyrillic": self.family_name_cyrillic,
        }


DEFAULT_LOGOUT_RETRY_SECONDS = 86400
"""How long back-channel logout tokens queued by a suspension are retried when the caller names no window (the
default of ACAR_BACKCHANNEL_LOGOUT_RETRY_SECONDS; the server and the CLI pass the setting)."""


class PersonService:
    """Registers and finds persons; flushes into the caller's unit of work, never commits."""

    def __init__(self, session: AsyncSession, *, logout_retry_seconds: int = DEFAULT_LOGOUT_RETRY_SECONDS,
                 request_id: str | None = None) -> None:
        self._session = session
        self._logout_retry_seconds = logout_retry_seconds
        self._request_id = request_id

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
        status: str = "active",
        given_name_cyrillic: str | None = None,
        family_name_cyrillic: str | None = None,
        actor: str = "system",
    ) -> PersonRecord:
        """Validate and register a person; raise InvalidIdentifier or PersonExists and write nothing."""
        values, problems = check_person(
            given_name=given_name, family_name=family_name, fin=fin, birthdate=birthdate, category=category,
            document_type=document_type, document_country=document_country, document_number=document_number,
            status=status, given_name_cyrillic=given_name_cyrillic, family_name_cyrillic=family_name_cyrillic)
        if problems:
            raise InvalidIdentifier(problems[0][1])
        person = Person(**values)
        norm_fin = person.fin
        if norm_fin is not None and await self._find_fin(norm_fin) is not None:
            raise PersonExists(f"a person with FIN {norm_fin} is already registered")
        self._session.add(person)
        try:
            await self._session.flush()
        except IntegrityError as exc:  # a concurrent registration won the race; the caller rolls back
            raise PersonExists("a person with the same FIN or identity document is already registered") from exc
        record_event(
            self._session, "person.registered", actor=actor, subject=person.id,
            detail={"category": category, "has_fin": norm_fin is not None, "status": person.status},
        )
        return PersonRecord.of(person)

    async def set_status(self, fin: str, status: str, *, actor: str) -> PersonRecord:
        """Change a person's status (active, suspended, deceased), audited as person.status_changed. A person who
        stops being active can no longer log in, and loses at once, in this transaction, what they hold already
        (`_end_access`). Making them active again revives nothing: they log in anew."""
        check_status(status)
        person = await self.person(fin)
        before, person.status = person.status, status
        await self._session.flush()
        record_event(self._session, "person.status_changed", actor=actor, subject=person.id,
                     detail={"from": before, "to": status}, request_id=self._request_id)
        if before == "active" and status != "active":
            await self._end_access(person.id, reason=f"person {status}", actor=actor)
        return PersonRecord.of(person)

    async def _end_access(self, person_id: str, *, reason: str, actor: str) -> None:
        """Everything the person holds stops: every grant at every client (offline_access too: refresh tokens
        answer invalid_grant, access tokens invalid_token at userinfo and {"active": false} at introspection,
        RFC 6749 section 5.2 and RFC 7662 section 2.2), every live login session ended as a logout ends one,
        queueing OpenID Connect Back-Channel Logout 1.0 logout tokens to its clients (idp.core.logout.end_session,
        the one path), and every unused activation code revoked. Audited person.sessions_ended with the counts."""
        now = utcnow()
        tx = SessionTransaction(self._session)
        store = SqlOidcStore(tx, request_id=self._request_id)
        grants = await store.revoke_all_person_grants(person_id, now, reason)
        sessions = await store.live_sessions(person_id, now)
        queued = 0
        for state in sessions:
            queued += await end_session(store, state, now=now, retry_seconds=self._logout_retry_seconds,
                                        reason=reason, actor=actor)
        codes = await self._session.execute(update(ActivationCode).where(
            ActivationCode.person_id == person_id, ActivationCode.used_at.is_(None),
            ActivationCode.revoked_at.is_(None)).values(revoked_at=now))
        await store.audit("person.sessions_ended", actor=actor, subject=person_id, detail={
            "reason": reason, "sessions": len(sessions), "grants": grants, "backchannel": queued,
            "activation_codes": int(codes.rowcount or 0)})  # type: ignore[attr-defined]
        await tx.flush()  # the deferred audit events and logout rows, into the caller's transaction

    async def _find_fin(self, fin: str) -> Person | None:
        result = await self._session.execute(select(Person).where(Person.fin == fin))
        return result.scalar_one_or_none()

    async def person(self, fin: str) -> Person:
        """The person's row by FIN; raise InvalidIdentifier or PersonNotFound."""
        person = await self._find_fin(normalize_fin(fin))
        if person is None:
            raise PersonNotFound(f"no person with FIN {normalize_fin(fin)}")
        return person

    async def get_by_fin(self, fin: str) -> PersonRecord:
        """Find a person by FIN; raise PersonNotFound when there is none."""
        return PersonRecord.of(await self.person(fin))
