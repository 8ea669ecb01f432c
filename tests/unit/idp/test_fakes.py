"""The in-memory fakes of tests/fakes.py against the real store: the same calls on FakeOidcStore and on
idp.sql.store.SqlOidcStore (on the test database) must give the same answers, so protocol-core tests on the fakes
stay true to what the app does."""

from __future__ import annotations

import datetime as dt

from api.deps import Services
from idp.core.authorize import token_hash
from idp.core.interfaces import GrantRecord, LoginState, OidcStore, PendingRequest
from storage.base import utcnow
from tests.fakes import FakeClientDirectory, FakeOidcStore
from tests.oidc_tools import register_client, register_person


async def _script(store: OidcStore, person_id: str, client_id: str, now: dt.datetime) -> dict[str, object]:
    """Every OidcStore call the protocol core makes, in an order the core makes them; what each answered."""
    seen: dict[str, object] = {}
    pending = PendingRequest(id="pending-1", client_id=client_id, params={"scopes": ["openid"], "state": "s"},
                             csrf_token="csrf", expires_at=now + dt.timedelta(minutes=15))
    await store.save_pending(pending)
    seen["pending"] = await store.get_pending("pending-1")
    await store.delete_pending("pending-1")
    seen["pending deleted"] = await store.get_pending("pending-1")
    seen["pending id too long"] = await store.get_pending("x" * 65)

    seen["no staff role"] = await store.staff_roles(person_id)  # a citizen (tests/functional/test_admin_roles.py)
    seen["no consent"] = await store.get_consent(person_id, client_id)
    await store.save_consent(person_id, client_id, frozenset({"openid", "profile"}), frozenset({"sub", "name"}), now)
    await store.save_consent(person_id, client_id, frozenset({"openid", "fin"}), frozenset({"sub", "fin"}), now)
    seen["consent"] = await store.get_consent(person_id, client_id)  # the second consent adds to the first

    login = LoginState(id=token_hash("cookie"), sid="sid-1", person_id=person_id, auth_time=now,
                       expires_at=now + dt.timedelta(hours=8), level="substantial", amr=("pwd",))
    await store.create_session(login)
    seen["session"] = await store.get_session(login.id)
    await store.update_login(login.id, auth_time=now + dt.timedelta(seconds=5), level="high", amr=("hwk", "user"))
    seen["stepped up"] = await store.get_session(login.id)

    for grant_id, scope in (("grant-1", "openid profile"), ("grant-2", "openid offline_access")):
        await store.create_grant(GrantRecord(
            id=grant_id, client_id=client_id, person_id=person_id, session_sid="sid-1", sub="sub-1", scope=scope,
            claims={"released": ["sub"]}, acr="http://eidas.europa.eu/LoA/high", amr=("hwk", "user"), auth_time=now,
            expires_at=now + dt.timedelta(days=14)))
    await store.add_session_client(login.id, client_id, "sub-1")
    await store.add_session_client(login.id, client_id, "sub-other")  # ignored: the first sub stays
    seen["revoked"] = await store.revoke_session_grants("sid-1", now, "logout")  # all but offline_access
    seen["revoked again"] = await store.revoke_session_grants("sid-1", now, "logout")
    seen["logouts queued"] = await store.queue_logouts(login.id, sid="sid-1", now=now, retry_seconds=3600)
    seen["ended"] = await store.end_session(login.id, now)
    seen["ended again"] = await store.end_session(login.id, now)
    seen["after end"] = await store.get_session(login.id)
    return seen


async def test_the_fake_oidc_store_answers_as_the_sql_store(services: Services) -> None:
    now = utcnow().replace(microsecond=0)
    rp = await register_client(services, backchannel_logout_uri="https://agency.example/backchannel")
    person_id = await register_person(services)
    async with services.oidc.unit_of_work() as unit:
        real = await _script(unit.oidc, person_id, rp.client_id, now)
    client = await services.clients.get(rp.client_id)
    assert client is not None
    fake = FakeOidcStore(FakeClientDirectory(client))
    assert await _script(fake, person_id, rp.client_id, now) == real
    # the script does reach each behaviour
    assert (real["revoked"], real["revoked again"], real["logouts queued"], real["ended again"]) == (1, 0, 1, None)
    assert fake.logouts == [(rp.client_id, "sub-1", "sid-1")]
