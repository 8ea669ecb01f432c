"""Staff roles at the admin API (issue 16): role scopes issued only to persons who hold the role, real tokens from
the real authorization code flow, and every forbidden path answering 403 or 404 while changing nothing.

The staff members sign in through the development login in a browser of their own (tests/oidc_tools.py), at a
client registered for the role scopes; their access tokens are then the admin API's bearer tokens.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select, text, update

from api.auth import mint_admin_token
from api.deps import Services
from idp.sql.models import OAuthClient, Person, StaffRole
from idp.sql.persons import PersonService
from idp.sql.registry import EntityService
from idp.sql.roles import RoleService
from keys.jose import b64url_decode
from storage.audit import AuditEvent
from storage.base import Base
from tests.functional.helpers import InProcessAcar
from tests.oidc_tools import (
    Registered,
    asgi_browser,
    authorization_params,
    dev_login,
    pkce_pair,
    refresh,
    register_client,
    tokens_for,
)
from tests.replay import Replays

ADMIN_FIN, OFFICER_FIN, AGENCY_A_FIN, AGENCY_B_FIN, CITIZEN_FIN = "1ADMIN1", "2OFFIC2", "3AGNA33", "4AGNB44", "5CITZ55"
AGENCY_A, AGENCY_B, ENTITY = "1400057421", "2500000011", "1700000031"
ROLE_SCOPES = "acar:role:registration_officer acar:role:agency_admin acar:role:system_admin"
NEW_PERSON = {"fin": "6NEWP66", "given_name": "Elnur", "family_name": "Quliyev", "birthdate": "1985-02-03"}


def _claims(token: str) -> dict[str, Any]:
    return dict(json.loads(b64url_decode(token.split(".")[1])))


_TABLES = Base.metadata.sorted_tables
_WRITTEN = text(" UNION ALL ".join(f'SELECT {i} WHERE EXISTS (SELECT 1 FROM "{t.name}")'  # noqa: S608 - metadata names
                                   for i, t in enumerate(_TABLES)))
"""The indexes in _TABLES of the tables that hold rows, in one round trip."""


async def _snapshot(services: Services) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table, sorted: a refused request must leave this unchanged (audit trail included).

    The tables that hold rows are read (a table missing here is empty: a row written in it makes the table appear),
    the empty ones cost one query in all rather than one each."""
    out: dict[str, list[tuple[Any, ...]]] = {}
    async with services.engine.connect() as conn:
        for i in sorted((await conn.execute(_WRITTEN)).scalars()):
            rows = (await conn.execute(_TABLES[i].select())).all()
            out[_TABLES[i].name] = sorted(tuple(map(repr, row)) for row in rows)
    return out


class Staff:
    """The people of these tests, their roles, the staff client, and a way to get each one's real token."""

    def __init__(self, app: FastAPI, services: Services, rp: Registered) -> None:
        self.app, self.services, self.rp = app, services, rp
        self.ids: dict[str, str] = {}

    async def token(self, fin: str, scope: str = "openid " + ROLE_SCOPES) -> dict[str, Any]:
        """The token response of `fin` signing in at the staff client in a browser of their own."""
        async with asgi_browser(self.app) as browser:
            return await tokens_for(browser, self.rp, fin=fin, scope=scope)

    async def bearer(self, fin: str, scope: str = "openid " + ROLE_SCOPES) -> dict[str, str]:
        return {"Authorization": f"Bearer {(await self.token(fin, scope))['access_token']}"}


@pytest.fixture
async def staff(dev_app: FastAPI, initialized: Services, replays: Replays) -> Staff:
    """The staff client, the people and their roles: registered the first time, their rows replayed after that
    (tests/replay.py)."""
    services = initialized

    async def register() -> tuple[Registered, dict[str, str]]:
        rp = await register_client(services, name="Açar staff console",
                                   scopes=("openid", "profile", "offline_access", *ROLE_SCOPES.split()))
        ids = {}
        async with services.sessions() as session, session.begin():
            persons = PersonService(session)
            for fin in (ADMIN_FIN, OFFICER_FIN, AGENCY_A_FIN, AGENCY_B_FIN, CITIZEN_FIN):
                ids[fin] = (await persons.add(fin=fin, given_name="Test", family_name="Person",
                                              birthdate=dt.date(1980, 1, 1), actor="test")).id
            await EntityService(session).add(voen=ENTITY, name="Nümunə MMC", legal_form="MMC", actor="test")
            roles = RoleService(session)
            await roles.grant(fin=ADMIN_FIN, role="system_admin", actor="test")
            await roles.grant(fin=OFFICER_FIN, role="registration_officer", actor="test")
            await roles.grant(fin=AGENCY_A_FIN, role="agency_admin", agency_voen=AGENCY_A, actor="test")
            await roles.grant(fin=AGENCY_B_FIN, role="agency_admin", agency_voen=AGENCY_B, actor="test")
        return rp, ids

    # register_client's last step, the client cache's invalidation, is redone after a replay
    rp, ids = await replays.run(services, "admin roles: staff", register, after=services.clients.invalidate)
    world = Staff(dev_app, services, rp)
    world.ids.update(ids)
    return world


async def _agency_clients(services: Services) -> tuple[Registered, Registered]:
    a = await register_client(services, name="Agency A portal", redirect_uris=("https://a.example/cb",),
                              agency_voen=AGENCY_A)
    b = await register_client(services, name="Agency B portal", redirect_uris=("https://b.example/cb",),
                              agency_voen=AGENCY_B)
    return a, b


async def _refused(client: httpx.AsyncClient, services: Services, calls: list[tuple[str, str, Any]],
                   headers: dict[str, str], status: int) -> None:
    """Each call answers `status` as an RFC 9457 problem and every table is unchanged after it."""
    for method, path, body in calls:
        before = await _snapshot(services)
        r = await client.request(method, path, headers=headers, json=body)
        assert r.status_code == status, (method, path, r.status_code, r.text)
        assert r.headers["content-type"] == "application/problem+json", r.headers
        assert await _snapshot(services) == before, (method, path)


# --- role scopes at the authorization and token endpoints ----------------------------------------------------------

async def test_role_scope_is_issued_only_to_a_person_holding_the_role(staff: Staff) -> None:
    citizen = await staff.token(CITIZEN_FIN)
    assert citizen["scope"] == "openid"  # RFC 6749 section 3.3: the narrower scope is said in the response
    assert _claims(citizen["access_token"])["scope"] == "openid"
    officer = await staff.token(OFFICER_FIN)
    assert officer["scope"] == "openid acar:role:registration_officer"
    assert _claims(officer["access_token"])["scope"] == "openid acar:role:registration_officer"
    agency = await staff.token(AGENCY_A_FIN, scope="openid acar:role:agency_admin acar:role:system_admin")
    assert agency["scope"] == "openid acar:role:agency_admin"


async def test_the_consent_page_names_only_the_roles_the_person_holds(staff: Staff) -> None:
    async def consent_page(fin: str) -> str:
        async with asgi_browser(staff.app, headers={"Accept-Language": "en"}) as browser:
            params = authorization_params(staff.rp, pkce_pair()[1], scope="openid " + ROLE_SCOPES)
            r = await browser.get("/authorize", params=params)
            r = await dev_login(browser, r.headers["location"], fin=fin)
            assert r.headers["location"].endswith("/consent"), r.headers
            page = await browser.get(r.headers["location"])
            assert page.status_code == 200
            return page.text

    officer = await consent_page(OFFICER_FIN)
    assert 'id="consent-roles"' in officer and "Registration officer" in officer
    assert "System administrator" not in officer and "Agency administrator" not in officer
    assert 'id="consent-roles"' not in await consent_page(CITIZEN_FIN)


async def test_a_role_revoked_before_a_refresh_is_not_in_the_new_token(staff: Staff, client: httpx.AsyncClient
                                                                        ) -> None:
    got = await staff.token(OFFICER_FIN, scope="openid offline_access acar:role:registration_officer")
    assert "acar:role:registration_officer" in got["scope"].split() and got["refresh_token"]
    async with staff.services.sessions() as session, session.begin():
        await RoleService(session).revoke(fin=OFFICER_FIN, role="registration_officer", actor="test")
    r = await refresh(client, staff.rp, got["refresh_token"])
    assert r.status_code == 200, r.text
    assert r.json()["scope"] == "openid offline_access"
    assert "acar:role" not in _claims(r.json()["access_token"])["scope"]


async def test_a_client_credentials_client_cannot_be_registered_for_a_role_scope(
        client: httpx.AsyncClient, initialized: Services) -> None:
    minted = await mint_admin_token(initialized, subject="operator", scopes={"acar:admin"}, ttl_seconds=600)
    r = await client.post("/admin/clients", headers={"Authorization": f"Bearer {minted['access_token']}"}, json={
        "name": "robot", "grant_types": ["client_credentials"], "scopes": ["acar:role:system_admin"]})
    assert r.status_code == 422 and "acar:role:system_admin" in r.json()["detail"]


# --- the permission matrix ------------------------------------------------------------------------------------------

async def test_a_plain_citizen_is_refused_everything(staff: Staff, client: httpx.AsyncClient) -> None:
    await _agency_clients(staff.services)
    headers = await staff.bearer(CITIZEN_FIN)
    await _refused(client, staff.services, [
        ("POST", "/admin/persons", NEW_PERSON), ("GET", f"/admin/persons/{OFFICER_FIN}", None),
        ("POST", f"/admin/persons/{OFFICER_FIN}/status", {"status": "suspended"}),
        ("GET", f"/admin/entities/{ENTITY}", None),
        ("POST", f"/admin/entities/{ENTITY}/status", {"status": "suspended"}),
        ("POST", "/admin/mandates", {"fin": CITIZEN_FIN, "voen": ENTITY, "powers": ["sign_declarations"]}),
        ("GET", "/admin/clients", None), ("POST", "/admin/clients", {"name": "x", "redirect_uris": ["https://x/cb"]}),
        ("POST", "/admin/enrollment-codes", {"fin": CITIZEN_FIN}),
        ("POST", "/admin/roles", {"fin": CITIZEN_FIN, "role": "system_admin"}),
        ("POST", "/admin/tokens", {"subject": "x", "scope": "acar:enroll", "ttl_seconds": 60}),
    ], headers, 403)


async def test_an_officer_registers_persons_entities_mandates_and_codes(staff: Staff,
                                                                       client: httpx.AsyncClient) -> None:
    headers = await staff.bearer(OFFICER_FIN)
    r = await client.post("/admin/persons", headers=headers, json=NEW_PERSON)
    assert r.status_code == 201, r.text
    new_id = r.json()["id"]
    r = await client.get(f"/admin/persons/{NEW_PERSON['fin']}", headers=headers)
    assert r.status_code == 200 and r.json()["given_name"] == "Elnur"
    r = await client.post("/admin/entities", headers=headers,
                          json={"voen": "1800000041", "name": "Yeni ASC", "legal_form": "ASC"})
    assert r.status_code == 201, r.text
    r = await client.post("/admin/mandates", headers=headers, json={
        "fin": NEW_PERSON["fin"], "voen": ENTITY, "powers": ["sign_declarations", "represent_at_login"]})
    assert r.status_code == 201, r.text
    mandate = r.json()
    assert mandate["granted_via"] == "officer"
    actor = f"registration_officer:{staff.ids[OFFICER_FIN]}"
    assert mandate["granted_by"] == actor
    by_fin = await client.get("/admin/mandates", headers=headers, params={"fin": NEW_PERSON["fin"]})
    by_voen = await client.get("/admin/mandates", headers=headers, params={"voen": ENTITY})
    assert [m["id"] for m in by_fin.json()] == [m["id"] for m in by_voen.json()] == [mandate["id"]]
    r = await client.post(f"/admin/mandates/{mandate['id']}/revoke", headers=headers)
    assert r.status_code == 200 and r.json()["revoked_at"]
    r = await client.post(f"/admin/persons/{NEW_PERSON['fin']}/status", headers=headers, json={"status": "suspended"})
    assert r.status_code == 200 and r.json()["status"] == "suspended"
    r = await client.post("/admin/enrollment-codes", headers=headers, json={"fin": OFFICER_FIN})
    assert r.status_code == 201, r.text
    async with staff.services.sessions() as session:
        events = (await session.execute(select(AuditEvent.event_type, AuditEvent.actor, AuditEvent.subject).where(
            AuditEvent.actor == actor))).all()
    assert {e.event_type for e in events} >= {"person.registered", "person.viewed", "entity.registered",
                                              "mandate.granted", "mandates.listed", "mandate.revoked",
                                              "person.status_changed", "enrollment.code_issued"}
    assert ("person.registered", actor, new_id) in [tuple(e) for e in events]


async def test_an_officer_cannot_manage_clients_or_roles(staff: Staff, client: httpx.AsyncClient) -> None:
    a, _ = await _agency_clients(staff.services)
    headers = await staff.bearer(OFFICER_FIN)
    await _refused(client, staff.services, [
        ("GET", "/admin/clients", None), ("GET", f"/admin/clients/{a.client_id}", None),
        ("POST", "/admin/clients", {"name": "x", "redirect_uris": ["https://x.example/cb"]}),
        ("PATCH", f"/admin/clients/{a.client_id}", {"introspect_clients": []}),
        ("POST", f"/admin/clients/{a.client_id}/disable", None), ("POST", f"/admin/clients/{a.client_id}/secret", None),
        ("POST", "/admin/roles", {"fin": OFFICER_FIN, "role": "system_admin"}),
        ("POST", "/admin/roles/revoke", {"fin": ADMIN_FIN, "role": "system_admin"}),
        ("GET", f"/admin/roles?fin={ADMIN_FIN}", None),
    ], headers, 403)


async def test_an_agency_admin_sees_and_changes_only_its_own_agencys_clients(staff: Staff,
                                                                             client: httpx.AsyncClient) -> None:
    a, b = await _agency_clients(staff.services)
    headers = await staff.bearer(AGENCY_A_FIN)
    r = await client.get("/admin/clients", headers=headers)
    assert r.status_code == 200 and [c["client_id"] for c in r.json()] == [a.client_id]
    assert (await client.get(f"/admin/clients/{a.client_id}", headers=headers)).json()["agency_voen"] == AGENCY_A
    # another agency's client is as unknown as a client that does not exist, and nothing of it changes
    await _refused(client, staff.services, [
        ("GET", f"/admin/clients/{b.client_id}", None),
        ("PATCH", f"/admin/clients/{b.client_id}", {"introspect_clients": [a.client_id]}),
        ("POST", f"/admin/clients/{b.client_id}/disable", None), ("POST", f"/admin/clients/{b.client_id}/secret", None),
        ("GET", f"/admin/clients/{staff.rp.client_id}", None),  # a client of no agency: system administrators only
    ], headers, 404)
    await _refused(client, staff.services, [
        ("POST", "/admin/clients", {"name": "x", "redirect_uris": ["https://x.example/cb"], "agency_voen": AGENCY_B}),
        ("POST", "/admin/clients", {"name": "x", "redirect_uris": ["https://x.example/cb"],
                                    "scopes": ["openid", "acar:role:system_admin"]}),
        ("PATCH", f"/admin/clients/{a.client_id}", {"agency_voen": AGENCY_B}),
        ("POST", "/admin/persons", NEW_PERSON), ("POST", "/admin/enrollment-codes", {"fin": CITIZEN_FIN}),
        ("POST", "/admin/roles", {"fin": AGENCY_A_FIN, "role": "system_admin"}),
    ], headers, 403)
    # nor may its clients introspect another agency's tokens: that client is as unknown there too
    await _refused(client, staff.services, [
        ("PATCH", f"/admin/clients/{a.client_id}", {"introspect_clients": [b.client_id]}),
        ("POST", "/admin/clients", {"name": "x", "redirect_uris": ["https://x.example/cb"],
                                    "auth_method": "client_secret_basic", "introspect_clients": [b.client_id]}),
    ], headers, 422)
    r = await client.post("/admin/clients", headers=headers, json={"name": "A2", "redirect_uris": ["https://a.example/2"]})
    assert r.status_code == 201 and r.json()["agency_voen"] == AGENCY_A
    r = await client.post(f"/admin/clients/{a.client_id}/disable", headers=headers)
    assert r.status_code == 200 and r.json()["disabled"] is True
    async with staff.services.sessions() as session:
        row = await session.get(OAuthClient, b.client_id)
        assert row is not None and row.disabled_at is None
        event = (await session.execute(
            select(AuditEvent).where(AuditEvent.event_type == "client.disabled"))).scalar_one()
    assert event.actor == f"agency_admin:{staff.ids[AGENCY_A_FIN]}" and event.subject == a.client_id


async def test_a_system_admin_does_everything_and_manages_roles(staff: Staff, client: httpx.AsyncClient) -> None:
    a, b = await _agency_clients(staff.services)
    headers = await staff.bearer(ADMIN_FIN)
    r = await client.get("/admin/clients", headers=headers)
    assert {a.client_id, b.client_id, staff.rp.client_id} <= {c["client_id"] for c in r.json()}
    r = await client.patch(f"/admin/clients/{staff.rp.client_id}", headers=headers, json={"agency_voen": AGENCY_B})
    assert r.status_code == 200 and r.json()["agency_voen"] == AGENCY_B
    assert (await client.post("/admin/persons", headers=headers, json=NEW_PERSON)).status_code == 201
    r = await client.post("/admin/roles", headers=headers,
                          json={"fin": CITIZEN_FIN, "role": "agency_admin", "agency_voen": AGENCY_A})
    assert r.status_code == 201, r.text
    assert r.json()["scope"] == "acar:role:agency_admin" and r.json()["agency_voen"] == AGENCY_A
    listed = (await client.get("/admin/roles", headers=headers, params={"fin": CITIZEN_FIN})).json()
    assert [(g["role"], g["agency_voen"]) for g in listed] == [("agency_admin", AGENCY_A)]
    r = await client.post("/admin/roles", headers=headers, json={"fin": CITIZEN_FIN, "role": "agency_admin"})
    assert r.status_code == 422  # an agency administrator needs the agency
    r = await client.post("/admin/roles/revoke", headers=headers,
                          json={"fin": CITIZEN_FIN, "role": "agency_admin", "agency_voen": AGENCY_A})
    assert r.status_code == 200 and r.json() == {"revoked": True}
    async with staff.services.sessions() as session:
        granted = (await session.execute(select(AuditEvent).where(AuditEvent.event_type == "role.granted",
                                                                   AuditEvent.subject == staff.ids[CITIZEN_FIN]))
                   ).scalar_one()
    assert granted.actor == f"system_admin:{staff.ids[ADMIN_FIN]}"


async def test_a_role_revoked_after_the_token_was_issued_is_refused_at_the_next_request(
        staff: Staff, client: httpx.AsyncClient) -> None:
    officer = await staff.bearer(OFFICER_FIN)
    admin = await staff.bearer(ADMIN_FIN)
    assert (await client.get(f"/admin/persons/{CITIZEN_FIN}", headers=officer)).status_code == 200
    r = await client.post("/admin/roles/revoke", headers=admin,
                          json={"fin": OFFICER_FIN, "role": "registration_officer"})
    assert r.json() == {"revoked": True}
    await _refused(client, staff.services, [
        ("GET", f"/admin/persons/{CITIZEN_FIN}", None), ("POST", "/admin/persons", NEW_PERSON),
        ("POST", "/admin/enrollment-codes", {"fin": CITIZEN_FIN}),
    ], officer, 403)
    # a staff member who is not active is refused though the role row stays: 403 at the admin API's own check of
    # the status (here the row changed behind the registry's back) ...
    admin_again = await staff.bearer(ADMIN_FIN)
    async with staff.services.sessions() as session, session.begin():
        await session.execute(update(Person).where(Person.id == staff.ids[ADMIN_FIN]).values(status="suspended"))
    await _refused(client, staff.services, [("GET", "/admin/clients", None)], admin_again, 403)
    # ... and 401 once suspended through the registry, which revokes the token's grant (docs/registry.md)
    async with staff.services.sessions() as session, session.begin():
        await session.execute(update(Person).where(Person.id == staff.ids[ADMIN_FIN]).values(status="active"))
        await PersonService(session).set_status(ADMIN_FIN, "suspended", actor="test")
    await _refused(client, staff.services, [("GET", "/admin/clients", None)], admin_again, 401)
    async with staff.services.sessions() as session:
        held = (await session.execute(select(StaffRole.role).where(StaffRole.person_id == staff.ids[ADMIN_FIN],
                                                                   StaffRole.revoked_at.is_(None)))).scalars().all()
    assert held == ["system_admin"]


async def test_machine_admin_tokens_keep_their_meaning(staff: Staff, client: httpx.AsyncClient) -> None:
    async def machine(scope: str) -> dict[str, str]:
        minted = await mint_admin_token(staff.services, subject="operator", scopes={scope}, ttl_seconds=600)
        return {"Authorization": f"Bearer {minted['access_token']}"}

    admin = await machine("acar:admin")
    assert (await client.post("/admin/persons", headers=admin, json=NEW_PERSON)).status_code == 201
    r = await client.post("/admin/roles", headers=admin, json={"fin": CITIZEN_FIN, "role": "system_admin"})
    assert r.status_code == 201
    enroll = await machine("acar:enroll")
    assert (await client.post("/admin/enrollment-codes", headers=enroll, json={"fin": CITIZEN_FIN})).status_code == 201
    await _refused(client, staff.services, [("GET", f"/admin/persons/{CITIZEN_FIN}", None),
                                            ("GET", "/admin/clients", None)], enroll, 403)
    manage = await machine("acar:client:manage")
    assert (await client.get("/admin/clients", headers=manage)).status_code == 200
    await _refused(client, staff.services, [("POST", "/admin/roles", {"fin": OFFICER_FIN, "role": "system_admin"})],
                   manage, 403)


async def test_the_first_system_admin_is_made_with_the_cli(staff: Staff, acar: InProcessAcar,
                                                          client: httpx.AsyncClient) -> None:
    assert (await staff.token(CITIZEN_FIN))["scope"] == "openid"
    # the command runs in a thread: the app's event loop goes on (its housekeeping ends its units)
    granted = await asyncio.to_thread(acar.json, "role", "grant", CITIZEN_FIN.lower(), "system_admin")
    assert granted["role"] == "system_admin" and granted["person_id"] == staff.ids[CITIZEN_FIN]
    assert await asyncio.to_thread(acar.json, "role", "list", CITIZEN_FIN) == [granted]
    headers = await staff.bearer(CITIZEN_FIN)
    r = await client.post("/admin/roles", headers=headers, json={"fin": OFFICER_FIN, "role": "system_admin"})
    assert r.status_code == 201
    out = await asyncio.to_thread(acar, "role", "revoke", CITIZEN_FIN, "system_admin")
    assert out.stdout == f"revoked system_admin of {CITIZEN_FIN}\n"
    assert (await asyncio.to_thread(acar, "role", "list", CITIZEN_FIN)).stdout == "no staff role (a citizen)\n"
    assert (await client.get("/admin/roles", headers=headers, params={"fin": OFFICER_FIN})).status_code == 403
    refused = await asyncio.to_thread(acar, "role", "grant", CITIZEN_FIN, "registration_officer", "--agency", AGENCY_A,
                                      check=False)
    assert refused.returncode == 1
    assert refused.stderr == "acar: error: the role registration_officer is not bound to an agency\n"
    async with staff.services.sessions() as session:
        events = (await session.execute(select(AuditEvent.event_type).where(
            AuditEvent.actor == "cli", AuditEvent.subject == staff.ids[CITIZEN_FIN]))).scalars().all()
    assert sorted(events) == ["role.granted", "role.revoked"]


async def test_a_system_admin_revokes_admin_tokens_but_never_mints_one(staff: Staff, client: httpx.AsyncClient
                                                                        ) -> None:
    minted = await mint_admin_token(staff.services, subject="robot", scopes={"acar:enroll"}, ttl_seconds=600)
    machine = {"Authorization": f"Bearer {minted['access_token']}"}
    assert (await client.post("/admin/enrollment-codes", headers=machine, json={"fin": CITIZEN_FIN})).status_code == 201
    admin = await staff.bearer(ADMIN_FIN)
    await _refused(client, staff.services, [
        ("POST", "/admin/tokens", {"subject": "x", "scope": "acar:enroll", "ttl_seconds": 60})], admin, 403)
    officer = await staff.bearer(OFFICER_FIN)
    await _refused(client, staff.services, [("POST", f"/admin/tokens/{minted['jti']}/revoke", None),
                                            ("POST", "/admin/certificates/01/revoke", {"reason": "keyCompromise"})],
                   officer, 403)
    assert (await client.post(f"/admin/tokens/{minted['jti']}/revoke", headers=admin)).status_code == 204
    r = await client.post("/admin/enrollment-codes", headers=machine, json={"fin": CITIZEN_FIN})
    assert r.status_code == 401
    async with staff.services.sessions() as session:
        event = (await session.execute(select(AuditEvent).where(AuditEvent.event_type == "token.revoked"))
                 ).scalar_one()
    assert event.actor == f"system_admin:{staff.ids[ADMIN_FIN]}"
