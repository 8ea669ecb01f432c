"""The Web eID challenge store (idp.sql.card_login) on the real database: a nonce is used once, only by the pending
request it was issued to, only before it expires; two logins racing for one nonce get it once. And the ISO 3166-1
alpha-2 -> alpha-3 mapping of documents."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import hashlib

import pytest
from sqlalchemy import select, text

from api.deps import Services
from idp.sql.card_login import SqlCardLoginStore, alpha3, nonce_key, purge_card_rows
from idp.sql.models import WebEidChallenge
from storage.base import utcnow

LIFETIME = dt.timedelta(seconds=300)


async def issue(services: Services, pending_id: str = "pending-a", *, now: dt.datetime | None = None) -> str:
    async with services.direct.transaction() as tx:
        return await SqlCardLoginStore(tx).issue(pending_id, now or utcnow(), LIFETIME)


async def consume(services: Services, nonce: str, pending_id: str = "pending-a", *,
                  now: dt.datetime | None = None) -> bool:
    async with services.direct.transaction() as tx:
        return await SqlCardLoginStore(tx).consume(nonce, pending_id, now or utcnow())


async def test_nonce_is_256_random_bits_stored_by_its_hash_only(services: Services) -> None:
    """Web eID: a base64 nonce of 32 random bytes (44 characters); the table keeps its SHA-256, never the nonce."""
    now = utcnow()
    nonces = {await issue(services, now=now) for _ in range(3)}
    assert len(nonces) == 3
    for nonce in nonces:
        assert len(nonce) == 44 and len(base64.b64decode(nonce, validate=True)) == 32
    async with services.sessions() as session:
        rows = (await session.execute(select(WebEidChallenge))).scalars().all()
    assert {row.nonce_hash for row in rows} == {hashlib.sha256(n.encode()).hexdigest() for n in nonces}
    assert {row.nonce_hash for row in rows} == {nonce_key(n) for n in nonces}
    for row in rows:
        assert row.pending_id == "pending-a" and row.used_at is None
        assert row.expires_at - row.created_at == LIFETIME
    async with services.engine.connect() as conn:  # the nonce appears in no column
        dump = repr((await conn.execute(text("SELECT * FROM webeid_challenges"))).all())
    assert not any(nonce in dump for nonce in nonces)


async def test_used_once(services: Services) -> None:
    nonce = await issue(services)
    assert await consume(services, nonce)
    assert not await consume(services, nonce)  # a replay
    async with services.sessions() as session:
        row = await session.get(WebEidChallenge, nonce_key(nonce))
        assert row is not None and row.used_at is not None


async def test_only_by_its_pending_request(services: Services) -> None:
    """A nonce presented for another sign-in is refused and left as it was (its own sign-in may still use it)."""
    nonce = await issue(services, "pending-a")
    assert not await consume(services, nonce, "pending-b")
    assert await consume(services, nonce, "pending-a")


async def test_only_before_it_expires(services: Services) -> None:
    now = utcnow()
    nonce = await issue(services, now=now)
    assert not await consume(services, nonce, now=now + LIFETIME)
    assert not await consume(services, nonce, now=now + LIFETIME + dt.timedelta(seconds=1))
    assert await consume(services, nonce, now=now + LIFETIME - dt.timedelta(seconds=1))


@pytest.mark.parametrize("nonce", ["", "x", "A" * 44, "A" * 101])
async def test_unknown_or_overlong_nonces(services: Services, nonce: str) -> None:
    await issue(services)
    assert not await consume(services, nonce)


async def test_racing_logins_get_the_nonce_once(services: Services) -> None:
    """Two logins presenting the same nonce at once (separate units of work, one connection each): one UPDATE ...
    RETURNING wins, the other finds it used."""
    for _ in range(5):
        nonce = await issue(services)
        results = await asyncio.gather(*(asyncio.create_task(consume(services, nonce)) for _ in range(2)))
        assert sorted(results) == [False, True]


async def test_housekeeping_forgets_expired_challenges(services: Services) -> None:
    now = utcnow()
    old = await issue(services, now=now - 2 * LIFETIME)
    fresh = await issue(services, now=now)
    async with services.sessions() as session, session.begin():
        assert await purge_card_rows(session, now) == {"webeid_challenges": 1}
    async with services.sessions() as session:
        assert await session.get(WebEidChallenge, nonce_key(old)) is None
        assert await session.get(WebEidChallenge, nonce_key(fresh)) is not None


@pytest.mark.nodb
@pytest.mark.parametrize(("alpha2", "expected"), [
    ("AZ", "AZE"), ("az", "AZE"), ("TR", "TUR"), ("RU", "RUS"), ("GE", "GEO"), ("US", "USA"), ("GB", "GBR"),
    ("UA", "UKR"), ("EE", "EST"),
    # countries whose alpha-2 code also aliases a withdrawn ISO 3166-3 code: the current one
    ("DE", "DEU"), ("MM", "MMR"), ("CD", "COD"), ("FR", "FRA"), ("TL", "TLS"), ("YE", "YEM"),
])
def test_alpha3_of_alpha2(alpha2: str, expected: str) -> None:
    assert alpha3(alpha2) == expected


@pytest.mark.nodb
@pytest.mark.parametrize("alpha2", ["XX", "ZZ", "", "AZE", "1"])
def test_alpha3_of_no_country(alpha2: str) -> None:
    assert alpha3(alpha2) is None


async def test_the_schedule_purges_expired_challenges(initialized: Services) -> None:
    """The application's housekeeping pass (api.app) runs purge_card_rows."""
    from api.app import create_app

    now = utcnow()
    old = await issue(initialized, now=now - 2 * LIFETIME)
    fresh = await issue(initialized, now=now)
    app = create_app(services=initialized)
    async with app.router.lifespan_context(app):
        await asyncio.wait_for(app.state.housekeeping_passed.wait(), timeout=30)
    async with initialized.sessions() as session:
        assert await session.get(WebEidChallenge, nonce_key(old)) is None
        assert await session.get(WebEidChallenge, nonce_key(fresh)) is not None
