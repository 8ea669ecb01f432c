"""The registry's admin API: persons, legal entities, mandates (api.auth.PERSONS, ENTITIES) and staff roles
(api.auth.ROLES).

A registration officer or a system administrator (their own access token with the role scope, the role checked
again at every request) or a machine admin token with acar:admin. Every action, reads included (they disclose a
person's data), is audited in the same transaction with the acting person and role as actor (`<role>:<person id>`,
or `admin:<sub>` for a machine token). Errors are RFC 9457 problems: 401 without a valid token, 403 for a role that
does not allow the action (nothing is read or written then), 404 unknown, 409 exists, 422 invalid.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request

from api.auth import ENTITIES, PERSONS, ROLES, AdminPrincipal, require_permission
from api.deps import Services
from api.errors import ApiProblem
from api.logging import request_id_var
from api.schemas.registry import (
    EntityCreate,
    EntityDirectorChange,
    EntityStatusChange,
    EntityView,
    MandateCreate,
    MandateView,
    PersonCreate,
    PersonStatusChange,
    PersonView,
    RoleChange,
    RoleRevoked,
    RoleView,
)
from api.web import kick_backchannel
from idp.core.roles import ROLE_SCOPES
from idp.sql.persons import PersonService
from idp.sql.registry import EntityService, MandateService
from idp.sql.roles import RoleGrant, RoleService
from storage.audit import record_event

router = APIRouter(prefix="/admin", tags=["registry"])
Registrar = Annotated[AdminPrincipal, Depends(require_permission(PERSONS))]
EntityOfficer = Annotated[AdminPrincipal, Depends(require_permission(ENTITIES))]
RoleAdmin = Annotated[AdminPrincipal, Depends(require_permission(ROLES))]


def _services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


def _mandates(records: list[Any]) -> list[MandateView]:
    return [MandateView.model_validate(r.as_json()) for r in records]


def _role(grant: RoleGrant) -> RoleView:
    return RoleView(id=grant.id, person_id=grant.person_id, role=grant.role, agency_voen=grant.agency_voen,
                    scope=ROLE_SCOPES[grant.role])


# --- persons -------------------------------------------------------------------------------------------------------

@router.post("/persons", status_code=201, response_model=PersonView)
async def register_person(body: PersonCreate, request: Request, principal: Registrar) -> PersonView:
    """Register a person (audited person.registered): 409 when the FIN or document is registered, 422 invalid."""
    async with _services(request).sessions() as session, session.begin():
        record = await PersonService(session).add(**body.model_dump(), actor=principal.actor)
    return PersonView.model_validate(record.as_json())


@router.get("/persons/{fin}", response_model=PersonView)
async def show_person(fin: str, request: Request, principal: Registrar) -> PersonView:
    """A person by FIN (audited person.viewed: the person's data was shown to the acting staff member)."""
    async with _services(request).sessions() as session, session.begin():
        record = await PersonService(session).get_by_fin(fin)
        record_event(session, "person.viewed", actor=principal.actor, subject=record.id,
                     request_id=request_id_var.get())
    return PersonView.model_validate(record.as_json())


@router.post("/persons/{fin}/status", response_model=PersonView)
async def change_person_status(fin: str, body: PersonStatusChange, request: Request,
                               principal: Registrar) -> PersonView:
    """Set a person's status (active, suspended, deceased; audited person.status_changed). Suspending a person ends
    their sessions and grants in the same transaction (PersonService.set_status); the back-channel logout tokens it
    queued are sent once it commits."""
    services = _services(request)
    async with services.sessions() as session, session.begin():
        people = PersonService(session, request_id=request_id_var.get(),
                               logout_retry_seconds=services.settings.backchannel_logout_retry_seconds)
        record = await people.set_status(fin, body.status, actor=principal.actor)
    kick_backchannel(request)
    return PersonView.model_validate(record.as_json())


# --- legal entities and mandates ------------------------------------------------------------------------------------

@router.post("/entities", status_code=201, response_model=EntityView)
async def register_entity(body: EntityCreate, request: Request, principal: EntityOfficer) -> EntityView:
    """Register a legal entity (audited entity.registered): 409 when the VÖEN is registered, 422 invalid."""
    async with _services(request).sessions() as session, session.begin():
        record = await EntityService(session).add(voen=body.voen, name=body.name, legal_form=body.legal_form,
                                                  status=body.status, director_fin=body.director_fin,
                                                  actor=principal.actor)
    return EntityView.model_validate(record.as_json())


@router.get("/entities/{voen}", response_model=EntityView)
async def show_entity(voen: str, request: Request, principal: EntityOfficer) -> EntityView:
    """A legal entity by VÖEN (audited entity.viewed)."""
    async with _services(request).sessions() as session, session.begin():
        record = await EntityService(session).get(voen)
        record_event(session, "entity.viewed", actor=principal.actor, subject=record.id,
                     request_id=request_id_var.get())
    return EntityView.model_validate(record.as_json())


@router.post("/entities/{voen}/status", response_model=EntityView)
async def change_entity_status(voen: str, body: EntityStatusChange, request: Request,
                               principal: EntityOfficer) -> EntityView:
    """Set an entity's status (active, liquidated, suspended; audited entity.status_changed)."""
    async with _services(request).sessions() as session, session.begin():
        record = await EntityService(session).set_status(voen, body.status, actor=principal.actor)
    return EntityView.model_validate(record.as_json())


@router.post("/entities/{voen}/director", response_model=EntityView)
async def change_entity_director(voen: str, body: EntityDirectorChange, request: Request,
                                 principal: EntityOfficer) -> EntityView:
    """Record the entity's director, or none (audited entity.director_changed): 404 unknown entity or person, 422
    a malformed FIN or an inactive person. The director grants and revokes the entity's mandates on their account
    page; the mandates a former director granted stay until revoked."""
    async with _services(request).sessions() as session, session.begin():
        record = await EntityService(session).set_director(voen, body.fin, actor=principal.actor)
    return EntityView.model_validate(record.as_json())


@router.post("/mandates", status_code=201, response_model=MandateView)
async def grant_mandate(body: MandateCreate, request: Request, principal: EntityOfficer) -> MandateView:
    """Grant a mandate as an officer (granted_via officer, granted_by the acting staff member; audited
    mandate.granted). 404 unknown person or entity, 422 unknown power, empty period or inactive party."""
    async with _services(request).sessions() as session, session.begin():
        record = await MandateService(session).grant(
            fin=body.fin, voen=body.voen, powers=body.powers, valid_from=body.valid_from, valid_to=body.valid_to,
            granted_by=principal.actor, granted_via="officer", actor=principal.actor)
    return MandateView.model_validate(record.as_json())


@router.get("/mandates", response_model=list[MandateView])
async def list_mandates(request: Request, principal: EntityOfficer,
                        fin: Annotated[str | None, Query(max_length=32)] = None,
                        voen: Annotated[str | None, Query(max_length=32)] = None) -> list[MandateView]:
    """Every mandate (valid or not) of the person `fin` or for the entity `voen`: exactly one of them (422
    otherwise); audited mandates.listed."""
    if (fin is None) == (voen is None):
        raise ApiProblem(422, "invalid_request", "Invalid request", "give exactly one of fin and voen")
    async with _services(request).sessions() as session, session.begin():
        mandates = MandateService(session)
        if fin is not None:
            person = await PersonService(session).person(fin)
            records, subject = await mandates.all_of(person.id), person.id
        else:
            assert voen is not None  # noqa: S101 - exactly one of fin and voen, checked above
            entity = await EntityService(session).get(voen)
            records, subject = await mandates.all_for(entity.voen), entity.id
        record_event(session, "mandates.listed", actor=principal.actor, subject=subject,
                     request_id=request_id_var.get(), detail={"count": len(records)})
    return _mandates(records)


@router.post("/mandates/{mandate_id}/revoke", response_model=MandateView)
async def revoke_mandate(mandate_id: str, request: Request, principal: EntityOfficer) -> MandateView:
    """Revoke a mandate now (audited mandate.revoked): 404 unknown, 422 when it was revoked before."""
    async with _services(request).sessions() as session, session.begin():
        record = await MandateService(session).revoke(mandate_id, actor=principal.actor)
    return MandateView.model_validate(record.as_json())


# --- staff roles ---------------------------------------------------------------------------------------------------

@router.get("/roles", response_model=list[RoleView])
async def list_roles(request: Request, principal: RoleAdmin,
                     fin: Annotated[str, Query(min_length=1, max_length=32)]) -> list[RoleView]:
    """The staff roles the person with `fin` holds now (empty for a plain citizen); audited roles.listed."""
    async with _services(request).sessions() as session, session.begin():
        person = await PersonService(session).person(fin)
        held = await RoleService(session).roles_of(person.id)
        record_event(session, "roles.listed", actor=principal.actor, subject=person.id,
                     request_id=request_id_var.get())
    return [_role(g) for g in held]


@router.post("/roles", status_code=201, response_model=RoleView)
async def grant_role(body: RoleChange, request: Request, principal: RoleAdmin) -> RoleView:
    """Give a person a staff role (audited role.granted); granting a role already held answers it again."""
    async with _services(request).sessions() as session, session.begin():
        grant = await RoleService(session).grant(fin=body.fin, role=body.role, agency_voen=body.agency_voen,
                                                 actor=principal.actor)
    return _role(grant)


@router.post("/roles/revoke", response_model=RoleRevoked)
async def revoke_role(body: RoleChange, request: Request, principal: RoleAdmin) -> RoleRevoked:
    """End a person's staff role (audited role.revoked); their tokens stop working in it at their next request."""
    async with _services(request).sessions() as session, session.begin():
        revoked = await RoleService(session).revoke(fin=body.fin, role=body.role, agency_voen=body.agency_voen,
                                                    actor=principal.actor)
    return RoleRevoked(revoked=revoked)
