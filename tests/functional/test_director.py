"""An entity's director (issue 16: mandates "granted by an officer or by the entity's director, revocable"): set by
`acar entity add --director` / `acar entity set-director`, the entities CSV import (director_fin) and the admin API,
each refusing a bad FIN with nothing written; the director grants and revokes the entity's mandates on /account
(granted_via director, audited); a non-director, a former director, the director of a suspended entity, a weak
session and a forged revoke of another entity's mandate are refused and change nothing; the export names them."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from markupsafe import escape
from sqlalchemy import select

from api.auth import mint_admin_token
from api.deps import Services
from api.web import ACCOUNT_CSRF_PURPOSE, DIRECTOR_CSRF_PURPOSE
from idp.core.sessions import csrf_for_session
from idp.sql.models import LegalEntity, Mandate
from idp.sql.registry import EntityService, MandateService
from tests.functional.helpers import InProcessAcar
from tests.functional.test_import_cli import counts, write
from tests.functional.test_officer_pages import Desk, audit, desk, field_error, session_value, sign_in, token
from tests.oidc_tools import register_person as add_person
from tests.unit.api.test_pages import check_page, t

__all__ = ["desk"]  # the fixture, imported

DIRECTOR, OTHER, THIRD = "3DIR456", "7XYZ123", "6QWE456"
VOEN, OTHER_VOEN = "1234567891", "1400057421"


# --- setting the director -----------------------------------------------------------------------------------

async def test_cli_and_csv_set_a_director_and_refuse_a_bad_fin(acar: InProcessAcar, services: Services,
                                                                tmp_path: Path) -> None:
    acar("person", "add", "--fin", DIRECTOR, "--given-name", "Aysel", "--family-name", "Məmmədova")
    acar("person", "add", "--fin", OTHER, "--given-name", "Rəşad", "--family-name", "Əliyev")
    before = await counts(services)
    bad = acar("entity", "add", "--voen", VOEN, "--name", "Bakı Çay MMC", "--legal-form", "MMC", "--director",
               "9ZZZ999", check=False)
    assert bad.returncode == 1 and "no person with FIN 9ZZZ999" in bad.stderr
    assert await counts(services) == before
    added = acar.json("entity", "add", "--voen", VOEN, "--name", "Bakı Çay MMC", "--legal-form", "MMC",
                      "--director", DIRECTOR)
    assert added["director_fin"] == DIRECTOR
    before = await counts(services)
    for fin, message in (("9ZZZ999", "no person with FIN 9ZZZ999"), ("bad", "FIN")):
        refused = acar("entity", "set-director", VOEN, fin, check=False)
        assert refused.returncode == 1 and message in refused.stderr
    assert acar("entity", "set-director", VOEN, check=False).returncode == 1  # neither a FIN nor --none
    assert await counts(services) == before
    assert acar.json("entity", "set-director", VOEN, OTHER)["director_fin"] == OTHER
    assert acar.json("entity", "show", VOEN)["director_fin"] == OTHER
    assert acar.json("entity", "set-director", VOEN, "--none")["director_fin"] is None
    changes = [e.detail for e in await audit(services, "entity.director_changed")]
    assert [c["to"] is None for c in changes] == [False, False, True]

    before = await counts(services)
    rows = ("voen,name,legal_form,director_fin\n"
            f"{OTHER_VOEN},Açar MMC,MMC,{DIRECTOR}\n"
            "1234567892,Rəşad Əliyev,FS,9ZZZ999\n"        # 3: unknown FIN
            "1234567893,Üçüncü MMC,MMC,12\n")             # 4: malformed FIN
    proc = acar("import", "entities", write(tmp_path, "e.csv", rows), check=False)
    assert proc.returncode == 1
    assert "line 3, column director_fin: no person with FIN 9ZZZ999 is registered" in proc.stderr
    assert "line 4, column director_fin:" in proc.stderr
    assert await counts(services) == before
    good = rows.splitlines(keepends=True)
    assert acar.json("import", "entities", write(tmp_path, "g.csv", good[0] + good[1]))["imported"] == 1
    assert acar.json("entity", "show", OTHER_VOEN)["director_fin"] == DIRECTOR


async def test_the_admin_api_sets_a_director(client: httpx.AsyncClient, initialized: Services) -> None:
    await add_person(initialized, DIRECTOR)
    minted = await mint_admin_token(initialized, subject="operator", scopes={"acar:admin"}, ttl_seconds=600)
    headers = {"Authorization": f"Bearer {minted['access_token']}"}
    body = {"voen": VOEN, "name": "Bakı Çay MMC", "legal_form": "MMC"}
    before = await counts(initialized)
    r = await client.post("/admin/entities", headers=headers, json={**body, "director_fin": "9ZZZ999"})
    assert r.status_code == 404 and r.headers["content-type"].startswith("application/problem+json")
    assert await counts(initialized) == before
    r = await client.post("/admin/entities", headers=headers, json=body)
    assert r.status_code == 201 and r.json()["director_fin"] is None
    for fin, status in (("9ZZZ999", 404), ("bad!", 422), ("", 422)):
        r = await client.post(f"/admin/entities/{VOEN}/director", headers=headers, json={"fin": fin})
        assert r.status_code == status, r.text
    assert (await client.post("/admin/entities/1234567892/director", headers=headers,
                              json={"fin": DIRECTOR})).status_code == 404
    r = await client.post(f"/admin/entities/{VOEN}/director", headers=headers, json={"fin": DIRECTOR})
    assert r.status_code == 200 and r.json()["director_fin"] == DIRECTOR
    assert (await client.get(f"/admin/entities/{VOEN}", headers=headers)).json()["director_fin"] == DIRECTOR
    event = (await audit(initialized, "entity.director_changed"))[-1]
    assert event.actor == "admin:operator"
    r = await client.post(f"/admin/entities/{VOEN}/director", headers=headers, json={"fin": None})
    assert r.json()["director_fin"] is None


async def test_the_officer_screen_sets_a_director(desk: Desk, http: httpx.AsyncClient) -> None:
    services = desk.services
    await add_person(services, DIRECTOR)
    await add_person(services, OTHER)
    async with services.sessions() as session, session.begin():
        from idp.sql.persons import PersonService
        await PersonService(session).set_status(OTHER, "suspended", actor="test")
    await sign_in(http, desk)
    http.headers["Accept-Language"] = "az"
    csrf = await token(http, "/officer/entities/new")
    entity = {"csrf_token": csrf, "voen": VOEN, "name": "Bakı Çay MMC", "legal_form": "MMC"}
    before = await counts(services)
    for fin, key in (("12", "officer.error.fin"), ("9ZZZ999", "officer.error.person_not_found"),
                     (OTHER, "officer.error.director_inactive")):
        r = await http.post("/officer/entities", data={**entity, "director_fin": fin})
        assert r.status_code == 400 and field_error(r.text, "director_fin") == " ".join(t("az", key).split())
    assert await counts(services) == before
    r = await http.post("/officer/entities", data={**entity, "director_fin": DIRECTOR.lower()})
    assert r.status_code == 200
    async with services.sessions() as session:
        assert (await EntityService(session).get(VOEN)).director_fin == DIRECTOR

    before = await counts(services)
    for form, field, key in (({"set_voen": "1111111111", "set_director_fin": DIRECTOR}, "set_voen",
                              "officer.error.entity_not_found"),
                             ({"set_voen": VOEN, "set_director_fin": "9ZZZ999"}, "set_director_fin",
                              "officer.error.person_not_found")):
        r = await http.post("/officer/entities/director", data={"csrf_token": csrf, **form})
        assert r.status_code == 400 and field_error(r.text, field) == " ".join(t("az", key).split())
    assert await counts(services) == before
    r = await http.post("/officer/entities/director", data={"csrf_token": csrf, "set_voen": VOEN,
                                                             "set_director_fin": ""})
    assert r.status_code == 200 and " ".join(t("az", "officer.done.director_none", voen=VOEN).split()) in \
        " ".join(r.text.split())
    changes = await audit(services, "entity.director_changed")
    assert [c.detail["to"] is None for c in changes] == [False, True]
    assert {c.actor for c in changes} == {f"officer:{desk.officer_id}"}


# --- the director on the account page ------------------------------------------------------------------------

async def _company(services: Services, *, director: str | None = DIRECTOR, voen: str = VOEN) -> None:
    async with services.sessions() as session, session.begin():
        await EntityService(session).add(voen=voen, name="Bakı Çay MMC" if voen == VOEN else "Açar MMC",
                                         legal_form="MMC", director_fin=director, actor="test")


async def _mandates(services: Services) -> list[Mandate]:
    async with services.sessions() as session:
        return list((await session.execute(select(Mandate).order_by(Mandate.created_at))).scalars())


def _shown(lang: str, key: str, html: str) -> bool:
    return " ".join(str(escape(t(lang, key))).split()) in " ".join(html.split())


def _grant_form(token: str, **extra: str | list[str]) -> dict[str, str | list[str]]:
    return {"csrf_token": token, "fin": OTHER, "powers": ["sign_declarations"], "valid_from": "2026-12-01",
            "valid_to": "", **extra}


async def test_the_director_grants_and_revokes_on_the_account_page(desk: Desk, http: httpx.AsyncClient) -> None:
    services = desk.services
    await add_person(services, OTHER)
    await add_person(services, DIRECTOR)
    await _company(services)
    await sign_in(http, desk, fin=DIRECTOR)
    http.headers["Accept-Language"] = "en"
    page = await http.get("/account")
    assert page.status_code == 200 and 'id="companies"' in page.text and "Bakı Çay MMC" in page.text
    assert 'id="company-1-none"' in page.text
    token = csrf_for_session(session_value(http), DIRECTOR_CSRF_PURPOSE)

    # errors next to the fields, nothing written
    before = await counts(services)
    for form, field, key in (
            (_grant_form(token, fin=""), "fin", "account.director.error.fin_required"),
            (_grant_form(token, fin="9ZZZ999"), "fin", "account.director.error.person_not_found"),
            (_grant_form(token, fin=DIRECTOR), "fin", "account.director.error.self"),
            (_grant_form(token, powers=[]), "powers", "account.director.error.powers"),
            (_grant_form(token, powers=["everything"]), "powers", "account.director.error.powers"),
            (_grant_form(token, valid_from="1.12.2026"), "valid_from", "account.director.error.date"),
            (_grant_form(token, valid_to="2026-11-01"), "valid_to", "account.director.error.period")):
        r = await http.post(f"/account/companies/{VOEN}/mandates", data=form)
        assert r.status_code == 400, (form, r.text[:300])
        assert f'id="company-1-{field}-error"' in r.text and f'href="#company-1-{field}"' in r.text
        assert _shown("en", key, r.text)
    account_token = csrf_for_session(session_value(http), ACCOUNT_CSRF_PURPOSE)
    assert (await http.post(f"/account/companies/{VOEN}/mandates",
                            data=_grant_form(account_token))).status_code == 403  # another purpose's token
    assert await counts(services) == before

    r = await http.post(f"/account/companies/{VOEN}/mandates", data=_grant_form(token, valid_to="2027-12-31"))
    assert r.status_code == 303 and r.headers["location"].startswith("/account?done=director_granted")
    [mandate] = await _mandates(services)
    assert mandate.granted_via == "director" and mandate.granted_by.startswith("director:")
    page = await http.get("/account?done=director_granted")
    assert t("en", "account.director.done.granted") in page.text and OTHER in page.text
    [granted] = await audit(services, "mandate.granted")
    assert granted.actor == mandate.granted_by and granted.detail["granted_via"] == "director"

    export = (await http.get("/account/export")).json()
    assert [e["voen"] for e in export["companies_directed"]] == [VOEN]
    assert [m["id"] for m in export["mandates_granted_as_director"]] == [mandate.id]

    r = await http.post(f"/account/companies/{VOEN}/mandates/{mandate.id}/revoke", data={"csrf_token": token})
    assert r.status_code == 303
    [mandate] = await _mandates(services)
    assert mandate.revoked_at is not None and mandate.revoked_by == granted.actor
    r = await http.post(f"/account/companies/{VOEN}/mandates/{mandate.id}/revoke", data={"csrf_token": token})
    assert r.status_code == 400


async def test_a_forged_revoke_of_another_entitys_mandate_is_refused(desk: Desk, http: httpx.AsyncClient) -> None:
    services = desk.services
    await add_person(services, OTHER)
    await add_person(services, DIRECTOR)
    await _company(services)
    await _company(services, director=None, voen=OTHER_VOEN)
    async with services.sessions() as session, session.begin():
        theirs = await MandateService(session).grant(fin=OTHER, voen=OTHER_VOEN, powers=["sign_declarations"],
                                                     granted_by="test", granted_via="officer", actor="test")
    await sign_in(http, desk, fin=DIRECTOR)
    token = csrf_for_session(session_value(http), DIRECTOR_CSRF_PURPOSE)
    before = await counts(services)
    r = await http.post(f"/account/companies/{VOEN}/mandates/{theirs.id}/revoke", data={"csrf_token": token})
    assert r.status_code == 404
    r = await http.post(f"/account/companies/{OTHER_VOEN}/mandates/{theirs.id}/revoke", data={"csrf_token": token})
    assert r.status_code == 403
    assert await counts(services) == before
    assert all(m.revoked_at is None for m in await _mandates(services))


@pytest.mark.parametrize(("case", "lang"), [("stranger", "az"), ("former", "en"), ("suspended", "ru"),
                                            ("weak", "en")])
async def test_who_is_not_the_director_now_is_refused(desk: Desk, http: httpx.AsyncClient, case: str,
                                                      lang: str) -> None:
    services = desk.services
    await add_person(services, OTHER)
    await add_person(services, DIRECTOR)
    await add_person(services, THIRD)
    await _company(services)
    async with services.sessions() as session, session.begin():
        mandate = await MandateService(session).grant(fin=THIRD, voen=VOEN, powers=["sign_declarations"],
                                                      granted_by="test", granted_via="officer", actor="test")
        if case == "former":
            await EntityService(session).set_director(VOEN, OTHER, actor="test")
        if case == "suspended":
            await EntityService(session).set_status(VOEN, "suspended", actor="test")
    await sign_in(http, desk, fin=OTHER if case == "stranger" else DIRECTOR,
                  level="low" if case == "weak" else "substantial")
    http.headers["Accept-Language"] = lang
    page = await http.get("/account")
    assert page.status_code == 200
    if case == "weak":
        assert 'id="companies-level"' in page.text and 'id="company-1-grant"' not in page.text
    else:
        assert 'id="companies"' not in page.text
    token = csrf_for_session(session_value(http), DIRECTOR_CSRF_PURPOSE)
    before = await counts(services)
    r = await http.post(f"/account/companies/{VOEN}/mandates", data=_grant_form(token, fin=THIRD))
    assert r.status_code == 403
    key = "account.director.error.level" if case == "weak" else "account.director.error.not_director"
    assert check_page(r, lang) is not None and _shown(lang, key, r.text)
    r = await http.post(f"/account/companies/{VOEN}/mandates/{mandate.id}/revoke", data={"csrf_token": token})
    assert r.status_code == 403
    assert await counts(services) == before
    assert all(m.revoked_at is None for m in await _mandates(services))
    async with services.sessions() as session:
        entity = (await session.execute(select(LegalEntity))).scalar_one()
    assert json.dumps(entity.status) in ('"active"', '"suspended"')
