"""Token-signing key lifecycle, checked with an independent JOSE library (PyJWT) against the JWKS."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from dataclasses import dataclass

import jwt as pyjwt
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from api.deps import Services
from keys.errors import InvalidToken, RotationTooEarly
from keys.interfaces import KeyStore
from keys.models import StoredKey, TokenKey
from keys.software import SoftwareKeyStore
from keys.token_keys import TokenKeyService
from storage.audit import AuditEvent
from tests.clock import Clock

ISSUER = "http://localhost:8000"


@dataclass(frozen=True)
class RolledBack:
    """What these tests take from `services`: sessions (here `rolled_back`'s: one connection, one transaction
    rolled back after the test, no wipe) and the key store."""

    sessions: async_sessionmaker[AsyncSession]
    key_store: KeyStore


@pytest.fixture
def db(rolled_back: async_sessionmaker[AsyncSession], software_key_store: SoftwareKeyStore) -> RolledBack:
    """The test uses one session at a time and no other connection (the concurrent-schedules test, whose two
    schedules hold sessions at once, stays on `services` and its wipe)."""
    return RolledBack(rolled_back, software_key_store)
ANY_TYP: dict[str, object] = {"typ": None, "algorithms": ["ES256", "RS256"]}


def _service(services: Services | RolledBack, clock: Clock,
             algorithms: tuple[str, ...] = ("ES256", "RS256")) -> TokenKeyService:
    return TokenKeyService(
        services.sessions, services.key_store, algorithms=algorithms, rotation_interval=dt.timedelta(days=30),
        max_token_lifetime=dt.timedelta(hours=1), cache_seconds=0, clock=clock,
    )


def _claims(aud: str = "agency") -> dict[str, object]:
    now = int(time.time())
    return {"iss": ISSUER, "sub": "s1", "aud": aud, "iat": now, "exp": now + 600}


def _pyjwt_verify(token: str, jwks: dict[str, object], alg: str) -> dict[str, object]:
    """Verify with PyJWT only: key chosen by kid from the published JWKS."""
    kid = pyjwt.get_unverified_header(token)["kid"]
    keyset = pyjwt.PyJWKSet.from_dict(jwks)
    key = {k.key_id: k for k in keyset.keys}.get(kid)
    if key is None:
        raise pyjwt.exceptions.PyJWKSetError(f"kid {kid} is not in the JWKS")
    return pyjwt.decode(token, key=key.key, algorithms=[alg], audience="agency", issuer=ISSUER,
                        options={"require": ["exp", "iat", "iss", "aud"]})


async def _states(services: Services | RolledBack) -> dict[str, str]:
    async with services.sessions() as session:
        return {r.kid: r.state for r in (await session.execute(select(TokenKey))).scalars()}


async def test_ensure_keys_publishes_current_and_next(db: RolledBack) -> None:
    svc = _service(db, Clock())
    async with db.sessions() as session, session.begin():
        created = await svc.ensure_keys(session)
    assert len(created) == 4
    jwks = await svc.jwks()
    kids = {k["kid"] for k in jwks["keys"]}
    assert kids == set(created)
    by_alg = {(k["alg"], k["kty"]) for k in jwks["keys"]}
    assert by_alg == {("ES256", "EC"), ("RS256", "RSA")}
    for key in jwks["keys"]:
        assert key["use"] == "sig"
        assert not {"d", "p", "q", "dp", "dq", "qi"} & set(key)  # public parts only
    async with db.sessions() as session, session.begin():
        assert await svc.ensure_keys(session) == []  # idempotent


@pytest.mark.parametrize("alg", ["ES256", "RS256", "EdDSA"])
async def test_tokens_verify_with_pyjwt(db: RolledBack, alg: str) -> None:
    svc = _service(db, Clock(), algorithms=(alg,))
    async with db.sessions() as session, session.begin():
        await svc.ensure_keys(session)
    signer = await svc.signer(alg)
    token = await signer.sign(_claims(), typ="at+jwt")
    assert pyjwt.get_unverified_header(token) == {"alg": alg, "kid": signer.kid, "typ": "at+jwt"}
    claims = _pyjwt_verify(token, dict(await svc.jwks()), alg)
    assert claims["sub"] == "s1"
    ours = await svc.verify(token, issuer=ISSUER, audience="agency", typ="at+jwt", algorithms=[alg])
    assert ours["sub"] == "s1"


async def test_rotation_keeps_old_tokens_valid_until_retired_key_is_removed(db: RolledBack) -> None:
    clock = Clock()
    svc = _service(db, clock)
    async with db.sessions() as session, session.begin():
        await svc.ensure_keys(session)
    before = await _states(db)
    es256 = await _es256(db)
    old_current = next(k for k, s in before.items() if s == "current" and k in es256)
    old_next = next(k for k, s in before.items() if s == "next" and k in es256)
    old_token = await (await svc.signer("ES256")).sign(_claims())

    with pytest.raises(RotationTooEarly):  # the next key is not yet in relying parties' cached JWKS
        async with db.sessions() as session, session.begin():
            await svc.rotate(session, algorithms=["ES256"], actor="test")
    assert await _states(db) == before  # refused, nothing changed
    clock.now += svc.min_next_age
    async with db.sessions() as session, session.begin():
        changes = await svc.rotate(session, algorithms=["ES256"], actor="test")
    assert changes[0]["retired"] == old_current and changes[0]["current"] == old_next
    after = await _states(db)
    assert after[old_current] == "retired" and after[old_next] == "current"
    assert after[str(changes[0]["next"])] == "next"

    new_signer = await svc.signer("ES256")
    assert new_signer.kid == old_next  # the key that had already been published as next
    new_token = await new_signer.sign(_claims())
    jwks = dict(await svc.jwks())
    assert {old_current, old_next, changes[0]["next"]} <= {k["kid"] for k in jwks["keys"]}
    assert _pyjwt_verify(old_token, jwks, "ES256")["sub"] == "s1"
    assert _pyjwt_verify(new_token, jwks, "ES256")["sub"] == "s1"

    # before every token of the retired key has expired, it stays published
    clock.now += dt.timedelta(minutes=30)
    async with db.sessions() as session, session.begin():
        assert await svc.remove_expired(session) == []
    # once the longest token lifetime has passed, it is removed and its material destroyed
    clock.now += dt.timedelta(hours=1)
    async with db.sessions() as session, session.begin():
        assert await svc.remove_expired(session) == [old_current]
    jwks = dict(await svc.jwks())
    assert old_current not in {k["kid"] for k in jwks["keys"]}
    with pytest.raises(pyjwt.PyJWTError):
        _pyjwt_verify(old_token, jwks, "ES256")
    with pytest.raises(InvalidToken, match="unknown signing key"):
        await svc.verify(old_token, issuer=ISSUER, audience="agency", **ANY_TYP)
    async with db.sessions() as session:
        row = await session.get(StoredKey, old_current)
        assert row is not None and row.destroyed_at is not None and row.ciphertext is None
        events = (await session.execute(select(AuditEvent.event_type))).scalars().all()
    assert {"token_key.created", "token_key.rotated", "token_key.removed"} <= set(events)


async def _es256(db: Services | RolledBack) -> set[str]:
    async with db.sessions() as session:
        return set((await session.execute(select(TokenKey.kid).where(TokenKey.alg == "ES256"))).scalars())


async def test_automatic_schedule_rotates_when_due(db: RolledBack) -> None:
    clock = Clock()
    svc = _service(db, clock)
    async with db.sessions() as session, session.begin():
        await svc.ensure_keys(session)
    assert await svc.housekeeping() == {"rotated": [], "removed": []}
    clock.now += dt.timedelta(days=30, seconds=1)
    result = await svc.housekeeping()
    assert len(result["rotated"]) == 2  # ES256 and RS256
    assert await svc.housekeeping() == {"rotated": [], "removed": []}
    clock.now += dt.timedelta(hours=2)
    assert len((await svc.housekeeping())["removed"]) == 2


async def test_verify_refuses_tampering_and_foreign_policies(db: RolledBack) -> None:
    svc = _service(db, Clock())
    async with db.sessions() as session, session.begin():
        await svc.ensure_keys(session)
    token = await (await svc.signer("ES256")).sign(_claims())
    head, body, sig = token.split(".")
    forged_body = pyjwt.utils.base64url_encode(b'{"iss":"http://localhost:8000","sub":"admin","exp":9999999999,'
                                               b'"iat":1,"aud":"agency"}').decode()
    cases = {
        "tampered payload": f"{head}.{forged_body}.{sig}",
        "alg none": pyjwt.encode(_claims(), key=None, algorithm="none"),  # type: ignore[arg-type]
        "HS256": pyjwt.encode(_claims(), key="secret-key-of-32-bytes-or-more!!", algorithm="HS256",
                              headers={"kid": pyjwt.get_unverified_header(token)["kid"]}),
        "garbage": "a.b.c",
        "two parts": f"{head}.{body}",
    }
    for name, bad in cases.items():
        with pytest.raises(InvalidToken):
            await svc.verify(bad, issuer=ISSUER, audience="agency", **ANY_TYP)
        assert name
    with pytest.raises(InvalidToken, match="audience"):
        await svc.verify(token, issuer=ISSUER, audience="another-agency", **ANY_TYP)
    with pytest.raises(InvalidToken, match="issuer"):
        await svc.verify(token, issuer="https://evil.example", audience="agency", **ANY_TYP)
    expired = await (await svc.signer("ES256")).sign({**_claims(), "exp": int(time.time()) - 3600})
    with pytest.raises(InvalidToken, match="expired"):
        await svc.verify(expired, issuer=ISSUER, audience="agency", **ANY_TYP)


async def test_concurrent_schedules_rotate_once(services: Services) -> None:
    """Two nodes whose schedules find the key due at the same moment: exactly one rotation happens."""
    clock = Clock()
    svc_a = _service(services, clock, algorithms=("ES256",))
    svc_b = _service(services, clock, algorithms=("ES256",))
    async with services.sessions() as session, session.begin():
        await svc_a.ensure_keys(session)
    clock.now += dt.timedelta(days=31)

    async def run(svc: TokenKeyService) -> dict[str, list[str]] | Exception:
        try:
            return await svc.housekeeping(actor="node")
        except Exception as exc:  # noqa: BLE001 - SQLite may refuse the loser's write outright
            return exc

    for _ in range(3):  # the race has several interleavings; each must end in one rotation
        before = await _states(services)
        results = await asyncio.gather(run(svc_a), run(svc_b))
        rotated = [r for r in results if isinstance(r, dict) and r["rotated"]]
        assert len(rotated) == 1, results
        after = await _states(services)
        assert list(after.values()).count("current") == 1
        assert len(after) == len(before) + 1  # one new next key, not two
        clock.now += dt.timedelta(days=31)


async def test_manual_rotation_after_rotation_rotates_again(db: RolledBack) -> None:
    """`acar keys rotate` twice means two rotations: explicit commands are not deduplicated."""
    svc = _service(db, Clock(), algorithms=("ES256",))
    async with db.sessions() as session, session.begin():
        await svc.ensure_keys(session)
    for _ in range(2):
        async with db.sessions() as session, session.begin():
            assert len(await svc.rotate(session, actor="cli", force=True)) == 1
    assert sorted((await _states(db)).values()) == ["current", "next", "retired", "retired"]
