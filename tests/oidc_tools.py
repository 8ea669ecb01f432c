"""Shared helpers for OpenID Connect tests: register clients and persons, drive the development login."""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

import httpx

from api.deps import Services
from idp.clients import ClientRegistration, ClientRegistry
from idp.persons import PersonService

FIN = "5ABCD12"


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
    import datetime as dt

    async with services.sessions() as session, session.begin():
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
    """at_hash computed here, independently of idp.tokens: base64url of the left half of the alg's hash."""
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

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
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

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the overridden signature
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield received
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
