"""The OpenID Connect conformance suite's Basic OP negatives, in process: each refusal with its exact OAuth error
(or error page) and a check that the refusal changed nothing it must not change."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
from dataclasses import dataclass
from pathlib import Path

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from sqlalchemy import func, select, update

from api.deps import Services
from api.settings import Settings, SettingsError, load_settings
from idp.core.authorize import AuthorizationService, AuthorizeResult, ErrorPage, Redirect
from idp.core.loa import AcrPolicy
from idp.core.subjects import SubjectIdentifiers
from idp.sql.clients import ClientRegistration, ClientRegistry
from idp.sql.models import AuthorizationCode, AuthorizationRequest, Consent, Grant, LoginSession, RefreshToken
from storage.base import utcnow
from tests.fakes import FakeClientDirectory, FakeOidcStore, registered_client
from tests.oidc_tools import (
    ISSUER,
    Registered,
    authorization_params,
    authorize,
    introspect,
    obtain_code,
    pkce_pair,
    redeem,
    refresh,
    register_client,
    register_person,
)

ROWS = {"pending": AuthorizationRequest, "grants": Grant, "codes": AuthorizationCode, "refresh": RefreshToken,
        "sessions": LoginSession, "consents": Consent}


@dataclass
class World:
    services: Services
    rp: Registered
    other: Registered
    """A second client of another agency."""
    person_id: str


@pytest.fixture
async def world(initialized: Services, http: httpx.AsyncClient) -> World:
    rp = await register_client(initialized, redirect_uris=("https://agency.example/cb",),
                               post_logout_redirect_uris=["https://agency.example/bye"])
    other = await register_client(initialized, name="Other agency", redirect_uris=("https://other.example/cb",))
    return World(initialized, rp, other, await register_person(initialized))


async def rows(services: Services) -> dict[str, int]:
    async with services.sessions() as session:
        return {name: (await session.execute(select(func.count()).select_from(model))).scalar_one()
                for name, model in ROWS.items()}


def oauth(r: httpx.Response, status: int, error: str) -> dict[str, str]:
    assert r.status_code == status, r.text
    assert r.headers["cache-control"] == "no-store"
    body = r.json()
    assert body["error"] == error, body
    return dict(body)


def error_page(r: httpx.Response, error: str) -> None:
    """An error shown to the user (OIDC Core 3.1.2.6): HTML 400, never a redirect."""
    assert r.status_code == 400, (r.status_code, r.headers.get("location"))
    assert "location" not in r.headers
    assert r.headers["content-type"].startswith("text/html")
    assert f"<code>{error}</code>" in r.text


# --- the authorization endpoint ----------------------------------------------------------------------------
#
# Every refusal is checked on the protocol core (idp.core.authorize) with in-memory stores (tests/fakes.py): the answer
# and that nothing was written. A few of each kind also go through the real app and database, for how the answer
# is rendered (an HTML error page, a 303 to the client with RFC 9207's iss) and that no row was written.

@dataclass
class Core:
    """idp.core.authorize.AuthorizationService as api.provider.build_provider builds it, on in-memory stores."""

    service: AuthorizationService
    store: FakeOidcStore
    rp: Registered
    """Registered as `world.rp` is, without the database."""

    async def authorize(self, params: dict[str, str] | list[tuple[str, str]]) -> AuthorizeResult:
        """The request as api/ hands it to the core: every value of each name, in order."""
        multi: dict[str, list[str]] = {}
        for name, value in params.items() if isinstance(params, dict) else params:
            multi.setdefault(name, []).append(value)
        return await self.service.authorize(multi, store=self.store, session=None, browser="browser-binding")


async def _no_id_token_hint(hint: str) -> dict[str, object]:
    raise ValueError("these requests carry no id_token_hint; any hint is refused")


@pytest.fixture
async def core() -> Core:
    settings = Settings(env="development", issuer=ISSUER)
    client, secret = await registered_client(ClientRegistration(
        name="Agency portal", redirect_uris=["https://agency.example/cb"],
        post_logout_redirect_uris=["https://agency.example/bye"],
        scopes=["openid", "profile", "fin", "birthdate", "offline_access"]))
    service = AuthorizationService(
        FakeClientDirectory(client), issuer=settings.issuer, acr=AcrPolicy(settings.acr_values),
        subjects=SubjectIdentifiers(settings.pairwise_salt.get_secret_value().encode()),
        verify_id_token_hint=_no_id_token_hint, code_lifetime=settings.authorization_code_lifetime_seconds,
        grant_lifetime=settings.refresh_token_lifetime_seconds,
        interaction_lifetime=settings.interaction_lifetime_seconds, clock=utcnow)
    return Core(service, FakeOidcStore(), Registered(client.client_id, secret, client.redirect_uris[0]))


UNTRUSTED = [
    ({"redirect_uri": None}, "invalid_request"),
    ({"redirect_uri": "https://attacker.example/cb"}, "invalid_request"),
    ({"redirect_uri": "https://agency.example/cb?next=/admin"}, "invalid_request"),
    ({"redirect_uri": "https://agency.example/cb#fragment"}, "invalid_request"),
    ({"redirect_uri": "https://agency.example/cb/"}, "invalid_request"),
    ({"redirect_uri": "HTTPS://agency.example/cb"}, "invalid_request"),
    ({"client_id": "no-such-client"}, "invalid_client"),
    ({"client_id": None}, "invalid_request"),
]
"""Requests whose client or redirect URI cannot be trusted, and the error shown to the user."""


@pytest.mark.parametrize(("change", "error"), UNTRUSTED)
async def test_untrusted_client_or_redirect_uri_gets_an_error_page(
        core: Core, change: dict[str, str | None], error: str) -> None:
    _, challenge = pkce_pair()
    result = await core.authorize(authorization_params(core.rp, challenge, **change))
    assert isinstance(result, ErrorPage), result  # never a redirect
    assert result.error == error
    assert "attacker.example" not in result.description
    assert core.store.writes == []


@pytest.mark.parametrize(("change", "error"), [UNTRUSTED[1], UNTRUSTED[6]])
async def test_untrusted_client_or_redirect_uri_gets_an_error_page_over_http(
        world: World, http: httpx.AsyncClient, change: dict[str, str | None], error: str) -> None:
    before = await rows(world.services)
    _, challenge = pkce_pair()
    r = await http.get("/authorize", params=authorization_params(world.rp, challenge, **change))
    error_page(r, error)
    assert "attacker.example" not in r.text
    assert await rows(world.services) == before


async def test_repeated_redirect_uri_gets_an_error_page(world: World, http: httpx.AsyncClient) -> None:
    _, challenge = pkce_pair()
    params = [*authorization_params(world.rp, challenge).items(), ("redirect_uri", "https://attacker.example/cb")]
    error_page(await http.get("/authorize", params=params), "invalid_request")


async def test_disabled_client(world: World, http: httpx.AsyncClient) -> None:
    got = await obtain_code(http, world.rp)
    async with world.services.sessions() as session, session.begin():
        await ClientRegistry(session).disable(world.rp.client_id, actor="test")
    world.services.clients.invalidate()
    _, challenge = pkce_pair()
    error_page(await http.get("/authorize", params=authorization_params(world.rp, challenge)), "invalid_client")
    r = await redeem(http, world.rp, got.code, got.verifier)
    assert r.status_code == 401 and r.json()["error"] == "invalid_client"


BAD_REQUESTS = [
    ({"response_type": None}, "invalid_request"),
    ({"response_type": "token"}, "unsupported_response_type"),
    ({"response_type": "id_token"}, "unsupported_response_type"),
    ({"response_type": "code id_token"}, "unsupported_response_type"),
    ({"response_mode": "fragment"}, "invalid_request"),
    ({"code_challenge": None}, "invalid_request"),  # PKCE downgrade
    ({"code_challenge_method": "plain"}, "invalid_request"),
    ({"code_challenge_method": None}, "invalid_request"),  # RFC 7636 4.3: absent means plain
    ({"code_challenge": "too-short"}, "invalid_request"),
    ({"scope": "profile"}, "invalid_scope"),
    ({"scope": "openid acar:admin"}, "invalid_scope"),
    ({"prompt": "none login"}, "invalid_request"),
    ({"max_age": "-1"}, "invalid_request"),
    ({"claims": "{not json"}, "invalid_request"),
    ({"request": "eyJhbGciOiJub25lIn0.e30."}, "request_not_supported"),
    ({"request_uri": "https://agency.example/request.jwt"}, "request_uri_not_supported"),
    ({"claims": "[" * 1500}, "invalid_request"),  # nested past the recursion limit (once a 500)
]
"""Requests of a trusted client to its redirect URI that are refused there, and the error."""


@pytest.mark.parametrize(("change", "error"), BAD_REQUESTS)
async def test_bad_requests_are_redirected_with_the_error(
        core: Core, change: dict[str, str | None], error: str) -> None:
    _, challenge = pkce_pair()
    params = authorization_params(core.rp, challenge, **change)
    result = await core.authorize(params)
    assert isinstance(result, Redirect), result
    assert result.redirect_uri == core.rp.redirect_uri and result.response_mode == "query"
    assert result.params["error"] == error and result.params["state"] == params["state"]
    assert "code" not in result.params
    assert result.params["iss"] == ISSUER  # RFC 9207
    assert core.store.writes == []


@pytest.mark.parametrize(("change", "error"), [BAD_REQUESTS[1], BAD_REQUESTS[6], BAD_REQUESTS[10], BAD_REQUESTS[15],
                                              BAD_REQUESTS[-1]])
async def test_bad_requests_are_redirected_with_the_error_over_http(
        world: World, http: httpx.AsyncClient, change: dict[str, str | None], error: str) -> None:
    before = await rows(world.services)
    _, challenge = pkce_pair()
    params = authorization_params(world.rp, challenge, **change)
    r = await http.get("/authorize", params=params)
    assert r.status_code == 303, r.text
    location = r.headers["location"]
    assert location.startswith(world.rp.redirect_uri + "?")
    query = dict(p.split("=", 1) for p in location.partition("?")[2].split("&"))
    assert query["error"] == error and query["state"] == params["state"] and "code" not in query
    assert query["iss"] == "http%3A%2F%2Flocalhost%3A8000"  # RFC 9207
    assert await rows(world.services) == before


REPEATABLE = ["scope", "state", "nonce", "response_type", "code_challenge", "prompt"]


@pytest.mark.parametrize("name", REPEATABLE)
async def test_repeated_parameters_are_refused(core: Core, name: str) -> None:
    _, challenge = pkce_pair()
    params = authorization_params(core.rp, challenge)
    params.setdefault("prompt", "login")
    result = await core.authorize([*params.items(), (name, params[name])])
    assert isinstance(result, Redirect), result
    assert result.params["error"] == "invalid_request" and "code" not in result.params
    assert core.store.writes == []


@pytest.mark.parametrize("name", ["state", "scope"])
async def test_repeated_parameters_are_refused_over_http(world: World, http: httpx.AsyncClient, name: str) -> None:
    """The app hands every value of a repeated name to the core (a parser keeping one would hide the repeat)."""
    before = await rows(world.services)
    _, challenge = pkce_pair()
    params = authorization_params(world.rp, challenge)
    params.setdefault("prompt", "login")
    r = await http.get("/authorize", params=[*params.items(), (name, params[name])])
    assert r.status_code == 303
    assert "error=invalid_request" in r.headers["location"]
    assert await rows(world.services) == before


async def test_prompt_none_without_a_session(world: World, http: httpx.AsyncClient) -> None:
    before = await rows(world.services)
    _, challenge = pkce_pair()
    done = await authorize(http, authorization_params(world.rp, challenge, prompt="none"))
    assert done.pages == [] and done.query["error"] == "login_required"
    assert await rows(world.services) == before


async def test_consent_denied(world: World, http: httpx.AsyncClient) -> None:
    _, challenge = pkce_pair()
    params = authorization_params(world.rp, challenge)
    done = await authorize(http, params, decision="deny")
    assert done.pages == ["login", "consent"]
    assert done.query["error"] == "access_denied" and done.query["state"] == params["state"]
    counts = await rows(world.services)
    assert counts["grants"] == counts["codes"] == counts["consents"] == counts["pending"] == 0
    # nothing was remembered: the next request asks again
    done = await authorize(http, authorization_params(world.rp, challenge), decision=None)
    assert done.pages == ["consent"]


# --- the token endpoint ------------------------------------------------------------------------------------

async def test_code_reuse_revokes_what_the_code_produced(world: World, http: httpx.AsyncClient) -> None:
    got = await obtain_code(http, world.rp)
    first = await redeem(http, world.rp, got.code, got.verifier)
    assert first.status_code == 200, first.text
    assert first.headers["cache-control"] == "no-store" and first.headers["pragma"] == "no-cache"  # RFC 6749 5.1
    tokens = first.json()
    assert (await http.get("/userinfo", headers={"Authorization": "Bearer " + tokens["access_token"]})
            ).status_code == 200
    oauth(await redeem(http, world.rp, got.code, got.verifier), 400, "invalid_grant")
    # RFC 6749 4.1.2: the tokens issued from the code are revoked
    assert await introspect(http, world.rp, tokens["access_token"]) == {"active": False}
    assert await introspect(http, world.rp, tokens["refresh_token"]) == {"active": False}
    r = await http.get("/userinfo", headers={"Authorization": "Bearer " + tokens["access_token"]})
    oauth(r, 401, "invalid_token")
    assert 'error="invalid_token"' in r.headers["www-authenticate"]
    oauth(await refresh(http, world.rp, tokens["refresh_token"]), 400, "invalid_grant")


async def test_code_of_another_client(world: World, http: httpx.AsyncClient) -> None:
    got = await obtain_code(http, world.rp)
    oauth(await redeem(http, world.other, got.code, got.verifier, redirect_uri=world.rp.redirect_uri), 400,
          "invalid_grant")
    oauth(await redeem(http, world.other, got.code, got.verifier), 400, "invalid_grant")
    assert (await rows(world.services))["refresh"] == 0
    # the rightful client can still redeem it: the attempt consumed and revoked nothing
    assert (await redeem(http, world.rp, got.code, got.verifier)).status_code == 200


async def test_refresh_token_of_another_client(world: World, http: httpx.AsyncClient) -> None:
    got = await obtain_code(http, world.rp)
    tokens = (await redeem(http, world.rp, got.code, got.verifier)).json()
    oauth(await refresh(http, world.other, tokens["refresh_token"]), 400, "invalid_grant")
    assert await introspect(http, world.other, tokens["refresh_token"]) == {"active": False}  # not its token
    assert (await introspect(http, world.rp, tokens["refresh_token"]))["active"] is True
    assert (await refresh(http, world.rp, tokens["refresh_token"])).status_code == 200


async def test_wrong_pkce_verifier_then_the_right_one(world: World, http: httpx.AsyncClient) -> None:
    got = await obtain_code(http, world.rp)
    wrong, _ = pkce_pair()
    oauth(await redeem(http, world.rp, got.code, wrong), 400, "invalid_grant")
    r = await http.post("/token", data={"grant_type": "authorization_code", "code": got.code,
                                        "redirect_uri": world.rp.redirect_uri}, auth=(world.rp.client_id,
                                                                                      world.rp.secret or ""))
    oauth(r, 400, "invalid_request")  # no verifier at all
    oauth(await redeem(http, world.rp, got.code, got.verifier, redirect_uri="https://agency.example/other"), 400,
          "invalid_grant")
    assert (await redeem(http, world.rp, got.code, got.verifier)).status_code == 200


async def test_expired_code(world: World, http: httpx.AsyncClient) -> None:
    got = await obtain_code(http, world.rp)
    async with world.services.sessions() as session, session.begin():
        await session.execute(update(AuthorizationCode).values(
            expires_at=dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)))
    oauth(await redeem(http, world.rp, got.code, got.verifier), 400, "invalid_grant")
    assert (await rows(world.services))["refresh"] == 0


@pytest.mark.parametrize("auth", ["wrong-secret", "unknown-client", "post-wrong-secret", "none"])
async def test_client_authentication_failures(world: World, http: httpx.AsyncClient, auth: str) -> None:
    got = await obtain_code(http, world.rp)
    form = {"grant_type": "authorization_code", "code": got.code, "redirect_uri": world.rp.redirect_uri,
            "code_verifier": got.verifier}
    kwargs: dict[str, object] = {
        "wrong-secret": {"auth": (world.rp.client_id, "not-the-secret")},
        "unknown-client": {"auth": ("no-such-client", world.rp.secret or "")},
        "post-wrong-secret": {"data": {**form, "client_id": world.rp.client_id, "client_secret": "nope"}},
        "none": {"data": {**form, "client_id": world.rp.client_id}},
    }[auth]  # type: ignore[assignment]
    r = await http.post("/token", **{"data": form, **kwargs})  # type: ignore[arg-type]
    body = oauth(r, 401, "invalid_client")
    assert r.headers["www-authenticate"].startswith("Basic ")
    assert world.rp.secret not in json.dumps(body)
    assert (await redeem(http, world.rp, got.code, got.verifier)).status_code == 200  # the code is intact


async def test_grant_types(world: World, http: httpx.AsyncClient) -> None:
    auth = (world.rp.client_id, world.rp.secret or "")
    for grant_type in ("password", "implicit", "urn:ietf:params:oauth:grant-type:device_code"):
        oauth(await http.post("/token", data={"grant_type": grant_type}, auth=auth), 400, "unsupported_grant_type")
    oauth(await http.post("/token", data={"code": "x"}, auth=auth), 400, "invalid_request")
    # registered for authorization_code and refresh_token only
    oauth(await http.post("/token", data={"grant_type": "client_credentials"}, auth=auth), 400,
          "unauthorized_client")


async def test_token_endpoint_body_rules(world: World, http: httpx.AsyncClient) -> None:
    got = await obtain_code(http, world.rp)
    auth = (world.rp.client_id, world.rp.secret or "")
    form = {"grant_type": "authorization_code", "code": got.code, "redirect_uri": world.rp.redirect_uri,
            "code_verifier": got.verifier}
    oauth(await http.post("/token", json=form, auth=auth), 400, "invalid_request")
    oauth(await http.post("/token", content="&".join(f"{k}={v}" for k, v in [*form.items(), ("code", got.code)]),
                          headers={"Content-Type": "application/x-www-form-urlencoded"}, auth=auth),
          400, "invalid_request")
    oauth(await http.post("/token", params=form, auth=auth), 400, "invalid_request")  # parameters in the URI
    assert (await redeem(http, world.rp, got.code, got.verifier)).status_code == 200


async def test_userinfo_needs_a_valid_bearer_token(world: World, http: httpx.AsyncClient) -> None:
    got = await obtain_code(http, world.rp)
    tokens = (await redeem(http, world.rp, got.code, got.verifier)).json()
    r = await http.get("/userinfo")
    assert r.status_code == 401
    assert r.headers["www-authenticate"] == 'Bearer realm="acar"'  # RFC 6750 3.1: no error without credentials
    r = await http.get("/userinfo", headers={"Authorization": "Basic " + base64.b64encode(b"a:b").decode()})
    assert r.status_code == 401 and r.headers["www-authenticate"] == 'Bearer realm="acar"'
    for bad in ("garbage", tokens["id_token"], tokens["access_token"][:-4] + "AAAA"):
        r = await http.get("/userinfo", headers={"Authorization": "Bearer " + bad})
        oauth(r, 401, "invalid_token")
        challenge = r.headers["www-authenticate"]
        assert challenge.startswith('Bearer realm="acar", error="invalid_token"'), challenge
    # both a header and a form token at once (RFC 6750 2: only one method)
    r = await http.post("/userinfo", data={"access_token": tokens["access_token"]},
                        headers={"Authorization": "Bearer " + tokens["access_token"]})
    oauth(r, 400, "invalid_request")


# --- id_token_hint and logout ------------------------------------------------------------------------------

def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


async def _forgeries(http: httpx.AsyncClient, id_token: str) -> dict[str, str]:
    """ID tokens that must not be accepted: unsigned, HMAC keyed with our public key, a changed payload."""
    header_b64, payload_b64, signature = id_token.split(".")
    header = jwt.get_unverified_header(id_token)
    jwks = (await http.get("/jwks.json")).json()
    jwk = next(k for k in jwks["keys"] if k["kid"] == header["kid"])
    pem = jwt.PyJWK(jwk).key.public_bytes(serialization.Encoding.PEM,
                                          serialization.PublicFormat.SubjectPublicKeyInfo)

    def hs256(secret: bytes) -> str:
        head = _b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": header["kid"]}).encode())
        mac = hmac.new(secret, f"{head}.{payload_b64}".encode(), hashlib.sha256).digest()
        return f"{head}.{payload_b64}.{_b64(mac)}"

    payload = json.loads(base64.urlsafe_b64decode(payload_b64 + "=" * (-len(payload_b64) % 4)))
    return {
        "alg none": _b64(json.dumps({"alg": "none", "typ": "JWT"}).encode()) + f".{payload_b64}.",
        "HS256 with the JWK": hs256(json.dumps(jwk).encode()),
        "HS256 with the JWKS": hs256(json.dumps(jwks).encode()),
        "HS256 with the PEM": hs256(pem),
        "tampered payload": f"{header_b64}.{_b64(json.dumps({**payload, 'sub': 'someone-else'}).encode())}"
                            f".{signature}",
    }


async def _session_live(services: Services) -> bool:
    async with services.sessions() as session:
        (ended,) = (await session.execute(select(LoginSession.ended_at))).scalars().all()
    return ended is None


async def test_forged_id_token_hints(world: World, http: httpx.AsyncClient) -> None:
    got = await obtain_code(http, world.rp)
    tokens = (await redeem(http, world.rp, got.code, got.verifier)).json()
    _, challenge = pkce_pair()
    # the genuine hint is accepted (so the refusals below are about the forgery)
    done = await authorize(http, authorization_params(world.rp, challenge, prompt="none",
                                                      id_token_hint=tokens["id_token"]))
    assert "code" in done.query
    for name, forged in (await _forgeries(http, tokens["id_token"])).items():
        params = authorization_params(world.rp, challenge, prompt="none", id_token_hint=forged)
        r = await http.get("/authorize", params=params)
        assert r.status_code == 303, name
        assert "error=invalid_request" in r.headers["location"] and "code=" not in r.headers["location"], name
        r = await http.get("/logout", params={"id_token_hint": forged,
                                              "post_logout_redirect_uri": "https://agency.example/bye"})
        error_page(r, "invalid_request")
        assert await _session_live(world.services), name
    assert (await introspect(http, world.rp, tokens["access_token"]))["active"] is True


async def test_bad_post_logout_redirect_uri_ends_nothing(world: World, http: httpx.AsyncClient) -> None:
    got = await obtain_code(http, world.rp)
    tokens = (await redeem(http, world.rp, got.code, got.verifier)).json()
    for uri in ("https://attacker.example/bye", "https://agency.example/bye?x=1", "https://agency.example/cb"):
        r = await http.get("/logout", params={"id_token_hint": tokens["id_token"], "post_logout_redirect_uri": uri,
                                              "state": "s"})
        error_page(r, "invalid_request")
    # without id_token_hint or client_id, no redirect URI can be trusted
    error_page(await http.get("/logout", params={"post_logout_redirect_uri": "https://agency.example/bye"}),
               "invalid_request")
    # a client's hint cannot carry another client's URI
    r = await http.get("/logout", params={"id_token_hint": tokens["id_token"], "client_id": world.other.client_id})
    error_page(r, "invalid_request")
    assert await _session_live(world.services)
    assert (await introspect(http, world.rp, tokens["access_token"]))["active"] is True
    _, challenge = pkce_pair()
    assert "code" in (await authorize(http, authorization_params(world.rp, challenge, prompt="none"))).query


# --- development login is development only ---------------------------------------------------------------

PRODUCTION = {
    "ACAR_ENV": "production", "ACAR_ISSUER": "https://login.gov.az",
    "ACAR_DATABASE_URL": "postgresql+asyncpg://acar@db/acar",
    "ACAR_PAIRWISE_SALT": "a-production-secret-of-32-chars-or-more",
    "ACAR_CERTIFICATE_POLICY_OID": "1.3.6.1.4.1.61234.1.1", "ACAR_TSA_POLICY_OID": "1.3.6.1.4.1.61234.1.2",
    "ACAR_WEBAUTHN_RP_ID": "login.gov.az", "ACAR_WEBAUTHN_ORIGINS": '["https://login.gov.az"]',
}
"""A production configuration that passes every check (unknown names are ignored by Settings)."""


def test_production_refuses_dev_login(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    key = tmp_path / "master.key"
    key.write_text("x")
    for name, value in {**PRODUCTION, "ACAR_MASTER_KEY_FILE": str(key)}.items():
        monkeypatch.setenv(name, value)
    assert load_settings().dev_login is False  # the configuration is otherwise acceptable ...
    monkeypatch.setenv("ACAR_DEV_LOGIN", "true")
    with pytest.raises(SettingsError, match="ACAR_DEV_LOGIN"):  # ... and refused for this setting alone
        load_settings()
    settings = Settings()
    assert settings.dev_login is True
    with pytest.raises(SettingsError, match="ACAR_DEV_LOGIN"):
        settings.check_production()


async def test_no_dev_login_route_without_dev_login(initialized: Services, client: httpx.AsyncClient) -> None:
    assert initialized.settings.dev_login is False
    rp = await register_client(initialized)
    await register_person(initialized)
    _, challenge = pkce_pair()
    r = await client.get("/authorize", params=authorization_params(rp, challenge))
    assert r.status_code == 303 and r.headers["location"].startswith("/interaction/")
    page = await client.get(r.headers["location"])
    assert page.status_code == 200 and "dev-login" not in page.text
    r = await client.post(r.headers["location"] + "/dev-login", data={"fin": "5ABCD12", "level": "high"})
    assert r.status_code in (404, 405)
    assert (await rows(initialized))["sessions"] == 0
