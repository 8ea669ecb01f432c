"""The registration officer's screens (/officer, api.routes.officer) through the app's HTTP: who may use them (a
session, the role registration_officer or system_admin read at each request, level substantial), every screen, CSRF,
translated errors next to the fields, nothing written on a refusal, and the audit trail naming the officer."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from api.deps import Services
from api.i18n import LANGUAGES
from api.routes.officer import OFFICER_CSRF_PURPOSE
from api.web import ACCOUNT_CSRF_PURPOSE
from idp.core.sessions import csrf_for_session
from idp.sql.enrollment import EnrollmentService
from idp.sql.models import ActivationCode, LegalEntity, Mandate, Person
from idp.sql.registry import EntityService, MandateService
from idp.sql.roles import AGENCY_ADMIN, REGISTRATION_OFFICER, SYSTEM_ADMIN, RoleService
from storage.audit import AuditEvent
from storage.base import utcnow
from tests.oidc_tools import Registered, authorization_params, hidden, pkce_pair, register_client
from tests.oidc_tools import register_person as add_person
from tests.unit.api.test_pages import check_page, parse, t

OFFICER_FIN = "5ABCD12"
CITIZEN_FIN = "7XYZ123"
VOEN = "1234567891"
AGENCY_VOEN = "9900000011"


@dataclass
class Desk:
    services: Services
    rp: Registered
    officer_id: str


@pytest.fixture
async def desk(initialized: Services) -> Desk:
    rp = await register_client(initialized, name="Qeydiyyat")
    officer_id = await add_person(initialized, OFFICER_FIN)
    await grant_role(initialized, OFFICER_FIN, REGISTRATION_OFFICER)
    return Desk(initialized, rp, officer_id)


async def grant_role(services: Services, fin: str, role: str, agency: str | None = None) -> None:
    async with services.sessions() as session, session.begin():
        await RoleService(session).grant(fin=fin, role=role, agency_voen=agency, actor="test")


async def sign_in(http: httpx.AsyncClient, desk: Desk, *, level: str = "substantial", fin: str = OFFICER_FIN) -> None:
    from tests.oidc_tools import dev_login

    _, challenge = pkce_pair()
    response = await http.get("/authorize", params=authorization_params(desk.rp, challenge))
    location = response.headers["location"]
    answer = await dev_login(http, location, fin=fin, level=level)
    assert answer.status_code == 303, answer.text


def session_value(http: httpx.AsyncClient) -> str:
    return next(c.value for c in http.cookies.jar if c.name in ("acar_session", "__Host-acar_session"))


async def token(http: httpx.AsyncClient, path: str = "/officer") -> str:
    page = await http.get(path)
    assert page.status_code == 200, page.text[:500]
    return hidden(page.text, "csrf_token")


async def counts(services: Services) -> dict[str, int]:
    """How many rows the officer screens could write."""
    async with services.sessions() as session:
        return {table.__name__: (await session.execute(select(func.count()).select_from(table))).scalar_one()
                for table in (Person, LegalEntity, Mandate, ActivationCode, AuditEvent)}


async def audit(services: Services, event_type: str) -> list[AuditEvent]:
    async with services.sessions() as session:
        return list((await session.execute(select(AuditEvent).where(AuditEvent.event_type == event_type)))
                    .scalars().all())


def text_of(lang: str, key: str, **params: str) -> str:
    """The catalog text as parse() shows it (whitespace, non-breaking spaces included, collapsed)."""
    return " ".join(t(lang, key, **params).split())


def citizen(**extra: str) -> dict[str, str]:
    return {"category": "citizen", "fin": CITIZEN_FIN, "given_name": "Rəşad", "family_name": "Əliyev",
            "given_name_cyrillic": "Рашад", "family_name_cyrillic": "Алиев", "birthdate": "1985-02-03", **extra}


def field_error(html: str, field: str) -> str:
    """The error shown next to `field` (its -error paragraph), checked to be linked from the summary and the field."""
    assert f'href="#{field}"' in html, field
    assert f'id="{field}"' in html
    control = html[html.index(f'id="{field}"'):]
    control = control[:control.index(">")]
    if field not in ("category", "powers", "mandates", "code"):  # fieldsets and sections: no aria-invalid
        assert f"{field}-error" in control and 'aria-invalid="true"' in control
    start = html.index(f'id="{field}-error"')
    paragraph = html[start:html.index("</p>", start)]
    prefix, _, message = paragraph.partition("</span>")  # the visually hidden "Error:" for screen readers
    assert 'class="visually-hidden"' in prefix
    return " ".join(parse(message).text.split())


# --- who may use the screens --------------------------------------------------------------------------------

@pytest.mark.parametrize("lang", LANGUAGES)
async def test_without_a_session_the_sign_in_page(http: httpx.AsyncClient, lang: str) -> None:
    for path in ("/officer", "/officer/persons/new", "/officer/entities/new", "/officer/mandates/new"):
        r = await http.get(path, headers={"Accept-Language": lang})
        assert r.status_code == 401
        assert check_page(r, lang).h1 == [t(lang, "officer.signin.title")] and "csrf_token" not in r.text
    r = await http.post("/officer/persons", data=citizen())
    assert r.status_code == 403


@pytest.mark.parametrize(("role", "lang"), [(None, "az"), (AGENCY_ADMIN, "en"), (None, "ru")])
async def test_a_citizen_and_an_agency_admin_get_403_and_nothing_changes(desk: Desk, http: httpx.AsyncClient,
                                                                          role: str | None, lang: str) -> None:
    await add_person(desk.services, CITIZEN_FIN)
    if role:
        await grant_role(desk.services, CITIZEN_FIN, role, AGENCY_VOEN)
    async with desk.services.sessions() as session, session.begin():
        await EntityService(session).add(voen=VOEN, name="Bakı Çay MMC", legal_form="MMC", actor="test")
        mandate = await MandateService(session).grant(fin=OFFICER_FIN, voen=VOEN, powers=["sign_declarations"],
                                                      granted_by="test", granted_via="officer", actor="test")
    await sign_in(http, desk, fin=CITIZEN_FIN)
    http.headers["Accept-Language"] = lang
    for path in ("/officer", "/officer/persons/new", "/officer/entities/new", "/officer/mandates/new"):
        r = await http.get(path)
        assert r.status_code == 403
        page = check_page(r, lang)
        assert page.h1 == [t(lang, "officer.denied.title")] and page.alerts == [t(lang, "officer.denied.role")]
        assert "csrf_token" not in r.text
    # even with a token made for their own session, every form is refused and nothing is written
    csrf = csrf_for_session(session_value(http), OFFICER_CSRF_PURPOSE)
    before = await counts(desk.services)
    posts: list[tuple[str, dict[str, Any]]] = [
        ("/officer/find", {"fin": OFFICER_FIN}),
        ("/officer/persons", citizen(fin="1AAAAA1")),
        ("/officer/persons/status", {"fin": OFFICER_FIN, "status": "suspended"}),
        ("/officer/persons/code", {"fin": OFFICER_FIN}),
        ("/officer/entities", {"voen": "1111111111", "name": "X", "legal_form": "MMC"}),
        ("/officer/mandates", {"fin": OFFICER_FIN, "voen": VOEN, "powers": "represent_at_login",
                               "valid_from": "2026-01-01"}),
        (f"/officer/mandates/{mandate.id}/revoke", {"fin": OFFICER_FIN}),
    ]
    for path, data in posts:
        r = await http.post(path, data={"csrf_token": csrf, **data})
        assert r.status_code == 403, path
        assert OFFICER_FIN not in r.text or path == "/officer/find"
        assert check_page(r, lang).alerts == [t(lang, "officer.denied.role")]
    assert await counts(desk.services) == before


async def test_a_revoked_role_stops_working_at_the_next_request(desk: Desk, http: httpx.AsyncClient) -> None:
    await sign_in(http, desk)
    assert (await http.get("/officer")).status_code == 200
    async with desk.services.sessions() as session, session.begin():
        assert await RoleService(session).revoke(fin=OFFICER_FIN, role=REGISTRATION_OFFICER, actor="test")
    assert (await http.get("/officer")).status_code == 403
    await grant_role(desk.services, OFFICER_FIN, SYSTEM_ADMIN)  # a system administrator may use them too
    assert (await http.get("/officer")).status_code == 200


@pytest.mark.parametrize("lang", LANGUAGES)
async def test_a_session_below_substantial_is_told_so(desk: Desk, http: httpx.AsyncClient, lang: str) -> None:
    await sign_in(http, desk, level="low")
    http.headers["Accept-Language"] = lang
    r = await http.get("/officer")
    assert r.status_code == 403
    page = check_page(r, lang)
    assert page.alerts == [t(lang, "officer.denied.level", level=t(lang, "level.name.low"))]
    assert t(lang, "officer.denied.level_how") in page.text
    before = await counts(desk.services)
    csrf = csrf_for_session(session_value(http), OFFICER_CSRF_PURPOSE)
    r = await http.post("/officer/persons", data={"csrf_token": csrf, **citizen()})
    assert r.status_code == 403 and await counts(desk.services) == before


async def test_a_form_without_its_csrf_token_is_refused(desk: Desk, http: httpx.AsyncClient) -> None:
    await sign_in(http, desk)
    before = await counts(desk.services)
    account_token = csrf_for_session(session_value(http), ACCOUNT_CSRF_PURPOSE)
    for data in (citizen(), {"csrf_token": "x" * 43, **citizen()}, {"csrf_token": account_token, **citizen()}):
        r = await http.post("/officer/persons", data=data, headers={"Accept-Language": "en"})
        assert r.status_code == 403
        assert check_page(r, "en").alerts == [t("en", "error.form_expired")]
    assert await counts(desk.services) == before


# --- the screens --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("lang", LANGUAGES)
async def test_every_screen_in_each_language(desk: Desk, http: httpx.AsyncClient, lang: str) -> None:
    await sign_in(http, desk)
    http.headers["Accept-Language"] = lang
    titles = {"/officer": "officer.title", "/officer/persons/new": "officer.register.title",
              "/officer/entities/new": "officer.entity.title", "/officer/mandates/new": "officer.mandate.title"}
    for path, key in titles.items():
        r = await http.get(path)
        assert r.status_code == 200
        page = check_page(r, lang)
        assert page.h1 == [t(lang, key)] and "nav" in page.landmarks
        assert t(lang, "officer.signed_in_as", name="Aysel Məmmədova") in page.text


async def test_register_find_change_status_and_issue_a_code(desk: Desk, http: httpx.AsyncClient) -> None:
    await sign_in(http, desk)
    actor = f"officer:{desk.officer_id}"
    csrf = await token(http, "/officer/persons/new")
    r = await http.post("/officer/persons", data={"csrf_token": csrf, **citizen(fin="7xyz123")},
                        headers={"Accept-Language": "az"})
    assert r.status_code == 200, r.text[:2000]
    page = check_page(r, "az")
    assert page.alerts == [t("az", "officer.done.registered")]
    assert "Rəşad Əliyev" in page.text and "Рашад Алиев" in page.text and CITIZEN_FIN in page.text
    assert t("az", "officer.person.no_mandates") in page.text
    [registered] = [e for e in await audit(desk.services, "person.registered") if e.subject != desk.officer_id]
    assert registered.actor == actor

    # find by FIN (a POST: the FIN stays out of the address)
    r = await http.post("/officer/find", data={"csrf_token": csrf, "fin": CITIZEN_FIN.lower()},
                        headers={"Accept-Language": "en"})
    assert r.status_code == 200
    page = check_page(r, "en")
    assert page.h1 == [t("en", "officer.person.title")] and "Rəşad Əliyev" in page.text
    assert t("en", "officer.status.active") in page.text and "February 3, 1985" in page.text

    r = await http.post("/officer/persons/status", data={"csrf_token": csrf, "fin": CITIZEN_FIN,
                                                         "status": "suspended"}, headers={"Accept-Language": "ru"})
    assert r.status_code == 200 and check_page(r, "ru").alerts == [t("ru", "officer.done.status")]
    async with desk.services.sessions() as session:
        person = (await session.execute(select(Person).where(Person.fin == CITIZEN_FIN))).scalar_one()
    assert person.status == "suspended"
    [changed] = await audit(desk.services, "person.status_changed")
    assert changed.actor == actor and changed.detail == {"from": "active", "to": "suspended"}

    # no code for a suspended person; a status outside the list is refused
    before = await counts(desk.services)
    r = await http.post("/officer/persons/code", data={"csrf_token": csrf, "fin": CITIZEN_FIN},
                        headers={"Accept-Language": "en"})
    assert r.status_code == 400 and field_error(r.text, "code") == t("en", "officer.error.code_inactive")
    r = await http.post("/officer/persons/status", data={"csrf_token": csrf, "fin": CITIZEN_FIN, "status": "gone"},
                        headers={"Accept-Language": "az"})
    assert r.status_code == 400 and field_error(r.text, "status") == t("az", "officer.error.status")
    assert await counts(desk.services) == before

    await http.post("/officer/persons/status", data={"csrf_token": csrf, "fin": CITIZEN_FIN, "status": "active"})
    r = await http.post("/officer/persons/code", data={"csrf_token": csrf, "fin": CITIZEN_FIN})
    assert r.status_code == 200
    assert r.headers["cache-control"] == "no-store" and r.headers["pragma"] == "no-cache"
    shown = r.text[r.text.index('id="activation-code"'):]
    code = parse(shown[shown.index("<code>"):shown.index("</code>")]).text.strip()
    async with desk.services.sessions() as session, session.begin():
        started = await EnrollmentService(session, desk.services.enrollment_policy, clock=utcnow).redeem(code)
    assert started.enrollment.person_id == person.id
    issued = await audit(desk.services, "enrollment.code_issued")
    assert [e.actor for e in issued] == [actor] and code not in str(issued[0].detail)


async def test_register_a_foreigner_by_document(desk: Desk, http: httpx.AsyncClient) -> None:
    await sign_in(http, desk)
    csrf = await token(http, "/officer/persons/new")
    data = {"csrf_token": csrf, "category": "foreigner", "fin": "", "document_type": "residence_permit",
            "document_country": "tur", "document_number": "u1234567", "given_name": "Ayşe", "family_name": "Yılmaz",
            "birthdate": "1992-11-30"}
    r = await http.post("/officer/persons", data=data, headers={"Accept-Language": "en"})
    assert r.status_code == 200, r.text[:2000]
    page = check_page(r, "en")
    assert "TUR U1234567" in page.text and t("en", "officer.document.residence_permit") in page.text
    assert t("en", "officer.category.foreigner") in page.text
    assert "status-form" not in r.text  # without a FIN the FIN-based forms are not offered
    # the same document again: refused when the row is flushed (the unique index), and rolled back
    before = await counts(desk.services)
    r = await http.post("/officer/persons", data=data, headers={"Accept-Language": "en"})
    assert r.status_code == 400 and field_error(r.text, "document_number") == t("en", "officer.error.person_exists")
    assert await counts(desk.services) == before


@pytest.mark.parametrize("lang", LANGUAGES)
async def test_bad_fields_are_shown_next_to_them_and_nothing_is_written(desk: Desk, http: httpx.AsyncClient,
                                                                         lang: str) -> None:
    await sign_in(http, desk)
    http.headers["Accept-Language"] = lang
    csrf = await token(http)
    before = await counts(desk.services)
    r = await http.post("/officer/persons", data={"csrf_token": csrf, **citizen(
        fin="12345", given_name="Рашад", family_name="", family_name_cyrillic="Aliyev", birthdate="2999-01-01")})
    assert r.status_code == 400
    page = check_page(r, lang)
    assert page.h1 == [t(lang, "officer.register.title")]
    assert field_error(r.text, "fin") == text_of(lang, "officer.error.fin")
    assert field_error(r.text, "given_name") == text_of(lang, "officer.error.name_latin")
    assert field_error(r.text, "family_name") == text_of(lang, "officer.error.name_required")
    assert field_error(r.text, "birthdate") == text_of(lang, "officer.error.birthdate_future")
    assert 'value="Рашад"' in r.text  # what was typed is kept
    r = await http.post("/officer/persons", data={"csrf_token": csrf, **citizen(family_name_cyrillic="Aliyev")})
    assert r.status_code == 400
    assert field_error(r.text, "family_name_cyrillic") == text_of(lang, "officer.error.cyrillic")
    r = await http.post("/officer/find", data={"csrf_token": csrf, "fin": "ABC"})
    assert r.status_code == 400 and field_error(r.text, "fin") == text_of(lang, "officer.error.fin")
    r = await http.post("/officer/find", data={"csrf_token": csrf, "fin": "1QQQQQ1"})
    assert r.status_code == 400 and field_error(r.text, "fin") == text_of(lang, "officer.error.person_not_found")
    for voen, key in (("123", "officer.error.voen"), ("1234567893", "officer.error.voen"),
                      ("", "officer.error.voen_required")):
        r = await http.post("/officer/entities", data={"csrf_token": csrf, "voen": voen, "name": "Bakı Çay",
                                                       "legal_form": "MMC"})
        assert r.status_code == 400 and field_error(r.text, "voen") == text_of(lang, key)
    r = await http.post("/officer/mandates", data={"csrf_token": csrf, "fin": "5abcd1", "voen": "12345",
                                                   "valid_from": "2026-13-01", "valid_to": "x"})
    assert r.status_code == 400
    assert field_error(r.text, "fin") == text_of(lang, "officer.error.fin")
    assert field_error(r.text, "voen") == text_of(lang, "officer.error.voen")
    assert field_error(r.text, "powers") == text_of(lang, "officer.error.powers")
    assert field_error(r.text, "valid_from") == text_of(lang, "officer.error.date")
    assert field_error(r.text, "valid_to") == text_of(lang, "officer.error.date")
    assert await counts(desk.services) == before


async def test_register_an_entity_grant_and_revoke_a_mandate(desk: Desk, http: httpx.AsyncClient) -> None:
    await sign_in(http, desk)
    actor = f"officer:{desk.officer_id}"
    await add_person(desk.services, CITIZEN_FIN)
    csrf = await token(http)
    r = await http.post("/officer/entities", data={"csrf_token": csrf, "voen": VOEN, "name": "Bakı Çay MMC",
                                                   "legal_form": "MMC"}, headers={"Accept-Language": "az"})
    assert r.status_code == 200
    assert check_page(r, "az").alerts[0].startswith(t("az", "officer.done.entity", name="Bakı Çay MMC", voen=VOEN))
    [registered] = await audit(desk.services, "entity.registered")
    assert registered.actor == actor
    r = await http.post("/officer/entities", data={"csrf_token": csrf, "voen": VOEN, "name": "Başqa",
                                                   "legal_form": "ASC"}, headers={"Accept-Language": "az"})
    assert r.status_code == 400 and field_error(r.text, "voen") == t("az", "officer.error.entity_exists")

    # refusals that need the registry: unknown parties, a period ending before it begins
    before = await counts(desk.services)
    r = await http.post("/officer/mandates", data={"csrf_token": csrf, "fin": "1QQQQQ1", "voen": "1111111111",
                                                   "powers": "sign_declarations", "valid_from": "2026-12-06",
                                                   "valid_to": "2026-12-05"}, headers={"Accept-Language": "en"})
    assert r.status_code == 400
    assert field_error(r.text, "fin") == t("en", "officer.error.person_not_found")
    assert field_error(r.text, "voen") == t("en", "officer.error.entity_not_found")
    assert field_error(r.text, "valid_to") == t("en", "officer.error.period")
    assert 'value="sign_declarations" id="powers" checked' in r.text
    assert await counts(desk.services) == before

    today = utcnow().date()
    data = {"csrf_token": csrf, "fin": CITIZEN_FIN, "voen": VOEN, "powers": ["sign_declarations",
                                                                             "represent_at_login"],
            "valid_from": (today - dt.timedelta(days=2)).isoformat(),
            "valid_to": (today + dt.timedelta(days=30)).isoformat()}
    r = await http.post("/officer/mandates", data=data, headers={"Accept-Language": "en"})
    assert r.status_code == 200, r.text[:2000]
    page = check_page(r, "en")
    assert page.alerts == [t("en", "officer.done.granted")] and "Bakı Çay MMC" in page.text
    assert t("en", "officer.mandate.state.active") in page.text
    async with desk.services.sessions() as session:
        mandate = (await session.execute(select(Mandate))).scalar_one()
    assert mandate.granted_via == "officer" and mandate.granted_by == actor
    assert sorted(mandate.powers) == ["represent_at_login", "sign_declarations"]
    assert mandate.valid_to is not None
    assert mandate.valid_to - mandate.valid_from == dt.timedelta(days=33)  # the last day typed is included
    [granted] = await audit(desk.services, "mandate.granted")
    assert granted.actor == actor

    r = await http.post(f"/officer/mandates/{mandate.id}/revoke", data={"csrf_token": csrf, "fin": CITIZEN_FIN},
                        headers={"Accept-Language": "ru"})
    assert r.status_code == 200
    page = check_page(r, "ru")
    assert page.alerts == [t("ru", "officer.done.revoked")] and t("ru", "officer.mandate.state.revoked") in page.text
    assert "mandate-1-revoke" not in r.text
    [revoked] = await audit(desk.services, "mandate.revoked")
    assert revoked.actor == actor
    before = await counts(desk.services)
    r = await http.post(f"/officer/mandates/{mandate.id}/revoke", data={"csrf_token": csrf, "fin": CITIZEN_FIN},
                        headers={"Accept-Language": "en"})
    assert r.status_code == 400 and field_error(r.text, "mandates") == t("en", "officer.error.mandate_revoked")
    r = await http.post("/officer/mandates/no-such-id/revoke", data={"csrf_token": csrf, "fin": CITIZEN_FIN},
                        headers={"Accept-Language": "en"})
    assert r.status_code == 404 and field_error(r.text, "mandates") == t("en", "officer.error.mandate_not_found")
    # a mandate of another person is not revoked through this person's page
    async with desk.services.sessions() as session, session.begin():
        other = await MandateService(session).grant(fin=OFFICER_FIN, voen=VOEN, powers=["represent_at_login"],
                                                    granted_by="test", granted_via="officer", actor="test")
    before = await counts(desk.services)
    r = await http.post(f"/officer/mandates/{other.id}/revoke", data={"csrf_token": csrf, "fin": CITIZEN_FIN},
                        headers={"Accept-Language": "en"})
    assert r.status_code == 404 and field_error(r.text, "mandates") == t("en", "officer.error.mandate_not_found")
    assert await counts(desk.services) == before
    async with desk.services.sessions() as session:
        assert (await session.get(Mandate, other.id)).revoked_at is None  # type: ignore[union-attr]
