"""While the HSM is busy signing, the event loop keeps serving: the real app on a SoftHSM2 key store.

The token's key object behind the ES256 token-signing handle is wrapped so that its C_Sign waits, blocking its
thread (as a slow or remote HSM would), until the test releases it. A client_credentials token request is started;
while its signature is pending, /healthz and /jwks.json are answered; then the signature is released and the token
verifies against the JWKS. Were the signature made on the event loop's thread, the loop would stand still inside the
blocked C_Sign: nothing else could be answered until it returned, and the order below would not hold.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import jwt
import pytest

from api.app import create_app
from api.deps import Services, build_services
from api.settings import Settings
from keys.pkcs11 import Pkcs11KeyHandle, Pkcs11KeyStore
from tests.oidc_tools import ISSUER, asgi_browser, register_client
from tests.softhsm import SoftHsmToken

pytestmark = pytest.mark.pkcs11

RELEASE_TIMEOUT = 20.0
"""How long the slowed C_Sign waits for the test at most: on the loop's thread it would stall everything that long."""


@dataclass
class HsmApp:
    services: Services
    client: httpx.AsyncClient


@pytest.fixture
async def hsm_app(services: Services, settings: Settings, softhsm_token: SoftHsmToken) -> AsyncIterator[HsmApp]:
    """The app with its token keys on the SoftHSM2 token (`services` wipes the shared test database afterwards)."""
    store = Pkcs11KeyStore(module_path=softhsm_token.module, token_label=softhsm_token.label, pin=softhsm_token.pin)
    # no audit sealing schedule (api.audit_sealer): its checkpoints are signed with the token key, and the only
    # signature this test measures is the token endpoint's
    hsm = build_services(settings.model_copy(update={"token_key_algorithms": ["ES256"], "audit_seal_seconds": 0}),
                         key_store=store)
    try:
        async with hsm.sessions() as session, session.begin():
            await hsm.token_keys.ensure_keys(session, actor="test")
        app = create_app(services=hsm)
        async with app.router.lifespan_context(app), asgi_browser(app) as client:
            yield HsmApp(hsm, client)
    finally:
        await hsm.close()
        store.close()


class SlowTokenKey:
    """Stands in for the token's key object: its `sign` (python-pkcs11's C_SignInit/C_Sign) first blocks its
    thread until the test releases it, then signs on the real token."""

    def __init__(self, key: Any, order: list[str]) -> None:
        self._key = key
        self._order = order
        self.started = threading.Event()
        self.released = threading.Event()
        self.threads: list[threading.Thread] = []

    def sign(self, data: bytes, **kwargs: Any) -> bytes:
        self.threads.append(threading.current_thread())
        self._order.append("sign started")
        self.started.set()
        self.released.wait(RELEASE_TIMEOUT)  # a blocking wait, like time.sleep in a slow HSM
        self._order.append("sign finished")
        return bytes(self._key.sign(data, **kwargs))


async def test_requests_are_answered_while_a_token_signature_is_pending_on_the_hsm(
    hsm_app: HsmApp, monkeypatch: pytest.MonkeyPatch
) -> None:
    services, client = hsm_app.services, hsm_app.client
    rp = await register_client(services, name="Tax system", redirect_uris=(), grant_types=["client_credentials"],
                               scopes=["api:read"], subject_type="public")
    signer = await services.token_keys.signer("ES256")
    async with services.sessions() as session:
        handle = await services.key_store.load(session, signer.kid)  # the cached handle the token endpoint uses
    assert isinstance(handle, Pkcs11KeyHandle)
    order: list[str] = []
    slow = SlowTokenKey(handle._key, order)
    monkeypatch.setattr(handle, "_key", slow)
    loop_thread = threading.current_thread()

    token_request = asyncio.create_task(client.post(
        "/token", data={"grant_type": "client_credentials", "scope": "api:read"}, auth=(rp.client_id, rp.secret or "")))
    assert await asyncio.to_thread(slow.started.wait, RELEASE_TIMEOUT), "the token endpoint never signed"
    health = await client.get("/healthz")
    order.append("healthz answered")
    jwks = await client.get("/jwks.json")
    order.append("jwks answered")
    assert not token_request.done()
    slow.released.set()
    response = await token_request

    assert order == ["sign started", "healthz answered", "jwks answered", "sign finished"]
    assert slow.threads and loop_thread not in slow.threads  # C_Sign ran in a worker thread, not on the loop
    assert health.status_code == 200 and jwks.status_code == 200
    assert response.status_code == 200, response.text
    token = response.json()["access_token"]
    key = jwt.PyJWKSet.from_dict(jwks.json())[signer.kid]
    claims = jwt.decode(token, key=key, algorithms=["ES256"], audience=ISSUER, issuer=ISSUER)
    assert claims["client_id"] == rp.client_id and claims["scope"] == "api:read"
