"""Shared helpers for OpenID Connect tests: register clients and persons, a browser on the in-process app, drive
the development login."""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

import httpx
from fastapi import FastAPI
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from api.deps import Services
from idp.sql.clients import ClientRegistration, ClientRegistry
from idp.sql.models import Grant, RefreshToken
from idp.sql.persons import PersonService
from tests.local_http import QuietHandler, serving

FIN = "5ABCD12"
ISSUER = "http://localhost:8000"
"""The issuer of the test settings (tests/conftest.py), so the origin of the in-process app."""


def asgi_browser(app: FastAPI, **kw: Any) -> httpx.AsyncClient:
    """A browser of its own (its own cookies) on the in-process `app` at the issuer's origin."""
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=ISSUER, **kw)


@dataclass
class Registered:
    client_id: str
    secret: str | None
    redirect_uri: str


async def register_client(services: Services, *, name: str = "Agency portal",
                          redirect_uris: Sequence[str] = ("https://agency.example/cb",), **kw: Any) -> Registered:
    kw.setdefault("scopes", ("openid", "profile", "fin", "birthdate", "offline_access"))
    async with services.sessions() as session, session.begin():
        client, secret = await ClientRegistry(session).add(
            ClientRegistration(name=name, redirect_uris=list(redirect_uris), **kw), actor="test")
    services.clients.invalidate()
    return Registered(client.client_id, secret, redirect_uris[0] if redirect_uris else "")


async def register_person(services: Services, fin: str = FIN) -> str:
    return await add_person(services.sessions, fin)


async def add_person(sessions: async_sessionmaker[AsyncSession], fin: str = FIN) -> str:
    """A citizen with this FIN, committed by a session of `sessions` (a service's, or the test's `rolled_back`)."""
    import datetime as dt

    async with sessions() as session, session.begin():
        person = await PersonService(session).add(fin=fin, given_name="Aysel", family_name="Məmmədova",
                                                  birthdate=dt.date(1990, 5, 17), actor="test")
    return person.id


def pkce_pair() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


def hidden(html: str, name: str) -> str:
    found = re.search(rf'name="{name}" value="([^"]*)"', html)
    assert found, f"no hidden {name} in page"
    return found.group(1)


async def dev_login(http: httpx.AsyncClient, location: str, *, fin: str = FIN, level: str = "substantial"
                    ) -> httpx.Response:
    """Open the login page at `location` and sign in with the development shortcut."""
    page = await http.get(location)
    assert page.status_code == 200, page.text
    return await http.post(location + "/dev-login", data={
        "csrf_token": hidden(page.text, "csrf_token"), "fin": fin, "level": level})


async def consent(http: httpx.AsyncClient, location: str, decision: str = "allow") -> httpx.Response:
    page = await http.get(location)
    assert page.status_code == 200, page.text
    return await http.post(location, data={"csrf_token": hidden(page.text, "csrf_token"), "decision": decision})


# --- independent checks and a relying party's back-channel endpoint (shared by the OIDC suites) ---------

_AT_HASH_DIGEST = {"ES256": hashlib.sha256, "RS256": hashlib.sha256, "EdDSA": hashlib.sha512}
"""OIDC Core 3.1.3.6: the hash of the ID token's alg; Ed25519 signs with SHA-512 (OpenID Connect WG issue 1125)."""


def expected_at_hash(access_token: str, alg: str) -> str:
    """at_hash computed here, independently of idp.core.tokens: base64url of the left half of the alg's hash."""
    digest = _AT_HASH_DIGEST[alg](access_token.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest[: len(digest) // 2]).rstrip(b"=").decode()


@dataclass
class LogoutReceiver:
    """What a relying party's back-channel logout endpoint received: one logout_token per POST."""

    uri: str
    tokens: list[str]
    content_types: list[str]


@contextmanager
def logout_receiver(port: int, path: str = "/backchannel") -> Iterator[LogoutReceiver]:
    """A relying party's back-channel logout endpoint on 127.0.0.1:`port` (OIDC Back-Channel Logout 1.0 2.5):
    records the logout_token of every form POST to `path` and answers 200."""
    received = LogoutReceiver(uri=f"http://127.0.0.1:{port}{path}", tokens=[], content_types=[])

    class Handler(QuietHandler):
        def do_POST(self) -> None:  # noqa: N802 - the name http.server dispatches to
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
            form = parse_qs(body)
            ok = self.path == path and len(form.get("logout_token", [])) == 1
            if ok:
                received.tokens.append(form["logout_token"][0])
                received.content_types.append(self.headers.get("Content-Type", ""))
            self.send_response(200 if ok else 400)
            self.send_header("Cache-Control", "no-store")
            self.send_header("Content-Length", "0")
            self.end_headers()

    with serving(Handler, port):
        yield received


# --- the code flow in process (ASGI): authorize, log in, consent, redeem ------------------------------------

def authorization_params(rp: Registered, challenge: str, **extra: str | None) -> dict[str, str]:
    """A valid authorization request of `rp` (OIDC Core 3.1.2.1, PKCE S256); `extra` overrides, None drops."""
    params: dict[str, str | None] = {
        "client_id": rp.client_id, "redirect_uri": rp.redirect_uri, "response_type": "code",
        "scope": "openid profile", "nonce": "n-" + secrets.token_hex(8), "state": "s-" + secrets.token_hex(8),
        "code_challenge": challenge, "code_challenge_method": "S256",
    }
    params.update(extra)
    return {k: v for k, v in params.items() if v is not None}


@dataclass
class Authorized:
    """The OP's last answer in a browser-like walk through /authorize and the pages it showed."""

    response: httpx.Response
    pages: list[str]

    @property
    def query(self) -> dict[str, str]:
        assert self.response.status_code == 303, (self.response.status_code, self.response.text[:300])
        location = self.response.headers["location"]
        return {k: v[0] for k, v in parse_qs(location.partition("?")[2]).items()}


async def authorize(http: httpx.AsyncClient, params: dict[str, str] | list[tuple[str, str]], *,
                    level: str | None = "substantial", decision: str | None = "allow", fin: str = FIN) -> Authorized:
    """GET /authorize and walk the OP's own pages: log in as `fin` at `level`, answer consent with `decision` (None
    stops at that page). Stops at the first answer that leaves the OP."""
    response = await http.get("/authorize", params=params)
    pages: list[str] = []
    for _ in range(6):
        location = response.headers.get("location", "") if response.status_code == 303 else ""
        if not location.startswith("/interaction/"):
            break
        if location.endswith("/consent"):
            pages.append("consent")
            if decision is None:
                break
            response = await consent(http, location, decision)
        else:
            pages.append("login")
            if level is None:
                break
            response = await dev_login(http, location, level=level, fin=fin)
    return Authorized(response, pages)


@dataclass
class Code:
    code: str
    verifier: str
    params: dict[str, str]
    """The authorization request that produced it."""


async def obtain_code(http: httpx.AsyncClient, rp: Registered, *, fin: str = FIN, **extra: str | None) -> Code:
    verifier, challenge = pkce_pair()
    params = authorization_params(rp, challenge, **extra)
    done = await authorize(http, params, fin=fin)
    query = done.query
    assert "code" in query and query["state"] == params["state"], query
    return Code(query["code"], verifier, params)


async def redeem(http: httpx.AsyncClient, rp: Registered, code: str, verifier: str, *,
                 redirect_uri: str | None = None) -> httpx.Response:
    """POST /token with grant_type=authorization_code, client_secret_basic."""
    return await http.post("/token", data={"grant_type": "authorization_code", "code": code,
                                           "redirect_uri": redirect_uri or rp.redirect_uri, "code_verifier": verifier},
                           auth=(rp.client_id, rp.secret or ""))


async def refresh(http: httpx.AsyncClient, rp: Registered, token: str) -> httpx.Response:
    return await http.post("/token", data={"grant_type": "refresh_token", "refresh_token": token},
                           auth=(rp.client_id, rp.secret or ""))


async def introspect(http: httpx.AsyncClient, rp: Registered, token: str) -> dict[str, Any]:
    r = await http.post("/introspect", data={"token": token}, auth=(rp.client_id, rp.secret or ""))
    assert r.status_code == 200, r.text
    return dict(r.json())


async def tokens_for(http: httpx.AsyncClient, rp: Registered, *, fin: str = FIN,
                     **extra: str | None) -> dict[str, Any]:
    """A code obtained through the browser `http` (signing in as `fin` if needed) and redeemed: the token response."""
    got = await obtain_code(http, rp, fin=fin, **extra)
    r = await redeem(http, rp, got.code, got.verifier)
    assert r.status_code == 200, r.text
    return dict(r.json())


async def live_refresh_tokens(services: Services) -> int:
    """Refresh tokens that could still be exchanged: unused, of a grant that is not revoked."""
    async with services.sessions() as session:
        return len((await session.execute(
            select(RefreshToken.token_hash).join(Grant, Grant.id == RefreshToken.grant_id)
            .where(RefreshToken.used_at.is_(None), Grant.revoked_at.is_(None)))).all())
