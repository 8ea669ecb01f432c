"""The registration officer's screens (/officer): find a person by FIN, register a person, change a person's status,
issue an activation code, register a legal entity and record its director, grant and revoke mandates.
Server-rendered pages for people, translated (api.i18n), on the registry services (idp.sql.persons,
idp.sql.registry, idp.sql.enrollment).

Who may use them, decided at every request (nothing is cached in the session):
- a person signed in with Açar's session cookie (the one /account reads); without one, the sign-in page (401);
- holding the role registration_officer or system_admin now (idp.sql.roles.RoleService.roles_of, read each time, so a
  revoked role stops working at the next request); anyone else gets a translated 403 page and nothing changes;
- whose session reached at least the level of assurance "substantial" (a passkey or an ID card; eIDAS Implementing
  Regulation (EU) 2015/1502, section 2.1 and 2.3); a weaker session gets a 403 page that says so.

Every form is a POST carrying csrf_for_session(session cookie, OFFICER_CSRF_PURPOSE) (a purpose of its own, so the
account page's token does not work here); a missing or wrong token answers 403 and changes nothing. A refused form is
shown again with what was typed and an error next to each field, linked from an error summary at the top; the unit
of work is rolled back (api.registry_forms.Refused), so nothing is written. Every action is audited by the registry
services in the same transaction with the actor "officer:<person id>" (`Officer.actor`).
"""

from __future__ import annotations

import datetime as dt
import re
import unicodedata
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final

from fastapi import APIRouter, Request, Response
from sqlalchemy.ext.asyncio import AsyncSession

from api.i18n import DISPLAY_TIMEZONE
from api.logging import request_id_var
from api.registry_forms import (
    MAX_FIELD,
    Errors,
    GrantMessages,
    MandateStateView,
    Refused,
    form_field,
    grant_period,
    grant_person,
    grant_powers,
    parse_date,
    period_bounds,
    typed_values,
)
from api.rendering import FORM_EXPIRED, error_page, render
from api.routes.passkeys import orm_unit
from api.units import RequestUnit
from api.web import NO_STORE, kick_backchannel, provider_of, read_page_form, services_of, session_cookie
from idp.core.errors import (
    EntityExists,
    IdpError,
    InvalidIdentifier,
    InvalidMandate,
    MandateNotFound,
    PersonExists,
    PersonNotFound,
)
from idp.core.interfaces import Level
from idp.core.loa import at_least
from idp.core.sessions import csrf_for_session, csrf_matches
from idp.sql.enrollment import issue_for_fin
from idp.sql.models import LegalEntity, Person
from idp.sql.persons import (
    CATEGORIES,
    DOCUMENT_TYPES,
    STATUSES,
    PersonRecord,
    PersonService,
    check_person,
    normalize_fin,
)
from idp.sql.registry import (
    POWERS,
    EntityService,
    MandateService,
    check_legal_form,
    entity_name,
    normalize_voen,
)
from idp.sql.roles import REGISTRATION_OFFICER, SYSTEM_ADMIN, RoleService
from storage.base import utcnow
from storage.direct import SessionTransaction

router = APIRouter(prefix="/officer", tags=["pages"], include_in_schema=False)

OFFICER_CSRF_PURPOSE: Final = "officer"
"""csrf_for_session(session cookie, OFFICER_CSRF_PURPOSE): the token of every officer form."""
OFFICER_ROLES: Final = frozenset({REGISTRATION_OFFICER, SYSTEM_ADMIN})
REQUIRED_LEVEL: Final[Level] = "substantial"
"""The least level of assurance of an officer's session: a passkey or an ID card (docs/assurance.md)."""
_NAME_MARKS: Final = frozenset(" -'\u2019.")

CATEGORY_KEYS: Final = {"citizen": "officer.category.citizen", "foreigner": "officer.category.foreigner",
                        "stateless": "officer.category.stateless"}
STATUS_KEYS: Final = {"active": "officer.status.active", "suspended": "officer.status.suspended",
                      "deceased": "officer.status.deceased"}
DOCUMENT_KEYS: Final = {"passport": "officer.document.passport",
                        "residence_permit": "officer.document.residence_permit",
                        "stateless_travel_document": "officer.document.stateless_travel_document"}
POWER_KEYS: Final = {"sign_declarations": "officer.power.sign_declarations",
                     "represent_at_login": "officer.power.represent_at_login"}
MANDATE_STATE_KEYS: Final = {"active": "officer.mandate.state.active", "revoked": "officer.mandate.state.revoked",
                             "expired": "officer.mandate.state.expired", "future": "officer.mandate.state.future"}
NOTICE_KEYS: Final = {"registered": "officer.done.registered", "status": "officer.done.status",
                      "granted": "officer.done.granted", "revoked": "officer.done.revoked",
                      "entity": "officer.done.entity", "director": "officer.done.director",
                      "director_none": "officer.done.director_none"}
LABELS: Final = {"category": CATEGORY_KEYS, "status": STATUS_KEYS, "document": DOCUMENT_KEYS, "power": POWER_KEYS,
                 "mandate_state": MANDATE_STATE_KEYS}
if (set(CATEGORY_KEYS), set(STATUS_KEYS), set(DOCUMENT_KEYS), set(POWER_KEYS)) != (
        set(CATEGORIES), set(STATUSES), set(DOCUMENT_TYPES), set(POWERS)):
    raise RuntimeError("the officer screens name every category, status, document type and power of the registry")

GRANT_MESSAGES: Final = GrantMessages(
    fin_required="officer.error.fin_required", fin="officer.error.fin",
    person_not_found="officer.error.person_not_found", person_inactive="officer.error.person_inactive",
    powers="officer.error.powers", date="officer.error.date", period="officer.error.period")


@dataclass(frozen=True, slots=True)
class Officer:
    """The signed-in officer of one request, inside its unit of work."""

    person_id: str
    name: str
    cookie: str
    session: AsyncSession

    @property
    def actor(self) -> str:
        """The audit trail's actor of what this officer does."""
        return f"officer:{self.person_id}"

    def page(self, template: str, context: dict[str, Any], *, status: int = 200,
             headers: dict[str, str] | None = None) -> Response:
        return render(template, {
            "officer_name": self.name, "csrf_token": csrf_for_session(self.cookie, OFFICER_CSRF_PURPOSE),
            "labels": LABELS, "errors": {}, "values": {}, "notice_key": None, **context},
            status=status, headers=headers)

    def refuse(self, template: str, context: dict[str, Any], errors: Errors, form: dict[str, list[str]]) -> Refused:
        """The form again (400) with its errors and what was typed; raised, so nothing is written."""
        return Refused(self.page(template, {**context, "errors": errors, "values": typed_values(form)}, status=400))


def _session_of(work: RequestUnit) -> AsyncSession:
    if not isinstance(work.tx, SessionTransaction):
        raise TypeError("the officer screens run in an ORM unit of work (orm_unit)")
    return work.tx.session


async def _as_officer(request: Request, act: Callable[[Officer, dict[str, list[str]]], Awaitable[Response]], *,
                      post: bool) -> Response:
    """Run `act` for the signed-in officer (see the module docstring for who that is), in one unit of work; a POST's
    CSRF token is checked first. A `Refused` page leaves with the unit rolled back."""
    services, provider = services_of(request), provider_of(request)
    cookie = session_cookie(request, provider)
    form: dict[str, list[str]] = {}
    if post:
        form = await read_page_form(request)
        if cookie is None or not csrf_matches(cookie, OFFICER_CSRF_PURPOSE, form.get("csrf_token", [])):
            return error_page("invalid_request", FORM_EXPIRED, status=403)
    try:
        async with orm_unit(services) as work:
            state = await provider.login_sessions.current(work.oidc, cookie) if cookie else None
            if state is None or cookie is None:
                return render("account_signin.html", {"title_key": "officer.signin.title"}, status=401)
            session = _session_of(work)
            roles = {grant.role for grant in await RoleService(session).roles_of(state.person_id)}
            if not roles & OFFICER_ROLES:
                return render("officer_denied.html", {"reason": "role", "level": state.level}, status=403)
            if not at_least(state.level, REQUIRED_LEVEL):
                return render("officer_denied.html", {"reason": "level", "level": state.level}, status=403)
            name = await work.passkeys.display_name(state.person_id) or ""
            return await act(Officer(state.person_id, name, cookie, session), form)
    except Refused as refused:
        return refused.response


# --- finding a person ---------------------------------------------------------------------------------------

async def _person_page(officer: Officer, person: PersonRecord, *, notice_key: str | None = None,
                       errors: Errors | None = None, status: int = 200) -> Response:
    mandates = await MandateService(officer.session).all_of(person.id)
    now = utcnow()
    return officer.page("officer_person.html", {
        "person": person, "mandates": [MandateStateView.at(m, now) for m in mandates], "notice_key": notice_key,
        "errors": errors or {}, "statuses": STATUSES}, status=status)


@router.get("")
async def officer_home(request: Request) -> Response:
    """The officer's start page: find a person by FIN, and the ways to the other screens."""
    async def show(officer: Officer, _form: dict[str, list[str]]) -> Response:
        return officer.page("officer.html", {})

    return await _as_officer(request, show, post=False)


async def _person_of(officer: Officer, form: dict[str, list[str]], template: str, context: dict[str, Any],
                     field: str = "fin") -> Person:
    """The person whose FIN the form names, or the form again with the FIN's error."""
    fin = form_field(form, field)
    if not fin:
        raise officer.refuse(template, context, {field: "officer.error.fin_required"}, form)
    try:
        return await PersonService(officer.session).person(fin)
    except InvalidIdentifier:
        raise officer.refuse(template, context, {field: "officer.error.fin"}, form) from None
    except PersonNotFound:
        raise officer.refuse(template, context, {field: "officer.error.person_not_found"}, form) from None


@router.post("/find")
async def find_person(request: Request) -> Response:
    """The person with the FIN typed: names, status, document, mandates, and the forms that act on them. A POST,
    so that the FIN stays out of addresses and access logs."""
    async def find(officer: Officer, form: dict[str, list[str]]) -> Response:
        person = await _person_of(officer, form, "officer.html", {})
        return await _person_page(officer, PersonRecord.of(person))

    return await _as_officer(request, find, post=True)


# --- registering a person -----------------------------------------------------------------------------------

def _latin_name(value: str) -> bool:
    """Letters of the Latin script (Azerbaijani ə, ğ, ı, ö, ü, ş, ç among them) with the spaces, hyphens,
    apostrophes and dots of compound names."""
    return bool(value) and value[0] not in _NAME_MARKS and all(
        c in _NAME_MARKS or (c.isalpha() and "LATIN" in unicodedata.name(c, "")) for c in value)


def _check_identity(form: dict[str, list[str]], errors: Errors) -> dict[str, Any]:
    """The category, the FIN (a citizen's is required) and, for a foreigner or stateless person, the document."""
    category = form_field(form, "category")
    if category not in CATEGORIES:
        errors["category"] = "officer.error.category"
    fin = form_field(form, "fin")
    if fin:
        try:
            fin = normalize_fin(fin)
        except InvalidIdentifier:
            errors["fin"] = "officer.error.fin"
    elif category == "citizen":
        errors["fin"] = "officer.error.fin_required"
    if category not in ("foreigner", "stateless"):
        return {"category": category, "fin": fin or None, "document_type": None, "document_country": None,
                "document_number": None}
    document_type = form_field(form, "document_type")
    country, number = form_field(form, "document_country").upper(), form_field(form, "document_number").upper()
    if document_type not in DOCUMENT_TYPES:
        errors["document_type"] = "officer.error.document_type"
    if not re.fullmatch(r"[A-Z]{3}", country):
        errors["document_country"] = "officer.error.document_country"
    if not re.fullmatch(r"[0-9A-Z]{4,20}", number):
        errors["document_number"] = "officer.error.document_number"
    return {"category": category, "fin": fin or None, "document_type": document_type or None,
            "document_country": country or None, "document_number": number or None}


def _check_names(form: dict[str, list[str]], errors: Errors) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for name in ("given_name", "family_name"):
        value = values[name] = form_field(form, name)
        if not value:
            errors[name] = "officer.error.name_required"
        elif len(value) > MAX_FIELD or not _latin_name(value):
            errors[name] = "officer.error.name_latin"
    for name in ("given_name_cyrillic", "family_name_cyrillic"):
        values[name] = form_field(form, name) or None
    return values


def _check_birthdate(form: dict[str, list[str]], errors: Errors, today: dt.date) -> dt.date | None:
    typed = form_field(form, "birthdate")
    birthdate = parse_date(typed)
    if not typed:
        errors["birthdate"] = "officer.error.birthdate_required"
    elif birthdate is None:
        errors["birthdate"] = "officer.error.date"
    elif birthdate > today:
        errors["birthdate"] = "officer.error.birthdate_future"
    return birthdate


REGISTER_ORDER: Final = ("category", "fin", "document_type", "document_country", "document_number", "given_name",
                         "family_name", "given_name_cyrillic", "family_name_cyrillic", "birthdate")


def _check_registration(form: dict[str, list[str]], today: dt.date) -> tuple[dict[str, Any], Errors]:
    """The person's fields as PersonService.add takes them, and each field's error (message ids) in the form's
    order. The registry's own rules (idp.sql.persons.check_person) run last: the Cyrillic names are what is left."""
    errors: Errors = {}
    values = _check_identity(form, errors) | _check_names(form, errors)
    values["birthdate"] = _check_birthdate(form, errors, today)
    if not errors:
        _, problems = check_person(**values, today=today)
        for column, _reason in problems:
            errors.setdefault(column, "officer.error.cyrillic" if column.endswith("_cyrillic")
                              else "officer.error.invalid")
    return values, {k: errors[k] for k in REGISTER_ORDER if k in errors} | {
        k: v for k, v in errors.items() if k not in REGISTER_ORDER}


REGISTER_CONTEXT: Final = {"categories": CATEGORIES, "document_types": DOCUMENT_TYPES}


@router.get("/persons/new")
async def register_form(request: Request) -> Response:
    async def show(officer: Officer, _form: dict[str, list[str]]) -> Response:
        return officer.page("officer_register.html", {**REGISTER_CONTEXT, "values": {"category": "citizen"}})

    return await _as_officer(request, show, post=False)


@router.post("/persons")
async def register_person(request: Request) -> Response:
    """Register a person (PersonService.add, audited person.registered by the officer); the person's page after."""
    async def register(officer: Officer, form: dict[str, list[str]]) -> Response:
        values, errors = _check_registration(form, utcnow().astimezone(DISPLAY_TIMEZONE).date())
        if errors:
            raise officer.refuse("officer_register.html", REGISTER_CONTEXT, errors, form)
        try:
            person = await PersonService(officer.session).add(**values, actor=officer.actor)
        except PersonExists:
            field = "fin" if values["fin"] else "document_number"
            raise officer.refuse("officer_register.html", REGISTER_CONTEXT,
                                 {field: "officer.error.person_exists"}, form) from None
        except InvalidIdentifier:
            raise officer.refuse("officer_register.html", REGISTER_CONTEXT,
                                 {"category": "officer.error.invalid"}, form) from None
        return await _person_page(officer, person, notice_key=NOTICE_KEYS["registered"])

    return await _as_officer(request, register, post=True)


# --- a person's status and activation code ------------------------------------------------------------------

@router.post("/persons/status")
async def change_status(request: Request) -> Response:
    """Set a person's status (PersonService.set_status, audited person.status_changed by the officer). Suspending
    a person ends their sessions and grants in the same transaction; the back-channel logout tokens it queued are
    sent at once (kick_backchannel)."""
    async def change(officer: Officer, form: dict[str, list[str]]) -> Response:
        person = await _person_of(officer, form, "officer.html", {})
        status = form_field(form, "status")
        if status not in STATUSES:
            raise Refused(await _person_page(officer, PersonRecord.of(person), status=400,
                                              errors={"status": "officer.error.status"}))
        people = PersonService(officer.session, request_id=request_id_var.get(),
                               logout_retry_seconds=provider.settings.backchannel_logout_retry_seconds)
        changed = await people.set_status(person.fin or "", status, actor=officer.actor)
        return await _person_page(officer, changed, notice_key=NOTICE_KEYS["status"])

    provider = provider_of(request)
    response = await _as_officer(request, change, post=True)
    kick_backchannel(request)
    return response


@router.post("/persons/code")
async def issue_code(request: Request) -> Response:
    """Issue an activation code for the person (idp.sql.enrollment.issue_for_fin; their earlier unused codes stop
    working). The code is shown once, on a page that is never stored (Cache-Control: no-store); the audit trail
    names the officer, never the code."""
    services = services_of(request)

    async def issue(officer: Officer, form: dict[str, list[str]]) -> Response:
        person = await _person_of(officer, form, "officer.html", {})
        if person.status != "active":
            raise Refused(await _person_page(officer, PersonRecord.of(person), status=400,
                                              errors={"code": "officer.error.code_inactive"}))
        record, issued, _removed = await issue_for_fin(
            officer.session, services.enrollment_policy, services.passkeys, fin=person.fin or "",
            issued_by=officer.actor, revoke_credentials=False, clock=utcnow, request_id=request_id_var.get())
        return officer.page("officer_code.html", {"person": record, "code": issued.code,
                                                  "expires_at": issued.expires_at}, headers=NO_STORE)

    return await _as_officer(request, issue, post=True)


# --- legal entities -----------------------------------------------------------------------------------------

@router.get("/entities/new")
async def entity_form(request: Request) -> Response:
    async def show(officer: Officer, _form: dict[str, list[str]]) -> Response:
        return officer.page("officer_entity.html", {"registered": None})

    return await _as_officer(request, show, post=False)


@router.post("/entities")
async def register_entity(request: Request) -> Response:
    """Register a legal entity (EntityService.add, audited entity.registered by the officer)."""
    async def register(officer: Officer, form: dict[str, list[str]]) -> Response:
        errors: Errors = {}
        voen, name, legal_form = form_field(form, "voen"), form_field(form, "name"), form_field(form, "legal_form")
        checks: list[tuple[str, str, Callable[[str], str], str, str]] = [
            ("voen", voen, normalize_voen, "officer.error.voen", "officer.error.voen_required"),
            ("name", name, entity_name, "officer.error.entity_name", "officer.error.entity_name_required"),
            ("legal_form", legal_form, check_legal_form, "officer.error.legal_form",
             "officer.error.legal_form_required")]
        for field, value, check, key, missing in checks:
            if not value:
                errors[field] = missing
                continue
            try:
                check(value)
            except InvalidIdentifier:
                errors[field] = key
        context = {"registered": None}
        director_fin = form_field(form, "director_fin")
        if director_fin:
            await _director(officer, director_fin, "director_fin", errors)
        if errors:
            raise officer.refuse("officer_entity.html", context, errors, form)
        try:
            entity = await EntityService(officer.session).add(voen=voen, name=name, legal_form=legal_form,
                                                              director_fin=director_fin or None,
                                                              actor=officer.actor)
        except EntityExists:
            raise officer.refuse("officer_entity.html", context, {"voen": "officer.error.entity_exists"},
                                 form) from None
        return officer.page("officer_entity.html", {"registered": entity, "notice_key": NOTICE_KEYS["entity"]})

    return await _as_officer(request, register, post=True)


async def _director(officer: Officer, fin: str, field: str, errors: Errors) -> None:
    """Note the error of a director's FIN under `field`: malformed, unknown, or a person not active."""
    try:
        person = await PersonService(officer.session).person(fin)
    except InvalidIdentifier:
        errors[field] = "officer.error.fin"
        return
    except PersonNotFound:
        errors[field] = "officer.error.person_not_found"
        return
    if person.status != "active":
        errors[field] = "officer.error.director_inactive"


@router.post("/entities/director")
async def set_entity_director(request: Request) -> Response:
    """Record an entity's director, or none when the FIN is left empty (EntityService.set_director, audited
    entity.director_changed by the officer). The director grants and revokes the entity's mandates on their account
    page (api.routes.director); the mandates a former director granted stay until revoked."""
    async def change(officer: Officer, form: dict[str, list[str]]) -> Response:
        errors: Errors = {}
        voen, fin = form_field(form, "set_voen"), form_field(form, "set_director_fin")
        entity = None
        if not voen:
            errors["set_voen"] = "officer.error.voen_required"
        else:
            try:
                entity = await EntityService(officer.session).find(normalize_voen(voen))
            except InvalidIdentifier:
                errors["set_voen"] = "officer.error.voen"
            else:
                if entity is None:
                    errors["set_voen"] = "officer.error.entity_not_found"
        if fin:
            await _director(officer, fin, "set_director_fin", errors)
        context = {"registered": None}
        if errors or entity is None:
            raise officer.refuse("officer_entity.html", context, errors, form)
        record = await EntityService(officer.session).set_director(entity.voen, fin or None, actor=officer.actor)
        return officer.page("officer_entity.html", {"registered": None, "director_set": record,
                                                    "notice_key": NOTICE_KEYS["director" if record.director_fin
                                                                              else "director_none"]})

    return await _as_officer(request, change, post=True)


# --- mandates -----------------------------------------------------------------------------------------------

MANDATE_CONTEXT: Final = {"powers": POWERS}


@router.get("/mandates/new")
async def mandate_form(request: Request) -> Response:
    async def show(officer: Officer, _form: dict[str, list[str]]) -> Response:
        today = utcnow().astimezone(DISPLAY_TIMEZONE).date().isoformat()
        return officer.page("officer_mandate.html", {**MANDATE_CONTEXT, "values": {"valid_from": today,
                                                                                   "powers": []}})

    return await _as_officer(request, show, post=False)


async def _mandate_entity(officer: Officer, voen: str, errors: Errors) -> LegalEntity | None:
    """The active legal entity a mandate acts for, else None and the VÖEN's error."""
    if not voen:
        errors["voen"] = "officer.error.voen_required"
        return None
    try:
        entity = await EntityService(officer.session).find(normalize_voen(voen))
    except InvalidIdentifier:
        errors["voen"] = "officer.error.voen"
        return None
    if entity is None:
        errors["voen"] = "officer.error.entity_not_found"
    elif entity.status != "active":
        errors["voen"] = "officer.error.entity_inactive"
    return entity


@router.post("/mandates")
async def grant_mandate(request: Request) -> Response:
    """Grant a mandate (MandateService.grant with granted_via "officer", audited mandate.granted by the officer):
    from the first day typed (Azerbaijan time) to the end of the last day typed, or until revoked."""
    async def grant(officer: Officer, form: dict[str, list[str]]) -> Response:
        errors: Errors = {}
        fin, voen = form_field(form, "fin"), form_field(form, "voen")
        person = await grant_person(officer.session, fin, errors, GRANT_MESSAGES)
        entity = await _mandate_entity(officer, voen, errors)
        powers = grant_powers(form, errors, GRANT_MESSAGES)
        first, last = grant_period(form, errors, GRANT_MESSAGES)
        if errors or person is None or entity is None or first is None:
            raise officer.refuse("officer_mandate.html", MANDATE_CONTEXT, errors, form)
        valid_from, valid_to = period_bounds(first, last)
        try:
            await MandateService(officer.session).grant(
                fin=fin, voen=voen, powers=powers, valid_from=valid_from, valid_to=valid_to,
                granted_by=officer.actor, granted_via="officer", actor=officer.actor)
        except IdpError:  # InvalidMandate, or a party changed since the checks above
            raise officer.refuse("officer_mandate.html", MANDATE_CONTEXT, {"powers": "officer.error.invalid"},
                                 form) from None
        return await _person_page(officer, PersonRecord.of(person), notice_key=NOTICE_KEYS["granted"])

    return await _as_officer(request, grant, post=True)


@router.post("/mandates/{mandate_id}/revoke")
async def revoke_mandate(request: Request, mandate_id: str) -> Response:
    """Revoke a mandate now (MandateService.revoke, audited mandate.revoked by the officer); the page of the person
    it was granted to after."""
    async def revoke(officer: Officer, form: dict[str, list[str]]) -> Response:
        person = await _person_of(officer, form, "officer.html", {})
        record = PersonRecord.of(person)
        mandates = {m.id for m in await MandateService(officer.session).all_of(person.id)}
        if mandate_id not in mandates:
            raise Refused(await _person_page(officer, record, status=404,
                                              errors={"mandates": "officer.error.mandate_not_found"}))
        try:
            await MandateService(officer.session).revoke(mandate_id, actor=officer.actor)
        except (MandateNotFound, InvalidMandate):
            raise Refused(await _person_page(officer, record, status=400,
                                              errors={"mandates": "officer.error.mandate_revoked"})) from None
        return await _person_page(officer, record, notice_key=NOTICE_KEYS["revoked"])

    return await _as_officer(request, revoke, post=True)


__all__ = ["OFFICER_CSRF_PURPOSE", "OFFICER_ROLES", "REQUIRED_LEVEL", "router"]
