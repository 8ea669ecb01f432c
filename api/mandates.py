"""The registry as signing sees it (signing.core.interfaces.MandateChecker) over idp's registry (idp.sql.registry):
signing never imports idp, api/ composes them (issue 16, "Business signing").

A check reads the registry in a session of its own, at the instant it is given: the approval asks at the approval,
the worker again at signing time. A mandate is good for signing when MandateService.valid finds it at that instant
with the power "sign_declarations" (begun, not expired, not revoked, the entity active) and the person is active;
otherwise the refusal names the most telling reason among the person's mandates for that entity.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from idp.core.errors import InvalidIdentifier, PersonNotFound
from idp.sql.models import Person
from idp.sql.persons import PersonService
from idp.sql.registry import EntityService, MandateRecord, MandateService
from keys.identifiers import InvalidIdentifierFormat, check_voen
from signing.core.interfaces import SIGN_DECLARATIONS, MandateCheck, MandateRefusal, RegisteredEntity


def _refusal(mandates: list[MandateRecord], at: dt.datetime) -> MandateRefusal:
    """Why none of the person's mandates for the entity lets them sign at `at` (the most telling reason)."""
    if not mandates:
        return MandateRefusal.NO_MANDATE
    empowered = [m for m in mandates if SIGN_DECLARATIONS in m.powers]
    if not empowered:
        return MandateRefusal.NO_POWER
    if any(m.revoked_at is not None and m.revoked_at <= at for m in empowered):
        return MandateRefusal.REVOKED
    if any(m.valid_to is not None and m.valid_to <= at for m in empowered):
        return MandateRefusal.EXPIRED
    if any(m.valid_from > at for m in empowered):
        return MandateRefusal.NOT_YET_VALID
    return MandateRefusal.NO_MANDATE


class RegistryMandates:
    """`MandateChecker` on the registry's tables (see module docstring)."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions

    async def entity(self, voen: str) -> RegisteredEntity | None:
        async with self._sessions() as session:
            found = await EntityService(session).find(voen)
        return RegisteredEntity(voen=found.voen, name=found.name, status=found.status) if found is not None else None

    async def check(self, fin: str, voen: str, *, at: dt.datetime) -> MandateCheck:
        try:
            voen = check_voen(voen)
        except InvalidIdentifierFormat:
            return MandateCheck(fin=fin, voen=voen, entity_name="", person_id=None, mandate_id=None,
                                refusal=MandateRefusal.NO_MANDATE)
        async with self._sessions() as session:
            entity = await EntityService(session).find(voen)
            try:
                person: Person | None = await PersonService(session).person(fin)
            except (InvalidIdentifier, PersonNotFound):
                person = None
            if entity is None or person is None:
                return MandateCheck(fin=fin, voen=voen, entity_name=entity.name if entity else "",
                                    person_id=person.id if person else None, mandate_id=None,
                                    refusal=MandateRefusal.NO_MANDATE)
            name, person_id = entity.name, person.id

            def refused(reason: MandateRefusal) -> MandateCheck:
                return MandateCheck(fin=fin, voen=voen, entity_name=name, person_id=person_id, mandate_id=None,
                                    refusal=reason)

            if entity.status != "active":
                return refused(MandateRefusal.ENTITY_INACTIVE)
            if person.status != "active":
                return refused(MandateRefusal.PERSON_INACTIVE)
            mandates = MandateService(session, clock=lambda: at)
            valid = [m for m in await mandates.valid(person_id, at=at, power=SIGN_DECLARATIONS) if m.voen == voen]
            if not valid:
                return refused(_refusal([m for m in await mandates.all_of(person_id) if m.voen == voen], at))
        return MandateCheck(fin=fin, voen=voen, entity_name=name, person_id=person_id, mandate_id=valid[0].id,
                            refusal=None)
