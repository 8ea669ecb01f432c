"""Refresh token reuse (RFC 9700 section 4.14.2) with a grace window configured, over HTTP to the app: a reuse
within the window answers the same successor (idempotent), never a new family; later, the family is revoked.
The default grace of 0 is tested in test_protocol_hardening.py."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select, update

from api.deps import Services
from api.settings import Settings
from idp.sql.models import RefreshToken
from tests.oidc_tools import (
    ISSUER,
    asgi_browser,
    introspect,
    live_refresh_tokens,
    refresh,
    register_client,
    register_person,
    tokens_for,
)


@pytest.fixture
def settings(database_url: str, master_key_file: Path, tmp_path: Path) -> Settings:
    """A grace window of 10 seconds; the key and client caches on, as in production (their default is 5 s), so a
    burst of requests is not also a burst of cache reloads."""
    return Settings(env="development", issuer=ISSUER, data_dir=tmp_path, database_url=database_url,
                    master_key_file=master_key_file, key_cache_seconds=60, dev_login=True,
                    refresh_reuse_grace_seconds=10)


@pytest.fixture
async def http(dev_app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with asgi_browser(dev_app, headers={"Accept-Language": "en"}) as c:
        yield c





async def test_refresh_reuse_within_the_grace_window_answers_the_same_successor(
        initialized: Services, http: httpx.AsyncClient) -> None:
    """RFC 9700 section 4.14.2 with ACAR_REFRESH_REUSE_GRACE_SECONDS=10: ten concurrent uses of one refresh token
    (a client's retries, several tabs) all get the same successor, and leave exactly one live refresh token."""
    rp = await register_client(initialized)
    await register_person(initialized)
    first = await tokens_for(http, rp)
    answers = await asyncio.gather(*(refresh(http, rp, first["refresh_token"]) for _ in range(10)))
    assert [a.status_code for a in answers] == [200] * 10, [a.text for a in answers]
    pairs = [a.json() for a in answers]
    successor = pairs[0]["refresh_token"]
    assert {p["refresh_token"] for p in pairs} == {successor}  # idempotent: one successor, not ten families
    assert successor != first["refresh_token"]
    assert await live_refresh_tokens(initialized) == 1
    async with initialized.sessions() as session:  # the successor is kept sealed, never in the clear
        stored = (await session.execute(select(RefreshToken.successor).where(
            RefreshToken.used_at.is_not(None)))).scalar_one()
    assert stored and successor not in stored
    # once more, still within the window: the same successor again, still one live token
    late = await refresh(http, rp, first["refresh_token"])
    assert late.status_code == 200, late.text
    assert late.json()["refresh_token"] == successor
    assert await live_refresh_tokens(initialized) == 1
    for pair in pairs:  # every access token answered is of the one grant, which lives on
        assert (await introspect(http, rp, pair["access_token"]))["active"] is True
    assert (await introspect(http, rp, successor))["active"] is True
    assert await introspect(http, rp, first["refresh_token"]) == {"active": False}  # rotated: no longer active
    # past the window, the same reuse revokes the whole family
    async with initialized.sessions() as session, session.begin():
        await session.execute(update(RefreshToken).where(RefreshToken.used_at.is_not(None)).values(
            used_at=dt.datetime.now(dt.UTC) - dt.timedelta(seconds=11)))
    r = await refresh(http, rp, first["refresh_token"])
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant"
    assert await live_refresh_tokens(initialized) == 0
    assert await introspect(http, rp, successor) == {"active": False}
    for pair in pairs:
        assert await introspect(http, rp, pair["access_token"]) == {"active": False}
    assert (await refresh(http, rp, successor)).json()["error"] == "invalid_grant"


async def test_reuse_after_the_successor_was_used_revokes_the_family(initialized: Services,
                                                                     http: httpx.AsyncClient) -> None:
    """Within the window too: once the successor has been used, the old token again is reuse (RFC 9700 4.14.2)."""
    rp = await register_client(initialized)
    await register_person(initialized)
    first = await tokens_for(http, rp)
    second = (await refresh(http, rp, first["refresh_token"])).json()
    third = (await refresh(http, rp, second["refresh_token"])).json()
    r = await refresh(http, rp, first["refresh_token"])
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant", r.text
    assert await introspect(http, rp, third["refresh_token"]) == {"active": False}
    assert await live_refresh_tokens(initialized) == 0


def test_the_successor_is_sealed_for_the_holder_of_the_used_token_only() -> None:
    import secrets

    from idp.core.authorize import token_hash
    from idp.core.grants import open_successor, seal_successor

    used, successor = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    sealed = seal_successor(used, successor)
    assert successor not in sealed and len(sealed) <= 200  # the column's width
    assert open_successor(used, sealed) == successor
    assert seal_successor(used, successor) != sealed  # a fresh nonce each time
    for wrong in (secrets.token_urlsafe(32), token_hash(used), successor):  # the stored hash opens nothing
        assert open_successor(wrong, sealed) is None
    assert open_successor(used, sealed[:-2] + ("AA" if not sealed.endswith("AA") else "BB")) is None
    assert open_successor(used, "not base64url!") is None
