"""idp.core.roles at the authorization endpoint's core, on the in-memory fakes: a role scope the person does not hold
is dropped (RFC 6749 section 3.3), one they hold is kept, and the roles are read only when a role scope is asked."""

from __future__ import annotations

import datetime as dt

from api.settings import Settings
from idp.core import roles
from idp.core.authorize import AuthorizationService, Interaction, Redirect
from idp.core.interfaces import LoginState
from idp.core.loa import AcrPolicy
from idp.core.subjects import SubjectIdentifiers
from idp.sql.clients import ClientRegistration
from storage.base import utcnow
from tests.fakes import FakeClientDirectory, FakeOidcStore, registered_client
from tests.oidc_tools import ISSUER, Registered, authorization_params, pkce_pair

ALL_ROLES = " ".join(roles.ROLE_SCOPES.values())


class CountingStore(FakeOidcStore):
    """The fake store, counting the reads of staff roles."""

    reads = 0

    async def staff_roles(self, person_id: str) -> frozenset[str]:
        self.reads += 1
        return await super().staff_roles(person_id)


def test_held_scopes_keeps_order_and_only_held_roles() -> None:
    asked = ["openid", "acar:role:system_admin", "profile", "acar:role:registration_officer", "acar:role:bogus"]
    assert roles.held_scopes(asked, {"registration_officer"}) == ["openid", "profile", "acar:role:registration_officer"]
    assert roles.held_scopes(asked, set()) == ["openid", "profile"]
    assert roles.role_of_scope("acar:role:agency_admin") == "agency_admin"
    assert roles.role_of_scope("acar:role:") is None and roles.role_of_scope("profile") is None
    assert not roles.names_role(["openid", "profile", "acar:admin"])


async def _code_grant_scope(scope: str, held: frozenset[str]) -> tuple[str, int]:
    client, secret = await registered_client(ClientRegistration(
        name="Staff console", redirect_uris=["https://console.example/cb"], scopes=["openid", *ALL_ROLES.split()]))
    service = AuthorizationService(
        FakeClientDirectory(client), issuer=ISSUER, acr=AcrPolicy(Settings(env="development").acr_values),
        subjects=SubjectIdentifiers(b"salt" * 8), verify_id_token_hint=_no_hint, code_lifetime=60,
        grant_lifetime=3600, interaction_lifetime=600, clock=utcnow)
    store = CountingStore()
    store.roles["p1"] = held
    now = utcnow()
    session = LoginState(id="s1", sid="sid1", person_id="p1", auth_time=now, expires_at=now + dt.timedelta(hours=1),
                         level="substantial", amr=("pwd",))
    params = authorization_params(Registered(client.client_id, secret, client.redirect_uris[0]), pkce_pair()[1],
                                  scope=scope, prompt="consent")
    first = await service.authorize({k: [v] for k, v in params.items()}, store=store, session=session, browser="b")
    assert isinstance(first, Interaction) and first.kind == "consent"
    done = await service.resume(first.pending.id, store=store, session=session, browser="b", consent=True)
    assert isinstance(done, Redirect) and "code" in done.params, done
    (grant,) = store.grants.values()
    (consent,) = store.consents.values()
    assert set(first.scopes) == set(grant.scope.split()) == set(consent.scopes)  # consent shows what is granted
    return grant.scope, store.reads


async def _no_hint(hint: str) -> dict[str, object]:
    raise ValueError("no hint expected")


async def test_a_role_scope_not_held_is_dropped_from_the_grant_and_the_consent() -> None:
    scope, reads = await _code_grant_scope("openid " + ALL_ROLES, frozenset({"registration_officer"}))
    assert scope == "openid acar:role:registration_officer" and reads >= 1
    scope, _ = await _code_grant_scope("openid acar:role:system_admin", frozenset())
    assert scope == "openid"


async def test_no_role_scope_no_role_read() -> None:
    scope, reads = await _code_grant_scope("openid", frozenset({"system_admin"}))
    assert scope == "openid" and reads == 0
