"""Staff roles: who may act as a registration officer, an agency administrator or a system administrator.

Every person is a citizen; a `StaffRole` row adds one role (idp.sql.models.StaffRole). Roles are read at each use
(never only from a token), so revoking one takes effect at the next request. Services flush into the caller's unit
of work (an ORM session, as idp.sql.registry) and audit through storage.audit.record_event; they never commit.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from idp.core.errors import InvalidIdentifier
from idp.core.roles import AGENCY_ADMIN, REGISTRATION_OFFICER, STAFF_ROLES, SYSTEM_ADMIN
from idp.sql.models import Person, StaffRole
from idp.sql.persons import PersonService
from idp.sql.registry import normalize_voen
from storage.audit import record_event

__all__ = ["AGENCY_ADMIN", "REGISTRATION_OFFICER", "ROLES", "SYSTEM_ADMIN", "RoleGrant", "RoleService", "check_role"]
"""The roles' names are defined once, in the core (idp.core.roles, with their scopes), and re-exported here."""

ROLES: Final = STAFF_ROLES
"""registration_officer, agency_admin, system_admin: one list with their scopes (idp.core.roles)."""


@dataclass(frozen=True, slots=True)
class RoleGrant:
    """One role a person holds: `agency_voen` is set for an agency administrator only."""

    id: str
    person_id: str
    role: str
    agency_voen: str | None

    @classmethod
    def of(cls, row: StaffRole) -> RoleGrant:
        return cls(id=row.id, person_id=row.person_id, role=row.role, agency_voen=row.agency_voen)


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def check_role(role: str, agency_voen: str | None) -> tuple[str, str | None]:
    """A known role with its agency: required (a valid VÖEN) for agency_admin, refused for the others."""
    if role not in ROLES:
        raise InvalidIdentifier(f"role must be one of {', '.join(ROLES)} (got {role!r})")
    if role == AGENCY_ADMIN:
        if not agency_voen:
            raise InvalidIdentifier("an agency administrator needs the agency's VÖEN")
        return role, normalize_voen(agency_voen)
    if agency_voen:
        raise InvalidIdentifier(f"the role {role} is not bound to an agency")
    return role, None


class RoleService:
    """Grants, revokes and reads staff roles; flushes into the caller's unit of work, never commits."""

    def __init__(self, session: AsyncSession, *, clock: Callable[[], dt.datetime] = _utcnow) -> None:
        self._session = session
        self._clock = clock

    async def roles_of(self, person_id: str) -> list[RoleGrant]:
        """The roles the person holds now (not revoked), oldest first; empty for a plain citizen."""
        rows = (await self._session.execute(
            select(StaffRole).where(StaffRole.person_id == person_id, StaffRole.revoked_at.is_(None))
            .order_by(StaffRole.granted_at, StaffRole.id))).scalars().all()
        return [RoleGrant.of(row) for row in rows]

    async def grant(self, *, fin: str, role: str, agency_voen: str | None = None, actor: str) -> RoleGrant:
        """Give the person with `fin` a role (audited role.granted); granting a role already held returns it."""
        role, agency = check_role(role, agency_voen)
        person: Person = await PersonService(self._session).person(fin)
        for held in await self.roles_of(person.id):
            if held.role == role and held.agency_voen == agency:
                return held
        row = StaffRole(person_id=person.id, role=role, agency_voen=agency, granted_by=actor,
                        granted_at=self._clock())
        self._session.add(row)
        await self._session.flush()
        record_event(self._session, "role.granted", actor=actor, subject=person.id,
                     detail={"role": role, "agency_voen": agency, "grant": row.id})
        return RoleGrant.of(row)

    async def revoke(self, *, fin: str, role: str, agency_voen: str | None = None, actor: str) -> bool:
        """End the person's role (audited role.revoked); False when they did not hold it."""
        role, agency = check_role(role, agency_voen)
        person: Person = await PersonService(self._session).person(fin)
        rows = (await self._session.execute(
            select(StaffRole).where(StaffRole.person_id == person.id, StaffRole.role == role,
                                    StaffRole.agency_voen.is_(None) if agency is None
                                    else StaffRole.agency_voen == agency,
                                    StaffRole.revoked_at.is_(None)))).scalars().all()
        for row in rows:
            row.revoked_at, row.revoked_by = self._clock(), actor
            record_event(self._session, "role.revoked", actor=actor, subject=person.id,
                         detail={"role": role, "agency_voen": agency, "grant": row.id})
        await self._session.flush()
        return bool(rows)
