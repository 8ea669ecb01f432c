"""Rate limits through real HTTP on a real Redis server: every budget of api.ratelimit, the 429 answers in each
endpoint's error form, the audit event, and two application instances sharing one budget."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt
from fastapi import FastAPI

from api.app import create_app
from api.deps import Services, build_services
from api.settings import Settings
from idp.sql import enrollment as enrollment_module
from keys.software import SoftwareKeyStore
from storage.audit import AuditEvent
from tests.conftest import REDIS_URL
from tests.oidc_tools import (
    ISSUER,
    Registered,
    asgi_browser,
    authorization_params,
    hidden,
    pkce_pair,
    register_client,
    register_person,
)
from tests.passkey_tools import events, issue_code, refused

LIMIT = "3/minute"


@pytest.fixture
def settings(settings: Settings, redis_prefix: str) -> Settings:
    """The test settings on the test Redis (a prefix of this test's own), each budget 3 a minute, and the
    loopback peer of the in-process client trusted as a proxy (so X-Forwarded-For plays distinct clients)."""
    return settings.model_copy(update={
        "rate_limit_storage": REDIS_URL, "rate_limit_prefix": redis_prefix, "trusted_proxies": ["127.0.0.1/32"],
        **dict.fromkeys(("rate_limit_authorize", "rate_limit_passkey_options", "rate_limit_passkey_login",
                         "rate_limit_enrollment", "rate_limit_enrollment_code", "rate_limit_client_auth_failures",
                         "rate_limit_introspection", "rate_limit_admin"), LIMIT)})


def from_ip(ip: str, **headers: str) -> dict[str, str]:
    return {"X-Forwarded-For": ip, **headers}


def too_many_oauth(r: httpx.Response) -> None:
    """RFC 6585 429 with Retry-After and the OAuth error JSON of RFC 6749 section 5.2."""
    assert r.status_code == 429, (r.status_code, r.text)
    assert 1 <= int(r.headers["retry-after"]) <= 60
    assert r.headers["cache-control"] == "no-store"
    assert r.json()["error"] == "temporarily_unavailable"


async def limit_events(services_: Services) -> list[AuditEvent]:
    return await events(services_, "ratelimit.exceeded")


# --- /token, /introspect, /revoke: failed client authentication --------------------------------------------

async def test_failed_client_authentication_is_limited_per_client_before_secrets_are_checked(
        initialized: Services, client: httpx.AsyncClient) -> None:
    rp = await register_client(initialized)
    form = {"grant_type": "client_credentials"}
    # successes cost nothing: more of them than the budget all pass
    for _ in range(5):
        r = await client.post("/revoke", data={"token": "unknown"}, auth=(rp.client_id, rp.secret or ""))
        assert r.status_code == 200, r.text
    # failures from three addresses spend the client's budget ...
    for i in range(3):
        r = await client.post("/token", data=form, auth=(rp.client_id, "wrong"), headers=from_ip(f"198.51.100.{i}"))
        assert r.status_code == 401 and r.json()["error"] == "invalid_client"
    # ... and then even the right secret, from a fresh address, is refused before it is checked
    r = await client.post("/token", data=form, auth=(rp.client_id, rp.secret or ""), headers=from_ip("203.0.113.5"))
    too_many_oauth(r)
    too_many_oauth(await client.post("/introspect", data={"token": "x"}, auth=(rp.client_id, rp.secret or ""),
                                     headers=from_ip("203.0.113.6")))
    # another client from another address is not affected
    other = await register_client(initialized, name="Other portal", redirect_uris=("https://other.example/cb",))
    r = await client.post("/revoke", data={"token": "x"}, auth=(other.client_id, other.secret or ""),
                          headers=from_ip("203.0.113.7"))
    assert r.status_code == 200
    [event] = await limit_events(initialized)
    assert event.actor == "anonymous" and event.subject == rp.client_id
    assert event.detail["budget"] == "client_auth_failures" and event.detail["scope"] == "client"
    assert rp.secret not in str(event.detail) and "wrong" not in str(event.detail)


async def test_failed_client_authentication_is_limited_per_ip(initialized: Services, client: httpx.AsyncClient) -> None:
    for i in range(3):
        r = await client.post("/token", data={"grant_type": "client_credentials", "client_id": f"guess-{i}",
                                              "client_secret": "x"}, headers=from_ip("198.51.100.9"))
        assert r.status_code == 401
    r = await client.post("/token", data={"grant_type": "client_credentials", "client_id": "guess-9",
                                          "client_secret": "x"}, headers=from_ip("198.51.100.9"))
    too_many_oauth(r)


async def test_introspection_is_limited(initialized: Services, client: httpx.AsyncClient) -> None:
    rp = await register_client(initialized)
    for i in range(3):
        r = await client.post("/introspect", data={"token": "x"}, auth=(rp.client_id, rp.secret or ""),
                              headers=from_ip(f"198.51.100.{i}"))
        assert r.status_code == 200 and r.json() == {"active": False}
    too_many_oauth(await client.post("/introspect", data={"token": "x"}, auth=(rp.client_id, rp.secret or ""),
                                     headers=from_ip("198.51.100.200")))


# --- enrollment: before the service hashes anything --------------------------------------------------------

async def test_activation_codes_are_limited_per_ip_and_per_code_before_hashing(
        initialized: Services, client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch) -> None:
    """Per IP and per typed code, spent before the service looks the code up or runs its scrypt; a code has no
    public part, so strangers' guesses at other codes never stop the citizen's own code."""
    hashes: list[int] = []
    real = enrollment_module._scrypt

    def counting(salt: bytes) -> Scrypt:
        hashes.append(1)
        return real(salt)

    monkeypatch.setattr(enrollment_module, "_scrypt", counting)
    code = await issue_code(initialized, await register_person(initialized))
    hashes.clear()  # issuing hashed the new code
    wrong = code[:-1] + ("A" if code[-1] != "A" else "B")
    for _ in range(2):
        refused(await client.post("/webauthn/enrollment", json={"code": wrong}, headers=from_ip("198.51.100.1")),
                400, "code_invalid")
    refused(await client.post("/webauthn/enrollment", json={"code": "ZZZZ-ZZZZ-ZZZZ-ZZZZ-ZZZZ"},
                              headers=from_ip("198.51.100.1")), 400, "code_invalid")
    assert len(hashes) == 3
    # the address has spent its budget: refused before the code is looked up or hashed
    body = refused(await client.post("/webauthn/enrollment", json={"code": wrong}, headers=from_ip("198.51.100.1")),
                   429, "rate_limited")
    assert body["retry_after"] >= 1
    assert len(hashes) == 3
    # the typed code has one try left in its own budget, whichever address sends it
    refused(await client.post("/webauthn/enrollment", json={"code": wrong}, headers=from_ip("198.51.100.2")),
            400, "code_invalid")
    r = await client.post("/webauthn/enrollment", json={"code": wrong}, headers=from_ip("198.51.100.3"))
    refused(r, 429, "rate_limited")
    assert "retry-after" in r.headers
    assert len(hashes) == 4
    # the citizen's own code was never spent by the guesses
    r = await client.post("/webauthn/enrollment", json={"code": code}, headers=from_ip("198.51.100.4"))
    assert r.status_code == 201, r.text
    scopes = sorted(e.detail["scope"] for e in await limit_events(initialized))
    assert scopes == ["code", "ip"]
    assert all(wrong not in str(e.detail) and code not in str(e.detail) for e in await limit_events(initialized))


async def test_the_enrollment_page_spends_the_same_budgets(initialized: Services, client: httpx.AsyncClient) -> None:
    """The /enroll form is the other way to try a code: the same per-IP budget, answered with the translated page
    (429, Retry-After)."""
    code = await issue_code(initialized, await register_person(initialized))
    r = await client.get("/enroll", headers={"Accept-Language": "en"})
    csrf = hidden(r.text, "csrf_token")
    for n in range(4):
        wrong = code[:-1] + "ABCD"[n] if code[-1] != "ABCD"[n] else code[:-1] + "E"
        r = await client.post("/enroll", data={"csrf_token": csrf, "code": wrong},
                              headers=from_ip("198.51.100.9", **{"Accept-Language": "en"}))
        if n < 3:
            assert r.status_code == 400, r.text
    assert r.status_code == 429 and r.headers["content-type"].startswith("text/html")
    assert int(r.headers["retry-after"]) >= 1 and "Too many attempts" in r.text


@pytest.mark.parametrize(("lang", "text"), [("en", "Too many attempts"), ("az", "çox sayda cəhd"),
                                            ("ru", "слишком много попыток")])
async def test_browsers_get_a_translated_page(initialized: Services, client: httpx.AsyncClient, lang: str,
                                              text: str) -> None:
    rp = await register_client(initialized)
    _verifier, challenge = pkce_pair()
    headers = {"Accept": "text/html", "Accept-Language": lang}
    for _ in range(3):
        r = await client.get("/authorize", params=authorization_params(rp, challenge), headers=headers)
        assert r.status_code == 303
    r = await client.get("/authorize", params=authorization_params(rp, challenge), headers=headers)
    assert r.status_code == 429 and r.headers["content-type"].startswith("text/html")
    assert r.headers["content-language"] == lang and int(r.headers["retry-after"]) >= 1
    assert text in r.text
    # a JSON endpoint asked by a browser answers with the page too
    for _ in range(3):
        await client.post("/webauthn/enrollment", json={"code": "ZZZZ"}, headers=from_ip("198.51.100.4"))
    r = await client.post("/webauthn/enrollment", json={"code": "ZZZZ"},
                          headers=from_ip("198.51.100.4", **headers))
    assert r.status_code == 429 and text in r.text


# --- passkey login and the admin API ------------------------------------------------------------------------

async def test_passkey_login_verification_is_limited(initialized: Services, client: httpx.AsyncClient) -> None:
    body = {"pending_id": "p", "ceremony": "c", "credential": {"id": "x"}}
    for _ in range(3):
        r = await client.post("/webauthn/login/verify", json=body)
        assert r.status_code != 429, r.text
    refused(await client.post("/webauthn/login/verify", json=body), 429, "rate_limited")
    refused(await client.post("/webauthn/login/verify", json=body, headers=from_ip("198.51.100.8")), 400,
            "request_expired")  # another address has its own budget


async def test_admin_api_is_limited_before_the_token_is_verified(initialized: Services,
                                                                 client: httpx.AsyncClient) -> None:
    for _ in range(3):
        r = await client.get("/admin/clients", headers={"Authorization": "Bearer nonsense"})
        assert r.status_code == 401
    r = await client.get("/admin/clients", headers={"Authorization": "Bearer nonsense"})
    assert r.status_code == 429 and r.headers["content-type"] == "application/problem+json"
    assert r.json()["code"] == "rate_limited" and int(r.headers["retry-after"]) >= 1


# --- several nodes ------------------------------------------------------------------------------------------

@pytest.fixture
async def second_node(initialized: Services, settings: Settings,
                      software_key_store: SoftwareKeyStore) -> AsyncIterator[FastAPI]:
    """A second application instance with services of its own (its own pools, its own limiter) on the same database
    and the same Redis."""
    services = build_services(settings, key_store=software_key_store)
    application = create_app(services=services)
    try:
        async with application.router.lifespan_context(application):
            yield application
    finally:
        await services.close()


async def test_two_nodes_on_one_redis_share_one_budget(initialized: Services, client: httpx.AsyncClient,
                                                       second_node: FastAPI) -> None:
    rp: Registered = await register_client(initialized)
    async with asgi_browser(second_node) as other:
        assert other.base_url == httpx.URL(ISSUER)
        nodes = [client, other, client]
        for node in nodes:
            r = await node.post("/token", data={"grant_type": "client_credentials"}, auth=(rp.client_id, "wrong"))
            assert r.status_code == 401
        too_many_oauth(await other.post("/token", data={"grant_type": "client_credentials"},
                                        auth=(rp.client_id, rp.secret or "")))
        too_many_oauth(await client.post("/token", data={"grant_type": "client_credentials"},
                                         auth=(rp.client_id, rp.secret or "")))


async def test_readiness_reports_an_unreachable_redis(initialized: Services, settings: Settings,
                                                      software_key_store: SoftwareKeyStore) -> None:
    from api.deps import readiness

    assert await readiness(initialized) == []
    down = build_services(settings.model_copy(update={"rate_limit_storage": "redis://127.0.0.1:1/0"}),
                          key_store=software_key_store)
    try:
        assert await readiness(down) == ["rate-limit storage unreachable (ACAR_RATE_LIMIT_STORAGE)"]
        app = create_app(services=down)
        async with app.router.lifespan_context(app), asgi_browser(app) as browser:
            r = await browser.post("/token", data={"grant_type": "client_credentials"}, auth=("x", "y"))
            assert r.status_code == 503 and r.json()["error"] == "temporarily_unavailable"  # fail closed
            assert int(r.headers["retry-after"]) >= 1
    finally:
        await down.close()
