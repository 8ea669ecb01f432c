"""Issue 4 the way agencies will use it: a real `acar serve` process over real HTTP, clients registered with
`acar client add`, Authlib as the relying party's OAuth client and PyJWT, on the JWK Set named by discovery,
as the independent verifier of every token.

One server serves the whole module; each test registers (in the module fixture) clients of its own, so consent
and sessions of one test never decide another's outcome.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import time
import warnings
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urljoin, urlsplit

import httpx
import jwt
import pytest
from authlib.deprecate import AuthlibDeprecationWarning
from authlib.integrations.base_client.errors import OAuthError
from authlib.oauth2.rfc7523 import PrivateKeyJWT
from joserfc.jwk import ECKey
from sqlalchemy import select

from api.deps import build_services
from api.settings import Settings
from idp.core.tokens import TokenIssuer
from idp.sql.models import LogoutDelivery
from tests.conftest import _wipe
from tests.functional.helpers import InProcessAcar, Server, acar_env
from tests.local_http import free_port
from tests.oidc_tools import FIN, expected_at_hash, hidden, logout_receiver

with warnings.catch_warnings():  # Authlib 1.9 prefers the httpx2 package and warns when it runs on httpx
    warnings.filterwarnings("ignore", "The httpx module is deprecated", AuthlibDeprecationWarning)
    from authlib.integrations.httpx_client import OAuth2Client

ACR = {"low": "urn:example:acar:loa:low", "substantial": "urn:example:acar:loa:substantial",
       "high": "urn:example:acar:loa:high"}
"""Configured acr URIs (ACAR_ACR_*), deliberately not the defaults: the tokens must carry these."""
AMR = {"low": ["test"], "substantial": ["test", "mfa"], "high": ["test", "hwk", "mfa"]}
BACKCHANNEL_EVENT = "http://schemas.openid.net/event/backchannel-logout"
JWT_KID = "agency-key-1"
LEEWAY = 5
"""Seconds of clock tolerance when checking exp/iat/auth_time: test and server share one clock."""
TLS = ssl.create_default_context()
"""The TLS settings of every HTTP client here, made once: an httpx client made without them loads the CA bundle
(~50 ms each, and the tests make dozens; the server is plain HTTP on loopback)."""


@dataclass
class Op:
    issuer: str
    env: dict[str, str]
    person_id: str
    clients: dict[str, dict[str, Any]]
    discovery: dict[str, Any]
    jwks: jwt.PyJWKClient
    rp_key: ECKey
    durable_port: int
    backchannel_port: int
    settings: Settings
    open_clients: list[OAuth2Client] = field(default_factory=list)


def _client_specs(backchannel_port: int, durable_port: int, jwks_file: Path) -> dict[str, list[str]]:
    everything = ["--scope", "openid profile fin birthdate offline_access"]
    return {
        # code flow, consent, userinfo (client_secret_basic)
        "web": ["--redirect-uri", "https://portal.agency-a.example/cb", *everything],
        # single sign-on and pairwise subjects: web-a and mobile-a share the sector portal.agency-a.example
        "sso_web": ["--redirect-uri", "https://portal.agency-a.example/sso", *everything],
        "sso_mobile": ["--redirect-uri", "https://portal.agency-a.example/mobile", "--auth-method",
                       "private_key_jwt", "--jwks-file", str(jwks_file), "--scope", "openid profile"],
        "sso_tax": ["--redirect-uri", "https://tax.agency-b.example/cb", "--auth-method", "client_secret_post",
                    "--scope", "openid profile"],
        "sso_public_sub": ["--redirect-uri", "https://registry.agency-c.example/cb", "--subject-type", "public",
                           "--scope", "openid profile"],
        "refresh": ["--redirect-uri", "https://benefits.agency-f.example/cb", *everything],
        "tokens_post": ["--redirect-uri", "https://permits.agency-g.example/cb", "--auth-method",
                        "client_secret_post", *everything],
        "no_fin": ["--redirect-uri", "https://library.agency-h.example/cb", "--scope", "openid profile"],
        "api_read": ["--grant-type", "client_credentials", "--scope", "api:read"],
        "api_write": ["--grant-type", "client_credentials", "--scope", "api:write"],
        "logout": ["--redirect-uri", "https://health.agency-d.example/cb", "--post-logout-redirect-uri",
                   "https://health.agency-d.example/bye", "--backchannel-logout-uri",
                   f"http://127.0.0.1:{backchannel_port}/backchannel", *everything],
        "durable": ["--redirect-uri", "https://school.agency-e.example/cb", "--backchannel-logout-uri",
                    f"http://127.0.0.1:{durable_port}/backchannel", "--scope", "openid profile"],
        "levels": ["--redirect-uri", "https://court.agency-i.example/cb", *everything],
    }


def _in_thread(coro_factory: Any) -> Any:
    """Run a coroutine on a loop of its own in another thread (the test session's loop is left alone)."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(lambda: asyncio.run(coro_factory())).result()


async def _wipe_database(settings: Settings) -> None:
    services = build_services(settings)
    try:
        await _wipe(services)
    finally:
        await services.close()


@pytest.fixture(scope="module")
def op(database_url: str, master_key_file: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Op]:
    tmp = tmp_path_factory.mktemp("oidc_flows")
    port = free_port()
    issuer = f"http://localhost:{port}"
    env = acar_env({
        "ACAR_DATABASE_URL": database_url, "ACAR_DATA_DIR": str(tmp / "data"),
        "ACAR_MASTER_KEY_FILE": str(master_key_file), "ACAR_KEY_CACHE_SECONDS": "0",
        "ACAR_DEV_LOGIN": "true", "ACAR_ISSUER": issuer, "ACAR_ACR_LOW": ACR["low"],
        "ACAR_ACR_SUBSTANTIAL": ACR["substantial"], "ACAR_ACR_HIGH": ACR["high"],
        "ACAR_REFRESH_REUSE_GRACE_SECONDS": "0",  # a reused refresh token is reuse at once (grace: unit tests)
        "ACAR_HOUSEKEEPING_SECONDS": "1",  # the back-channel worker ticks every second
    })
    settings = Settings(database_url=database_url, master_key_file=master_key_file, data_dir=tmp / "data",
                        issuer=issuer, key_cache_seconds=0)
    rp_key = ECKey.generate_key("P-256", parameters={"kid": JWT_KID, "use": "sig", "alg": "ES256"})
    jwks_file = tmp / "agency-jwks.json"
    jwks_file.write_text(json.dumps({"keys": [rp_key.as_dict(private=False)]}))
    backchannel_port, durable_port = free_port(), free_port()
    specs = _client_specs(backchannel_port, durable_port, jwks_file)

    # `acar start serve`: `acar init`, then the server, in one process; the clients and the person are registered
    # with `acar client add` and `acar person add` in this process while it starts (neither needs the token keys)
    server = Server(env, port=port, log_path=tmp / "server.log", init=True)
    try:
        with pytest.MonkeyPatch.context() as patch:
            acar = InProcessAcar(env, patch)
            clients = {name: dict(acar.json("client", "add", "--name", f"Agency {name}", *spec))
                       for name, spec in specs.items()}
            person = acar.json("person", "add", "--fin", FIN, "--given-name", "Aysel", "--family-name", "Məmmədova",
                               "--birthdate", "1990-05-17")
        server.wait_ready()
        discovery = httpx.get(issuer + "/.well-known/openid-configuration", timeout=10, verify=TLS).json()
        yield Op(issuer=issuer, env=env, person_id=person["id"], clients=clients, discovery=discovery,
                 jwks=jwt.PyJWKClient(discovery["jwks_uri"], cache_keys=True), rp_key=rp_key,
                 durable_port=durable_port, backchannel_port=backchannel_port, settings=settings)
    finally:
        server.stop()
        _in_thread(lambda: _wipe_database(settings))


# --- the relying party (Authlib) and the citizen's browser (httpx with cookies) ----------------------------

def relying_party(op: Op, name: str, scope: str = "openid profile") -> OAuth2Client:
    client = op.clients[name]
    secret: Any = client["client_secret"]
    method: Any = client["auth_method"]
    if method == "private_key_jwt":
        # no fixed audience: each assertion names the endpoint it is sent to (token, introspection, revocation)
        # Authlib's own private_key_jwt, as an agency would use it (its assertions live an hour)
        method, secret = PrivateKeyJWT(None, headers={"kid": JWT_KID}, alg="ES256"), op.rp_key
    rp = OAuth2Client(client_id=client["client_id"], client_secret=secret, token_endpoint_auth_method=method,
                      revocation_endpoint_auth_method=method, scope=scope,
                      redirect_uri=(client["redirect_uris"] or [None])[0], code_challenge_method="S256",
                      timeout=15, trust_env=False, verify=TLS)
    op.open_clients.append(rp)
    return rp


@dataclass
class Outcome:
    """Where the browser ended: the OP's last answer (a redirect to the client, a page) and the pages it saw."""

    response: httpx.Response
    pages: list[str] = field(default_factory=list)

    @property
    def location(self) -> str:
        assert self.response.status_code == 303, (self.response.status_code, self.response.text[:500])
        return self.response.headers["location"]

    @property
    def params(self) -> dict[str, str]:
        return {k: v[0] for k, v in parse_qs(urlsplit(self.location).query).items()}


class Browser:
    """The citizen's browser: keeps cookies, follows the OP's own redirects, never the one back to the client."""

    def __init__(self, op: Op) -> None:
        self.op = op
        self.http = httpx.Client(follow_redirects=False, timeout=15, trust_env=False, verify=TLS)

    def close(self) -> None:
        self.http.close()

    def authorize(self, url: str, *, level: str | None = "substantial", consent: str | None = "allow") -> Outcome:
        """Open an authorization URL; log in at `level` and answer consent with `consent` when asked (None: stop
        at that page)."""
        outcome = Outcome(self.http.get(url))
        for _ in range(6):
            response = outcome.response
            if response.status_code != 303:
                return outcome
            target = urljoin(str(response.url), response.headers["location"])
            if not target.startswith(self.op.issuer + "/interaction/"):
                return outcome  # back to the client: a relying party's redirect URI is not followed
            page = self.http.get(target)
            assert page.status_code == 200, page.text
            csrf = hidden(page.text, "csrf_token")
            if target.endswith("/consent"):
                outcome.pages.append("consent")
                if consent is None:
                    return Outcome(page, outcome.pages)
                outcome.response = self.http.post(target, data={"csrf_token": csrf, "decision": consent})
            else:
                outcome.pages.append("login")
                if level is None:
                    return Outcome(page, outcome.pages)
                outcome.response = self.http.post(target + "/dev-login",
                                                  data={"csrf_token": csrf, "fin": FIN, "level": level})
        raise AssertionError("the OP redirected too often")


@pytest.fixture
def browser(op: Op) -> Iterator[Browser]:
    b = Browser(op)
    yield b
    b.close()


@pytest.fixture(autouse=True)
def _close_relying_parties(op: Op) -> Iterator[None]:
    yield
    while op.open_clients:
        op.open_clients.pop().close()


@dataclass
class Login:
    rp: OAuth2Client
    token: dict[str, Any]
    id_claims: dict[str, Any]
    access_claims: dict[str, Any]
    pages: list[str]


def start(op: Op, rp: OAuth2Client, **extra: str) -> tuple[str, str, str, str]:
    """An authorization URL as Authlib builds it, with PKCE S256 and a nonce: (url, state, nonce, verifier)."""
    from authlib.common.security import generate_token

    verifier, nonce = generate_token(64), generate_token(24)
    url, state = rp.create_authorization_url(op.discovery["authorization_endpoint"], code_verifier=verifier,
                                             nonce=nonce, **extra)
    return url, state, nonce, verifier


def login(op: Op, browser: Browser, name: str, *, scope: str = "openid profile", level: str = "substantial",
          expect_pages: list[str] | None = None, **extra: str) -> Login:
    """The whole code flow: authorize in the browser, redeem the code with Authlib, verify both tokens."""
    rp = relying_party(op, name, scope)
    url, state, nonce, verifier = start(op, rp, **extra)
    before = int(time.time())
    outcome = browser.authorize(url, level=level)
    if expect_pages is not None:
        assert outcome.pages == expect_pages
    params = outcome.params
    assert params["state"] == state and params["iss"] == op.issuer and "error" not in params, params
    assert outcome.location.startswith(rp.redirect_uri + "?")
    token = rp.fetch_token(op.discovery["token_endpoint"], authorization_response=outcome.location, state=state,
                           code_verifier=verifier)
    client_id = op.clients[name]["client_id"]
    id_claims = verify_id_token(op, token["id_token"], client_id, nonce=nonce, access_token=token["access_token"])
    if "login" in outcome.pages:
        assert before - LEEWAY <= id_claims["auth_time"] <= time.time() + LEEWAY
        assert id_claims["acr"] == ACR[level] and id_claims["amr"] == AMR[level]
    access_claims = verify_access_token(op, token["access_token"], client_id)
    assert access_claims["sub"] == id_claims["sub"] and access_claims["scope"] == scope
    return Login(rp, dict(token), id_claims, access_claims, outcome.pages)


def verify_id_token(op: Op, token: str, client_id: str, *, nonce: str | None, access_token: str | None,
                    alg: str = "ES256") -> dict[str, Any]:
    """OIDC Core 3.1.3.7 with PyJWT: signature by a key of the discovery JWKS, iss, aud, exp, iat, nonce, at_hash."""
    header = jwt.get_unverified_header(token)
    assert header["alg"] == alg and header.get("typ", "JWT") == "JWT"
    key = op.jwks.get_signing_key_from_jwt(token)
    claims: dict[str, Any] = jwt.decode(
        token, key.key, algorithms=[alg], audience=client_id, issuer=op.issuer, leeway=LEEWAY,
        options={"require": ["iss", "sub", "aud", "exp", "iat", "auth_time", "acr", "amr", "sid"]})
    if nonce is None:
        assert "nonce" not in claims
    else:
        assert claims["nonce"] == nonce
    if access_token is not None:
        assert claims["at_hash"] == expected_at_hash(access_token, alg)
    assert claims["azp"] == client_id
    assert claims["acr"] in ACR.values() and claims["amr"] in AMR.values()
    return claims


def verify_access_token(op: Op, token: str, client_id: str) -> dict[str, Any]:
    """RFC 9068: typ at+jwt, signed by a key of the discovery JWKS, iss, aud, exp, iat, sub, client_id, jti."""
    header = jwt.get_unverified_header(token)
    assert header["typ"] == "at+jwt" and header["alg"] == "ES256"
    key = op.jwks.get_signing_key_from_jwt(token)
    claims: dict[str, Any] = jwt.decode(
        token, key.key, algorithms=["ES256"], audience=op.issuer, issuer=op.issuer, leeway=LEEWAY,
        options={"require": ["iss", "exp", "aud", "sub", "client_id", "iat", "jti"]})
    assert claims["client_id"] == client_id and claims["jti"]
    return claims


def introspect(op: Op, rp: OAuth2Client, token: str) -> dict[str, Any]:
    r = rp.introspect_token(op.discovery["introspection_endpoint"], token=token)
    assert r.status_code == 200, r.text
    return dict(r.json())


def userinfo(op: Op, token: str, method: str = "GET", **kw: Any) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if "data" not in kw else {}
    return httpx.request(method, op.discovery["userinfo_endpoint"], headers=headers, timeout=10, trust_env=False,
                         verify=TLS, **kw)


def oauth_error(call: Any) -> str:
    """Run an Authlib call expected to fail; the OAuth error code it got."""
    with pytest.raises(OAuthError) as caught:
        call()
    return str(caught.value.error)


# --- discovery ---------------------------------------------------------------------------------------------

def test_discovery_lists_only_what_is_implemented(op: Op) -> None:
    doc = op.discovery
    assert doc["issuer"] == op.issuer
    for name in ("authorization_endpoint", "token_endpoint", "userinfo_endpoint", "jwks_uri", "end_session_endpoint",
                 "introspection_endpoint", "revocation_endpoint"):
        assert doc[name].startswith(op.issuer + "/"), name
        assert httpx.get(doc[name], timeout=10, verify=TLS).status_code != 404, name  # every advertised endpoint exists
    assert doc["response_types_supported"] == ["code"]
    assert doc["code_challenge_methods_supported"] == ["S256"]
    assert doc["response_modes_supported"] == ["query", "form_post"]
    assert set(doc["grant_types_supported"]) == {"authorization_code", "refresh_token", "client_credentials"}
    assert set(doc["subject_types_supported"]) == {"pairwise", "public"}
    assert set(doc["token_endpoint_auth_methods_supported"]) <= {
        "client_secret_basic", "client_secret_post", "private_key_jwt", "none"}
    assert set(doc["token_endpoint_auth_signing_alg_values_supported"]) <= {"ES256", "RS256", "EdDSA"}
    assert doc["acr_values_supported"] == [ACR["low"], ACR["substantial"], ACR["high"]]
    assert doc["request_parameter_supported"] is False and doc["request_uri_parameter_supported"] is False
    assert doc["claims_parameter_supported"] is True
    assert doc["backchannel_logout_supported"] is True and doc["backchannel_logout_session_supported"] is True
    assert doc["frontchannel_logout_supported"] is False
    assert "openid" in doc["scopes_supported"]
    # every advertised ID token algorithm has a published key, and the JWKS holds public keys only
    jwks = httpx.get(doc["jwks_uri"], timeout=10, verify=TLS).json()
    published = {k.get("alg") for k in jwks["keys"]}
    assert set(doc["id_token_signing_alg_values_supported"]) <= published
    assert not any({"d", "p", "q", "k"} & set(k) for k in jwks["keys"])
    # RFC 8414: the same metadata at the OAuth well-known location
    assert httpx.get(op.issuer + "/.well-known/oauth-authorization-server", timeout=10, verify=TLS).json() == doc


# --- code flow, SSO, pairwise subjects ---------------------------------------------------------------------

def test_code_flow_with_consent_verified_independently(op: Op, browser: Browser) -> None:
    done = login(op, browser, "web", scope="openid profile fin", expect_pages=["login", "consent"])
    token, claims = done.token, done.id_claims
    assert token["token_type"] == "Bearer" and token["expires_in"] > 0 and token["refresh_token"]
    assert claims["sid"] and claims["sub"] != op.person_id  # pairwise by default
    assert "fin" not in claims  # person claims go to userinfo unless the claims parameter asks for them
    # userinfo: GET and POST with the header, POST with the token in the form body (RFC 6750 2.1 and 2.2)
    for response in (userinfo(op, token["access_token"]), userinfo(op, token["access_token"], "POST"),
                     userinfo(op, "", "POST", data={"access_token": token["access_token"]})):
        assert response.status_code == 200, response.text
        assert response.headers["content-type"].startswith("application/json")
        assert response.json() == {"sub": claims["sub"], "name": "Aysel Məmmədova", "given_name": "Aysel",
                                   "family_name": "Məmmədova", "fin": FIN}


def test_userinfo_releases_fin_only_when_consented(op: Op, browser: Browser) -> None:
    # a client registered for fin, but fin not asked for: not released
    done = login(op, browser, "refresh", scope="openid profile")
    assert "fin" not in userinfo(op, done.token["access_token"]).json()
    # a client not registered for fin cannot even ask for it
    rp = relying_party(op, "no_fin", scope="openid fin")
    url, state, _, _ = start(op, rp)
    outcome = browser.authorize(url)
    assert outcome.params == {"error": "invalid_scope", "error_description": outcome.params["error_description"],
                              "state": state, "iss": op.issuer}
    # asked for and consented: released
    done = login(op, browser, "refresh", scope="openid fin", expect_pages=["consent"])
    assert userinfo(op, done.token["access_token"]).json() == {"sub": done.id_claims["sub"], "fin": FIN}


def test_single_sign_on_consent_per_client_and_pairwise_subjects(op: Op, browser: Browser) -> None:
    first = login(op, browser, "sso_web", expect_pages=["login", "consent"])
    # same browser, other clients: no new login, but each client asks for consent once
    mobile = login(op, browser, "sso_mobile", expect_pages=["consent"])  # private_key_jwt (Authlib)
    tax = login(op, browser, "sso_tax", expect_pages=["consent"])  # client_secret_post
    public = login(op, browser, "sso_public_sub", expect_pages=["consent"])
    for other in (mobile, tax, public):
        assert other.id_claims["sid"] == first.id_claims["sid"]
        assert other.id_claims["auth_time"] == first.id_claims["auth_time"]
    # OIDC Core 8: same sector -> same sub; another sector -> another sub; public -> the person's public id
    assert mobile.id_claims["sub"] == first.id_claims["sub"]
    assert tax.id_claims["sub"] != first.id_claims["sub"]
    assert op.person_id not in (first.id_claims["sub"], tax.id_claims["sub"])
    assert public.id_claims["sub"] == op.person_id
    # consent is remembered: the second authorization of a client shows nothing
    again = login(op, browser, "sso_web", expect_pages=[])
    assert again.id_claims["sub"] == first.id_claims["sub"]
    # the private_key_jwt client authenticates at introspection and revocation with fresh assertions too
    assert introspect(op, mobile.rp, mobile.token["access_token"])["active"] is True
    assert mobile.rp.revoke_token(op.discovery["revocation_endpoint"], token=mobile.token["refresh_token"]
                                  ).status_code == 200
    assert introspect(op, mobile.rp, mobile.token["access_token"])["active"] is False


# --- refresh, client credentials, introspection, revocation -------------------------------------------------

def test_refresh_rotation_and_reuse_revokes_the_family(op: Op, browser: Browser) -> None:
    done = login(op, browser, "refresh", scope="openid profile offline_access")
    rp, endpoint, client_id = done.rp, op.discovery["token_endpoint"], op.clients["refresh"]["client_id"]
    first = done.token
    second = dict(rp.refresh_token(endpoint, refresh_token=first["refresh_token"]))
    third = dict(rp.refresh_token(endpoint, refresh_token=second["refresh_token"]))
    assert len({first["refresh_token"], second["refresh_token"], third["refresh_token"]}) == 3
    assert len({first["access_token"], second["access_token"], third["access_token"]}) == 3
    refreshed = verify_id_token(op, third["id_token"], client_id, nonce=None, access_token=third["access_token"])
    assert refreshed["sub"] == done.id_claims["sub"] and refreshed["auth_time"] == done.id_claims["auth_time"]
    assert introspect(op, rp, third["refresh_token"])["active"] is True
    assert introspect(op, rp, third["access_token"])["active"] is True
    # the first refresh token again, after the grace window (0 s here): reuse, the whole family is revoked
    assert oauth_error(lambda: rp.refresh_token(endpoint, refresh_token=first["refresh_token"])) == "invalid_grant"
    assert introspect(op, rp, third["refresh_token"]) == {"active": False}
    assert introspect(op, rp, third["access_token"]) == {"active": False}
    assert userinfo(op, third["access_token"]).status_code == 401
    assert oauth_error(lambda: rp.refresh_token(endpoint, refresh_token=third["refresh_token"])) == "invalid_grant"


def test_client_credentials_scopes_are_per_client(op: Op) -> None:
    endpoint = op.discovery["token_endpoint"]
    reader, writer = relying_party(op, "api_read", "api:read"), relying_party(op, "api_write", "api:write")
    token = dict(reader.fetch_token(endpoint, grant_type="client_credentials", scope="api:read"))
    assert "refresh_token" not in token and "id_token" not in token and token["scope"] == "api:read"
    claims = verify_access_token(op, token["access_token"], op.clients["api_read"]["client_id"])
    assert claims["sub"] == op.clients["api_read"]["client_id"] and claims["scope"] == "api:read"
    # another client's scope, or a citizen's: refused
    for scope in ("api:write", "api:read api:write", "openid"):
        assert oauth_error(lambda s=scope: reader.fetch_token(endpoint, grant_type="client_credentials", scope=s)
                           ) == "invalid_scope"
    written = writer.fetch_token(endpoint, grant_type="client_credentials", scope="api:write")
    assert written["scope"] == "api:write"
    # no person behind it: userinfo refuses with insufficient_scope (RFC 6750 3.1)
    r = userinfo(op, token["access_token"])
    assert r.status_code == 403 and r.json()["error"] == "insufficient_scope"
    assert r.headers["www-authenticate"].startswith("Bearer ") and 'error="insufficient_scope"' in r.headers[
        "www-authenticate"]
    # a client not registered for client_credentials
    web = relying_party(op, "web")
    assert oauth_error(lambda: web.fetch_token(endpoint, grant_type="client_credentials")) == "unauthorized_client"


def _expired_access_token(op: Op, client_id: str, sub: str) -> str:
    """A token signed by the OP's own current key an hour ago (so only its exp is wrong)."""

    async def mint() -> str:
        services = build_services(op.settings)
        try:
            issuer = TokenIssuer(services.token_keys.signer, issuer=op.issuer, access_token_lifetime=600,
                                 id_token_lifetime=600, clock=lambda: time.time() - 3600)
            token, _ = await issuer.access_token(client_id=client_id, sub=sub, scope="openid", jti="expired-test")
            return token
        finally:
            await services.close()

    return str(_in_thread(mint))


def test_introspection(op: Op, browser: Browser) -> None:
    done = login(op, browser, "tokens_post", scope="openid profile")  # client_secret_post
    rp, client_id = done.rp, op.clients["tokens_post"]["client_id"]
    live = introspect(op, rp, done.token["access_token"])
    assert live["active"] is True and live["client_id"] == client_id and live["sub"] == done.id_claims["sub"]
    assert live["scope"] == "openid profile" and live["iss"] == op.issuer and live["exp"] > time.time()
    refresh = introspect(op, rp, done.token["refresh_token"])
    assert refresh["active"] is True and refresh["client_id"] == client_id
    expired = _expired_access_token(op, client_id, done.id_claims["sub"])
    for token in (expired, "garbage", "a.b.c", done.token["id_token"]):
        assert introspect(op, rp, token) == {"active": False}, token[:20]
    # RFC 7662 section 2.1: the caller must authenticate
    for auth in ({}, {"auth": (client_id, "wrong-secret")}):
        r = httpx.post(op.discovery["introspection_endpoint"], data={"token": done.token["access_token"]},
                       timeout=10, verify=TLS, **auth)
        assert r.status_code == 401 and r.json()["error"] == "invalid_client" and "www-authenticate" in r.headers
    # revoked by the client (RFC 7009): inactive from then on
    assert rp.revoke_token(op.discovery["revocation_endpoint"], token=done.token["access_token"],
                           token_type_hint="access_token").status_code == 200
    assert introspect(op, rp, done.token["access_token"]) == {"active": False}
    assert userinfo(op, done.token["access_token"]).status_code == 401


def test_revocation_of_a_refresh_token_revokes_its_family(op: Op, browser: Browser) -> None:
    done = login(op, browser, "web", scope="openid profile")
    rp, endpoint = done.rp, op.discovery["revocation_endpoint"]
    rotated = dict(rp.refresh_token(op.discovery["token_endpoint"], refresh_token=done.token["refresh_token"]))
    assert rp.revoke_token(endpoint, token=rotated["refresh_token"]).status_code == 200
    for token in (rotated["refresh_token"], rotated["access_token"], done.token["access_token"]):
        assert introspect(op, rp, token) == {"active": False}
    assert oauth_error(lambda: rp.refresh_token(op.discovery["token_endpoint"],
                                                refresh_token=rotated["refresh_token"])) == "invalid_grant"
    # RFC 7009 2.2: an unknown or already revoked token is answered 200 all the same
    for token in ("never-issued", rotated["refresh_token"]):
        r = rp.revoke_token(endpoint, token=token)
        assert r.status_code == 200 and r.content == b""


# --- logout ------------------------------------------------------------------------------------------------

def _verify_logout_token(op: Op, token: str, client_id: str, id_claims: dict[str, Any]) -> dict[str, Any]:
    """OIDC Back-Channel Logout 1.0 section 2.6, with PyJWT."""
    assert jwt.get_unverified_header(token)["typ"] == "logout+jwt"
    key = op.jwks.get_signing_key_from_jwt(token)
    claims: dict[str, Any] = jwt.decode(token, key.key, algorithms=["ES256"], audience=client_id, issuer=op.issuer,
                                        leeway=LEEWAY, options={"require": ["iss", "aud", "iat", "exp", "jti"]})
    assert claims["events"] == {BACKCHANNEL_EVENT: {}}
    assert claims["sid"] == id_claims["sid"] and claims["sub"] == id_claims["sub"]
    assert "nonce" not in claims
    return claims


def _deliveries(op: Op, client_id: str) -> list[Any]:
    """The logout_deliveries rows of a client, read from the database the server writes."""

    async def read() -> list[Any]:
        services = build_services(op.settings)
        try:
            async with services.sessions() as session:
                return list((await session.execute(
                    select(LogoutDelivery).where(LogoutDelivery.client_id == client_id))).scalars())
        finally:
            await services.close()

    return list(_in_thread(read))


def _wait_for(received: list[str], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not received and time.monotonic() < deadline:
        time.sleep(0.1)


def test_rp_initiated_logout_with_backchannel_logout(op: Op, browser: Browser) -> None:
    client_id = op.clients["logout"]["client_id"]
    with logout_receiver(op.backchannel_port) as receiver:
        done = login(op, browser, "logout", scope="openid profile")
        r = browser.http.get(op.discovery["end_session_endpoint"], params={
            "id_token_hint": done.token["id_token"], "state": "after-logout",
            "post_logout_redirect_uri": "https://health.agency-d.example/bye"})
        assert r.status_code == 303, r.text
        assert r.headers["location"] == "https://health.agency-d.example/bye?state=after-logout"
        _wait_for(receiver.tokens, 10)
        assert len(receiver.tokens) == 1, "no back-channel logout token arrived"
        assert receiver.content_types == ["application/x-www-form-urlencoded"]
        _verify_logout_token(op, receiver.tokens[0], client_id, done.id_claims)
    # the session is over: prompt=none cannot sign in silently, and the tokens of the session are revoked
    url, state, _, _ = start(op, done.rp, prompt="none")
    outcome = browser.authorize(url, level=None)
    assert outcome.params["error"] == "login_required" and outcome.params["state"] == state
    assert introspect(op, done.rp, done.token["access_token"]) == {"active": False}


def test_backchannel_logout_is_delivered_when_the_client_comes_back(op: Op, browser: Browser) -> None:
    client_id = op.clients["durable"]["client_id"]
    done = login(op, browser, "durable")
    r = browser.http.get(op.discovery["end_session_endpoint"], params={"id_token_hint": done.token["id_token"]})
    assert r.status_code == 200 and 'id="logout-done"' in r.text  # no redirect URI: Açar's own page
    deadline = time.monotonic() + 10
    while not (rows := _deliveries(op, client_id)) or rows[0].attempts < 1:  # the first attempt meets a closed port
        assert time.monotonic() < deadline, f"no delivery attempt within 10 s: {rows}"
        time.sleep(0.1)
    (row,) = rows
    assert row.delivered_at is None and row.attempts >= 1 and row.last_error, row
    with logout_receiver(op.durable_port) as receiver:  # ... and the client comes back on the same port
        _wait_for(receiver.tokens, 20)
        assert len(receiver.tokens) == 1, "the logout token was not delivered after the client came back"
        _verify_logout_token(op, receiver.tokens[0], client_id, done.id_claims)


# --- levels of assurance and prompts -------------------------------------------------------------------------

def test_step_up_max_age_prompt_login_and_form_post(op: Op, browser: Browser) -> None:
    low = login(op, browser, "levels", level="low", expect_pages=["login", "consent"])
    assert low.id_claims["acr"] == ACR["low"] and low.id_claims["amr"] == AMR["low"]
    rp = relying_party(op, "levels")
    # a higher level cannot be reached silently ...
    url, state, _, _ = start(op, rp, acr_values=ACR["high"], prompt="none")
    outcome = browser.authorize(url, level=None)
    assert outcome.params["error"] == "login_required" and outcome.params["state"] == state
    # ... and interactively the login page comes back (step-up), not an error; a login below it is not enough
    url, _, _, _ = start(op, rp, acr_values=ACR["high"])
    outcome = browser.authorize(url, level=None)
    assert outcome.pages == ["login"] and '<option value="high" selected>' in outcome.response.text
    pending = urlsplit(str(outcome.response.url)).path
    r = browser.http.post(op.issuer + pending + "/dev-login", data={
        "csrf_token": hidden(outcome.response.text, "csrf_token"), "fin": FIN, "level": "substantial"})
    assert r.status_code == 303 and r.headers["location"] == pending, r.text
    high = login(op, browser, "levels", level="high", acr_values=ACR["high"], expect_pages=["login"])
    assert high.id_claims["acr"] == ACR["high"] and high.id_claims["amr"] == AMR["high"]
    assert high.id_claims["sid"] == low.id_claims["sid"]  # the same session, stepped up
    # with a live session, no page at all; max_age=0 and prompt=login force a new login
    login(op, browser, "levels", expect_pages=[])
    time.sleep(max(0.0, high.id_claims["auth_time"] + 1 - time.time()))  # auth_time has a resolution of one second
    again = login(op, browser, "levels", level="high", max_age="0", expect_pages=["login"])
    assert again.id_claims["auth_time"] > high.id_claims["auth_time"]
    login(op, browser, "levels", level="high", prompt="login", expect_pages=["login"])
    # form_post: an HTML form that posts code, state and iss to the redirect URI
    url, state, nonce, verifier = start(op, rp, response_mode="form_post")
    outcome = browser.authorize(url)
    page = outcome.response
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert f'action="{rp.redirect_uri}"' in page.text and 'method="post"' in page.text
    assert hidden(page.text, "state") == state and hidden(page.text, "iss") == op.issuer
    assert "form-action 'self' https://court.agency-i.example" in page.headers["content-security-policy"]
    token = rp.fetch_token(op.discovery["token_endpoint"], code=hidden(page.text, "code"), code_verifier=verifier)
    verify_id_token(op, token["id_token"], op.clients["levels"]["client_id"], nonce=nonce,
                    access_token=token["access_token"])

