"""The business registry: legal entities (by VÖEN) and mandates (a person may act for an entity).

A mandate gives person P powers for entity E from `valid_from` until `valid_to` (exclusive; open-ended when None),
granted by an officer or by the entity's director, revocable. An entity's director (`LegalEntity.director_person_id`,
set by an officer or a system administrator: `EntityService.set_director`) grants and revokes the entity's mandates
from the account page while the entity is active (`DirectorService`). It is valid at instant t when
valid_from <= t < valid_to, it was not revoked at or before t, and the entity is active: `MandateService.valid`.
Services flush into the caller's unit of work (an ORM session, as idp.sql.persons) and audit through
storage.audit.record_event; they never commit.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Final, Literal

from sqlalchemy import or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from idp.core.errors import (
    EntityExists,
    EntityNotFound,
    InvalidIdentifier,
    InvalidMandate,
    MandateNotFound,
)
from idp.sql.models import LegalEntity, Mandate, Person
from idp.sql.persons import PersonService
from keys.identifiers import InvalidIdentifierFormat, check_voen
from storage.audit import record_event

ENTITY_STATUSES: Final = ("active", "liquidated", "suspended")
"""A legal entity's status: mandates act only for an active one."""
POWERS: Final = ("sign_declarations", "represent_at_login")
"""What a mandate may allow: signing declarations for the entity, logging in as its representative."""
GRANTED_VIA: Final = ("officer", "director")
"""Who granted a mandate: a registration officer, or the entity's director."""
MandateState = Literal["active", "revoked", "expired", "future"]
"""A mandate's state at an instant, as its pages show it (MandateRecord.state_at)."""
_MAX_ENTITY_NAME = 500
_MAX_LEGAL_FORM = 64


def normalize_voen(value: str) -> str:
    """The VÖEN under the registry's rule (keys.identifiers.check_voen), or InvalidIdentifier."""
    try:
        return check_voen(value)
    except InvalidIdentifierFormat as exc:
        raise InvalidIdentifier(str(exc)) from None


def _text(value: str, field: str, limit: int) -> str:
    text = value.strip()
    if not text:
        raise InvalidIdentifier(f"{field} must not be empty")
    if len(text) > limit or any(ord(c) < 32 or ord(c) == 127 for c in text):
        raise InvalidIdentifier(f"{field} must be at most {limit} printable characters")
    return text


def entity_name(value: str) -> str:
    return _text(value, "name", _MAX_ENTITY_NAME)


def check_legal_form(value: str) -> str:
    """The legal form as written in the state register (MMC, ASC, QSC, publik hüquqi şəxs, fərdi sahibkar, ...)."""
    return _text(value, "legal form", _MAX_LEGAL_FORM)


def entity_status(value: str) -> str:
    if value not in ENTITY_STATUSES:
        raise InvalidIdentifier(f"status must be one of {', '.join(ENTITY_STATUSES)} (got {value!r})")
    return value


def check_powers(powers: Iterable[str]) -> frozenset[str]:
    """A non-empty set of known powers (POWERS), or InvalidMandate naming the unknown ones."""
    given = frozenset(p.strip() for p in powers if p.strip())
    unknown = sorted(given - set(POWERS))
    if unknown:
        raise InvalidMandate(f"unknown power {', '.join(unknown)}: a mandate's powers are {', '.join(POWERS)}")
    if not given:
        raise InvalidMandate(f"a mandate needs at least one power ({', '.join(POWERS)})")
    return given


def check_period(valid_from: dt.datetime, valid_to: dt.datetime | None) -> None:
    if valid_to is not None and valid_to <= valid_from:
        raise InvalidMandate("valid_to must be after valid_from")


@dataclass(frozen=True, slots=True)
class EntityRecord:
    id: str
    voen: str
    name: str
    legal_form: str
    status: str
    director_fin: str | None = None
    """The FIN of the entity's director, None when none is recorded."""

    @classmethod
    def of(cls, entity: LegalEntity, director: Person | None = None) -> EntityRecord:
        return cls(id=entity.id, voen=entity.voen, name=entity.name, legal_form=entity.legal_form,
                   status=entity.status, director_fin=director.fin if director is not None else None)

    def as_json(self) -> dict[str, Any]:
        return {"id": self.id, "voen": self.voen, "name": self.name, "legal_form": self.legal_form,
                "status": self.status, "director_fin": self.director_fin}


@dataclass(frozen=True, slots=True)
class MandateRecord:
    id: str
    person_id: str
    fin: str | None
    entity_id: str
    voen: str
    entity_name: str
    powers: frozenset[str]
    valid_from: dt.datetime
    valid_to: dt.datetime | None
    granted_by: str
    granted_via: str
    revoked_at: dt.datetime | None
    revoked_by: str | None

    @classmethod
    def of(cls, mandate: Mandate, person: Person, entity: LegalEntity) -> MandateRecord:
        return cls(id=mandate.id, person_id=person.id, fin=person.fin, entity_id=entity.id, voen=entity.voen,
                   entity_name=entity.name, powers=frozenset(mandate.powers), valid_from=mandate.valid_from,
                   valid_to=mandate.valid_to, granted_by=mandate.granted_by, granted_via=mandate.granted_via,
                   revoked_at=mandate.revoked_at, revoked_by=mandate.revoked_by)

    def as_json(self) -> dict[str, Any]:
        return {"id": self.id, "person_id": self.person_id, "fin": self.fin, "voen": self.voen,
                "entity_name": self.entity_name, "powers": sorted(self.powers),
                "valid_from": self.valid_from.isoformat(),
                "valid_to": self.valid_to.isoformat() if self.valid_to else None,
                "granted_by": self.granted_by, "granted_via": self.granted_via,
                "revoked_at": self.revoked_at.isoformat() if self.revoked_at else None,
                "revoked_by": self.revoked_by}

    def state_at(self, now: dt.datetime) -> MandateState:
        """The mandate's state at instant `now`, by its own period (valid_from inclusive, valid_to exclusive):
        "revoked" once it has been revoked (whenever), else "expired" when valid_to <= now, "future" when
        now < valid_from, else "active". The entity's status is not looked at (MandateService.valid does)."""
        if self.revoked_at is not None:
            return "revoked"
        if self.valid_to is not None and self.valid_to <= now:
            return "expired"
        if self.valid_from > now:
            return "future"
        return "active"


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class EntityService:
    """Registers and finds legal entities; flushes into the caller's unit of work, never commits."""

    def __init__(self, session: AsyncSession, *, clock: Callable[[], dt.datetime] = _utcnow) -> None:
        self._session = session
        self._clock = clock

    async def add(self, *, voen: str, name: str, legal_form: str, status: str = "active",
                  director_fin: str | None = None, actor: str) -> EntityRecord:
        """Validate and register an entity, with its director when `director_fin` is given (audited
        entity.director_changed too); InvalidIdentifier, PersonNotFound, InvalidMandate (an inactive director) or
        EntityExists, and nothing written, otherwise."""
        checked = normalize_voen(voen)
        now = self._clock()
        entity = LegalEntity(voen=checked, name=entity_name(name), legal_form=check_legal_form(legal_form),
                             status=entity_status(status), created_at=now, updated_at=now)
        director = await self._director(director_fin) if director_fin else None
        if await self.find(checked) is not None:
            raise EntityExists(f"a legal entity with VÖEN {checked} is already registered")
        entity.director_person_id = director.id if director is not None else None
        self._session.add(entity)
        try:
            await self._session.flush()
        except IntegrityError as exc:  # a concurrent registration won the race; the caller rolls back
            raise EntityExists(f"a legal entity with VÖEN {checked} is already registered") from exc
        record_event(self._session, "entity.registered", actor=actor, subject=entity.id,
                     detail={"voen": checked, "status": entity.status})
        if director is not None:
            record_event(self._session, "entity.director_changed", actor=actor, subject=entity.id,
                         detail={"voen": checked, "from": None, "to": director.id})
        return EntityRecord.of(entity, director)

    async def _director(self, fin: str) -> Person:
        """The active person named to direct an entity: InvalidIdentifier, PersonNotFound or InvalidMandate."""
        person = await PersonService(self._session).person(fin)
        if person.status != "active":
            raise InvalidMandate(f"the person with FIN {person.fin} is {person.status}: they cannot direct an entity")
        return person

    async def _record(self, entity: LegalEntity) -> EntityRecord:
        director = await self._session.get(Person, entity.director_person_id) if entity.director_person_id else None
        return EntityRecord.of(entity, director)

    async def find(self, voen: str) -> LegalEntity | None:
        result = await self._session.execute(select(LegalEntity).where(LegalEntity.voen == voen))
        return result.scalar_one_or_none()

    async def get(self, voen: str) -> EntityRecord:
        """The entity with this VÖEN; EntityNotFound when there is none."""
        entity = await self.find(normalize_voen(voen))
        if entity is None:
            raise EntityNotFound(f"no legal entity with VÖEN {normalize_voen(voen)}")
        return await self._record(entity)

    async def set_director(self, voen: str, fin: str | None, *, actor: str) -> EntityRecord:
        """Make the active person `fin` the entity's director, or record none (`fin` None), audited
        entity.director_changed. The mandates the former director granted stay until revoked (a power of attorney
        outlives its grantor's term). EntityNotFound, InvalidIdentifier, PersonNotFound or InvalidMandate (an
        inactive person), and nothing written, otherwise."""
        entity = await self.find(normalize_voen(voen))
        if entity is None:
            raise EntityNotFound(f"no legal entity with VÖEN {normalize_voen(voen)}")
        director = await self._director(fin) if fin else None
        before = entity.director_person_id
        entity.director_person_id = director.id if director is not None else None
        entity.updated_at = self._clock()
        await self._session.flush()
        record_event(self._session, "entity.director_changed", actor=actor, subject=entity.id,
                     detail={"voen": entity.voen, "from": before, "to": entity.director_person_id})
        return EntityRecord.of(entity, director)

    async def set_status(self, voen: str, status: str, *, actor: str) -> EntityRecord:
        """Change an entity's status (audited entity.status_changed); its mandates act only while it is active."""
        entity_status(status)
        entity = await self.find(normalize_voen(voen))
        if entity is None:
            raise EntityNotFound(f"no legal entity with VÖEN {normalize_voen(voen)}")
        before, entity.status, entity.updated_at = entity.status, status, self._clock()
        await self._session.flush()
        record_event(self._session, "entity.status_changed", actor=actor, subject=entity.id,
                     detail={"voen": entity.voen, "from": before, "to": status})
        return await self._record(entity)


class MandateService:
    """Grants, revokes and lists mandates; flushes into the caller's unit of work, never commits."""

    def __init__(self, session: AsyncSession, *, clock: Callable[[], dt.datetime] = _utcnow) -> None:
        self._session = session
        self._clock = clock

    async def grant(self, *, fin: str, voen: str, powers: Iterable[str], valid_from: dt.datetime | None = None,
                    valid_to: dt.datetime | None = None, granted_by: str, granted_via: str,
                    actor: str) -> MandateRecord:
        """Grant person `fin` the `powers` for entity `voen` (audited mandate.granted). Refused (InvalidMandate,
        nothing written) for an unknown power, an empty period, an inactive person or entity."""
        if granted_via not in GRANTED_VIA:
            raise InvalidMandate(f"granted_via must be one of {', '.join(GRANTED_VIA)}")
        granted_by = _text(granted_by, "granted_by", 200)
        checked_powers = check_powers(powers)
        start = valid_from or self._clock()
        check_period(start, valid_to)
        person = await PersonService(self._session).person(fin)
        entity = await EntityService(self._session).find(normalize_voen(voen))
        if entity is None:
            raise EntityNotFound(f"no legal entity with VÖEN {normalize_voen(voen)}")
        if person.status != "active":
            raise InvalidMandate(f"the person with FIN {person.fin} is {person.status}: no mandate can be granted")
        if entity.status != "active":
            raise InvalidMandate(f"the legal entity with VÖEN {entity.voen} is {entity.status}: no mandate can be "
                                 "granted")
        mandate = Mandate(person_id=person.id, entity_id=entity.id, powers=sorted(checked_powers), valid_from=start,
                          valid_to=valid_to, granted_by=granted_by, granted_via=granted_via,
                          created_at=self._clock())
        self._session.add(mandate)
        await self._session.flush()
        record_event(self._session, "mandate.granted", actor=actor, subject=mandate.id, detail={
            "person": person.id, "voen": entity.voen, "powers": sorted(checked_powers),
            "valid_from": start.isoformat(), "valid_to": valid_to.isoformat() if valid_to else None,
            "granted_by": granted_by, "granted_via": granted_via})
        return MandateRecord.of(mandate, person, entity)

    async def revoke(self, mandate_id: str, *, actor: str) -> MandateRecord:
        """Revoke a mandate now (audited mandate.revoked); MandateNotFound, or InvalidMandate when revoked before."""
        row = (await self._session.execute(
            select(Mandate, Person, LegalEntity).join(Person, Person.id == Mandate.person_id)
            .join(LegalEntity, LegalEntity.id == Mandate.entity_id).where(Mandate.id == mandate_id[:36]),
        )).one_or_none()
        if row is None:
            raise MandateNotFound(f"no mandate with id {mandate_id[:36]}")
        mandate, person, entity = row
        if mandate.revoked_at is not None:
            raise InvalidMandate(f"mandate {mandate.id} was revoked at {mandate.revoked_at.isoformat()}")
        mandate.revoked_at, mandate.revoked_by = self._clock(), actor
        await self._session.flush()
        record_event(self._session, "mandate.revoked", actor=actor, subject=mandate.id,
                     detail={"person": person.id, "voen": entity.voen})
        return MandateRecord.of(mandate, person, entity)

    async def valid(self, person_id: str, *, at: dt.datetime | None = None,
                    power: str | None = None) -> list[MandateRecord]:
        """The person's mandates valid at `at` (now by default): begun, not expired, not revoked at or before `at`,
        for an active entity; only those carrying `power` when one is named. Oldest grant first."""
        when = at or self._clock()
        rows = (await self._session.execute(
            select(Mandate, Person, LegalEntity).join(Person, Person.id == Mandate.person_id)
            .join(LegalEntity, LegalEntity.id == Mandate.entity_id)
            .where(Mandate.person_id == person_id, Mandate.valid_from <= when,
                   or_(Mandate.valid_to.is_(None), Mandate.valid_to > when),
                   or_(Mandate.revoked_at.is_(None), Mandate.revoked_at > when),
                   LegalEntity.status == "active")
            .order_by(Mandate.created_at, Mandate.id),
        )).all()
        found = [MandateRecord.of(m, p, e) for m, p, e in rows]
        return [m for m in found if power is None or power in m.powers]

    async def all_for(self, voen: str) -> list[MandateRecord]:
        """Every mandate for the entity with this VÖEN, valid or not, oldest grant first; EntityNotFound."""
        entity = await EntityService(self._session).find(normalize_voen(voen))
        if entity is None:
            raise EntityNotFound(f"no legal entity with VÖEN {normalize_voen(voen)}")
        rows = (await self._session.execute(
            select(Mandate, Person).join(Person, Person.id == Mandate.person_id)
            .where(Mandate.entity_id == entity.id).order_by(Mandate.created_at, Mandate.id),
        )).all()
        return [MandateRecord.of(m, p, entity) for m, p in rows]

    async def all_of(self, person_id: str) -> list[MandateRecord]:
        """Every mandate of the person, valid or not (for an officer's view), oldest grant first."""
        rows = (await self._session.execute(
            select(Mandate, Person, LegalEntity).join(Person, Person.id == Mandate.person_id)
            .join(LegalEntity, LegalEntity.id == Mandate.entity_id).where(Mandate.person_id == person_id)
            .order_by(Mandate.created_at, Mandate.id),
        )).all()
        return [MandateRecord.of(m, p, e) for m, p, e in rows]


class DirectorService:
    """What an entity's director may do for it (issue 16: mandates "granted by ... the entity's director"): only
    the current director of an active entity, looked up at every call, so a director replaced or an entity
    suspended stops acting at once. Flushes into the caller's unit of work, never commits."""

    def __init__(self, session: AsyncSession, *, clock: Callable[[], dt.datetime] = _utcnow) -> None:
        self._session = session
        self._clock = clock

    @staticmethod
    def actor(person_id: str) -> str:
        """The audit trail's actor (and a mandate's granted_by) for what the director does."""
        return f"director:{person_id}"

    async def directed(self, person_id: str, *, active_only: bool = True) -> list[EntityRecord]:
        """The entities the person directs now (only the active ones unless `active_only` is False), by name."""
        query = (select(LegalEntity, Person).join(Person, Person.id == LegalEntity.director_person_id)
                 .where(LegalEntity.director_person_id == person_id).order_by(LegalEntity.name, LegalEntity.voen))
        if active_only:
            query = query.where(LegalEntity.status == "active")
        rows = (await self._session.execute(query)).all()
        return [EntityRecord.of(e, p) for e, p in rows]

    async def entity(self, person_id: str, voen: str) -> LegalEntity:
        """The active entity with this VÖEN that the person directs now; EntityNotFound otherwise (an unknown VÖEN,
        another's entity, an entity no longer active or no longer theirs alike)."""
        try:
            checked = normalize_voen(voen)
        except InvalidIdentifier:
            raise EntityNotFound("you do not direct this legal entity") from None
        entity = (await self._session.execute(
            select(LegalEntity).where(LegalEntity.voen == checked, LegalEntity.director_person_id == person_id,
                                      LegalEntity.status == "active"),
        )).scalar_one_or_none()
        if entity is None:
            raise EntityNotFound("you do not direct this legal entity")
        return entity

    async def grant(self, person_id: str, voen: str, *, fin: str, powers: Iterable[str], valid_from: dt.datetime,
                    valid_to: dt.datetime | None) -> MandateRecord:
        """Grant, as the entity's director, a mandate to the person `fin` (granted_via director, audited
        mandate.granted). Not to the director themselves (InvalidMandate): their authority comes from the register
        and ends with their term, a mandate to themselves would outlive it."""
        entity = await self.entity(person_id, voen)
        person = await PersonService(self._session).person(fin)
        if person.id == person_id:
            raise InvalidMandate("a director cannot grant a mandate to themselves")
        actor = self.actor(person_id)
        return await MandateService(self._session, clock=self._clock).grant(
            fin=fin, voen=entity.voen, powers=powers, valid_from=valid_from, valid_to=valid_to, granted_by=actor,
            granted_via="director", actor=actor)

    async def revoke(self, person_id: str, voen: str, mandate_id: str) -> MandateRecord:
        """Revoke one of the entity's mandates as its director (audited mandate.revoked); MandateNotFound for a
        mandate of another entity, InvalidMandate when it was revoked before."""
        entity = await self.entity(person_id, voen)
        found = (await self._session.execute(
            select(Mandate.id).where(Mandate.id == mandate_id[:36], Mandate.entity_id == entity.id),
        )).scalar_one_or_none()
        if found is None:
            raise MandateNotFound(f"no mandate with id {mandate_id[:36]} for this legal entity")
        return await MandateService(self._session, clock=self._clock).revoke(found, actor=self.actor(person_id))

    async def mandates(self, person_id: str, voen: str) -> list[MandateRecord]:
        """Every mandate (valid or not) of an entity the person directs, oldest grant first."""
        entity = await self.entity(person_id, voen)
        return await MandateService(self._session, clock=self._clock).all_for(entity.voen)

    async def granted_by(self, person_id: str) -> list[MandateRecord]:
        """The mandates the person granted as a director (of any entity, then or now), oldest first."""
        rows = (await self._session.execute(
            select(Mandate, Person, LegalEntity).join(Person, Person.id == Mandate.person_id)
            .join(LegalEntity, LegalEntity.id == Mandate.entity_id)
            .where(Mandate.granted_via == "director", Mandate.granted_by == self.actor(person_id))
            .order_by(Mandate.created_at, Mandate.id),
        )).all()
        return [MandateRecord.of(m, p, e) for m, p, e in rows]
