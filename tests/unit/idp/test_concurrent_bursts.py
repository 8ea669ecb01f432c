"""Bursts of concurrent requests with cold caches (ACAR_KEY_CACHE_SECONDS=0), over HTTP to the app, on both
databases: every request answers (a token, or an OAuth error the client can act on), none 500, and none waits for a
database timeout. On SQLite each writing unit holds the database's one write lock while it signs its tokens; the
key and client reloads it needs must not wait for connections held by requests queued behind that lock
(storage.direct.SessionDirect)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from api.deps import Services
from api.settings import Settings
from tests.oidc_tools import (
    ISSUER,
    Registered,
    asgi_browser,
    authorization_params,
    hidden,
    obtain_code,
    pkce_pair,
    redeem,
    refresh,
    register_client,
    register_person,
)
from tests.passkey_tools import issue_code
from tests.webauthn_authenticator import SoftwareAuthenticator, enroll_with_code, passkey_login

BURST = 20
BOUND_SECONDS = 8.0
"""A burst of 20 takes well under a second; the bound is below SQLite's busy timeout (10 s), so a burst that
stalls until the timeout breaks a lock fails here whatever it answers."""


@pytest.fixture
def settings(database_url: str, master_key_file: Path, tmp_path: Path) -> Settings:
    """Cold caches: every token signed reloads the key set, every client authenticated reads its row."""
    return Settings(env="development", issuer=ISSUER, data_dir=tmp_path, database_url=database_url,
                    master_key_file=master_key_file, key_cache_seconds=0, dev_login=True)


@pytest.fixture
async def http(dev_app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with asgi_browser(dev_app, headers={"Accept-Language": "en"}) as c:
        yield c


async def burst(requests: list[Awaitable[httpx.Response]]) -> list[httpx.Response]:
    async with asyncio.timeout(BOUND_SECONDS):
        return list(await asyncio.gather(*requests))


async def test_a_burst_of_code_exchanges_and_refreshes_with_cold_caches(initialized: Services,
                                                                        http: httpx.AsyncClient) -> None:
    """Twenty authorization codes redeemed at once (each a writing unit), then their twenty refresh tokens used at
    once (RFC 6749 sections 4.1.3 and 6), then each refresh token twice at once: one use wins, the other is reuse
    (RFC 9700 section 4.14.2), an invalid_grant, never a 500."""
    rp = await register_client(initialized)
    await register_person(initialized)
    codes = [await obtain_code(http, rp) for _ in range(BURST)]
    redeemed = await burst([redeem(http, rp, c.code, c.verifier) for c in codes])
    assert [r.status_code for r in redeemed] == [200] * BURST, [r.text for r in redeemed if r.status_code != 200]
    tokens = [r.json()["refresh_token"] for r in redeemed]
    refreshed = await burst([refresh(http, rp, t) for t in tokens])
    assert [r.status_code for r in refreshed] == [200] * BURST, [r.text for r in refreshed if r.status_code != 200]
    successors = [r.json()["refresh_token"] for r in refreshed]
    half = successors[: BURST // 2]
    twice = await burst([refresh(http, rp, t) for t in half for _ in range(2)])
    for first, second in zip(twice[::2], twice[1::2], strict=True):
        assert sorted((first.status_code, second.status_code)) == [200, 400], (first.text, second.text)
        refused = first if first.status_code == 400 else second
        assert refused.json()["error"] == "invalid_grant"


async def test_a_burst_of_client_credentials_and_refreshes_with_cold_caches(initialized: Services,
                                                                            http: httpx.AsyncClient) -> None:
    """client_credentials tokens (RFC 6749 section 4.4: no unit statement, an audit event by group commit) mixed
    with refreshes (writing units) and requests a client can get wrong (a bad secret, an unknown refresh token):
    tokens and OAuth errors, never a 500."""
    rp = await register_client(initialized)
    machine = await register_client(initialized, name="Tax system", redirect_uris=(),
                                    grant_types=["client_credentials"], scopes=["tax:read"])
    await register_person(initialized)
    codes = [await obtain_code(http, rp) for _ in range(BURST // 2)]
    tokens = [(await redeem(http, rp, c.code, c.verifier)).json()["refresh_token"] for c in codes]
    machine_auth = (machine.client_id, machine.secret or "")
    requests: list[Awaitable[httpx.Response]] = []
    for token in tokens:
        requests.append(http.post("/token", data={"grant_type": "client_credentials"}, auth=machine_auth))
        requests.append(refresh(http, rp, token))
    requests.append(http.post("/token", data={"grant_type": "client_credentials"}, auth=(machine.client_id, "x")))
    requests.append(refresh(http, rp, "no-such-token"))
    answers = await burst(requests)
    statuses = [r.status_code for r in answers]
    assert statuses[:-2] == [200] * BURST, [r.text for r in answers if r.status_code not in (200, 400, 401)]
    assert (statuses[-2], answers[-2].json()["error"]) == (401, "invalid_client")
    assert (statuses[-1], answers[-1].json()["error"]) == (400, "invalid_grant")
    only_machine = await burst([http.post("/token", data={"grant_type": "client_credentials"}, auth=machine_auth)
                                for _ in range(BURST)])
    assert [r.status_code for r in only_machine] == [200] * BURST


async def passkey_sign_in(app: FastAPI, rp: Registered, authenticator: SoftwareAuthenticator) -> list[int]:
    """One browser of its own through a whole sign-in: /authorize (a writing unit), the login page (a reading
    unit), passkey options and verify (writing units, WebAuthn Level 3 section 7.2), consent, the code redeemed:
    the statuses it met."""
    async with asgi_browser(app, headers={"Accept-Language": "en"}) as browser:
        verifier, challenge = pkce_pair()
        r = await browser.get("/authorize", params=authorization_params(rp, challenge))
        location = r.headers.get("location", "")
        page = await browser.get(location)
        verified = await passkey_login(browser, location.split("/")[2], hidden(page.text, "csrf_token"),
                                       authenticator)
        redirect = verified.json()["redirect"]
        if redirect.startswith("/interaction/"):  # else another tab's consent, remembered meanwhile, answered
            asked = await browser.get(redirect)
            redirect = asked.headers.get("location", "")
            if asked.status_code == 200:
                agreed = await browser.post(asked.url.path, data={"csrf_token": hidden(asked.text, "csrf_token"),
                                                                  "decision": "allow"})
                assert agreed.status_code == 303, agreed.text
                redirect = agreed.headers["location"]
        code = dict(httpx.URL(redirect).params).get("code", "")
        redeemed = await redeem(browser, rp, code, verifier)
        return [r.status_code, page.status_code, verified.status_code, redeemed.status_code]


async def test_a_burst_of_passkey_sign_ins_with_cold_caches(initialized: Services, dev_app: FastAPI,
                                                           http: httpx.AsyncClient) -> None:
    """Twenty browsers signing in with a passkey at once, from the authorization request to the tokens."""
    rp = await register_client(initialized)
    person_id = await register_person(initialized)
    authenticator = SoftwareAuthenticator(counter_step=0)  # one passkey in twenty tabs: no counter to race
    enrolled = await enroll_with_code(http, await issue_code(initialized, person_id), authenticator)
    assert enrolled.status_code == 201, enrolled.text
    async with asyncio.timeout(BOUND_SECONDS):
        walks = await asyncio.gather(*(passkey_sign_in(dev_app, rp, authenticator) for _ in range(BURST)))
    assert walks == [[303, 200, 200, 200]] * BURST
